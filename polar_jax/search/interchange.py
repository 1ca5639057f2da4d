"""Search records <-> the PoLar release's `merged_mcts_samples.json` supervision layout.

The release reads `{"samples": [...]}` (also a bare list, or an object of samples keyed by id), each sample
with `question`, `gt_ans`, `initial_score` / `initial_transition_metric` and `final_valid_transitions` (paths:
lists of layer ids, or objects with the list under "path"), optionally `final_invalid_transitions` (its
evaluation's cache of known-wrong programs). `polar_jax.records.read_release_sample` lists every alias read.

Export writes those fields as plain lists (the release's evaluation cache only reads lists), the record's id
as `query_id` (the key the release and RE-PoLar join on), and keeps the rest of each record (depth, visits and
answers per program, counts, timing, config) under a `polar_jax` key, so that
`from_polar(to_polar(records)) == records` exactly. Samples made by other tools (no `polar_jax` key) import
with nulls where they carry no information; their id comes from `id` / `query_id` / `sample_info.query_id`,
else from the key they are stored under, else their position (`sample-000017`). Their `sample_info` and
RE-PoLar's `search_trajectory` (the raw visit log) are kept as extra record keys and exported back to the
sample's top level.

Every problem is an `InterchangeError` naming the file, the line where the sample starts, the sample and the
field. `space_report` says which imported programs the predictor cannot learn and which exceed the length
limit, as the training stage does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

from polar_jax.errors import UserError
from polar_jax.programs import parse
from polar_jax.records import (ReleaseFieldError, SearchRecord, check_search_trajectory, read_release_sample,
                               release_paths, release_sample_lines, release_samples, search_record_problem,
                               short_repr)

EXTRA_KEY = "polar_jax"
_DIRECT = ("question", "gold", "initial_score", "valid", "invalid")
# Extra record keys that are release fields: exported at the sample's top level, restored from there (last).
_TOP_LEVEL = ("sample_info", "search_trajectory")
_GOLD_TYPES = (None, "str", "int", "float", "bool", "json")


class InterchangeError(UserError, ValueError):
  """A release file (or parsed layout) is not readable as search records; the message says where and why."""


def to_polar(records: Sequence[SearchRecord]) -> dict[str, Any]:
  """The release's layout for `records` (one sample per record, in order)."""
  samples = []
  for number, rec in enumerate(records):
    obj = rec.to_json()
    reason = search_record_problem(obj)
    if reason is not None:
      raise ValueError(f"Record {number} (id {rec.id!r}) is not a search record: {reason}.")
    extra = {k: v for k, v in obj.items() if k not in _DIRECT and k not in _TOP_LEVEL}
    extra["valid"] = [{k: v for k, v in e.items() if k != "program"} for e in obj["valid"]]
    extra["invalid"] = [{k: v for k, v in e.items() if k != "program"} for e in obj["invalid"]]
    gold = rec.gold
    if gold is None:
      extra["gold_type"] = None
    elif type(gold) in (str, int, float, bool):
      extra["gold_type"] = type(gold).__name__  # gt_ans is text in the release.
    else:
      extra["gold_type"], extra["gold"] = "json", gold
    sample = {
        "query_id": rec.id,
        "question": rec.question,
        "gt_ans": "" if gold is None else str(gold),
        "initial_score": rec.initial_score,
        "final_valid_transitions": [list(p) for p in rec.valid_programs],
        "final_invalid_transitions": [list(p) for p in rec.invalid_programs],
    }
    sample.update({k: obj[k] for k in _TOP_LEVEL if k in obj})
    sample[EXTRA_KEY] = extra
    samples.append(sample)
  return {"samples": samples}


def _restore_gold(text: Any, extra: Mapping[str, Any]) -> Any:
  kind = extra.get("gold_type")
  if kind is None:
    return None
  if kind == "json":
    if "gold" not in extra:
      raise ReleaseFieldError(f"{EXTRA_KEY}.gold", "missing (gold_type 'json' keeps the gold answer there)")
    return extra["gold"]
  if not isinstance(kind, str):
    raise ReleaseFieldError(f"{EXTRA_KEY}.gold_type", f"must be one of {list(_GOLD_TYPES)}, got {short_repr(kind)}")
  if not isinstance(text, str):
    raise ReleaseFieldError("gt_ans", f"must be a string, got {type(text).__name__}")
  try:
    if kind == "int":
      return int(text)
    if kind == "float":
      return float(text)
  except ValueError:
    raise ReleaseFieldError("gt_ans", f"{short_repr(text)} is not the {kind} that {EXTRA_KEY}.gold_type says") from None
  if kind == "bool":
    if text not in ("True", "False"):
      raise ReleaseFieldError("gt_ans", f"{short_repr(text)} is not the bool that {EXTRA_KEY}.gold_type says")
    return text == "True"
  return text  # "str", or a type name written by an older export (which kept its text only).


