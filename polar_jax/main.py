"""Entry point: `python -m polar_jax.main --config=configs/default.py[:variant] --workdir=DIR`.

Thin on purpose: parse flags (a config file with `get_config(arg)`, CLI overrides such as
`--config.search.num_simulations=64`), then call `polar_jax.pipeline.run_pipeline`, which a notebook can call
too. Installed as the `polar-jax` console script.

Multi-process (one process per host, the same command on each, one shared workdir): `--coordinator_address`,
`--num_processes` and `--process_id` (GPU nodes, several processes on one machine), or `--distributed` alone
where JAX detects the cluster (Cloud TPU VM slices, SLURM, Open MPI); see the README's "Multi-host" section.
Without them the run is one process and `jax.distributed` is never started.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from polar_jax import resources, sharding
from polar_jax.errors import is_disk_full, user_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py), optionally with ':variant', e.g. configs/default.py:quick.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run keeps all its outputs (resumable).")
sharding.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("Both --config and --workdir are required, e.g. "
                         "--config=configs/default.py --workdir=/tmp/polar_default")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Library INFO logs (orbax's) drown the progress; --v=0 shows them.
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # The run writes PNG files; the library leaves the backend to its caller (notebooks).
  from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
  try:
    sharding.initialize_from_flags()  # before anything touches a device
    resources.enable_compilation_cache()  # before the first compile
    pipeline.run_pipeline(_CONFIG.value, _WORKDIR.value)
  except user_errors() as e:
    print(f"polar_jax: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if not is_disk_full(e):
      raise
    where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
    print(f"polar_jax: error: the disk is full{where}. Free some space and rerun the same command: finished "
          "stages, searched questions and menu chunks are kept, and the stage resumes.", file=sys.stderr)
    return 2
  return 0


def run():
  """Console-script entry point."""
  from polar_jax.options_io import strict_flags_parser  # pylint: disable=import-outside-toplevel
  app.run(main, flags_parser=strict_flags_parser("polar_jax"))


if __name__ == "__main__":
  run()
