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
  seconds                              the question's share of the search's wall time (`search.mcts`: each
                                       round's time split over its questions by the layers each ran in it)
  seed, config                         the search's seed; `SearchConfig.to_json()` plus how the driver batched
                                       (`DRIVER_KEYS`: max_batch, max_active, per_question; absent in old records)

Records imported from other tools may hold null in visits / answer / simulations / layers / seconds / seed /
config / initial_score. Keys this layout does not name are kept (`extra`) and written back after the others,
so `SearchRecord.from_json(x).to_json() == x`, key order included, for every record the search writes.
Values are kept as read (no number is converted), for the same reason.

The PoLar release's `merged_mcts_samples.json` (and RE-PoLar's files of the same layout) is the other contract
read here: `release_samples` lists a file's samples, `read_release_sample` checks and reads one
(`ReleaseSample`), `release_sample_lines` says on which line each starts (for messages). Both the search's
importer (`search.interchange`) and the predictor's supervision reader use them, so they agree on every field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

VALID_THRESHOLD = 0.5  # A program is valid for a question when its reward exceeds this (rewards are 0 / 1).

RECORD_KEYS = ("id", "question", "gold", "level", "subject", "depth", "initial_score", "initial_answer", "valid",
               "invalid", "simulations", "evaluations", "layers", "seconds", "seed", "config")
ENTRY_KEYS = ("program", "visits", "answer")
# How the search driver batched a record's question: with the same tree config, equal values make a resumed run
# bit-identical to an uninterrupted one (`search.scoring`); a record's `config` holds them next to the tree's.
DRIVER_KEYS = ("max_batch", "max_active", "per_question")


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


def short_repr(value: Any, limit: int = 40) -> str:
  """repr(value), cut to `limit` characters with "..." (for messages)."""
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."


def is_finite_number(x: Any) -> bool:
  """A JSON number (not a bool) that is a finite float (an integer too large for a float is not)."""
  if not _is_num(x):
    return False
  try:
    return math.isfinite(float(x))
  except OverflowError:
    return False


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
  if obj["initial_answer"] is not None and not isinstance(obj["initial_answer"], str):
    return f"'initial_answer' must be a string or null, got {type(obj['initial_answer']).__name__}"
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


# --- the PoLar release's sample layout ------------------------------------------------------------------------


class ReleaseFieldError(ValueError):
  """A field of one release sample is missing or mistyped. `field` names it (dotted, list positions in [])."""

  def __init__(self, field: str, problem: str):
    self.field = field
    super().__init__(f"field {field}: {problem}" if field else problem)


@dataclasses.dataclass(frozen=True)
class ReleaseSample:
  """One sample of a release file, checked (see `read_release_sample` for where each field comes from).

  `valid` / `invalid` are the paths as lists of layer ids, in file order (duplicates kept); `initial_score`,
  `gold`, `sample_info` and `search_trajectory` are None where the sample has none.
  """
  id: str
  question: str
  gold: Any
  level: Any
  subject: Any
  initial_score: float | None
  valid: tuple[tuple[int, ...], ...]
  invalid: tuple[tuple[int, ...], ...]
  sample_info: Mapping[str, Any] | None = None
  search_trajectory: list[Any] | None = None


def release_samples(data: Any) -> list[tuple[str | None, Any]]:
  """The (key, sample) pairs of a parsed release file, in file order.

  Layouts: `{"samples": [...]}` (the release; other top-level keys are its run header and are ignored), a bare
  list (key None), or an object of samples keyed by question id (also under "samples"). Raises ValueError for
  anything else. The samples themselves are not checked here.
  """
  if isinstance(data, Mapping) and "samples" in data:
    data = data["samples"]
  if isinstance(data, list):
    return [(None, sample) for sample in data]
  if isinstance(data, Mapping):
    return [(str(key), sample) for key, sample in data.items()]
  raise ValueError(f"expected the release's layout: {{\"samples\": [sample, ...]}}, a list of samples or an object "
                   f"of samples keyed by id, got {_kind(data)}")


def _kind(value: Any) -> str:
  names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
           float: "a number", type(None): "null"}
  return next((name for t, name in names.items() if type(value) is t),
              "an object" if isinstance(value, Mapping) else type(value).__name__)


