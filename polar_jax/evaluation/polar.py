"""PoLar as an evaluation method: the predictor's top-k programs per question, every one of them run.

`polar_run` decodes the predictor's candidates (encoder + network + beam search, timed as the method's
overhead) and runs them all through the shared execution path (`outcomes.run_ranked`: rank-1 programs timed
on their own, then the rest). pass@1 is the top program's answer, the deployable number.

`trust_search_cache` recomputes a PoLar run the way the reference release scores by default: a decoded program
that the search found valid (invalid) for that same question counts as correct (wrong) without our run's
verdict. It is a labelled comparison row only; in the pipeline the test questions are never searched, so it
equals the PoLar row and reports 0 cache hits.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from polar_jax.data.example import normalize_question
from polar_jax.evaluation.outcomes import MethodRun, run_ranked
from polar_jax.records import SearchRecord


def polar_run(model, examples: Sequence[Any], task, predictor, *, k: int, test_set: str, max_batch: int = 32,
              progress: bool = False, executor=None, warmup: bool = True, method: str = "polar",
              label: str | None = None) -> MethodRun:
  """Decodes the predictor's top-k programs per question (timed: encoder + predictor + beam search) and runs
  them all (rank-1 programs timed on their own). `warmup` first predicts one question untimed (compiles)."""
  depth = model.config.num_layers
  if predictor.config.depth != depth:
    raise ValueError(f"The predictor was trained for a {predictor.config.depth}-layer model, but the model has "
                     f"{depth} layers; train one on this model's search records.")
  if warmup:
    predictor.predict([examples[0].question])
  start = time.perf_counter()
  decoded = predictor.predict([ex.question for ex in examples])
  overhead = time.perf_counter() - start
  ranked = [[c.program for c in d.candidates[:k]] for d in decoded]
  scores = [[c.score for c in d.candidates[:k]] for d in decoded]
  return run_ranked(model, examples, ranked, task, method=method, label=label or f"PoLar (top-{k} predicted programs)",
                    test_set=test_set, scores=scores, overhead_seconds=overhead, max_batch=max_batch,
                    progress=progress, executor=executor,
                    info={"k": k, "empty_programs_dropped": int(sum(d.num_empty for d in decoded)),
                          "decode": dataclasses.asdict(predictor.decode_options)})


def _record_lookup(search_records: Sequence[SearchRecord]) -> Callable[[Any], SearchRecord | None]:
  by_id = {r.id: r for r in search_records}
  by_text = {normalize_question(r.question): r for r in search_records}
  return lambda ex: by_id.get(str(ex.id)) or by_text.get(normalize_question(ex.question))


def trust_search_cache(run: MethodRun, examples: Sequence[Any],
                       search_records: Sequence[SearchRecord]) -> MethodRun:
  """The release's cache-trusting score of a PoLar run: a candidate the search found valid (invalid) for the
  same question counts as correct (wrong) without our run's verdict. Comparison only."""
  find = _record_lookup(search_records)
  valid_hits = invalid_hits = questions = 0
  outcomes = []
  for ex, outcome in zip(examples, run.outcomes, strict=True):
    rec = find(ex)
    if rec is None:
      outcomes.append(outcome)
      continue
    questions += 1
    valid = set(rec.valid_programs)
    invalid = set(rec.invalid_programs)
    cands = []
    for c in outcome.candidates:
      if c.program in valid:
        valid_hits += 1
        c = dataclasses.replace(c, correct=True, source="cache_valid")
      elif c.program in invalid:
        invalid_hits += 1
        c = dataclasses.replace(c, correct=False, source="cache_invalid")
      cands.append(c)
    outcomes.append(dataclasses.replace(outcome, candidates=tuple(cands)))
  return dataclasses.replace(
      run, method=f"{run.method}_trust_search_cache", kind="reference",
      label=f"{run.label}, release protocol: search-cache verdicts trusted (comparison only)",
      outcomes=tuple(outcomes),
      info={**run.info, "searched_questions": questions, "valid_cache_hits": valid_hits,
            "invalid_cache_hits": invalid_hits})
