"""The entry points' persistent XLA compilation cache (`resources.enable_compilation_cache`), in fresh interpreters
without the suite's own cache (tests/conftest.py sets JAX_COMPILATION_CACHE_DIR for everything else)."""

import os
import subprocess
import sys

import pytest

import polar_jax

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(polar_jax.__file__)))
_CODE = """
import jax, jax.numpy as jnp
from polar_jax import resources
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event)
                                       if event == "/jax/compilation_cache/cache_hits" else None)
path = resources.enable_compilation_cache()
print(path)
print(jax.jit(lambda x: x * 2 + 1)(jnp.arange(3.0)).tolist())
print(len(hits))
"""


def _env(tmp_path, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE",
                                                                  "POLAR_JAX_XLA_CACHE"))}
  env.update(POLAR_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])), **extra)
  return env


def _run(tmp_path, **extra):
  out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, env=_env(tmp_path, **extra),
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  path, result, hits = out.stdout.split("\n")[:3]
  assert result == "[1.0, 3.0, 5.0]"
  assert "Warning" not in out.stderr and "WARNING" not in out.stderr, out.stderr
  return path, int(hits)


def _entries(directory):
  return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []


def test_the_cache_fills_and_a_second_process_reads_it(tmp_path):
  xla = tmp_path / "cache" / "xla"
  path, hits = _run(tmp_path)
  assert path == str(xla) and hits == 0
  first = _entries(xla)
  assert first, "nothing was cached"
  path, hits = _run(tmp_path)
  assert hits >= 1  # read from the cache, not compiled again
  assert _entries(xla) == first


def test_an_empty_entry_left_by_a_killed_writer_is_removed(tmp_path):
  """JAX neither reads an empty entry (a warning, a recompile) nor replaces it; the next start removes it."""
  xla = tmp_path / "cache" / "xla"
  _run(tmp_path)
  entries = sorted(p for p in xla.iterdir() if p.name.endswith("-cache"))
  entries[0].write_bytes(b"")
  _, hits = _run(tmp_path)  # no warning (checked in _run): that one compiled and written again, the rest read
  assert entries[0].stat().st_size > 0 and hits == len(entries) - 1


@pytest.mark.parametrize("setting", ["off", "users_own"])
def test_the_user_decides(tmp_path, setting):
  own = tmp_path / "own"
  extra = ({"POLAR_JAX_XLA_CACHE": "0"} if setting == "off" else  # the user's directory and threshold are kept
           {"JAX_COMPILATION_CACHE_DIR": str(own), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
  path, _ = _run(tmp_path, **extra)
  assert path == ("None" if setting == "off" else str(own))
  assert not _entries(tmp_path / "cache" / "xla")
  assert bool(_entries(own)) == (setting == "users_own")


@pytest.mark.parametrize("command", ["main", "search", "predict", "lab"])
def test_the_entry_points_turn_it_on(tmp_path, command):
  """Each entry point turns the cache on before it reads its inputs (here bad ones: exit 2, nothing run)."""
  config = "--config=configs/default.py:quick"
  args = {"main": ["polar_jax.main", config, f"--workdir={tmp_path / 'run'}", "--config.stages=nonsense"],
          "search": ["polar_jax.search", "run", config, f"--out={tmp_path / 's.jsonl'}", "--config.search.shard=5/4"],
          "predict": ["polar_jax.predict", f"--workdir={tmp_path / 'nothing'}", "--question=x"],
          "lab": ["polar_jax.lab", f"--matrix={tmp_path / 'nothing'}"]}[command]
  out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=_env(tmp_path), timeout=300,
                       cwd=_ROOT)
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]  # bad input: one line
  assert (tmp_path / "cache" / "xla").is_dir()
