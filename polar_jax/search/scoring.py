"""The LLM scorer: greedy generation under each program with the executor, answers verified.

`LLMScorer.score` receives a round's (question index, Program) pairs, packs them into batches with short
shared schedules (`batching.py`), runs each batch through `Executor.generate` (greedy, KV-cached, one cache
slot per program step, stop rules on device) and turns every row's text into a reward with `verify`.

How prompts are built and answers checked is passed in (`prompt_fn`, `verify_fn`), so the scorer is tested on
tiny random models; `LLMScorer.for_math` wires in the data package (the prompt and stop rules of the
evaluation, `\\boxed{}` answers checked with math-verify). `TaskScorer` goes one step further and runs pairs
through `polar_jax.program_eval.run_programs`, the evaluation's own path (multiple-choice log-likelihood
included); the pipeline uses it. (`LLMScorer.for_math` scores multiple-choice sets by generation.)

Determinism: a row's greedy tokens are a function of its prompt and program, but float arithmetic can differ
between batch shapes, so in rare near-ties the same pair can decode differently in another batch. With
`per_question=True` a batch never mixes questions, so a restarted search sees exactly the batches (and results)
of the uninterrupted one; the default packs across questions for throughput.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from polar_jax.programs import Program
from polar_jax.programs.executor import Executor, StopRule, executor_for
from polar_jax.programs.batching import plan_batches
from polar_jax.search.rewards import ScoredProgram


@dataclasses.dataclass
class ScorerStats:
  """Counters over the scorer's life: what the device did."""
  calls: int = 0
  batches: int = 0
  rows: int = 0
  row_steps: int = 0  # Sum of program lengths of scored rows.
  schedule_steps: int = 0  # Sum over batches of rows x merged schedule length (what was executed).
  tokens: int = 0
  seconds: float = 0.0

  @property
  def schedule_utilization(self) -> float:
    return self.row_steps / self.schedule_steps if self.schedule_steps else 0.0


