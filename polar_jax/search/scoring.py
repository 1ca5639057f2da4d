"""The LLM scorer: (question, program) pairs run and scored exactly as the evaluation runs them.

`TaskScorer.score` receives a round's (question index, Program) pairs and hands them to
`polar_jax.program_eval.run_programs` with the search's `TaskConfig`: the same prompt rendering (few-shot
turns, BOS rule), schedule-sharing batches (`polar_jax.programs.batching`), greedy KV-cached generation under
the task's on-device stop rule and answer check as every evaluation row, and multiple-choice questions scored
by the options' log-likelihood under the program when the task says `choice_scoring="loglik"`. Every pair's
reward is 1.0 when its answer is correct, else 0.0.

Determinism: a row's greedy tokens are a function of its prompt and program, but float arithmetic can differ
between batch shapes, so in rare near-ties the same pair can decode differently in another batch. With
`per_question=True` a batch never mixes questions, so a restarted search sees exactly the batches (and results)
of the uninterrupted one; the default packs across questions for throughput.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from polar_jax.programs import Program
from polar_jax.programs.executor import Executor, executor_for
from polar_jax.programs.schedule import make_schedule
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


class TaskScorer:
  """Scores pairs exactly as the evaluation runs them: `polar_jax.program_eval.run_programs` with a TaskConfig.

  This is the scorer of the pipeline, the search command line and the search benchmark.

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

  def _count_batch(self, records) -> None:
    programs = [Program(r.program, self.depth) for r in records]
    self.stats.batches += 1
    self.stats.schedule_steps += len(records) * make_schedule(programs, quantum=1).length

  def score(self, pairs: Sequence[tuple[int, Program]]) -> list[ScoredProgram]:
    from polar_jax.program_eval import run_programs  # Deferred: the search core does not need the data package.
    start = time.perf_counter()
    runs = run_programs(self.model, self.examples, list(pairs), self.task, max_batch=self.max_batch,
                        executor=self.executor, per_question=self.per_question, on_batch=self._count_batch)
    self.stats.calls += 1
    self.stats.rows += len(runs)
    self.stats.row_steps += sum(len(p) for _, p in pairs)
    self.stats.tokens += sum(r.generated_tokens for r in runs)
    self.stats.seconds += time.perf_counter() - start
    return [ScoredProgram(reward=1.0 if r.correct else 0.0, answer=r.answer, layers=r.layers,
                          gold_logprob=r.gold_logprob, decided_by=r.decided_by) for r in runs]