def _entries(sample: Mapping[str, Any], extra: Mapping[str, Any], key: str, field: str,
             depth: int) -> list[dict[str, Any]]:
  paths = release_paths(sample, key, depth)
  entries = extra.get(field)
  if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
    raise ReleaseFieldError(f"{EXTRA_KEY}.{field}", "must be a list of objects (one per path)")
  if len(entries) != len(paths):
    raise ReleaseFieldError(f"{EXTRA_KEY}.{field}", f"has {len(entries)} entries for the {len(paths)} paths of {key}")
  return [{"program": list(p), **e} for p, e in zip(paths, entries)]


def _own_record(sample: Mapping[str, Any], extra: Any) -> dict[str, Any]:
  """A sample `to_polar` wrote: the record back, exactly."""
  if not isinstance(extra, Mapping):
    raise ReleaseFieldError(EXTRA_KEY, "must be an object (polar_jax's own record fields)")
  depth = extra.get("depth")
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ReleaseFieldError(f"{EXTRA_KEY}.depth", f"must be a positive integer, got {short_repr(depth)}")
  for key in ("question", "gt_ans", "initial_score"):
    if key not in sample:
      raise ReleaseFieldError(key, "missing")
  valid = _entries(sample, extra, "final_valid_transitions", "valid", depth)
  invalid = _entries(sample, extra, "final_invalid_transitions", "invalid", depth)
  seen: dict[tuple[int, ...], str] = {}
  for key, entries in (("final_valid_transitions", valid), ("final_invalid_transitions", invalid)):
    for i, e in enumerate(entries):
      first = seen.setdefault(tuple(e["program"]), f"{key}[{i}]")
      if first != f"{key}[{i}]":
        raise ReleaseFieldError(f"{key}[{i}]", f"path {e['program']} is also {first} (a record lists each "
                                               "program once)")
  rec = {k: v for k, v in extra.items() if k not in ("valid", "invalid", "gold_type", "gold")}
  rec.update(question=sample["question"], gold=_restore_gold(sample["gt_ans"], extra),
             initial_score=sample["initial_score"], valid=valid, invalid=invalid)
  for key in _TOP_LEVEL:
    if key in sample:
      if key == "search_trajectory":
        check_search_trajectory(sample[key], depth)
      rec[key] = sample[key]
  return rec


def _foreign_record(sample: Mapping[str, Any], key: str | None, number: int, depth: int) -> dict[str, Any]:
  """A sample another tool wrote (the release, RE-PoLar): the fields it carries, nulls for the rest."""
  s = read_release_sample(sample, depth, key=key, number=number)
  seen: set[tuple[int, ...]] = set()
  valid = _unique(s.valid, seen)
  invalid = _unique(s.invalid, seen)  # Valid wins a conflict.
  full = tuple(range(depth))
  score = s.initial_score
  if score is None:
    score = 1.0 if full in valid else 0.0 if full in invalid else None
  entry = lambda p: {"program": list(p), "visits": None, "answer": None}  # noqa: E731
  rec = {
      "id": s.id, "question": s.question, "gold": s.gold, "level": s.level, "subject": s.subject,
      "depth": depth, "initial_score": score, "initial_answer": None,
      "valid": [entry(p) for p in valid], "invalid": [entry(p) for p in invalid],
      "simulations": None, "evaluations": len(valid) + len(invalid), "layers": None, "seconds": None,
      "seed": None, "config": None,
  }
  if s.sample_info is not None:
    rec["sample_info"] = s.sample_info
  if s.search_trajectory is not None:
    rec["search_trajectory"] = s.search_trajectory
  return rec


