"""The project's JSON contracts: the search record (one line of a search output) and the run record (one line of
`program_eval`'s records.jsonl). Light: stdlib and numpy only.

Search record layout (key order fixed by `RECORD_KEYS`):

  id, question, gold, level, subject   the example (level / subject may be null)
  depth                                the model's layer count D
  initial_score, initial_answer        reward and answer of the full program (simulation 1)
  valid   [{program, visits, answer}]  programs with reward > VALID_THRESHOLD, sorted by (length, ids)
  invalid [{program, visits, answer}]  the other scored programs, same order
  simulations, evaluations             simulations run; distinct programs scored (= len(valid + invalid))
  layers                               layer executions the scorer reported, summed over evaluations
  seconds                              wall time from the question's start to its end (shared device time)
  seed, config                         the search's seed and `SearchConfig.to_json()`

Records imported from other tools may hold null in visits / answer / simulations / layers / seconds / seed /
config / initial_score. Keys this layout does not name are kept (`extra`) and written back after the others,
so `SearchRecord.from_json(x).to_json() == x`, key order included, for every record the search writes.
Values are kept as read (no number is converted), for the same reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

VALID_THRESHOLD = 0.5  # A program is valid for a question when its reward exceeds this (rewards are 0 / 1).

RECORD_KEYS = ("id", "question", "gold", "level", "subject", "depth", "initial_score", "initial_answer", "valid",
               "invalid", "simulations", "evaluations", "layers", "seconds", "seed", "config")
ENTRY_KEYS = ("program", "visits", "answer")


@dataclasses.dataclass(frozen=True)
class ProgramEntry:
  """One scored program of a search record: its layer ids, the tree visits that ended at it, its answer."""
  program: tuple[int, ...]
  visits: int | None = None
  answer: str | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Unknown keys, kept verbatim.

  def __post_init__(self):
    object.__setattr__(self, "program", tuple(int(i) for i in self.program))

  def to_json(self) -> dict[str, Any]:
    return {"program": list(self.program), "visits": self.visits, "answer": self.answer, **self.extra}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> ProgramEntry:
    return cls(tuple(obj["program"]), obj.get("visits"), obj.get("answer"),
               {k: v for k, v in obj.items() if k not in ENTRY_KEYS})


def _entries(items: Sequence[ProgramEntry | Sequence[int]]) -> tuple[ProgramEntry, ...]:
  return tuple(e if isinstance(e, ProgramEntry) else ProgramEntry(tuple(e)) for e in items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchRecord:
  """One searched question (see the module docstring for the fields).

  `valid` / `invalid` hold `ProgramEntry`s; plain layer-id sequences are accepted and wrapped. `evaluations`
  defaults to the number of entries.
  """
  id: str
  question: str
  depth: int
  gold: Any = None
  level: Any = None
  subject: Any = None
  initial_score: float | None = None
  initial_answer: str | None = None
  valid: tuple[ProgramEntry, ...] = ()
  invalid: tuple[ProgramEntry, ...] = ()
  simulations: int | None = None
  evaluations: int | None = None
  layers: int | None = None
  seconds: float | None = None
  seed: int | None = None
  config: Mapping[str, Any] | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Unknown keys, kept verbatim.

  def __post_init__(self):
    object.__setattr__(self, "valid", _entries(self.valid))
    object.__setattr__(self, "invalid", _entries(self.invalid))
    if self.evaluations is None:
      object.__setattr__(self, "evaluations", len(self.valid) + len(self.invalid))

  @property
  def valid_programs(self) -> tuple[tuple[int, ...], ...]:
    return tuple(e.program for e in self.valid)

  @property
  def invalid_programs(self) -> tuple[tuple[int, ...], ...]:
    return tuple(e.program for e in self.invalid)

  def to_json(self) -> dict[str, Any]:
    out = {k: getattr(self, k) for k in RECORD_KEYS}
    out["valid"] = [e.to_json() for e in self.valid]
    out["invalid"] = [e.to_json() for e in self.invalid]
    return out | dict(self.extra)

  @classmethod
  def from_json(cls, obj: Any) -> SearchRecord:
    """Reads one record (a parsed JSON object); raises ValueError saying why `obj` is not one."""
    reason = search_record_problem(obj)
    if reason is not None:
      raise ValueError(reason)
    fields = {k: obj[k] for k in RECORD_KEYS}
    fields["valid"] = tuple(ProgramEntry.from_json(e) for e in obj["valid"])
    fields["invalid"] = tuple(ProgramEntry.from_json(e) for e in obj["invalid"])
    return cls(**fields, extra={k: v for k, v in obj.items() if k not in RECORD_KEYS})


def _is_json_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def search_record_problem(obj: Any) -> str | None:
  """Why `obj` (a parsed JSON value) is not a search record, or None when it is one."""
  if not isinstance(obj, Mapping):
    return f"expected a JSON object, got {type(obj).__name__}"
  missing = [k for k in RECORD_KEYS if k not in obj]
  if missing:
    return f"missing keys {missing}"
  if not isinstance(obj["id"], str) or not obj["id"]:
    return f"'id' must be a non-empty string, got {obj['id']!r}"
  if not isinstance(obj["question"], str):
    return "'question' must be a string"
  depth = obj["depth"]
  if not _is_json_int(depth) or depth < 1:
    return f"'depth' must be a positive integer, got {depth!r}"
  if obj["initial_score"] is not None and not _is_num(obj["initial_score"]):
    return f"'initial_score' must be a number or null, got {obj['initial_score']!r}"
  for key in ("simulations", "layers", "seed"):
    if obj[key] is not None and (not _is_json_int(obj[key]) or obj[key] < 0):
      return f"{key!r} must be a non-negative integer or null, got {obj[key]!r}"
  if not _is_json_int(obj["evaluations"]) or obj["evaluations"] < 0:
    return f"'evaluations' must be a non-negative integer, got {obj['evaluations']!r}"
  if obj["seconds"] is not None and not _is_num(obj["seconds"]):
    return f"'seconds' must be a number or null, got {obj['seconds']!r}"
  if obj["config"] is not None and not isinstance(obj["config"], Mapping):
    return "'config' must be an object or null"
  seen = set()
  for key in ("valid", "invalid"):
    entries = obj[key]
    if not isinstance(entries, list):
      return f"{key!r} must be a list"
    for number, entry in enumerate(entries):
      where = f"{key}[{number}]"
      if not isinstance(entry, Mapping) or "program" not in entry:
        return f"{where} must be an object with a 'program'"
      program = entry["program"]
      if (not isinstance(program, list) or not program
          or not all(_is_json_int(x) and 0 <= x < depth for x in program)):
        return f"{where}.program must be a non-empty list of layer ids in 0..{depth - 1}"
      if tuple(program) in seen:
        return f"{where}.program {program} appears twice"
      seen.add(tuple(program))
      visits = entry.get("visits")
      if visits is not None and (not _is_json_int(visits) or visits < 0):
        return f"{where}.visits must be a non-negative integer or null"
      answer = entry.get("answer")
      if answer is not None and not isinstance(answer, str):
        return f"{where}.answer must be a string or null"
  return None


# --- program_eval's run record -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """One (question, program) run.

  Attributes:
    id: the question's `Example.id`.
    program: the layer ids that ran.
    text: the generated continuation (after the prompt and assistant prefix); for log-likelihood scoring, the
      chosen option's text.
    answer: the extracted answer (an option letter for log-likelihood scoring), or None.
    correct: whether `answer` matches the gold answer.
    layers: layer executions spent (program length x passes: prefill + decode steps, or one prefill per option).
    generated_tokens: tokens generated (the stop token included); 0 for log-likelihood scoring.
    seconds: this row's share of its batch's wall time.
    answer_format: "boxed", "last_number" or "choice_loglik".
    decided_by: "generate" (generated, then verified), "one_pass" (decided exactly by one prefill of the
      canonical gold completion, `program_eval.one_pass`), or "loglik" (options compared by log-likelihood).
    gold_logprob: log-probability of the canonical gold completion under the program, when a one-pass
      prefill computed it (None otherwise): a graded signal beside the 0/1 verdict.
    answer_logprob: the model's confidence in the answer it wrote, without the gold: the mean log-probability
      of the reply's tokens up to and including the answer's last token (`program_eval.confidence`); None
      where the reply is not known token by token (a one-pass negative) or has no answer.
  """
  id: str
  program: tuple[int, ...]
  text: str
  answer: str | None
  correct: bool
  layers: int
  generated_tokens: int
  seconds: float
  answer_format: str
  decided_by: str = "generate"
  gold_logprob: float | None = None
  answer_logprob: float | None = None

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["program"] = list(self.program)
    return out

  @classmethod
  def from_json(cls, obj: Any) -> RunRecord:
    """Reads `to_json`'s dict back; raises ValueError naming what is missing or mistyped."""
    if not isinstance(obj, Mapping):
      raise ValueError(f"a run record must be a JSON object, got {type(obj).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    optional = {"decided_by", "gold_logprob", "answer_logprob"}  # absent in records written before they existed
    missing = [n for n in names if n not in obj and n not in optional]
    unknown = sorted(set(obj) - set(names))
    if missing or unknown:
      raise ValueError(f"run record has missing keys {missing} / unknown keys {unknown}")
    checks = {"id": isinstance(obj["id"], str), "text": isinstance(obj["text"], str),
              "answer": obj["answer"] is None or isinstance(obj["answer"], str),
              "correct": isinstance(obj["correct"], bool), "answer_format": isinstance(obj["answer_format"], str),
              "program": isinstance(obj["program"], list) and all(is_int(x) for x in obj["program"]),
              "layers": is_int(obj["layers"]), "generated_tokens": is_int(obj["generated_tokens"]),
              "seconds": isinstance(obj["seconds"], (int, float)) and not isinstance(obj["seconds"], bool),
              "decided_by": isinstance(obj.get("decided_by", ""), str),
              "gold_logprob": obj.get("gold_logprob") is None or (isinstance(obj["gold_logprob"], (int, float))
                                                                  and not isinstance(obj["gold_logprob"], bool)),
              "answer_logprob": obj.get("answer_logprob") is None or (
                  isinstance(obj["answer_logprob"], (int, float)) and not isinstance(obj["answer_logprob"], bool))}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
      raise ValueError(f"run record fields {bad} have the wrong type")
    return cls(**{**obj, "program": tuple(obj["program"]), "seconds": float(obj["seconds"])})


def is_int(x: Any) -> bool:
  """A Python or NumPy integer, not a bool."""
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
