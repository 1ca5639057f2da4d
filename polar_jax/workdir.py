"""A run's workdir: which config it belongs to, and which stages have finished (light: standard library).

Layout (the stages write their own files under `<stage>/`):
  config.json              the config the workdir belongs to (`options.identity`); on a start with another
                           config, the first stage whose part of it changed and every later stage rerun, the
                           earlier ones are kept (`prepare_workdir`)
  <stage>/done.json        written last by a finished stage; a stage whose marker exists is skipped
  results.json, results.md the final table (copied from evaluate/)
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Callable, Mapping, Sequence

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


class WorkdirError(UserError, OSError):
  """The workdir cannot be created or written (permissions, a file in the way, a full disk)."""


def _stage_dirs(stage_dirs: Mapping[str, Sequence[str]] | None, stage: str) -> Sequence[str]:
  return (stage_dirs or {}).get(stage, (stage,))


def _has_outputs(workdir: pathlib.Path, stage: str, stage_dirs) -> bool:
  return any((workdir / d).exists() for d in _stage_dirs(stage_dirs, stage))


def prepare_workdir(identity: dict[str, Any], workdir: str | os.PathLike, *, stages: Sequence[str],
                    overwrite: bool = False,
                    stage_identity: Callable[[dict[str, Any], str], tuple[Any, Any]] | None = None,
                    stage_dirs: Mapping[str, Sequence[str]] | None = None, protected: Sequence[str] = (),
                    notes: list[str] | None = None) -> pathlib.Path:
  """Creates the workdir or reconciles it with the config whose identity is given, stage by stage.

  `stage_identity(identity, stage)` gives a stage's part of an identity: (what its outputs depend on, fields
  whose change only reruns it). The first stage (in `stages` order) whose part changed is cleared together with
  every later stage, and the earlier stages are kept; a stage whose rerun fields alone changed loses its done
  marker only (it reruns and reuses its files). Clearing a `protected` stage that has outputs (the search: hours
  of work) is refused with WorkdirMismatchError listing the changed fields unless `overwrite`. A workdir whose
  stages have no outputs yet takes the new config as it is (a failed start blocks nothing). Without
  `stage_identity` the whole identity is one stage's. `notes` receives one line per stage cleared or rerun. The
  config file is written only when it changes (a finished workdir on read-only storage can be read).
  """
  workdir = pathlib.Path(workdir).expanduser().absolute()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except (PermissionError, FileExistsError, OSError) as e:
    raise WorkdirError(f"Cannot create the workdir {workdir}: {e.strerror or e}; choose a --workdir you can "
                       "write to.") from None
  saved_path = workdir / CONFIG_FILE
  notes = notes if notes is not None else []
  if saved_path.exists():
    try:
      saved = json.loads(saved_path.read_text())
    except ValueError:
      raise WorkdirError(f"{saved_path} is not valid JSON (a damaged workdir); delete that file to adopt this "
                         "config (the stages' outputs are checked again on the next start).") from None
    if saved == identity:
      return workdir
    part = stage_identity or (lambda ident, stage: (ident, None))
    started = [s for s in stages if _has_outputs(workdir, s, stage_dirs)]
    first = next((i for i, s in enumerate(stages) if part(saved, s)[0] != part(identity, s)[0]), None)
    cleared = list(stages[first:]) if first is not None else []
    if started:
      blocked = [s for s in cleared if s in protected and s in started]
      if blocked and not overwrite:
        diff = _diff(saved, identity)
        kept = [s for s in stages[:first] if s in started]
        raise WorkdirMismatchError(
            f"{workdir} holds {blocked[0]} results of a different config ({'; '.join(diff[:6])}"
            f"{'; ...' if len(diff) > 6 else ''}). Use another --workdir, or pass --config.overwrite=True to "
            f"delete the {' and '.join(s for s in cleared if s in started)} outputs and rerun them"
            f"{' (keeping ' + ', '.join(kept) + ')' if kept else ''}.")
      for stage in stages:
        if stage in cleared and stage in started:
          changed = _diff(part(saved, stage)[0] or {}, part(identity, stage)[0] or {})
          for d in _stage_dirs(stage_dirs, stage):
            shutil.rmtree(workdir / d, ignore_errors=True)
          notes.append(f"{stage}: its config changed ({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}"
                       "); its outputs were removed and it reruns")
        elif stage not in cleared and part(saved, stage)[1] != part(identity, stage)[1]:
          for d in _stage_dirs(stage_dirs, stage):
            (workdir / d / "done.json").unlink(missing_ok=True)
          notes.append(f"{stage}: {', '.join(_diff(part(saved, stage)[1] or {}, part(identity, stage)[1] or {}))}; "
                       "it reruns and reuses its saved work")
      if cleared or any(n.startswith(stages[-1]) for n in notes):
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
