"""Reading supervision: the valid (and invalid) programs found by search, per question.

Search records already in memory (`polar_jax.records.SearchRecord`s, as the pipeline holds them) become
supervision with `supervision_from_search`. Two file layouts are read:

- our search output, JSON lines, one question per line: `{"id", "question", "gold", "initial_score",
  "valid": [{"program": [ids], "visits": n}, ...] (or plain id lists), "invalid": [[ids], ...],
  "evaluations", "seconds", "depth"}`;
- the PoLar release's `merged_mcts_samples.json` (and RE-PoLar's files): a JSON object with a "samples" list,
  a list of samples, or an object of samples keyed by question id; each sample is read by
  `polar_jax.records.read_release_sample` (the same reader as `search import`, so both agree on every field
  and id: `id` / `query_id` / `sample_info.query_id`, else the key, else `sample-<position>`). This layout does
  not record the model depth, so it must be given.

Unlike the release (which silently ignores unreadable paths and questions without valid paths), bad input
is an error naming the file, the line (where the sample starts, for the release's layout) and the field:
undecodable bytes, malformed JSON, a missing question, a field of the wrong type, a program that is not a list
of ints, a layer index outside 0..D-1, an empty program, and (see below) a question with no valid program.
Programs outside the predictor's segment space are legitimate supervision and are dealt with (counted,
reported) in `targets.py`.

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

from polar_jax.errors import UserError
from polar_jax.records import (ReleaseFieldError, SearchRecord, is_finite_number, read_release_sample,
                               release_sample_lines, release_samples, short_repr)


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


def _kind(value: Any) -> str:
  return "null" if value is None else type(value).__name__


def _jsonl_record(sample: Any, *, depth: int, where: str, line: int) -> tuple[str, str, Any, Any, list, list]:
  """(id, question, gold, initial score, valid, invalid) of one line of our search output, each field checked."""
  if not isinstance(sample, Mapping):
    raise SupervisionError(f"{where}: a record must be a JSON object, got {_kind(sample)}.")
  if "depth" in sample and sample["depth"] != depth:
    raise SupervisionError(f"{where}: record depth {short_repr(sample['depth'])} differs from depth {depth} (a file holds "
                           "one model's search).")
  rid = sample.get("id", f"line-{line}")
  if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
    raise SupervisionError(f"{where}: field id must be a non-empty string or an integer, got {_kind(rid)}.")
  question, gold = sample.get("question"), sample.get("gold")
  if not isinstance(question, str) or not question.strip():
    raise SupervisionError(f"{where}: field question: no question text (expected a non-empty string, got "
                           f"{_kind(question)}).")
  if gold is not None and (isinstance(gold, bool) or not isinstance(gold, (str, int, float))):
    raise SupervisionError(f"{where}: field gold must be a string, a number or null, got {_kind(gold)}.")
  score = sample.get("initial_score")
  if score is not None and not is_finite_number(score):
    raise SupervisionError(f"{where}: field initial_score must be a finite number or null, got {short_repr(score)}.")
  valid, invalid = sample.get("valid"), sample.get("invalid")
  for key, value in (("valid", valid), ("invalid", invalid)):
    if value is not None and not isinstance(value, list):
      raise SupervisionError(f"{where}: field {key} must be a list of programs, got {_kind(value)}.")
  return str(rid), question, gold, score, valid or [], invalid or []


def _record(sample: Any, *, depth: int, where: str, layout: str, empty_valid: str, line: int = 0,
            key: str | None = None, number: int = 0) -> SupervisionRecord | None:
  if layout == "jsonl":
    rid, question, gold, score, valid, invalid = _jsonl_record(sample, depth=depth, where=where, line=line)
  else:
    try:
      s = read_release_sample(sample, depth, key=key, number=number)
    except ReleaseFieldError as e:
      raise SupervisionError(f"{where}: {e}.") from None
    if not s.question.strip():
      raise SupervisionError(f"{where}: field question: no question text (expected a non-empty string under "
                             "'question' or 'sample_info.question'; RE-PoLar's mcts_results carry query ids only, "
                             "join the questions onto them first).")
    rid, question, gold, score, valid, invalid = s.id, s.question, s.gold, s.initial_score, list(s.valid), \
        list(s.invalid)
  if not valid:
    if empty_valid == "skip":
      return None
    if empty_valid == "error":
      raise SupervisionError(f"{where}: the question has no valid program, so it gives no training target. Pass "
                             "empty_valid='skip' to drop (and count) such questions, or 'keep' to keep them.")
  return SupervisionRecord(
      id=rid, question=question, gold="" if gold is None else str(gold),
      initial_score=0.0 if score is None else float(score), depth=depth,
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


def _jsonl_samples(path: pathlib.Path) -> Iterator[tuple[str, int, None, Any]]:
  """(where, line number, None, parsed line) of each non-blank line."""
  for line_no, raw in enumerate(path.read_bytes().split(b"\n"), 1):
    if not raw.strip():
      continue
    try:
      yield f"{path}, line {line_no}", line_no, None, json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise SupervisionError(f"{path}, line {line_no}: not UTF-8 text (byte {e.start} of the line).") from None
    except json.JSONDecodeError as e:
      raise SupervisionError(f"{path}, line {line_no}: malformed JSON ({e.msg}: column {e.colno}).") from None
    except (ValueError, RecursionError) as e:  # A number too long to convert; nesting too deep.
      raise SupervisionError(f"{path}, line {line_no}: malformed JSON ({str(e) or type(e).__name__}).") from None


def _release_samples(path: pathlib.Path) -> list[tuple[str, int, str | None, Any]]:
  """(where, position, key, sample) of each sample of a release file; `where` names the file, line and sample."""
  raw = path.read_bytes()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise SupervisionError(f"{path}, line {line}: not UTF-8 text (byte {e.start}).") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise SupervisionError(f"{path}: malformed JSON ({e.msg}: line {e.lineno}, column {e.colno}).") from None
  except (ValueError, RecursionError) as e:  # A number too long to convert; nesting too deep.
    raise SupervisionError(f"{path}: malformed JSON ({str(e) or type(e).__name__}).") from None
  try:
    items = release_samples(data)
  except ValueError as e:
    raise SupervisionError(f"{path}: {e}.") from None
  lines = release_sample_lines(text)  # Parses again, for the messages: cheap next to the json.loads above.
  out = []
  for i, (key, sample) in enumerate(items):
    name = f"sample {i}" if key is None else f"sample {key!r}"
    out.append((f"{path}, line {lines[i]} ({name})" if i < len(lines) else f"{path} ({name})", i, key, sample))
  return out


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
    first = next(((w, s) for w, _, _, s in samples if isinstance(s, Mapping) and "depth" in s), None)
    if first is None:
      raise SupervisionError(f"{path}: no record carries a 'depth' field; pass depth=.")
    where, depth = first[0], first[1]["depth"]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
      raise SupervisionError(f"{where}: field depth must be an integer >= 2, got {short_repr(depth)}.")
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
    raise SupervisionError(f"{path}: depth must be an integer >= 2, got {depth!r}.")
  records, skipped = [], 0
  for where, number, key, sample in samples:
    record = _record(sample, depth=depth, where=where, layout=layout, empty_valid=empty_valid, line=number,
                     key=key, number=number)
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