class LLMScorer:
  """Scores (question, program) pairs by running the model.

  Args:
    model: a loaded `polar_jax.models.Model`.
    examples: the question list given to `run_search` (pair indexes refer to it).
    prompt_fn: example -> prompt text (chat template applied; the executor adds no special tokens).
    verify_fn: (generated text, example) -> (extracted answer or None, correct).
    max_new_tokens: generation budget per row (the paper: 50).
    stop: the executor's stop rule (default: end-of-sequence tokens).
    max_batch: rows per device batch.
    max_waste: schedule slack allowed when packing different programs (`batching.plan_batches`).
    per_question: never mix questions in a batch (exact restart reproducibility; see module docstring).
    executor: reuse an existing executor (default: the model's shared one).
  """

  def __init__(self, model, examples: Sequence[Any], *, prompt_fn: Callable[[Any], str],
               verify_fn: Callable[[str, Any], tuple[str | None, bool]], max_new_tokens: int = 50,
               stop: StopRule | None = None, max_batch: int = 32, max_waste: float = 0.25,
               per_question: bool = False, executor: Executor | None = None):
    self.model = model
    self.examples = examples
    self.prompt_fn = prompt_fn
    self.verify_fn = verify_fn
    self.max_new_tokens = int(max_new_tokens)
    self.stop = stop
    self.max_batch = int(max_batch)
    self.max_waste = float(max_waste)
    self.per_question = bool(per_question)
    self.executor = executor if executor is not None else executor_for(model)
    self.depth = int(model.config.num_layers)
    self.stats = ScorerStats()
    self.prompt_cfg = None  # Set by `for_math`.
    self._prompts: dict[int, str] = {}

  @classmethod
  def for_math(cls, model, examples: Sequence[Any], prompt_cfg: Any = None, *,
               few_shot_examples: Sequence[Any] = (), **kwargs) -> LLMScorer:
    """The evaluation's prompt, stop rule and answer checking from `polar_jax.data` (kwargs go to `__init__`).

    Args:
      prompt_cfg: a `polar_jax.data.PromptConfig`; default `preset_for_model(model.name)`.
      few_shot_examples: candidates when the config asks for few-shot turns (`polar_jax.data.draw_few_shot`).
    """
    from polar_jax import data  # Deferred: the search core does not need the data package.

    cfg = prompt_cfg if prompt_cfg is not None else data.preset_for_model(model.name)

    def prompt_fn(example):
      return data.render_prompt(example, cfg, model.tokenizer, few_shot_examples)

    def verify_fn(text, example):
      return data.score_generation(text, example, cfg.answer_format, assistant_prefix=cfg.assistant_prefix)

    kwargs.setdefault("stop", StopRule(**data.device_stop_kwargs(cfg.answer_format, cfg.assistant_prefix)))
    scorer = cls(model, examples, prompt_fn=prompt_fn, verify_fn=verify_fn, **kwargs)
    scorer.prompt_cfg = cfg
    return scorer

  def prompt(self, index: int) -> str:
    if index not in self._prompts:
      self._prompts[index] = self.prompt_fn(self.examples[index])
    return self._prompts[index]

  def score(self, pairs: Sequence[tuple[int, Program]]) -> list[ScoredProgram]:
    start = time.perf_counter()
    out: list[ScoredProgram | None] = [None] * len(pairs)
    plan = plan_batches([(i, p.ids) for i, p in pairs], self.max_batch, max_waste=self.max_waste,
                        per_question=self.per_question)
    for batch in plan:
      indexes = [pairs[j][0] for j in batch]
      programs = [pairs[j][1] for j in batch]
      result = self.executor.generate([self.prompt(i) for i in indexes], programs, self.max_new_tokens,
                                      stop=self.stop)
      for row, j in enumerate(batch):
        answer, correct = self.verify_fn(result.texts[row], self.examples[indexes[row]])
        out[j] = ScoredProgram(reward=1.0 if correct else 0.0, answer=answer,
                               layers=int(result.layers_executed[row]))
      self.stats.batches += 1
      self.stats.rows += len(batch)
      self.stats.row_steps += sum(len(p) for p in programs)
      self.stats.schedule_steps += len(batch) * int(result.schedule_length)
      self.stats.tokens += int(result.num_generated.sum())
    self.stats.calls += 1
    self.stats.seconds += time.perf_counter() - start
    return out  # type: ignore[return-value]


class TaskScorer:
  """Scores pairs exactly as the evaluation runs them: `polar_jax.program_eval.run_programs` with a TaskConfig.

  The same prompt rendering (few-shot turns, BOS rule), stop rule and answer check as every evaluation row, and
  multiple-choice questions scored by the options' log-likelihood under the program when the task says
  `choice_scoring="loglik"`. This is the scorer the pipeline uses.

  Args:
    model: a loaded model; examples: the `polar_jax.data.Example` list given to `run_search`.
    task: a `polar_jax.program_eval.TaskConfig`.
    max_batch, per_question, executor: as `run_programs`.
  """

  def __init__(self, model, examples: Sequence[Any], task: Any, *, max_batch: int = 32, per_question: bool = False,
               executor: Executor | None = None):
    self.model = model
    self.examples = examples
    self.task = task
    self.max_batch = int(max_batch)
    self.per_question = bool(per_question)
    self.executor = executor if executor is not None else executor_for(model)
    self.depth = int(model.config.num_layers)
    self.stats = ScorerStats()

  def score(self, pairs: Sequence[tuple[int, Program]]) -> list[ScoredProgram]:
    from polar_jax.program_eval import run_programs  # Deferred: the search core does not need the data package.
    start = time.perf_counter()
    runs = run_programs(self.model, self.examples, list(pairs), self.task, max_batch=self.max_batch,
                        executor=self.executor, per_question=self.per_question)
    self.stats.calls += 1
    self.stats.rows += len(runs)
    self.stats.row_steps += sum(len(p) for _, p in pairs)
    self.stats.tokens += sum(r.generated_tokens for r in runs)
    self.stats.seconds += time.perf_counter() - start
    return [ScoredProgram(reward=1.0 if r.correct else 0.0, answer=r.answer, layers=r.layers) for r in runs]
