"""Device mesh and logical-axis sharding rules for training.

The mesh has two axes, ('data', 'model'), over all devices (of all processes). Batches are split on 'data'.
Parameters carry logical axis names (see `polar_jax.predictor.model`: 'features', 'embed', 'heads', 'mlp',
'layers'); a `ShardingRules` maps each name to a mesh axis or to None (replicated). Presets:

- `ShardingRules.replicated()`: every parameter on every device (the default; the predictor has ~2M).
- `ShardingRules.fsdp()`: parameters and optimizer state split over 'data' along 'embed' (FSDP style), and
  over 'model' along 'heads' / 'mlp' (tensor parallel), for a larger predictor or encoder head.

A dimension that the mesh axis does not divide is replicated rather than failing inside XLA.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical axis name -> mesh axis name (or None = replicated). Names not listed are replicated."""
  rules: tuple[tuple[str, str | None], ...] = ()

  @classmethod
  def replicated(cls) -> "ShardingRules":
    return cls(())

  @classmethod
  def fsdp(cls) -> "ShardingRules":
    return cls((("embed", DATA), ("heads", MODEL), ("mlp", MODEL)))

  @classmethod
  def named(cls, name: str) -> "ShardingRules":
    """'replicated' or 'fsdp' (the config's `mesh.rules`)."""
    presets = {"replicated": cls.replicated, "fsdp": cls.fsdp}
    if name not in presets:
      raise ValueError(f"Unknown sharding rules {name!r}; choose one of {sorted(presets)}.")
    return presets[name]()

  def mesh_axis(self, logical: str | None) -> str | None:
    return dict(self.rules).get(logical) if logical is not None else None

  def spec(self, logical: PartitionSpec | Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Logical axes of one array -> its mesh PartitionSpec (non-dividing or reused mesh axes replicated)."""
    out, used = [], set()
    for name, size in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape):
      axis = self.mesh_axis(name)
      if axis is None or axis in used or size % mesh.shape[axis]:
        out.append(None)
      else:
        out.append(axis)
        used.add(axis)
    return PartitionSpec(*out)


def create_mesh(model_parallelism: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  if model_parallelism < 1 or len(devices) % model_parallelism:
    raise ValueError(f"model_parallelism {model_parallelism} does not divide the {len(devices)} devices.")
  grid = np.asarray(devices, dtype=object).reshape(len(devices) // model_parallelism, model_parallelism)
  return Mesh(grid, (DATA, MODEL))


def param_shardings(logical_axes: Any, shapes: Any, mesh: Mesh, rules: ShardingRules) -> Any:
  """Trees of logical PartitionSpecs and of shapes (ShapeDtypeStructs) -> tree of NamedShardings."""
  return jax.tree.map(lambda axes, s: NamedSharding(mesh, rules.spec(axes, s.shape, mesh)), logical_axes, shapes,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` only for a multi-process run; returns whether it did.

  A run is multi-process when `num_processes > 1` is given, or a coordinator address is given or set in the
  environment (JAX_COORDINATOR_ADDRESS); on a cluster that jax auto-detects (SLURM, TPU pods), pass
  num_processes. Must be called before any other jax call touches devices.
  """
  address = coordinator_address or next((os.environ[v] for v in _COORDINATOR_VARS if os.environ.get(v)), None)
  if not address and not (num_processes and num_processes > 1):
    return False
  jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id)
  return True
