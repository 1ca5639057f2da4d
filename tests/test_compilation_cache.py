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
path = resources.enable_compilation_cache()
print(path)
print(jax.jit(lambda x: x * 2 + 1)(jnp.arange(3.0)).tolist())
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
  path, result = out.stdout.split("\n")[:2]
  assert result == "[1.0, 3.0, 5.0]"
  return path, out.stderr


def _entries(directory):
  return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []


def test_the_cache_fills_and_a_second_process_reads_it(tmp_path):
  xla = tmp_path / "cache" / "xla"
  path, console = _run(tmp_path)
  assert path == str(xla)
  first = _entries(xla)
  assert first, "nothing was cached"
  assert "Warning" not in console and "WARNING" not in console, console
  _run(tmp_path)
  assert _entries(xla) == first  # the same computation: read, not written again


@pytest.mark.parametrize("setting", ["off", "users_own"])
def test_the_user_decides(tmp_path, setting):
  own = tmp_path / "own"
  extra = ({"POLAR_JAX_XLA_CACHE": "0"} if setting == "off" else  # the user's directory and threshold are kept
           {"JAX_COMPILATION_CACHE_DIR": str(own), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
  path, _ = _run(tmp_path, **extra)
  assert path == ("None" if setting == "off" else str(own))
  assert not _entries(tmp_path / "cache" / "xla")
  assert bool(_entries(own)) == (setting == "users_own")


def test_an_entry_point_turns_it_on(tmp_path):
  out = subprocess.run([sys.executable, "-m", "polar_jax.predict", f"--workdir={tmp_path / 'nothing'}", "--question=x"],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=300, cwd=_ROOT)
  assert out.returncode == 2 and "is not a pipeline workdir" in out.stderr, out.stderr[-2000:]
  assert (tmp_path / "cache" / "xla").is_dir()
