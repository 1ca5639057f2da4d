"""Search output on disk: one JSON object per finished question, appended, flushed and fsynced.

A search runs for days, so the output file is the checkpoint: a restarted run reads it, skips the questions
already there and appends the rest. Reading is strict. A line that is not a valid record (a line cut short
by a kill, a hand edit, a duplicated question) stops the run with its line number, because continuing
would silently drop or duplicate data; `repair=True` (`--repair`) moves such lines, verbatim, to
`<output>.rejected` and rewrites the output without them.

Record layout (key order fixed by `RECORD_KEYS`; `canonical_record` restores it):

  id, question, gold, level, subject   the example (level / subject may be null)
  depth                                the model's layer count D
  initial_score, initial_answer        reward and answer of the full program (simulation 1)
  valid   [{program, visits, answer}]  programs with reward > 0, sorted by (length, ids)
  invalid [{program, visits, answer}]  programs with reward 0, same order
  simulations, evaluations             simulations run; distinct programs scored (= len(valid + invalid))
  layers                               layer executions the scorer reported, summed over evaluations
  seconds                              wall time from the question's start to its end (shared device time)
  seed, config                         the search's seed and `SearchConfig.to_json()`

Records imported from other tools may hold null in visits / answer / simulations / layers / seconds /
seed / config / initial_score.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

from polar_jax.errors import UserError

RECORD_KEYS = ("id", "question", "gold", "level", "subject", "depth", "initial_score", "initial_answer", "valid",
               "invalid", "simulations", "evaluations", "layers", "seconds", "seed", "config")
ENTRY_KEYS = ("program", "visits", "answer")
TIMING_KEYS = ("seconds",)
REJECTED_SUFFIX = ".rejected"


class CorruptRecordsError(UserError, ValueError):
  """An existing output file has lines that are not valid records. `problems`: [(line number, reason)]."""

  def __init__(self, path: os.PathLike | str, problems: Sequence[tuple[int, str]]):
    self.path = str(path)
    self.problems = list(problems)
    shown = "\n".join(f"  line {n}: {reason}" for n, reason in self.problems[:10])
    more = f"\n  ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
    super().__init__(
        f"{self.path} has {len(self.problems)} bad line(s):\n{shown}{more}\nNothing was changed. Fix the file, or "
        f"rerun with repair=True (--repair) to move the bad lines to {self.path}{REJECTED_SUFFIX} and continue.")


def canonical_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """The record with keys in `RECORD_KEYS` order and entries in `ENTRY_KEYS` order (unknown keys last)."""
  out = {k: record[k] for k in RECORD_KEYS if k in record}
  for key in ("valid", "invalid"):
    if isinstance(out.get(key), list):
      out[key] = [{k: e[k] for k in ENTRY_KEYS if k in e} | {k: v for k, v in e.items() if k not in ENTRY_KEYS}
                  if isinstance(e, Mapping) else e for e in out[key]]
  out.update({k: v for k, v in record.items() if k not in out})
  return out


def without_timing(record: Mapping[str, Any]) -> dict[str, Any]:
  """The record minus wall-clock fields: what two runs of the same search must agree on."""
  return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_record(obj: Any) -> str | None:
  """Why `obj` is not a search record, or None when it is one."""
  if not isinstance(obj, dict):
    return f"expected a JSON object, got {type(obj).__name__}"
  missing = [k for k in RECORD_KEYS if k not in obj]
  if missing:
    return f"missing keys {missing}"
  if not isinstance(obj["id"], str) or not obj["id"]:
    return f"'id' must be a non-empty string, got {obj['id']!r}"
  if not isinstance(obj["question"], str):
    return "'question' must be a string"
  depth = obj["depth"]
  if not _is_int(depth) or depth < 1:
    return f"'depth' must be a positive integer, got {depth!r}"
  if obj["initial_score"] is not None and not _is_num(obj["initial_score"]):
    return f"'initial_score' must be a number or null, got {obj['initial_score']!r}"
  for key in ("simulations", "layers", "seed"):
    if obj[key] is not None and (not _is_int(obj[key]) or obj[key] < 0):
      return f"{key!r} must be a non-negative integer or null, got {obj[key]!r}"
  if not _is_int(obj["evaluations"]) or obj["evaluations"] < 0:
    return f"'evaluations' must be a non-negative integer, got {obj['evaluations']!r}"
  if obj["seconds"] is not None and not _is_num(obj["seconds"]):
    return f"'seconds' must be a number or null, got {obj['seconds']!r}"
  if obj["config"] is not None and not isinstance(obj["config"], dict):
    return "'config' must be an object or null"
  seen = set()
  for key in ("valid", "invalid"):
    entries = obj[key]
    if not isinstance(entries, list):
      return f"{key!r} must be a list"
    for number, entry in enumerate(entries):
      where = f"{key}[{number}]"
      if not isinstance(entry, dict) or "program" not in entry:
        return f"{where} must be an object with a 'program'"
      program = entry["program"]
      if (not isinstance(program, list) or not program
          or not all(_is_int(x) and 0 <= x < depth for x in program)):
        return f"{where}.program must be a non-empty list of layer ids in 0..{depth - 1}"
      if tuple(program) in seen:
        return f"{where}.program {program} appears twice"
      seen.add(tuple(program))
      visits = entry.get("visits")
      if visits is not None and (not _is_int(visits) or visits < 0):
        return f"{where}.visits must be a non-negative integer or null"
      answer = entry.get("answer")
      if answer is not None and not isinstance(answer, str):
        return f"{where}.answer must be a string or null"
  return None


def read_records(path: os.PathLike | str, *, repair: bool = False) -> list[dict[str, Any]]:
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
  records: list[dict[str, Any]] = []
  good: list[bytes] = []
  problems: list[tuple[int, str, bytes]] = []
  ids: dict[str, int] = {}
  for number, raw in enumerate(complete, start=1):
    if not raw.strip():
      continue
    try:
      obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      problems.append((number, f"not valid JSON ({e})", raw))
      continue
    reason = validate_record(obj)
    if reason is None and obj["id"] in ids:
      reason = f"question id {obj['id']!r} already recorded on line {ids[obj['id']]}"
    if reason is not None:
      problems.append((number, reason, raw))
      continue
    ids[obj["id"]] = number
    records.append(obj)
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


def dumps_record(record: Mapping[str, Any]) -> str:
  """One record as one JSON line (no newline), keys in canonical order."""
  return json.dumps(canonical_record(record), ensure_ascii=False, separators=(",", ":"))


class RecordWriter:
  """Appends records to a JSONL file, flushing and fsyncing after each, so a kill loses at most one line.

  Open it only after `read_records` accepted the file (that check guarantees it ends with a newline).
  """

  def __init__(self, path: os.PathLike | str):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")

  def write(self, record: Mapping[str, Any]) -> None:
    reason = validate_record(canonical_record(record))
    if reason is not None:
      raise ValueError(f"Refusing to write an invalid search record: {reason}.")
    self._file.write(dumps_record(record) + "\n")
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


def merge_shards(paths: Sequence[os.PathLike | str], out_path: os.PathLike | str) -> list[dict[str, Any]]:
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
      if r["id"] in owner:
        duplicates.append(f"{r['id']!r} in {owner[r['id']]} and {p}")
      owner.setdefault(r["id"], str(p))
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