def release_sample_id(sample: Mapping[str, Any], key: str | None, number: int) -> str:
  """A sample's question id: its `id`, `query_id` (the release and RE-PoLar), `sample_info.query_id` or
  `sample_info.id`, the first present; else the key it is stored under; else `sample-<number, 6 digits>`."""
  info = sample.get("sample_info")
  info = info if isinstance(info, Mapping) else {}
  for field, value in (("id", sample.get("id")), ("query_id", sample.get("query_id")),
                       ("sample_info.query_id", info.get("query_id")), ("sample_info.id", info.get("id"))):
    if value is None or value == "":
      continue
    if isinstance(value, bool) or not isinstance(value, (str, int)):
      raise ReleaseFieldError(field, f"a question id must be a string or an integer, got {_kind(value)}")
    return str(value)
  return key if key else f"sample-{number:06d}"


def _layer_ids(obj: Any, depth: int, field: str) -> tuple[int, ...]:
  """A path: a list of layer ids in 0..depth-1, or an object with the list under "path" (or "program")."""
  if isinstance(obj, Mapping):
    if "path" in obj:
      obj, field = obj["path"], f"{field}.path"
    elif "program" in obj:
      obj, field = obj["program"], f"{field}.program"
    else:
      raise ReleaseFieldError(field, f"a path object needs the key 'path', got keys {sorted(map(str, obj))[:5]}")
  if not isinstance(obj, list):
    raise ReleaseFieldError(field, f"a path must be a list of layer ids, got {_kind(obj)}")
  if not obj:
    raise ReleaseFieldError(field, "empty path (a program runs at least one layer)")
  for position, x in enumerate(obj):
    if not _is_json_int(x):
      raise ReleaseFieldError(f"{field}[{position}]", f"a layer id must be an integer, got {_kind(x)}")
    if not 0 <= x < depth:
      raise ReleaseFieldError(f"{field}[{position}]", f"layer id {x} is outside 0..{depth - 1} (is {depth} the "
                                                      "model's depth?)")
  return tuple(obj)


def release_paths(sample: Mapping[str, Any], key: str, depth: int) -> tuple[tuple[int, ...], ...]:
  """The paths under `key` (absent or null: none), checked for a `depth`-layer model."""
  value = sample.get(key)
  if value is None:
    return ()
  if not isinstance(value, list):
    raise ReleaseFieldError(key, f"must be a list of paths, got {_kind(value)}")
  return tuple(_layer_ids(p, depth, f"{key}[{i}]") for i, p in enumerate(value))


def _first_present(sample: Mapping[str, Any], *fields: str) -> tuple[str | None, Any]:
  """(field, value) of the first dotted field present with a value other than null and ""."""
  for field in fields:
    node: Any = sample
    for part in field.split("."):
      node = node.get(part) if isinstance(node, Mapping) else None
    if node is not None and node != "":
      return field, node
  return None, None


def check_search_trajectory(trajectory: Any, depth: int) -> None:
  """Checks RE-PoLar's `search_trajectory`: a list of `{"path", "parent_path" (null at the root), "reward"}`."""
  if not isinstance(trajectory, list):
    raise ReleaseFieldError("search_trajectory", f"must be a list of visits, got {_kind(trajectory)}")
  for i, visit in enumerate(trajectory):
    where = f"search_trajectory[{i}]"
    if not isinstance(visit, Mapping) or "path" not in visit:
      raise ReleaseFieldError(where, "a visit must be an object with 'path', 'parent_path' and 'reward'")
    _layer_ids(visit["path"], depth, f"{where}.path")
    if visit.get("parent_path") is not None:
      _layer_ids(visit["parent_path"], depth, f"{where}.parent_path")
    reward = visit.get("reward")
    if reward is not None and not _is_num(reward):
      raise ReleaseFieldError(f"{where}.reward", f"must be a number or null, got {_kind(reward)}")


