"""Predictor checkpoints (orbax): the latest few for resuming, the best one by validation loss for use.

Layout under a workdir:
  checkpoints/<step>/{state, meta}   periodic saves (keep the last `keep`); resuming reads the latest
  best/<step>/{state, meta}          the checkpoint with the lowest validation loss (one kept)

`state` is the whole train state (step, params, optimizer state, RNG key); `meta` is JSON: the format tag,
the model depth D, the predictor config, the feature width and encoder name, the seed and the data
position. Restoring checks `meta` before touching any array, so a checkpoint for another depth (or
encoder width, or predictor shape) is refused with a message instead of a shape error deep in orbax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import shutil
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from polar_jax.errors import DiskFullError, UserError, is_disk_full
from polar_jax.predictor.model import PredictorConfig

FORMAT = "polar_jax.predictor/1"
_CHECKED = ("depth", "feature_dim", "predictor")


class CheckpointMismatchError(UserError, ValueError):
  """A checkpoint was written for a different model depth, encoder or predictor shape."""


def check_compatible(meta: Mapping[str, Any], expected: Mapping[str, Any], where: str):
  """Raises CheckpointMismatchError when `meta` disagrees with `expected` on depth, feature width or shape."""
  if meta.get("format") != FORMAT:
    raise CheckpointMismatchError(f"{where} is not a polar_jax predictor checkpoint (format {meta.get('format')!r}).")
  if "depth" in expected and meta["depth"] != expected["depth"]:
    raise CheckpointMismatchError(
        f"{where} holds a predictor for a {meta['depth']}-layer model, but this run is for a {expected['depth']}-layer "
        "model (depth D). A predictor only fits the depth it was trained for: use a fresh workdir, or the "
        "supervision and model it was trained on.")
  if "feature_dim" in expected and meta["feature_dim"] != expected["feature_dim"]:
    raise CheckpointMismatchError(
        f"{where} was trained on {meta['feature_dim']}-dim question features ({meta.get('encoder')}), but this "
        f"encoder gives {expected['feature_dim']} ({expected.get('encoder')}).")
  if "predictor" in expected and dict(meta["predictor"]) != dict(expected["predictor"]):
    raise CheckpointMismatchError(
        f"{where} has predictor shape {meta['predictor']}, but this run asks for {expected['predictor']}.")


def make_meta(config: PredictorConfig, *, feature_dim: int, encoder: str, seed: int, data_position: int,
              **extra) -> dict:
  return {"format": FORMAT, "depth": config.depth, "predictor": dataclasses.asdict(config),
          "feature_dim": int(feature_dim), "encoder": encoder, "seed": int(seed),
          "data_position": int(data_position), **extra}


def _args(state, meta):
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """The two checkpoint managers of a training run."""

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
    workdir = pathlib.Path(workdir).absolute()
    self.async_save = bool(async_save)
    items = ("state", "meta")
    # Each manager names its own multi-process barriers: with one shared name, two processes deadlock when
    # both managers save in the same step ("Barrier ...set_value_start is already ongoing").
    sync = lambda name: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f"polar_jax_{name}")
    self.latest = ocp.CheckpointManager(
        workdir / "checkpoints", item_names=items,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             multiprocessing_options=sync("latest")))
    self.best = ocp.CheckpointManager(
        workdir / "best", item_names=items,
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min",
                                             enable_async_checkpointing=async_save,
                                             multiprocessing_options=sync("best")))

  def _room_for(self, manager, step: int, state) -> None:
    """Refuses a save that cannot fit (orbax would fail in its writer threads, print hundreds of tracebacks and
    leave *.orbax-checkpoint-tmp folders): the checkpoint's bytes, twice with async saves in flight, + 1 MB."""
    size = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state) if hasattr(x, "dtype"))
    need = int(size * 1.1) * (2 if self.async_save else 1) + (1 << 20)
    directory = pathlib.Path(manager.directory)
    free = shutil.disk_usage(directory if directory.exists() else directory.parent).free
    if free < need:
      raise DiskFullError(self._full_message(directory, step, f"it needs about {need / 1e6:.1f} MB and "
                                                              f"{free / 1e6:.1f} MB are free"))

  def _full_message(self, directory: pathlib.Path, step: int, detail: str) -> str:
    last = self.latest.latest_step()
    resume = (f"training resumes from step {last}, its last complete checkpoint" if last is not None else
              "no checkpoint was complete yet, so training starts again")
    what = f"the step-{step} checkpoint" if step >= 0 else "a checkpoint"
    return (f"The disk is full: no room for {what} in {directory} ({detail}). Free some space and rerun the same "
            f"command: {resume}.")

  def _save(self, manager, step: int, **kwargs) -> None:
    try:
      manager.save(step, **kwargs)
      if not self.async_save:
        manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not is_disk_full(e):
        raise
      self._drop_partial()
      raise DiskFullError(self._full_message(pathlib.Path(manager.directory), step, "no space left on device")
                          ) from None

  def _drop_partial(self) -> None:
    for manager in (self.latest, self.best):
      for tmp in pathlib.Path(manager.directory).glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)

  def save(self, step: int, state, meta: dict):
    self._room_for(self.latest, step, state)
    self._save(self.latest, step, args=_args(state, meta), force=True)

  def save_best(self, step: int, state, meta: dict, val_loss: float):
    if step in self.best.all_steps():  # re-evaluated after a resume: the same state was already considered
      return
    self._room_for(self.best, step, state)
    self._save(self.best, step, args=_args(state, meta), metrics={"val_loss": float(val_loss)}, force=True)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, abstract_state, expected: Mapping[str, Any]):
    """-> (state, meta) of the latest checkpoint, after checking `meta` against `expected`."""
    step = self.latest.latest_step()
    where = f"Checkpoint {self.latest.directory / str(step)}"
    meta = self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_compatible(meta, expected, where)
    state = self.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return state["state"], meta

  def close(self):
    failed = None
    for manager in (self.latest, self.best):
      try:
        manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        if not is_disk_full(e):
          raise
        failed = manager
      manager.close()
    if failed is not None:
      self._drop_partial()
      raise DiskFullError(self._full_message(pathlib.Path(failed.directory), -1, "no space left on device"))


