"""Reading supervision: the valid (and invalid) programs found by search, per question.

Search records already in memory (`polar_jax.records.SearchRecord`s, as the pipeline holds them) become
supervision with `supervision_from_search`. Two file layouts are read:

- our search output, JSON lines, one question per line: `{"id", "question", "gold", "initial_score",
  "valid": [{"program": [ids], "visits": n}, ...] (or plain id lists), "invalid": [[ids], ...],
  "evaluations", "seconds", "depth"}`;
- the PoLar release's `merged_mcts_samples.json`: a JSON object with a "samples" list, a list of samples, or
  an object whose values are samples; each with `question` (or `sample_info.question`), `gt_ans` (or
  `ground_truth` / `answer`, also under `sample_info`), `final_valid_transitions`,
  `final_invalid_transitions`, `initial_score` (or `initial_transition_metric` /
  `evaluation_result.initial_score`); a path is a list of ints or `{"path": [...]}`. This layout does not
  record the model depth, so it must be given.

Unlike the release (which silently ignores unreadable paths and questions without valid paths), bad input
is an error naming the file and the record: malformed JSON, a missing question, a program that is not a
list of ints, a layer index outside 0..D-1, an empty program, and (see below) a question with no valid
program. Programs outside the predictor's segment space are legitimate
supervision and are dealt with (counted, reported) in `targets.py`.

Questions without a valid program are an error by default; `empty_valid="skip"` drops and counts them, and
`empty_valid="keep"` keeps them (with `valid == ()`) so that positions match the file, which is what the
release's positional train / validation / test split (`release_splits`) and evaluation need; the target
builder skips and counts them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Collection, Iterator, Mapping, Sequence

from polar_jax.records import SearchRecord

from polar_jax.errors import UserError


class SupervisionError(UserError, ValueError):
  """A supervision file or record is malformed; the message names the file and the record."""


@dataclasses.dataclass(frozen=True)
class SupervisionRecord:
  """One question with its searched programs (layer-id tuples, checked to lie in 0..depth-1)."""
  id: str
  question: str
  gold: str
  initial_score: float
  depth: int
  valid: tuple[tuple[int, ...], ...]
  invalid: tuple[tuple[int, ...], ...] = ()
  source: str = ""  # "file, record N" for messages


@dataclasses.dataclass(frozen=True)
class Supervision:
  """The records of one file, and how many questions without a valid program were skipped (not kept)."""
  records: tuple[SupervisionRecord, ...]
  depth: int
  path: str
  skipped_empty: int = 0

  def __len__(self):
    return len(self.records)


def _first(sample: Mapping, *keys: str) -> Any:
  """The first truthy value among keys (a dotted key looks into a nested dict), as the release reads them."""
  for key in keys:
    node: Any = sample
    for part in key.split("."):
      node = node.get(part) if isinstance(node, Mapping) else None
    if node:
      return node
  return None


def _program(obj: Any, depth: int, where: str) -> tuple[int, ...]:
  if isinstance(obj, Mapping):
    obj = obj.get("program", obj.get("path"))
  if not isinstance(obj, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, int) for x in obj):
    raise SupervisionError(f"{where}: a program must be a list of integer layer ids (or a dict with 'program' or "
                           f"'path'), got {obj!r:.120}.")
  if not obj:
    raise SupervisionError(f"{where}: empty program (a program must run at least one layer).")
  for pos, x in enumerate(obj):
    if not 0 <= x < depth:
      raise SupervisionError(f"{where}: program index {x} out of range for a {depth}-layer model (program "
                             f"position {pos}). Is depth={depth} the right model depth for this file?")
  return tuple(obj)


def _record(sample: Any, *, depth: int, where: str, layout: str, empty_valid: str) -> SupervisionRecord | None:
  if not isinstance(sample, Mapping):
    raise SupervisionError(f"{where}: a record must be a JSON object, got {type(sample).__name__}.")
  if layout == "jsonl":
    question, gold = sample.get("question"), sample.get("gold", "")
    valid, invalid, score = sample.get("valid"), sample.get("invalid") or [], sample.get("initial_score", 0.0)
    if "depth" in sample and sample["depth"] != depth:
      raise SupervisionError(f"{where}: record depth {sample['depth']} differs from depth {depth} (a file holds "
                             "one model's search).")
  else:
    question = _first(sample, "question", "sample_info.question")
    gold = _first(sample, "gt_ans", "ground_truth", "answer", "sample_info.ground_truth", "sample_info.answer")
    valid, invalid = sample.get("final_valid_transitions"), sample.get("final_invalid_transitions") or []
    score = sample.get("initial_transition_metric", sample.get("initial_score"))
    if score is None and isinstance(sample.get("evaluation_result"), Mapping):
      score = sample["evaluation_result"].get("initial_score")
  if not isinstance(question, str) or not question.strip():
    raise SupervisionError(f"{where}: no question text (expected a non-empty string under 'question').")
  if valid is None:
    valid = []
  if not isinstance(valid, list) or not isinstance(invalid, list):
    raise SupervisionError(f"{where}: the valid and invalid programs must be JSON lists.")
  if not valid:
    if empty_valid == "skip":
      return None
    if empty_valid == "error":
      raise SupervisionError(f"{where}: the question has no valid program, so it gives no training target. Pass "
                             "empty_valid='skip' to drop (and count) such questions, or 'keep' to keep them.")
  try:
    score = float(score) if score is not None else 0.0
  except (TypeError, ValueError):
    raise SupervisionError(f"{where}: initial_score {score!r} is not a number.") from None
  return SupervisionRecord(
      id=str(sample.get("id", where.rsplit(" ", 1)[-1])), question=question, gold=str(gold or ""),
      initial_score=score, depth=depth,
      valid=tuple(_program(p, depth, f"{where}, valid program {i}") for i, p in enumerate(valid)),
      invalid=tuple(_program(p, depth, f"{where}, invalid program {i}") for i, p in enumerate(invalid)),
      source=where)


def supervision_from_search(records: Sequence[SearchRecord], depth: int, ids: Collection[str],
                            where: str) -> list[SupervisionRecord]:
  """The search records of the questions `ids` as supervision, in record order; `where` (the records' file)
  goes into each record's `source`. Questions without a valid program are left out: they give no target."""
  return [SupervisionRecord(id=rec.id, question=rec.question, gold=str(rec.gold),
                            initial_score=float(rec.initial_score), depth=depth, valid=rec.valid_programs,
                            invalid=rec.invalid_programs, source=f"{where}, id {rec.id}")
          for rec in records if rec.id in ids and rec.valid]


def _jsonl_samples(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield f"{path}, line {line_no}", json.loads(line)
      except json.JSONDecodeError as e:
        raise SupervisionError(f"{path}, line {line_no}: malformed JSON ({e.msg} at column {e.colno}).") from None


def _release_samples(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise SupervisionError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
  if isinstance(data, Mapping) and "samples" in data:
    data = data["samples"]
  if isinstance(data, Mapping):
    items = [(f"{path}, record {key!r}", value) for key, value in data.items()]
  elif isinstance(data, list):
    items = [(f"{path}, record {i}", value) for i, value in enumerate(data)]
  else:
    raise SupervisionError(f"{path}: expected a JSON object or list of samples, got {type(data).__name__}.")
  yield from items


def load_supervision(path: str | pathlib.Path, depth: int | None = None, *, layout: str | None = None,
                     empty_valid: str = "error") -> Supervision:
  """Reads one supervision file.

  Args:
    path: a `.jsonl` search output or a release `merged_mcts_samples.json`.
    depth: the base model's depth D. Optional for our JSONL (its records carry it), required for the release.
    layout: "jsonl" or "release"; by default `.jsonl` files are JSON lines and anything else the release's.
    empty_valid: "error" (default), "skip" or "keep": what to do with a question that has no valid program.
  """
  path = pathlib.Path(path)
  if empty_valid not in ("error", "skip", "keep"):
    raise ValueError(f"empty_valid must be 'error', 'skip' or 'keep', got {empty_valid!r}.")
  layout = layout or ("jsonl" if path.suffix == ".jsonl" else "release")
  if layout not in ("jsonl", "release"):
    raise ValueError(f"layout must be 'jsonl' or 'release', got {layout!r}.")
  if not path.is_file():
    raise SupervisionError(f"{path}: no such supervision file.")
  samples = list(_jsonl_samples(path) if layout == "jsonl" else _release_samples(path))
  if depth is None:
    if layout == "release":
      raise SupervisionError(f"{path}: the PoLar release layout does not record the model depth; pass depth= "
                             "(e.g. 28 for Llama-3.2-3B-Instruct, 36 for Qwen2.5-3B-Instruct).")
    first = next((s for _, s in samples if isinstance(s, Mapping) and "depth" in s), None)
    if first is None:
      raise SupervisionError(f"{path}: no record carries a 'depth' field; pass depth=.")
    depth = first["depth"]
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
    raise SupervisionError(f"{path}: depth must be an integer >= 2, got {depth!r}.")
  records, skipped = [], 0
  for where, sample in samples:
    record = _record(sample, depth=depth, where=where, layout=layout, empty_valid=empty_valid)
    if record is None:
      skipped += 1
    else:
      records.append(record)
  if not records:
    raise SupervisionError(f"{path}: no usable records ({skipped} question(s) without a valid program).")
  return Supervision(tuple(records), depth, str(path), skipped)


def release_splits(records: Sequence[SupervisionRecord], train: int = 1250, validation: int = 250,
                   ) -> tuple[tuple[SupervisionRecord, ...], tuple[SupervisionRecord, ...], tuple[SupervisionRecord, ...]]:
  """The release's per-file split by position: [0, train), [train, train+validation), and the rest (test).

  Positions are the file's only when it was loaded with empty_valid="keep" (or has no empty questions).
  """
  records = tuple(records)
  return records[:train], records[train:train + validation], records[train + validation:]
