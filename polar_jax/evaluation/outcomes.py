"""What every evaluated method produces: ranked, already-verified candidates per question, and their cost.

Every method (PoLar, full depth greedy or sampled, ShortGPT, random programs, the search oracles, the router)
ends in the same shape, so one metrics function scores them all the same way:

- `Candidate`: one program run on one question (its answer, verdict and executed layers), with the score that
  ranked it (the predictor's log-probability; None where nothing ranks candidates, e.g. samples);
- `QuestionOutcome`: a question's candidates, best first;
- `MethodRun`: one method on one test set: the outcomes plus the wall seconds spent (ranking overhead, the
  top-1 programs, all candidates), saved as one JSON file so a restarted evaluation reuses it.

`run_ranked` is the shared execution path: it runs every question's rank-1 program in one `run_programs`
call (the deployable cost, timed on its own), then all remaining candidates in a second call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from polar_jax import program_eval
from polar_jax.programs import Program, compact_text


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One program's run on one question.

  Attributes:
    program: the layer ids that ran.
    answer: the extracted answer (None: no answer in the generation).
    correct: the verified verdict (for `source="cache_*"`: the search's verdict, not a run of ours).
    layers: layer executions spent (prefill + decode passes x program length); None when unknown.
    generated_tokens: tokens generated; None when unknown.
    score: what ranked this candidate (higher first), None when nothing did.
    text: the generation (debugging).
    source: "run" (we ran it), "cache_valid" / "cache_invalid" (verdict taken from the search records).
  """
  program: tuple[int, ...]
  answer: str | None
  correct: bool
  layers: int | None = None
  generated_tokens: int | None = None
  score: float | None = None
  text: str = ""
  source: str = "run"

  @property
  def layers_per_token(self) -> float:
    """Layer executions per generated token: the program's length when it was run with a KV cache."""
    if self.layers is None or not self.generated_tokens:
      return float(len(self.program))
    return self.layers / max(self.generated_tokens, 1)

  def to_json(self) -> dict[str, Any]:
    """The fields as JSON, with the program's compact text (`0-9 [10-11]x2 12-29`) next to its layer ids."""
    out = dataclasses.asdict(self)
    out["program"] = list(self.program)
    return {"program": out.pop("program"), "compact": compact_text(self.program), **out}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> Candidate:
    """Reads `to_json`'s dict back (the compact text is derived from the ids, so it is not read)."""
    return cls(program=tuple(int(i) for i in obj["program"]), answer=obj.get("answer"),
               correct=bool(obj["correct"]), layers=obj.get("layers"), generated_tokens=obj.get("generated_tokens"),
               score=obj.get("score"), text=obj.get("text", ""), source=obj.get("source", "run"))

  @classmethod
  def from_run_record(cls, record, score: float | None = None) -> Candidate:
    """From `polar_jax.program_eval.RunRecord` (duck-typed: program, answer, correct, layers, ...)."""
    return cls(program=tuple(int(i) for i in record.program), answer=record.answer, correct=bool(record.correct),
               layers=int(record.layers), generated_tokens=int(record.generated_tokens), score=score,
               text=record.text)


@dataclasses.dataclass(frozen=True)
class QuestionOutcome:
  """A question's ranked candidates (best first; may be empty, e.g. when every decoded program was empty)."""
  id: str
  level: int
  candidates: tuple[Candidate, ...]

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "level": self.level, "candidates": [c.to_json() for c in self.candidates]}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> QuestionOutcome:
    return cls(id=str(obj["id"]), level=int(obj.get("level", 0)),
               candidates=tuple(Candidate.from_json(c) for c in obj["candidates"]))


