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
import itertools
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from polar_jax.errors import UserError

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


class DistributedError(UserError, ValueError):
  """The multi-process settings are inconsistent, or JAX could not start the distributed runtime with them."""


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, auto: bool = False,
                           heartbeat_timeout_s: int | None = None, initialization_timeout_s: int | None = None
                           ) -> bool:
  """Calls `jax.distributed.initialize` for a multi-process run; returns whether JAX runs distributed.

  Nothing happens (False) for a single process: no arguments, `num_processes` 1 or None, no
  JAX_COORDINATOR_ADDRESS in the environment and `auto` False. With `auto=True` and no arguments, JAX detects
  the cluster itself (Cloud TPU VM slices, SLURM, Open MPI, Kubernetes JobSets). Otherwise the arguments are
  passed on: a coordinator address (process 0's `host:port`), the process count and this process's id; what is
  left out JAX detects or fails on, with a one-line `DistributedError`. Idempotent: once initialized, returns
  True. Must run before anything touches a JAX device (an entry point calls it first).
  """
  if jax.distributed.is_initialized():
    return True
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is not None and num_processes < 1:
    raise DistributedError(f"--num_processes must be at least 1, got {num_processes}.")
  if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
    raise DistributedError(f"--process_id must be in 0..{(num_processes or 1) - 1} (one id per process), got "
                           f"{process_id}.")
  if not (auto or address or (num_processes or 1) > 1):
    if process_id:
      raise DistributedError(f"--process_id={process_id} without --num_processes: pass --num_processes=N and "
                             "--coordinator_address=HOST:PORT (process 0's address) on every process.")
    return False
  kwargs = {"coordinator_address": address, "num_processes": num_processes, "process_id": process_id}
  if heartbeat_timeout_s is not None:
    kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s)
  if initialization_timeout_s is not None:
    kwargs["initialization_timeout"] = int(initialization_timeout_s)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # what JAX could not detect: it names the missing argument
    detail = " ".join(str(e).split()).rstrip(".")
    where = ("--distributed found no cluster that JAX detects (Cloud TPU VM, SLURM, Open MPI)" if auto and not address
             else f"jax.distributed.initialize failed: {detail}")
    raise DistributedError(
        f"{where}. Pass --coordinator_address=HOST:PORT (process 0's address), --num_processes=N and "
        "--process_id=I on every process" + ("." if auto else ", or --distributed alone where JAX detects the cluster "
                                             "(Cloud TPU VM, SLURM, Open MPI).")) from None
  return True


def is_lead() -> bool:
  """Process 0: the one that writes what all processes share (markers, merged files, summaries)."""
  return jax.process_index() == 0


def _client():
  from jax._src import distributed  # pylint: disable=import-outside-toplevel  # the runtime's barrier and store
  return distributed.global_state.client


_LONG_S = 7 * 24 * 3600  # a barrier that waits for the slowest search shard: the job's own limits stop it first
_CALLS = itertools.count()  # every process makes the same calls in the same order: their keys agree


def _key(name: str) -> str:
  return f"polar_jax/{next(_CALLS)}/{name}"


def wait_for_all(name: str, timeout_s: float = _LONG_S) -> None:
  """Every process reaches the barrier `name` before any goes on; nothing for one process.

  A barrier of the distributed runtime, not a device collective, so a process may wait at it for hours. A
  process that dies meanwhile brings the job down (JAX's heartbeats), so nobody waits forever.
  """
  if jax.process_count() == 1:
    return
  client = _client()
  if client is None:  # several processes without jax.distributed (a TPU slice run without --distributed)
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(_key(name))
    return
  client.wait_at_barrier(_key(name), int(timeout_s * 1000))


def on_lead(name: str, fn: Callable[[], Any], timeout_s: float = _LONG_S) -> Any:
  """Runs `fn` on process 0 only; the others wait until it is done (or raise a `DistributedError` naming the
  error it raised). Returns `fn()`'s value on process 0, None elsewhere. For one process: just `fn()`."""
  if jax.process_count() == 1:
    return fn()
  client = _client()
  if client is None:
    raise DistributedError("This multi-process run was started without jax.distributed.initialize; pass "
                           "--distributed (or --coordinator_address, --num_processes and --process_id).")
  key = _key(name)
  if is_lead():
    try:
      out = fn()
    except BaseException as e:
      client.key_value_set(key, f"{type(e).__name__}: {e}")
      raise
    client.key_value_set(key, "ok")
    return out
  status = client.blocking_key_value_get(key, int(timeout_s * 1000))
  if status != "ok":
    raise DistributedError(f"process 0 failed at {name!r} ({status}); see its output.")
  return None


# The entry points' flags (`python -m polar_jax.main`, `python -m polar_jax.search run`).
def define_distributed_flags() -> None:
  """Defines --coordinator_address, --num_processes, --process_id and --distributed (once per process)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if "num_processes" in flags.FLAGS:
    return
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-process runs: process 0's host:port, the same on every process (default: "
                      "$JAX_COORDINATOR_ADDRESS, or what --distributed detects).")
  flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes (one per host, usually).")
  flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's id, 0 .. num_processes - 1.")
  flags.DEFINE_bool("distributed", False,
                    "Call jax.distributed.initialize() even without the three flags above, so that JAX detects "
                    "the cluster (every worker of a Cloud TPU VM slice, a SLURM or Open MPI job). Off, and without "
                    "those flags, the run is one process and nothing is initialized.")


def initialize_from_flags() -> bool:
  """`initialize_distributed` with the entry point's flags (see `define_distributed_flags`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  return initialize_distributed(f.coordinator_address, f.num_processes, f.process_id, auto=f.distributed)
