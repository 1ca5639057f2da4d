"""The run loop: (question, program) pairs planned into shared batches, run batch by batch, timed.

Pairs are ordered by prompt length (less left padding), split into generated and log-likelihood rows, and
packed by `polar_jax.programs.batching.plan_batches` (the same program across questions rides together).
A record's `seconds` is its share of its batch's wall time (generation or prefills, and scoring).
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Any, Callable, Iterator, Sequence

from polar_jax import data
from polar_jax.program_eval.batches import generate_batch, loglik_batch
from polar_jax.program_eval.one_pass import one_pass_batch
from polar_jax.program_eval.pairs import normalize_pairs
from polar_jax.records import RunRecord, is_int
from polar_jax.program_eval.task import Prompts, TaskConfig
from polar_jax.programs import Program
from polar_jax.programs.batching import plan_batches
from polar_jax.programs.executor import Executor, executor_for


# One-pass rows per completion-scorer call: all candidates of a few questions together, so that their
# programs' common steps are shared (`Executor.score_completions`).
ONE_PASS_ROWS_PER_BATCH = 4


def _one_pass_chunks(pairs, order: list[int], max_batch: int, per_question: bool) -> list[list[int]]:
  """Pair indexes in chunks of about ONE_PASS_ROWS_PER_BATCH x max_batch rows, whole questions together (one
  question per chunk with per_question, so that a chunk's float rounding never depends on other questions)."""
  by_question: dict[int, list[int]] = {}
  for j in order:
    by_question.setdefault(pairs[j][0], []).append(j)
  chunks, current = [], []
  for members in by_question.values():
    if current and (per_question or len(current) + len(members) > ONE_PASS_ROWS_PER_BATCH * max_batch):
      chunks.append(current)
      current = []
    current += members
  return chunks + ([current] if current else [])


def sample_seed(seed: int, j: int) -> int:
  """The seed of sample j of a k-sample baseline (sample j of every question comes from one call)."""
  return int(seed) + 1009 * int(j)


def sampling_seeds(examples: Sequence[data.Example], pairs: Sequence[tuple[int, Program]], seed: int) -> list[int]:
  """One sampling seed per pair: a hash of (seed, question id, program, repeat number), where the repeat number
  counts earlier copies of the same (question, program) in `pairs` (so copies draw different samples)."""
  seen: dict[tuple[str, tuple[int, ...]], int] = {}
  out = []
  for i, program in pairs:
    key = (str(examples[i].id), tuple(program.ids))
    repeat = seen.get(key, 0)
    seen[key] = repeat + 1
    text = f"{int(seed)}|{key[0]}|{','.join(map(str, key[1]))}|{repeat}"
    out.append(zlib.crc32(text.encode("utf-8")))
  return out


def iter_runs(model, examples: Sequence[data.Example], pairs: list[tuple[int, Program]], task: TaskConfig, *,
              temperature: float, seed: int, max_batch: int, progress: bool | str, executor: Executor | None,
              per_question: bool = False, share_prefixes: bool = True, step_cost: float = 0.0,
              answers: bool = False, share_contexts: bool = True) -> Iterator[list[tuple[int, RunRecord]]]:
  """Yields, batch by batch, (pair index, record) for every pair (arguments as in `run_programs`).

  With `task.reward == "teacher_forced"` and greedy decoding, the generated rows first go through one-pass
  chunks (whole questions together); the pairs left undecided are then planned and generated as usual.
  """
  if executor is None:
    executor = executor_for(model)
  elif executor.model is not model:
    raise ValueError("The executor given runs another model; pass executor=None or one built for this model.")
  if not is_int(max_batch) or max_batch < 1:
    raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}.")
  prompts = Prompts(model, examples, task)
  loglik = [task.choice_scoring == "loglik" and examples[i].is_multiple_choice for i, _ in pairs]
  # Prompts with one context (template and few-shot turns) batch together, so that a generated batch computes
  # it once per program (`Executor.prefill_shared`); then similar prompt lengths (less left padding).
  # plan_batches keeps this order within a program.
  def context(i: int) -> tuple[int, ...]:
    return tuple(prompts.ids(i)[:prompts.context_length(i)]) if share_contexts else ()

  order = sorted(range(len(pairs)), key=lambda j: (loglik[j], context(pairs[j][0]), len(prompts.ids(pairs[j][0])), j))
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    # A named bar is a caller's inner bar (the caller prints its own line): it clears itself when done.
    named = isinstance(progress, str)
    bar = tqdm(total=len(pairs), desc=progress if named else "run_programs", unit="run", leave=not named)

  def timed(batch, run):
    start = time.perf_counter()
    scored = run([pairs[j] for j in batch])
    done = [(j, record) for j, record in zip(batch, scored) if record is not None]
    share = (time.perf_counter() - start) / max(len(done), 1)
    if bar is not None:
      bar.update(len(done))
    return [(j, dataclasses.replace(record, seconds=share)) for j, record in done]

  try:
    generated = [j for j in order if not loglik[j]]
    gold: dict[int, float] = {}  # pair index -> the prefill's gold log-probability, kept by generated pairs
    one_pass = task.reward == "teacher_forced" and temperature == 0 and bool(generated)
    if one_pass:
      undecided = []
      for chunk in _one_pass_chunks(pairs, generated, max_batch, per_question):
        scored: dict[int, float] = {}
        decided = timed(chunk, lambda rows: one_pass_batch(executor, prompts, rows, task,
                                                           share_prefixes=share_prefixes, positives_only=answers,
                                                           gold_logprobs=scored, share_contexts=share_contexts,
                                                           keep_prompts=True))
        gold.update({chunk[r]: v for r, v in scored.items()})
        done = {j for j, _ in decided}
        undecided += [j for j in chunk if j not in done]
        if decided:
          yield decided
      keep = set(undecided)
      generated = [j for j in generated if j in keep]
    pair_seeds = sampling_seeds(examples, pairs, seed) if temperature > 0 else [0] * len(pairs)
    batches = []
    for group in (generated, [j for j in order if loglik[j]]):
      plan = plan_batches([(pairs[j][0], pairs[j][1].ids) for j in group], max_batch, per_question=per_question,
                          step_cost=step_cost, quantum=executor.schedule_quantum)
      batches += [[group[k] for k in b] for b in plan]
    for number, batch in enumerate(batches):
      if loglik[batch[0]]:
        yield timed(batch, lambda rows: loglik_batch(executor, prompts, rows))
      else:
        seeds = [pair_seeds[j] for j in batch]
        # Pairs the one pass left undecided continue contexts whose keys / values it has just computed.
        records = timed(batch, lambda rows: generate_batch(executor, prompts, rows, task, temperature, seeds,
                                                           kept_contexts=one_pass and share_contexts))
        yield [(j, dataclasses.replace(r, gold_logprob=gold[j]) if j in gold else r) for j, r in records]
  finally:
    executor.drop_prompt_states()  # what no generated batch took (a batch whose contexts did not fit)
    if bar is not None:
      bar.close()