@dataclasses.dataclass(frozen=True)
class MethodRun:
  """One method on one test set.

  Attributes:
    method: the method's key (`polar`, `full_depth_greedy`, `shortgpt_n4`, ...), unique in a results file.
    label: the human name shown in tables (says what is an oracle and what ran on which split).
    kind: "deployable" (pass@1 is what a user gets), "sampling" (k samples of one program), "oracle" (uses the
      ground truth to pick: only the oracle column is meaningful), "reference" (a re-scoring for comparison).
    test_set: the test set's name.
    outcomes: one per question, in test-set order.
    overhead_seconds: wall time spent choosing programs (encoder + predictor + decoding, router passes).
    top1_seconds: wall time of running every question's rank-1 candidate.
    rest_seconds: wall time of running the remaining candidates.
    compiles: executor compiles during the runs (compile time is inside the seconds).
    info: method details (temperature, removed layers, seeds, cache hits, ...).
  """
  method: str
  label: str
  kind: str
  test_set: str
  outcomes: tuple[QuestionOutcome, ...]
  overhead_seconds: float = 0.0
  top1_seconds: float = 0.0
  rest_seconds: float = 0.0
  compiles: int = 0
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def ids(self) -> list[str]:
    return [o.id for o in self.outcomes]

  def to_json(self) -> dict[str, Any]:
    return {"method": self.method, "label": self.label, "kind": self.kind, "test_set": self.test_set,
            "overhead_seconds": self.overhead_seconds, "top1_seconds": self.top1_seconds,
            "rest_seconds": self.rest_seconds, "compiles": self.compiles, "info": dict(self.info),
            "outcomes": [o.to_json() for o in self.outcomes]}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> MethodRun:
    return cls(method=obj["method"], label=obj["label"], kind=obj["kind"], test_set=obj["test_set"],
               outcomes=tuple(QuestionOutcome.from_json(o) for o in obj["outcomes"]),
               overhead_seconds=float(obj.get("overhead_seconds", 0.0)),
               top1_seconds=float(obj.get("top1_seconds", 0.0)), rest_seconds=float(obj.get("rest_seconds", 0.0)),
               compiles=int(obj.get("compiles", 0)), info=dict(obj.get("info", {})))

  def save(self, path: os.PathLike | str) -> None:
    """Writes the JSON atomically (a killed run never leaves a half-written file that looks finished)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(self.to_json()), encoding="utf-8")
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: os.PathLike | str) -> MethodRun:
    try:
      return cls.from_json(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{path} is not a saved method run ({e}); delete it to recompute that method.") from e


def _executor_compiles(executor) -> int:
  return int(getattr(executor, "compiles", 0)) if executor is not None else 0


def run_pairs(model, examples: Sequence[Any], pairs: Sequence[tuple[int, Program]], task, *,
              temperature: float = 0.0, seed: int = 0, max_batch: int = 32, progress: bool = False,
              executor=None) -> tuple[list, float]:
  """`program_eval.run_programs` on (example index, Program) pairs -> (records in pair order, wall seconds)."""
  if not pairs:
    return [], 0.0
  start = time.perf_counter()
  records = program_eval.run_programs(model, examples, list(pairs), task, temperature=temperature, seed=seed,
                                      max_batch=max_batch, progress=progress, executor=executor)
  seconds = time.perf_counter() - start
  if len(records) != len(pairs):
    raise RuntimeError(f"run_programs returned {len(records)} records for {len(pairs)} pairs.")
  return list(records), seconds


def run_ranked(model, examples: Sequence[Any], ranked: Sequence[Sequence[Program]], task, *, method: str,
               label: str, test_set: str, kind: str = "deployable",
               scores: Sequence[Sequence[float | None]] | None = None, overhead_seconds: float = 0.0,
               temperature: float = 0.0, seed: int = 0, max_batch: int = 32, progress: bool = False,
               executor=None, info: Mapping[str, Any] | None = None) -> MethodRun:
  """Runs each question's ranked programs: all rank-1 programs first (timed alone), then the rest together.

  Args:
    ranked: per question, its candidate programs best first (an empty list gives a question with no
      candidates, which counts as wrong everywhere).
    scores: per question, the candidates' ranking scores (same shape as `ranked`), or None.
    overhead_seconds: time already spent choosing these programs (added to the method's cost).
  """
  if len(ranked) != len(examples):
    raise ValueError(f"Got candidate lists for {len(ranked)} questions but {len(examples)} examples.")
  before = _executor_compiles(executor)
  first = [(i, progs[0]) for i, progs in enumerate(ranked) if progs]
  rest = [(i, p) for i, progs in enumerate(ranked) for p in progs[1:]]
  common = dict(temperature=temperature, seed=seed, max_batch=max_batch, progress=progress, executor=executor)
  first_records, top1_seconds = run_pairs(model, examples, first, task, **common)
  rest_records, rest_seconds = run_pairs(model, examples, rest, task, **common)
  by_question: list[list] = [[] for _ in examples]
  for (i, _), record in zip(first, first_records):
    by_question[i].append(record)
  for (i, _), record in zip(rest, rest_records):
    by_question[i].append(record)
  outcomes = []
  for i, ex in enumerate(examples):
    question_scores = scores[i] if scores is not None else [None] * len(by_question[i])
    candidates = tuple(Candidate.from_run_record(r, None if s is None else float(s))
                       for r, s in zip(by_question[i], question_scores, strict=True))
    outcomes.append(QuestionOutcome(str(ex.id), int(getattr(ex, "level", 0) or 0), candidates))
  return MethodRun(method=method, label=label, kind=kind, test_set=test_set, outcomes=tuple(outcomes),
                   overhead_seconds=float(overhead_seconds), top1_seconds=top1_seconds, rest_seconds=rest_seconds,
                   compiles=_executor_compiles(executor) - before, info=dict(info or {}))
