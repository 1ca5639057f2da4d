"""Supervision -> training examples: per-program targets (boundaries, op labels) and weights.

One example per (question, valid program), as in the release's `PolarDataset`:

- at most `max_programs` (50) valid programs per question; when there are more, a fixed-size random subset
  is drawn with a generator seeded by (seed, question text), so the choice is deterministic and does not
  depend on the order of the file (the release draws from one shared stream, so its choice does);
- each program -> its canonical segmentation (`polar_jax.programs.parse`) -> boundaries [D] and op labels
  [D]; programs outside the predictor's space (no skip / keep / repeat-once segmentation of blocks <= 4)
  are counted, listed in the report and warned about, never silently dropped;
- example weight: `original_weight` (the release's `--original_path_weight`, 0.3 in the paper) for the
  full-depth program when the question also has a strictly shorter valid program, else 1; with
  `normalize_per_question`, each question's weights are divided by its number of examples.

The length preference exp(-beta * len) is a batch-level weight in the release, so it lives in `loss.py`
(`length_beta`); the program length is stored per example for it.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from typing import Sequence

import numpy as np

from polar_jax.predictor.supervision import SupervisionRecord
from polar_jax.programs import parse


class OutsideSpaceWarning(UserWarning):
  """Some valid programs cannot be expressed by the predictor and were not trained on."""


@dataclasses.dataclass(frozen=True)
class TargetOptions:
  """The release's data options; the defaults are the paper's recipe (README sample command)."""
  max_programs: int = 50
  original_weight: float = 0.3  # 1.0 = no down-weighting (the release's default without the flag)
  normalize_per_question: bool = True
  seed: int = 42

  def __post_init__(self):
    if self.max_programs < 1:
      raise ValueError(f"max_programs must be >= 1, got {self.max_programs}.")
    if not 0.0 <= self.original_weight <= 1.0:
      raise ValueError(f"original_weight must lie in [0, 1] (the release clamps it), got {self.original_weight}.")


@dataclasses.dataclass(frozen=True)
class ExampleTable:
  """Struct of arrays, one row per training example; `question_index` points into the record list."""
  depth: int
  question_index: np.ndarray  # [N] int32
  boundaries: np.ndarray  # [N, D] int32 (0/1; column 0 always 0)
  op_labels: np.ndarray  # [N, D] int32 (op at segment starts, IGNORE_INDEX elsewhere)
  length: np.ndarray  # [N] int32 program length (executed layers)
  weight: np.ndarray  # [N] float32

  def __len__(self):
    return int(self.question_index.shape[0])


@dataclasses.dataclass(frozen=True)
class TargetReport:
  """What happened to the supervision on its way to examples."""
  questions: int
  questions_with_examples: int
  questions_without_valid: int
  valid_programs: int
  programs_not_sampled: int  # beyond max_programs
  programs_outside_space: int
  examples: int
  outside_space_samples: tuple[tuple[str, tuple[int, ...]], ...]  # (record, program), the first few


def program_targets(ids: Sequence[int], depth: int) -> tuple[np.ndarray, np.ndarray] | None:
  """Canonical targets of one program: (boundaries [D], op labels [D]) int32, or None when outside the space."""
  segmentation = parse(tuple(ids), depth)
  if segmentation is None:
    return None
  return segmentation.boundaries(), segmentation.op_labels()


def _choose(n: int, k: int, seed: int, question: str) -> np.ndarray:
  """Deterministic subset of k of n positions (kept in file order)."""
  if n <= k:
    return np.arange(n)
  rng = np.random.default_rng([seed, zlib.crc32(question.encode("utf-8"))])
  return np.sort(rng.choice(n, size=k, replace=False))


def build_examples(records: Sequence[SupervisionRecord], depth: int,
                   options: TargetOptions = TargetOptions()) -> tuple[ExampleTable, TargetReport]:
  """Targets and weights for every usable (question, valid program) pair of `records`."""
  full = tuple(range(depth))
  rows: dict[str, list] = {"question_index": [], "boundaries": [], "op_labels": [], "length": [], "weight": []}
  outside, outside_samples = 0, []
  with_examples = without_valid = valid_total = not_sampled = 0
  for qi, record in enumerate(records):
    if record.depth != depth:
      raise ValueError(f"{record.source}: record is for a {record.depth}-layer model, not {depth}.")
    valid_total += len(record.valid)
    if not record.valid:
      without_valid += 1
      continue
    has_full = full in record.valid
    has_shorter = any(p != full and len(p) < depth for p in record.valid)
    chosen = _choose(len(record.valid), options.max_programs, options.seed, record.question)
    not_sampled += len(record.valid) - len(chosen)
    start = len(rows["length"])
    for pi in chosen:
      program = record.valid[pi]
      targets = program_targets(program, depth)
      if targets is None:
        outside += 1
        if len(outside_samples) < 10:
          outside_samples.append((record.source, program))
        continue
      rows["question_index"].append(qi)
      rows["boundaries"].append(targets[0])
      rows["op_labels"].append(targets[1])
      rows["length"].append(len(program))
      rows["weight"].append(options.original_weight if (program == full and has_full and has_shorter) else 1.0)
    count = len(rows["length"]) - start
    if count:
      with_examples += 1
      if options.normalize_per_question:
        rows["weight"][start:] = [w / count for w in rows["weight"][start:]]
  if outside:
    warnings.warn(
        f"{outside} of {valid_total - not_sampled} sampled valid programs are outside the predictor's space "
        f"(skip / keep / repeat-once segments of <= 4 layers) and are not trained on; first: "
        f"{outside_samples[0][0]}: {list(outside_samples[0][1])}.", OutsideSpaceWarning, stacklevel=2)
  n = len(rows["length"])
  table = ExampleTable(
      depth=depth,
      question_index=np.asarray(rows["question_index"], np.int32).reshape(n),
      boundaries=np.asarray(rows["boundaries"], np.int32).reshape(n, depth),
      op_labels=np.asarray(rows["op_labels"], np.int32).reshape(n, depth),
      length=np.asarray(rows["length"], np.int32).reshape(n),
      weight=np.asarray(rows["weight"], np.float32).reshape(n))
  report = TargetReport(
      questions=len(records), questions_with_examples=with_examples, questions_without_valid=without_valid,
      valid_programs=valid_total, programs_not_sampled=not_sampled, programs_outside_space=outside, examples=n,
      outside_space_samples=tuple(outside_samples))
  return table, report
