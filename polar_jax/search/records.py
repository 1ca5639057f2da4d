"""Search output on disk: one JSON object per finished question, appended, flushed and fsynced.

A search runs for days, so the output file is the checkpoint: a restarted run reads it, skips the questions
already there and appends the rest. Reading is strict. A line that is not a valid record (a line cut short
by a kill, a hand edit, a duplicated question) stops the run with its line number, because continuing
would silently drop or duplicate data; `repair=True` (`--config.search.repair=True`, or `python -m
polar_jax.search repair PATH`) moves such lines, verbatim, to
`<output>.rejected` and rewrites the output without them.

Records are `polar_jax.records.SearchRecord`s (the layout is described there); `read_records` returns them and
`RecordWriter.write` takes them (or their JSON dicts, checked the same way).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

from polar_jax.errors import UserError
from polar_jax.records import SearchRecord, search_record_problem

TIMING_KEYS = ("seconds",)
REJECTED_SUFFIX = ".rejected"


class CorruptRecordsError(UserError, ValueError):
  """An existing output file has lines that are not valid records. `problems`: [(line number, reason)]."""

  def __init__(self, path: os.PathLike | str, problems: Sequence[tuple[int, str]]):
    self.path = str(path)
    self.problems = list(problems)
    shown = "; ".join(f"line {n}: {reason}" for n, reason in self.problems[:3])
    more = f"; and {len(self.problems) - 3} more" if len(self.problems) > 3 else ""
    super().__init__(
        f"{self.path} has {len(self.problems)} bad line(s) ({shown}{more}); nothing was changed. Fix the file, or "
        f"move the bad lines to {self.path}{REJECTED_SUFFIX} and continue: `python -m polar_jax.search repair "
        f"{self.path}`, or rerun with --config.search.repair=True (repair=True in Python).")


def without_timing(record: SearchRecord) -> SearchRecord:
  """The record minus wall-clock fields (set to None): what two runs of the same search must agree on."""
  return dataclasses.replace(record, **{k: None for k in TIMING_KEYS})


def read_records(path: os.PathLike | str, *, repair: bool = False) -> list[SearchRecord]:
  """Reads a search output file (missing file: no records), strictly; see the module docstring.

  Raises:
    CorruptRecordsError: some line is not a valid record, an id repeats, or the last line is cut short;
      unless `repair`, in which case those lines are appended to `<path>.rejected` (as JSON objects with
      the line number, the reason and the original text) and the file is rewritten without them.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  data = path.read_bytes()
  lines = data.split(b"\n")
  complete = lines[:-1]  # Text after the last newline is an unfinished write (or b"" when none).
  records: list[SearchRecord] = []
  good: list[bytes] = []
  problems: list[tuple[int, str, bytes]] = []
  ids: dict[str, int] = {}
  for number, raw in enumerate(complete, start=1):
    if not raw.strip():
      continue
    try:
      obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      problems.append((number, f"not UTF-8 text (byte {e.start} of the line)", raw))
      continue
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a number too long to convert, deep nesting
      problems.append((number, f"not valid JSON ({str(e) or type(e).__name__})", raw))
      continue
    try:
      record = SearchRecord.from_json(obj)
    except ValueError as e:
      problems.append((number, str(e), raw))
      continue
    if record.id in ids:
      problems.append((number, f"question id {record.id!r} already recorded on line {ids[record.id]}", raw))
      continue
    ids[record.id] = number
    records.append(record)
    good.append(raw)
  if lines[-1].strip():
    problems.append((len(lines), "incomplete last line (no newline): the run was probably killed while writing it",
                     lines[-1]))
  if not problems:
    return records
  if not repair:
    raise CorruptRecordsError(path, [(n, r) for n, r, _ in problems])
  rejected = pathlib.Path(str(path) + REJECTED_SUFFIX)
  with open(rejected, "a", encoding="utf-8") as f:
    for number, reason, raw in problems:
      f.write(json.dumps({"file": str(path), "line": number, "reason": reason,
                          "text": raw.decode("utf-8", errors="backslashreplace")}, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())
  _atomic_write_lines(path, good)
  return records


def _atomic_write_lines(path: pathlib.Path, lines: Iterable[bytes]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    for raw in lines:
      f.write(raw + b"\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def dumps_record(record: SearchRecord) -> str:
  """One record as one JSON line (no newline), keys in the layout's order."""
  return json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":"))


class RecordWriter:
  """Appends records to a JSONL file, flushing and fsyncing after each, so a kill loses at most one line.

  Open it only after `read_records` accepted the file (that check guarantees it ends with a newline).
  """

  def __init__(self, path: os.PathLike | str):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")

  def write(self, record: SearchRecord | Mapping[str, Any]) -> None:
    obj = record.to_json() if isinstance(record, SearchRecord) else record
    reason = search_record_problem(obj)
    if reason is not None:
      raise ValueError(f"Refusing to write an invalid search record: {reason}.")
    self._file.write(dumps_record(SearchRecord.from_json(obj)) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> RecordWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# Shards.

def shard_path(path: os.PathLike | str, index: int, count: int) -> pathlib.Path:
  """`out.jsonl` -> `out.shard-00002-of-00008.jsonl` for shard 2 of 8 (the path itself when count == 1)."""
  path = pathlib.Path(path)
  check_shard((index, count))
  if count == 1:
    return path
  return path.with_name(f"{path.stem}.shard-{index:05d}-of-{count:05d}{path.suffix}")


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
  try:
    index, count = (int(x) for x in shard)
  except (TypeError, ValueError):
    raise ValueError(f"shard must be a pair (index, count), got {shard!r}.") from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"shard index must satisfy 0 <= index < count, got {index}/{count}.")
  return index, count


def parse_shard(text: str) -> tuple[int, int]:
  """Reads the `--shard i/n` flag form."""
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
  if match is None:
    raise ValueError(f"--shard must look like 'i/n' (e.g. 0/4), got {text!r}.")
  return check_shard((int(match[1]), int(match[2])))


def merge_shards(paths: Sequence[os.PathLike | str], out_path: os.PathLike | str) -> list[SearchRecord]:
  """Joins shard files into one, refusing duplicated question ids; returns the merged records.

  Shard i of n holds questions i, i+n, i+2n, ... of the input order, so the records are interleaved
  round-robin in shard order (pass the paths in shard order), which restores the input order.
  """
  if not paths:
    raise ValueError("merge_shards needs at least one shard file.")
  shards = [read_records(p) for p in paths]
  owner: dict[str, str] = {}
  duplicates = []
  for p, records in zip(paths, shards):
    for r in records:
      if r.id in owner:
        duplicates.append(f"{r.id!r} in {owner[r.id]} and {p}")
      owner.setdefault(r.id, str(p))
  if duplicates:
    shown = "; ".join(duplicates[:10])
    raise ValueError(f"{len(duplicates)} question id(s) appear in more than one shard: {shown}. Were two runs "
                     "given overlapping shards? Remove the duplicated lines from one of the files, then merge.")
  merged = []
  for row in range(max(len(s) for s in shards)):
    merged.extend(s[row] for s in shards if row < len(s))
  out_path = pathlib.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  _atomic_write_lines(out_path, [dumps_record(r).encode("utf-8") for r in merged])
  return merged
