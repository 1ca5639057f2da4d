"""Submits a sweep with XManager: one job per sweep point (xmanager is imported inside main only).

  python -m launch.xm_launch --sweep=paper_models --param=model_root=/gcs/ckpt --workdir_root=/gcs/polar \
      --accelerator=v5litepod --accelerator_count=8
  python -m launch.xm_launch --sweep=length_penalty --dry_run   # prints the jobs, needs no xmanager

Submitting needs the `xm` extra (`pip install -e ".[xm]"`); a dry run prints each job's name as a `#` comment
line above its command.

Each job runs `python -m polar_jax.main` from a Python container built from this repository, with the
point's config file and overrides and `--workdir=<workdir_root>/<point name>`.
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags

from launch import sweeps

_SWEEP = flags.DEFINE_string("sweep", None, f"One of: {', '.join(sorted(sweeps.SWEEPS))}.")
_ROOT = flags.DEFINE_string("workdir_root", "/tmp/polar_sweeps", "Each job's workdir is <root>/<point name>.")
_PARAMS = flags.DEFINE_multi_string("param", [], "key=value filled into {key} placeholders of the sweep.")
_TITLE = flags.DEFINE_string("title", "polar_jax", "Experiment title.")
_ACCELERATOR = flags.DEFINE_string("accelerator", "", "e.g. v5litepod, h100; empty: CPU.")
_ACCELERATOR_COUNT = flags.DEFINE_integer("accelerator_count", 1, "Accelerators per job.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the jobs instead of submitting them.")


def job_specs(points: list[sweeps.SweepPoint], root: str) -> list[dict]:
  """What each job runs: its name and the args of `python -m polar_jax.main`."""
  return [{"name": p.name, "module": "polar_jax.main", "args": p.args(root)} for p in points]


def main(argv):
  points = sweeps.points_from_flags(argv, _SWEEP.value, _PARAMS.value)
  specs = job_specs(points, _ROOT.value)
  if _DRY_RUN.value:
    for spec in specs:
      print(f"# {spec['name']}\n{shlex.join(['python', '-m', spec['module'], *spec['args']])}")
    return 0
  try:
    from xmanager import xm, xm_local  # Deferred: only the submitter needs xmanager.
  except ImportError:
    print("launch.xm_launch: error: xmanager is not installed; pip install -e \".[xm]\" (or pass --dry_run to "
          "print the jobs).", file=sys.stderr)
    return 2

  requirements = {}
  if _ACCELERATOR.value:
    requirements[_ACCELERATOR.value] = _ACCELERATOR_COUNT.value
  with xm_local.create_experiment(experiment_title=_TITLE.value) as experiment:
    [executable] = experiment.package([
        xm.python_container(executor_spec=xm_local.Vertex.Spec(), path=".",
                            entrypoint=xm.ModuleName("polar_jax.main")),
    ])
    for spec in specs:
      experiment.add(xm.Job(executable=executable,
                            executor=xm_local.Vertex(requirements=xm.JobRequirements(**requirements)),
                            args=spec["args"], name=spec["name"]))
  return 0


if __name__ == "__main__":
  app.run(main)
