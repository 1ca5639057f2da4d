"""A run's workdir: which config it belongs to, and which stages have finished (light: standard library).

Layout (the stages write their own files under `<stage>/`):
  config.json              the config the workdir belongs to (`options.identity`); a different config is
                           refused unless `overwrite=True`, which clears the stage outputs first
  <stage>/done.json        written last by a finished stage; a stage whose marker exists is skipped
  results.json, results.md the final table (copied from evaluate/)
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Sequence

from polar_jax.errors import UserError

CONFIG_FILE = "config.json"
RESULT_FILES = ("results.json", "results.md")


class WorkdirMismatchError(UserError, ValueError):
  """The workdir holds the outputs of a different config."""


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Human-readable differences between two JSON objects: `key.sub: old there, new now`."""
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}{key}.")
    elif va != vb:
      out.append(f"{prefix}{key}: {va!r} there, {vb!r} now")
  return out


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Writes JSON next to `path` and renames it into place (a killed write never leaves half a file)."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  os.replace(tmp, path)


def prepare_workdir(identity: dict[str, Any], workdir: str | os.PathLike, *, stages: Sequence[str],
                    overwrite: bool = False) -> pathlib.Path:
  """Creates the workdir or checks that it belongs to the config whose identity is given.

  A mismatch raises WorkdirMismatchError listing the differing fields, unless `overwrite`, which deletes the
  stage folders and results first. The config file is rewritten only when it changes.
  """
  workdir = pathlib.Path(workdir).expanduser().absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  saved_path = workdir / CONFIG_FILE
  if saved_path.exists():
    saved = json.loads(saved_path.read_text())
    if saved == identity:
      return workdir
    if not overwrite:
      diff = _diff(saved, identity)
      raise WorkdirMismatchError(
          f"{workdir} holds the results of a different config ({'; '.join(diff[:6])}"
          f"{'; ...' if len(diff) > 6 else ''}). Use another --workdir, or pass --config.overwrite=True to "
          "delete its outputs and start again.")
    for stage in stages:
      shutil.rmtree(workdir / stage, ignore_errors=True)
    for name in RESULT_FILES:
      (workdir / name).unlink(missing_ok=True)
  write_json_atomic(saved_path, identity)
  return workdir


def done(workdir: pathlib.Path, stage: str) -> dict | None:
  """The stage's done marker, or None while it has not finished."""
  marker = workdir / stage / "done.json"
  return json.loads(marker.read_text()) if marker.exists() else None


def mark_done(workdir: pathlib.Path, stage: str, info: dict) -> None:
  (workdir / stage).mkdir(parents=True, exist_ok=True)
  write_json_atomic(workdir / stage / "done.json", info)
