"""Search records <-> the PoLar release's `merged_mcts_samples.json` supervision layout.

The release reads `{"samples": [...]}` (also a bare list, or a dict of samples), each sample with
`question` (or `sample_info.question`), `gt_ans` (or `ground_truth`, `answer`, `sample_info.*`),
`initial_score` (or `initial_transition_metric`, `evaluation_result.initial_score`), `final_valid_transitions`
(lists of layer ids, or dicts with the list under "path") and optionally `final_invalid_transitions` (used
by its evaluation as a cache of known-wrong programs). It ignores other keys.

Export writes those fields as plain lists (the release's evaluation cache only reads lists) and keeps the
rest of each record (id, depth, visits and answers per program, counts, timing, config) under a
`polar_jax` key, so that `from_polar(to_polar(records)) == records` exactly. Samples made by other tools
(no `polar_jax` key) import with nulls where they carry no information.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

from polar_jax.programs import Program, ProgramError
from polar_jax.records import SearchRecord, search_record_problem

EXTRA_KEY = "polar_jax"
_DIRECT = ("question", "gold", "initial_score", "valid", "invalid")


def to_polar(records: Sequence[SearchRecord]) -> dict[str, Any]:
  """The release's layout for `records` (one sample per record, in order)."""
  samples = []
  for number, rec in enumerate(records):
    obj = rec.to_json()
    reason = search_record_problem(obj)
    if reason is not None:
      raise ValueError(f"Record {number} (id {rec.id!r}) is not a search record: {reason}.")
    extra = {k: v for k, v in obj.items() if k not in _DIRECT}
    extra["valid"] = [{k: v for k, v in e.items() if k != "program"} for e in obj["valid"]]
    extra["invalid"] = [{k: v for k, v in e.items() if k != "program"} for e in obj["invalid"]]
    gold = rec.gold
    extra["gold_type"] = type(gold).__name__ if gold is not None else None  # gt_ans is text in the release.
    samples.append({
        "question": rec.question,
        "gt_ans": "" if gold is None else str(gold),
        "initial_score": rec.initial_score,
        "final_valid_transitions": [list(p) for p in rec.valid_programs],
        "final_invalid_transitions": [list(p) for p in rec.invalid_programs],
        EXTRA_KEY: extra,
    })
  return {"samples": samples}


def _samples(data: Any) -> list[Mapping[str, Any]]:
  if isinstance(data, Mapping) and "samples" in data:
    samples = data["samples"]
  elif isinstance(data, Mapping):
    samples = list(data.values())
  else:
    samples = data
  if not isinstance(samples, list) or not all(isinstance(s, Mapping) for s in samples):
    raise ValueError("Expected the release's layout: {'samples': [sample, ...]}, a list of samples, or a dict "
                     "whose values are samples (each a JSON object).")
  return samples


def _restore_gold(text: str, kind: str | None) -> Any:
  if kind is None:
    return None
  if kind == "int":
    return int(text)
  if kind == "float":
    return float(text)
  if kind == "bool":
    return text == "True"
  return text


def _paths(sample: Mapping[str, Any], key: str, depth: int, where: str) -> list[list[int]]:
  out = []
  for number, raw in enumerate(sample.get(key) or []):
    try:
      out.append(Program.from_json(raw, depth, max_len=max(2 * depth, len(raw) if isinstance(raw, list) else 0))
                 .to_json())
    except ProgramError as e:
      raise ValueError(f"{where}: {key}[{number}] is not a program for a {depth}-layer model: {e}") from None
  return out


def from_polar(data: Any, *, depth: int | None = None) -> list[SearchRecord]:
  """Search records from the release's layout (the parsed JSON).

  Args:
    data: the parsed `merged_mcts_samples.json`.
    depth: the model's layer count; needed for samples without our `polar_jax` key (their paths alone do
      not say how deep the model was).
  """
  records = []
  for number, sample in enumerate(_samples(data)):
    where = f"sample {number}"
    extra = sample.get(EXTRA_KEY)
    if isinstance(extra, Mapping):
      d = extra["depth"]
      valid = [{"program": p, **e} for p, e in zip(_paths(sample, "final_valid_transitions", d, where),
                                                   extra["valid"], strict=True)]
      invalid = [{"program": p, **e} for p, e in zip(_paths(sample, "final_invalid_transitions", d, where),
                                                     extra["invalid"], strict=True)]
      rec = {k: v for k, v in extra.items() if k not in ("valid", "invalid", "gold_type")}
      rec.update(question=sample["question"], gold=_restore_gold(sample["gt_ans"], extra.get("gold_type")),
                 initial_score=sample["initial_score"], valid=valid, invalid=invalid)
    else:
      if depth is None:
        raise ValueError(f"{where} was not written by polar_jax; pass depth= (the model's layer count).")
      rec = _foreign_record(sample, number, depth, where)
    try:
      records.append(SearchRecord.from_json(rec))
    except ValueError as e:
      raise ValueError(f"{where} does not convert to a search record: {e}.") from None
  return records


def _foreign_record(sample: Mapping[str, Any], number: int, depth: int, where: str) -> dict[str, Any]:
  info = sample.get("sample_info") if isinstance(sample.get("sample_info"), Mapping) else {}
  question = sample.get("question") or info.get("question") or ""
  gold = (sample.get("gt_ans") or sample.get("ground_truth") or sample.get("answer") or info.get("ground_truth")
          or info.get("answer") or "")
  seen: set[tuple[int, ...]] = set()
  valid = _unique(_paths(sample, "final_valid_transitions", depth, where), seen)
  invalid = _unique(_paths(sample, "final_invalid_transitions", depth, where), seen)  # Valid wins a conflict.
  score = sample.get("initial_transition_metric", sample.get("initial_score"))
  if score is None and isinstance(sample.get("evaluation_result"), Mapping):
    score = sample["evaluation_result"].get("initial_score")
  full = list(range(depth))
  if score is None:
    score = 1.0 if full in valid else 0.0 if full in invalid else None
  entry = lambda p: {"program": p, "visits": None, "answer": None}  # noqa: E731
  return {
      "id": str(sample.get("id") or info.get("id") or f"sample-{number:06d}"),
      "question": str(question), "gold": str(gold), "level": info.get("level"), "subject": info.get("subject"),
      "depth": depth, "initial_score": None if score is None else float(score), "initial_answer": None,
      "valid": [entry(p) for p in valid], "invalid": [entry(p) for p in invalid],
      "simulations": None, "evaluations": len(valid) + len(invalid), "layers": None, "seconds": None,
      "seed": None, "config": None,
  }


def _unique(paths: list[list[int]], seen: set[tuple[int, ...]]) -> list[list[int]]:
  out = []
  for p in paths:
    if tuple(p) not in seen:
      seen.add(tuple(p))
      out.append(p)
  return out


def export_polar(records: Sequence[SearchRecord], path: os.PathLike | str) -> None:
  """Writes `records` as a `merged_mcts_samples.json` the release can train on."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(to_polar(records), ensure_ascii=False), encoding="utf-8")


def import_polar(path: os.PathLike | str, *, depth: int | None = None) -> list[SearchRecord]:
  """Reads a `merged_mcts_samples.json` (ours or another tool's) as search records."""
  return from_polar(json.loads(pathlib.Path(path).read_text(encoding="utf-8")), depth=depth)