def run_programs(model, examples: Sequence[data.Example], programs: Any, task: TaskConfig, *,
                 temperature: float = 0.0, seed: int = 0, max_batch: int = 32, progress: bool | str = False,
                 executor: Executor | None = None, per_question: bool = False, share_prefixes: bool = True,
                 step_cost: float = 0.0, answers: bool = False, share_contexts: bool = True,
                 on_batch: Callable[[list[RunRecord]], None] | None = None) -> list[RunRecord]:
  """Runs (question, program) pairs and scores them; returns one record per pair, in input order.

  Args:
    model: a loaded `polar_jax.models.Model`.
    examples: the questions.
    programs: one Program (or id list) per example, a single one for all, or (example index, Program) pairs.
    task: prompt, token budget, multiple-choice scoring and how greedy pairs are decided (`task.reward`:
      "teacher_forced" decides a pair by one prefill where that is exact, `program_eval.one_pass`).
    temperature: 0 for greedy decoding; > 0 samples. Each pair's sample depends on `seed`, its question id and
      its program only (`sampling_seeds`): not on the batch it shares, `max_batch`, or which pairs were resumed.
    max_batch: rows per device batch (pairs sharing a program are packed first, `plan_batches`).
    progress: show a tqdm bar; a string is its label, and a labelled bar clears itself when done (the caller
      names what ran in its own line).
    executor: reuse an executor (default: the model's shared one, so compiles are reused).
    per_question: never batch two questions together (batch shapes, and so float rounding, then do not depend
      on which other questions are pending: what a search needs to reproduce itself exactly after a restart).
    share_prefixes: with the one-pass reward, rows of one question share their programs' common steps.
    share_contexts: the prompts' question-independent tokens (`Prompts.context_length`: template, few-shot
      turns) are computed once per program: kept across calls by the one-pass scorer
      (`completions.ContextCache`), and generated batches group prompts by context. The results are the same.
    step_cost: a schedule step's fixed cost (weight reads, dispatch) in units of one row's step; above 0,
      batches of unlike programs are coalesced where that cost model says it pays (`plan_batches`). 0 (the
      default) keeps the plan that bounds each batch's schedule by `max_waste`, as the search relies on.
    answers: every record's reply known in full (its answer and `answer_logprob`): with the one-pass reward, only
      pairs it certifies correct are decided by one prefill and every other pair is generated (what answer
      voting and confidence selection need; a one-pass wrong-digit negative knows only a prefix of its reply).
    on_batch: called with each device batch's records as it finishes (e.g. to count batches).
  """
  pairs = normalize_pairs(examples, programs, model.config.num_layers)
  out: list[RunRecord | None] = [None] * len(pairs)
  for batch in iter_runs(model, examples, pairs, task, temperature=temperature, seed=seed, max_batch=max_batch,
                         progress=progress, executor=executor, per_question=per_question,
                         share_prefixes=share_prefixes, step_cost=step_cost, answers=answers,
                         share_contexts=share_contexts):
    for j, record in batch:
      out[j] = record
    if on_batch is not None:
      on_batch([record for _, record in batch])
  return out  # type: ignore[return-value]
