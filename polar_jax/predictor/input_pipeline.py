"""The grain input pipeline: examples + precomputed question features -> fixed-shape training batches.

Order: epoch-major, like the release's shuffled DataLoader without drop_last. Epoch e visits the examples
in the permutation drawn by a generator seeded with (seed, e); it is cut into ceil(N / B) batches, and the
last, short batch is padded with rows whose `valid` is False (the loss ignores them, so the arithmetic
equals the release's smaller batch while the shape stays fixed and jit compiles once).

A batch is a pure function of (seed, step), so the pipeline's position is the step: resuming at step s
rebuilds the dataset from s on, and the order is identical to an uninterrupted run. In a multi-process run
every process computes the same global batch and keeps its own contiguous slice of rows (process p of P
takes rows [p*B/P, (p+1)*B/P)), which is what `jax.make_array_from_process_local_data` expects for a batch
sharded on the leading axis.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import grain
import numpy as np

from polar_jax.predictor.encoder import QuestionFeatures
from polar_jax.predictor.targets import ExampleTable


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """Which example rows make up the batch of each training step."""
  num_examples: int
  batch_size: int
  seed: int

  def __post_init__(self):
    if self.num_examples < 1:
      raise ValueError("There are no training examples (every question lacked a usable valid program).")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}.")

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_examples // self.batch_size)

  @functools.lru_cache(maxsize=4)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (example rows [B] int64, valid [B] bool) for global step `step`."""
    epoch, j = divmod(int(step), self.steps_per_epoch)
    rows = self._permutation(epoch)[j * self.batch_size:(j + 1) * self.batch_size]
    valid = np.zeros(self.batch_size, bool)
    valid[:len(rows)] = True
    return np.pad(rows, (0, self.batch_size - len(rows))), valid


def gather_batch(table: ExampleTable, features: QuestionFeatures, rows: np.ndarray, valid: np.ndarray) -> dict:
  """Example rows -> a batch dict of numpy arrays (see module docstring)."""
  feats, mask = features.take(table.question_index[rows])
  return {
      "features": feats.astype(np.float32),  # [B, S, F]
      "mask": mask,  # [B, S] bool
      "boundaries": table.boundaries[rows],  # [B, D]
      "op_labels": table.op_labels[rows],  # [B, D]
      "weight": np.where(valid, table.weight[rows], 0.0).astype(np.float32),  # [B]
      "length": table.length[rows],  # [B]
      "valid": valid,  # [B] bool
  }


def training_batches(table: ExampleTable, features: QuestionFeatures, plan: BatchPlan, *, start_step: int,
                     stop_step: int, process_index: int = 0, process_count: int = 1,
                     num_threads: int = 2, prefetch: int = 4) -> Iterator[dict]:
  """This process's rows of the batches for steps [start_step, stop_step), prefetched by grain threads."""
  if plan.batch_size % process_count:
    raise ValueError(f"batch_size {plan.batch_size} is not divisible by the {process_count} processes.")
  local = plan.batch_size // process_count
  lo = process_index * local

  def make(step):
    rows, valid = plan.rows(step)
    return gather_batch(table, features, rows[lo:lo + local], valid[lo:lo + local])

  dataset = grain.MapDataset.range(start_step, stop_step).map(make)
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


def evaluation_batches(table: ExampleTable, features: QuestionFeatures, batch_size: int, *,
                       process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """All examples in order (the release's unshuffled validation loader), the last batch padded; this
  process's rows of each."""
  local = batch_size // process_count
  for start in range(0, len(table), batch_size):
    rows = np.arange(start, min(start + batch_size, len(table)))
    valid = np.zeros(batch_size, bool)
    valid[:len(rows)] = True
    rows = np.pad(rows, (0, batch_size - len(rows)))
    lo = process_index * local
    yield gather_batch(table, features, rows[lo:lo + local], valid[lo:lo + local])