def _unique(paths: Sequence[tuple[int, ...]], seen: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
  out = []
  for p in paths:
    if p not in seen:
      seen.add(p)
      out.append(p)
  return out


class _Where:
  """Names a sample in messages: `file, line L (sample N)`; the lines are found only when a message needs them."""

  def __init__(self, path: os.PathLike | str | None, text: str | None):
    self.path, self.text, self._lines = path, text, None

  def file(self) -> str:
    return str(self.path) if self.path is not None else "the release data"

  def __call__(self, number: int, key: str | None) -> str:
    name = f"sample {key!r}" if key is not None else f"sample {number}"
    if self.path is None:
      return name
    if self._lines is None:
      self._lines = release_sample_lines(self.text) if self.text is not None else []
    line = f", line {self._lines[number]}" if number < len(self._lines) else ""
    return f"{self.path}{line} ({name})"


def _from_polar(data: Any, depth: int | None, where: _Where) -> list[SearchRecord]:
  if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
    raise InterchangeError(f"--depth must be a positive integer (the model's layer count), got {depth!r}.")
  try:
    samples = release_samples(data)
  except ValueError as e:
    raise InterchangeError(f"{where.file()}: {e}.") from None
  records: list[SearchRecord] = []
  owner: dict[str, str] = {}
  for number, (key, sample) in enumerate(samples):
    try:
      if isinstance(sample, Mapping) and EXTRA_KEY in sample:
        rec = _own_record(sample, sample[EXTRA_KEY])
      elif depth is None:
        raise InterchangeError(
            f"{where(number, key)}: the sample was not written by polar_jax, so the model's depth is unknown; pass "
            "the model's layer count with --depth (depth= in Python), e.g. --depth 28 for Llama-3.2-3B-Instruct.")
      else:
        rec = _foreign_record(sample, key, number, depth)
    except ReleaseFieldError as e:
      raise InterchangeError(f"{where(number, key)}: {e}.") from None
    reason = search_record_problem(rec)
    if reason is not None:
      raise InterchangeError(f"{where(number, key)}: does not convert to a search record: {reason}.")
    record = SearchRecord.from_json(rec)
    if record.id in owner:
      raise InterchangeError(f"{where(number, key)}: question id {record.id!r} repeats the id of {owner[record.id]}; "
                             "ids must be unique (remove the duplicate sample).")
    owner[record.id] = f"sample {number}" if key is None else f"sample {key!r}"
    records.append(record)
  return records


def from_polar(data: Any, *, depth: int | None = None) -> list[SearchRecord]:
  """Search records from the release's layout (the parsed JSON).

  Args:
    data: the parsed `merged_mcts_samples.json`.
    depth: the model's layer count; needed for samples without our `polar_jax` key (their paths alone do
      not say how deep the model was).

  Raises:
    InterchangeError: a sample is malformed (the message names the sample and the field), an id repeats, or
      depth is needed and missing.
  """
  return _from_polar(data, depth, _Where(None, None))


def export_polar(records: Sequence[SearchRecord], path: os.PathLike | str) -> None:
  """Writes `records` as a `merged_mcts_samples.json` the release can train on."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(to_polar(records), ensure_ascii=False), encoding="utf-8")


def import_polar(path: os.PathLike | str, *, depth: int | None = None) -> list[SearchRecord]:
  """Reads a `merged_mcts_samples.json` (ours or another tool's) as search records; see `from_polar`.

  Raises:
    InterchangeError: the file is not UTF-8 JSON (with the line and column), or as `from_polar` (with the
      line where the bad sample starts).
    FileNotFoundError: no such file.
  """
  path = pathlib.Path(path)
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise
  except OSError as e:
    raise InterchangeError(f"{path}: cannot be read ({e.strerror or e}).") from None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise InterchangeError(f"{path}, line {line}: not UTF-8 text (byte {e.start}); is this a "
                           "merged_mcts_samples.json?") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise InterchangeError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg}); was the file "
                           "cut short?") from None
  except (ValueError, RecursionError) as e:  # A number too long to convert; nesting too deep.
    raise InterchangeError(f"{path}: not valid JSON ({str(e) or type(e).__name__}).") from None
  return _from_polar(data, depth, _Where(path, text))


# What the predictor can learn from imported records.


@dataclasses.dataclass(frozen=True)
class SpaceReport:
  """Imported programs the predictor cannot learn, and paths longer than the length limit (2 x depth).

  Attributes:
    questions / valid_programs / programs: records read; valid programs; all programs (valid and invalid).
    outside_space: valid programs outside the predictor's space (no skip / keep / repeat-once segmentation
      of blocks <= 4: e.g. a reorder, a layer run three times); training leaves them out (`predictor.targets`).
    questions_outside: questions with at least one such program.
    too_long: programs (valid or invalid) longer than 2 x depth, the executor's default limit
      (`programs.Program`); they cannot be run without a larger max_len.
    outside_examples / too_long_examples: the first few (record id, program).
  """
  questions: int
  valid_programs: int
  programs: int
  outside_space: int
  questions_outside: int
  too_long: int
  outside_examples: tuple[tuple[str, tuple[int, ...]], ...]
  too_long_examples: tuple[tuple[str, tuple[int, ...]], ...]

  def lines(self) -> list[str]:
    """The report as one line per finding (none when everything is learnable and within the limit)."""
    out = []
    if self.outside_space:
      rid, program = self.outside_examples[0]
      out.append(f"{self.outside_space} of {self.valid_programs} valid programs (in {self.questions_outside} of "
                 f"{self.questions} questions) are outside the predictor's space (skip / keep / repeat-once segments "
                 f"of <= 4 layers), so training leaves them out; first: {rid}: {list(program)}")
    if self.too_long:
      rid, program = self.too_long_examples[0]
      out.append(f"{self.too_long} of {self.programs} programs are longer than the length limit (2 x depth steps); "
                 f"first: {rid}: {len(program)} steps")
    return out


def space_report(records: Sequence[SearchRecord], examples: int = 5) -> SpaceReport:
  """Counts the programs of `records` that the predictor cannot spell and those over the length limit."""
  outside, questions_outside, too_long = [], 0, []
  valid = programs = 0
  for rec in records:
    found = False
    for program in rec.valid_programs:
      valid += 1
      if parse(program, rec.depth) is None:
        outside.append((rec.id, program))
        found = True
    questions_outside += found
    for program in rec.valid_programs + rec.invalid_programs:
      programs += 1
      if len(program) > 2 * rec.depth:
        too_long.append((rec.id, program))
  return SpaceReport(questions=len(records), valid_programs=valid, programs=programs, outside_space=len(outside),
                     questions_outside=questions_outside, too_long=len(too_long),
                     outside_examples=tuple(outside[:examples]), too_long_examples=tuple(too_long[:examples]))
