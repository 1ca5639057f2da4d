"""Runs a sweep on this machine: sequentially or N points at a time, prints the commands, or summarizes.

  python -m launch.local --sweep=length_penalty --workdir_root=/tmp/sweeps --parallel=2
  python -m launch.local --sweep=paper_models --param=model_root=/ckpt --dry_run
  python -m launch.local --sweep=length_penalty --workdir_root=/tmp/sweeps --summarize

Each point runs `python -m polar_jax.main` in its own process with its log in `<workdir>/log.txt` (which
starts with the point's name, start time and command); points resume where they stopped when the sweep is
launched again (each stage skips finished work). A dry run prints each point's name as a `#` comment line
above its command, so the output can be pasted into a shell. `--summarize` prints a table across the points
from each point's `results.json` (`launch.summary`) and runs nothing.
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

from launch import summary, sweeps

_SWEEP = flags.DEFINE_string("sweep", None, f"One of: {', '.join(sorted(sweeps.SWEEPS))}.")
_ROOT = flags.DEFINE_string("workdir_root", "/tmp/polar_sweeps", "Each point's workdir is <root>/<point name>.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points running at the same time.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_PARAMS = flags.DEFINE_multi_string("param", [], "key=value filled into {key} placeholders of the sweep.")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Print a table across the points' results.json; run nothing.")


def run_points(points: list[sweeps.SweepPoint], root: str, parallel: int, dry_run: bool,
               python: str = sys.executable) -> dict[str, int]:
  """Runs (or prints) the points; returns each point's exit code (0 for every point of a dry run)."""
  if dry_run:
    for p in points:
      print(f"# {p.name}\n{p.shell(root)}")
    return {p.name: 0 for p in points}
  pending, running, codes = list(points), {}, {}
  while pending or running:
    while pending and len(running) < max(1, parallel):
      p = pending.pop(0)
      workdir = os.path.join(root, p.name)
      os.makedirs(workdir, exist_ok=True)
      command = p.command(root, python)
      log = open(os.path.join(workdir, "log.txt"), "ab")
      started = datetime.datetime.now().isoformat(timespec="seconds")
      log.write(f"# {p.name}, started {started} in {os.getcwd()}\n{shlex.join(command)}\n".encode())
      log.flush()
      running[p.name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
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
  if _SUMMARIZE.value:
    try:
      print(summary.sweep_table(_SWEEP.value, points, _ROOT.value), end="")
    except summary.SweepResultsError as e:
      print(f"launch.local: error: {e}", file=sys.stderr)
      return 2
    return 0
  codes = run_points(points, _ROOT.value, _PARALLEL.value, _DRY_RUN.value)
  failed = sorted(n for n, c in codes.items() if c)
  if failed:
    print(f"{len(failed)} point(s) failed: {failed}; see their log.txt.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
