"""Test setup: CPU only, float32 matmuls at full precision, a private conversion cache, and one XLA compilation
cache for the whole run.

The compilation cache is a fresh directory per run (so every run, CI's included, starts cold and no stale entry
outlives it), shared by the pytest process and every subprocess it starts (they inherit the environment): the
suite builds many executors and runs the pipeline's entry points in many subprocesses, which compile the same
computations again; with the cache each is compiled once per run. It changes no result (a cache hit is the same
executable), and tests that count compiles count traces, which still happen. A run that sets
JAX_COMPILATION_CACHE_DIR itself keeps its own."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="polar_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the suite's many small compiles too

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


# --- the quick pipeline run, shared -----------------------------------------------------------------------------

import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUICK_ARGS = ("--config=configs/default.py:quick", "--config.search.max_active=2")


@dataclasses.dataclass(frozen=True)
class QuickRun:
  """`configs/default.py:quick` run end to end in `workdir`: killed during the search, then resumed.

  before: the records file's lines when the first process was killed; done: the resumed run (its output)."""
  workdir: pathlib.Path
  before: list
  done: subprocess.CompletedProcess
  first_console: str = ""  # the killed first process's stdout and stderr


def _lines(path: pathlib.Path) -> list:
  return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> QuickRun:
  """The suite's one quick pipeline run (minutes): tests/test_pipeline.py checks the run itself, the inspect and
  predict tests read its workdir (they must not write there)."""
  workdir = tmp_path_factory.mktemp("quick") / "run"
  command = [sys.executable, "-m", "polar_jax.main", *QUICK_ARGS, f"--workdir={workdir}"]
  records = workdir / "search" / "records.jsonl"
  # A fresh cache, so the run prepares its dataset and converts the model as a new user's first run does (the
  # quiet-console check reads both consoles).
  env = {**os.environ, "POLAR_JAX_CACHE": str(workdir.parent / "cache")}
  first_log = workdir.parent / "first.log"
  with first_log.open("w") as log:
    first = subprocess.Popen(command + ["--config.stages=convert,search"], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not _lines(records):
      time.sleep(0.5)
    first.kill()
    first.wait()
  before = _lines(records)
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return QuickRun(workdir, before, done, first_log.read_text())