def read_release_sample(sample: Any, depth: int, *, key: str | None = None, number: int = 0) -> ReleaseSample:
  """Checks and reads one release sample for a `depth`-layer model; raises ReleaseFieldError naming the field.

  Fields (the first present wins): id as `release_sample_id`; question: `question`, `sample_info.question`,
  `sample_info.query` (a string; "" when absent, as in RE-PoLar's files, which key questions by id only);
  gold: `gt_ans`, `ground_truth`, `answer`, `sample_info.ground_truth`, `sample_info.answer` (a string or a
  number, kept as read); initial score: `initial_transition_metric`, `initial_score`,
  `evaluation_result.initial_score` (a finite number); paths: `final_valid_transitions`,
  `final_invalid_transitions` (lists of paths); level: `level`, `sample_info.level`, `sample_info.math_level`;
  subject: `subject`, `sample_info.subject`, `sample_info.domain`; `sample_info` (an object) and RE-PoLar's
  `search_trajectory` (the raw visit log: a list of `{"path", "parent_path", "reward"}`, the paths checked,
  kept verbatim). Other keys (the release's `best_transitions`, `trajectories`, ...) are not read.
  """
  if not isinstance(sample, Mapping):
    raise ReleaseFieldError("", f"a sample must be a JSON object, got {_kind(sample)}")
  info = sample.get("sample_info")
  if info is not None and not isinstance(info, Mapping):
    raise ReleaseFieldError("sample_info", f"must be an object, got {_kind(info)}")
  qid = release_sample_id(sample, key, number)
  field, question = _first_present(sample, "question", "sample_info.question", "sample_info.query")
  if question is None:
    question = ""
  elif not isinstance(question, str):
    raise ReleaseFieldError(field, f"the question must be a string, got {_kind(question)}")
  field, gold = _first_present(sample, "gt_ans", "ground_truth", "answer", "sample_info.ground_truth",
                               "sample_info.answer")
  if gold is not None and (isinstance(gold, bool) or not isinstance(gold, (str, int, float))):
    raise ReleaseFieldError(field, f"the gold answer must be a string or a number, got {_kind(gold)}")
  field, score = _first_present(sample, "initial_transition_metric", "initial_score",
                                "evaluation_result.initial_score")
  if score is not None and not is_finite_number(score):
    raise ReleaseFieldError(field, f"the full program's score must be a finite number, got {short_repr(score)}")
  trajectory = sample.get("search_trajectory")
  if trajectory is not None:
    check_search_trajectory(trajectory, depth)
  return ReleaseSample(
      id=qid, question=question, gold=gold,
      level=_first_present(sample, "level", "sample_info.level", "sample_info.math_level")[1],
      subject=_first_present(sample, "subject", "sample_info.subject", "sample_info.domain")[1],
      initial_score=None if score is None else float(score),
      valid=release_paths(sample, "final_valid_transitions", depth),
      invalid=release_paths(sample, "final_invalid_transitions", depth),
      sample_info=info, search_trajectory=trajectory)


def release_sample_lines(text: str) -> list[int]:
  """The line (1-based) on which each sample of a release file's text starts, in `release_samples` order.

  For messages only: it parses the text again, so call it when reporting an error. The text must be valid
  JSON; a layout `release_samples` refuses gives [].
  """
  decoder = json.JSONDecoder()

  def skip(i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
      i += 1
    return i

  def members(i: int) -> list[tuple[Any, int]]:
    """(key or None, start) of each member of the array / object starting at text[i]."""
    closing = "]" if text[i] == "[" else "}"
    out, i = [], skip(i + 1)
    while i < len(text) and text[i] != closing:
      key = None
      if closing == "}":
        key, i = decoder.raw_decode(text, i)
        i = skip(skip(i) + 1)  # past the ':'
      _, end = decoder.raw_decode(text, i)
      out.append((key, i))
      i = skip(end)
      if i < len(text) and text[i] == ",":
        i = skip(i + 1)
    return out

  try:
    start = skip(0)
    if start >= len(text) or text[start] not in "[{":
      return []
    top, keyed = members(start), text[start] == "{"
    if keyed:
      inner = [s for k, s in top if k == "samples"]
      if inner and text[inner[-1]] in "[{":
        top, keyed = members(inner[-1]), text[inner[-1]] == "{"
      elif inner:
        return []
    positions = [s for _, s in top]
  except (ValueError, IndexError):
    return []
  if keyed and len({k for k, _ in top}) != len(top):  # Repeated keys: json keeps the last value.
    positions = list({k: s for k, s in top}.values())
  line_at, line, at = {}, 1, 0
  for pos in sorted(set(positions)):
    line += text.count("\n", at, pos)
    at = pos
    line_at[pos] = line
  return [line_at[pos] for pos in positions]
