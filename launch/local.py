"""Runs a sweep on this machine: sequentially or N points at a time, or prints the commands (dry run).

  python -m launch.local --sweep=length_penalty --workdir_root=/tmp/sweeps --parallel=2
  python -m launch.local --sweep=paper_models --param=model_root=/ckpt --dry_run

Each point runs `python -m polar_jax.main` in its own process with its log in `<workdir>/log.txt`; points
resume where they stopped when the sweep is launched again (each stage skips finished work).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import app, flags

from launch import sweeps

_SWEEP = flags.DEFINE_string("sweep", None, f"One of: {', '.join(sorted(sweeps.SWEEPS))}.")
_ROOT = flags.DEFINE_string("workdir_root", "/tmp/polar_sweeps", "Each point's workdir is <root>/<point name>.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points running at the same time.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_PARAMS = flags.DEFINE_multi_string("param", [], "key=value filled into {key} placeholders of the sweep.")


def run_points(points: list[sweeps.SweepPoint], root: str, parallel: int, dry_run: bool,
               python: str = sys.executable) -> dict[str, int]:
  """Runs (or prints) the points; returns each point's exit code (0 for every point of a dry run)."""
  if dry_run:
    for p in points:
      print(p.shell(root))
    return {p.name: 0 for p in points}
  pending, running, codes = list(points), {}, {}
  while pending or running:
    while pending and len(running) < max(1, parallel):
      p = pending.pop(0)
      workdir = os.path.join(root, p.name)
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, "log.txt"), "ab")
      running[p.name] = (subprocess.Popen(p.command(root, python), stdout=log, stderr=subprocess.STDOUT), log)
      print(f"started {p.name}", flush=True)
    for name, (proc, log) in list(running.items()):
      if proc.poll() is not None:
        log.close()
        codes[name] = proc.returncode
        del running[name]
        print(f"finished {name}: exit {proc.returncode}", flush=True)
    time.sleep(0.2)
  return codes


def main(argv):
  points = sweeps.points_from_flags(argv, _SWEEP.value, _PARAMS.value)
  codes = run_points(points, _ROOT.value, _PARALLEL.value, _DRY_RUN.value)
  failed = sorted(n for n, c in codes.items() if c)
  if failed:
    print(f"{len(failed)} point(s) failed: {failed}; see their log.txt.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