@contextlib.contextmanager
def _read_only_notices_off():
  """Orbax warns "Given directory is read only" on every read-only manager: what loading means, not a problem."""
  log = logging.getLogger("absl")
  quiet = lambda record: "read only" not in record.getMessage() and "read_only=True" not in record.getMessage()
  log.addFilter(quiet)
  try:
    yield
  finally:
    log.removeFilter(quiet)


def load_predictor(workdir: str | pathlib.Path, *, which: str = "best", depth: int | None = None,
                   feature_dim: int | None = None) -> tuple[PredictorConfig, dict, dict]:
  """-> (predictor config, params as numpy arrays, meta) from a training workdir (or a checkpoints folder).

  `which` is "best" (lowest validation loss; falls back to the latest when no validation ran) or "latest".
  Passing `depth` / `feature_dim` refuses a checkpoint for another model depth or encoder width.
  """
  root = pathlib.Path(workdir).absolute()
  folders = {"best": ["best", "checkpoints"], "latest": ["checkpoints"]}
  if which not in folders:
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}.")
  candidates = [root / f for f in folders[which]] + [root]
  for folder in candidates:
    if not folder.is_dir():
      continue
    with _read_only_notices_off():
      manager = ocp.CheckpointManager(folder, item_names=("state", "meta"),
                                      options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                                           save_interval_steps=0))
    step = manager.latest_step() if which == "latest" else (manager.best_step() or manager.latest_step())
    if step is None:
      manager.close()
      continue
    where = f"Checkpoint {folder / str(step)}"
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    expected = {k: v for k, v in (("depth", depth), ("feature_dim", feature_dim)) if v is not None}
    check_compatible(meta, expected, where)
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    manager.close()
    params = jax.tree.map(np.asarray, state["params"])
    return PredictorConfig(**meta["predictor"]), params, meta
  raise FileNotFoundError(f"No predictor checkpoint under {root} (looked in {', '.join(map(str, candidates))}).")
