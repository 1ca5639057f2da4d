"""Shared helpers of the benchmark scripts: timing, machine description, JSON output.

The scripts run as `python benchmarks/<name>.py`, so this module is imported as `common`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall milliseconds of `fn()` over `repeats` calls, after one untimed warm-up call (the compile)."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
  """Wall milliseconds of every fn over `repeats` rounds in which the fns take turns (A B C, then C B A, ...),
  after one untimed warm-up call each (the compile), so that a change of machine load hits all of them alike.
  Returns each fn's list of times."""
  for fn in fns.values():
    fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  order = list(fns)
  for r in range(repeats):
    for name in (order if r % 2 == 0 else order[::-1]):
      t0 = time.perf_counter()
      fns[name]()
      times[name].append((time.perf_counter() - t0) * 1e3)
  return times


def cpu_model() -> str | None:
  """The CPU's model name where the OS says it (Linux: /proc/cpuinfo): figures from different CPUs differ."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
  except OSError:
    return None


def search_result(stdout: str) -> dict[str, Any] | None:
  """The result of `python -m polar_jax.search run` from its stdout: its last JSON line with a "seconds" key (a
  `--summary` line comes before it), or None."""
  lines = [line for line in stdout.splitlines() if line.startswith("{") and '"seconds"' in line]
  return json.loads(lines[-1]) if lines else None


def bad_input(prog: str, message: str) -> None:
  """A benchmark's input error, as the entry points report theirs: one line (what is wrong, how to fix it), exit 2."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)


def machine() -> dict[str, Any]:
  """What the figures were measured on."""
  import jax
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_model": cpu_model(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
          "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "load_average": list(os.getloadavg())}


def emit(result: dict[str, Any], out: str | None) -> None:
  """Prints the result as JSON and writes it to `out` when given."""
  text = json.dumps(result, indent=2)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")
