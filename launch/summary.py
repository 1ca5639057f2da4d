"""A table across the points of a sweep, read from each point's `results.json` (standard library only).

  python -m launch.local --sweep=length_penalty --workdir_root=/tmp/sweeps --summarize

Per test set, one row per method (by its id; the label is the first point's) and one column per point: pass@1 in % with its 95% Wilson interval (the
oracle share for an ORACLE row), then the same layout for the mean executed layers per token. Points that have
no `results.json` yet (still running, failed, or only some stages configured) are listed under the tables.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from launch import sweeps


class SweepResultsError(ValueError):
  """No point of the sweep has results, or a results file cannot be read (one line, with what to do)."""


def load_point_results(points: Sequence[sweeps.SweepPoint], root: str
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
  """(point name -> its results.json, point name -> why it has none) under `root`."""
  found, missing = {}, {}
  for p in points:
    path = os.path.join(root, p.name, "results.json")
    if not os.path.exists(path):
      missing[p.name] = "no results.json yet" if os.path.isdir(os.path.join(root, p.name)) else "not started"
      continue
    try:
      with open(path, encoding="utf-8") as f:
        results = json.load(f)
      if not isinstance(results.get("rows"), list):
        raise ValueError("it has no list of rows")
    except ValueError as e:
      raise SweepResultsError(f"{path} is not a results file of polar_jax.main ({e}); delete it and rerun that "
                              "point's evaluate stage.") from None
    found[p.name] = results
  return found, missing


def _value(row: Mapping[str, Any]) -> float | None:
  return row.get("oracle") if row.get("kind") == "oracle" else row.get("pass@1")


def _pass_cell(row: Mapping[str, Any] | None) -> str:
  if row is None or _value(row) is None:
    return "—"
  text = f"{100 * _value(row):.1f}"
  ci = row.get("ci95")
  return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else text


def _layers_cell(row: Mapping[str, Any] | None) -> str:
  return "—" if row is None or row.get("layers_per_token") is None else f"{row['layers_per_token']:.1f}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|---|" + "|".join("---:" for _ in header[1:]) + "|"]
  return out + ["| " + " | ".join(line) + " |" for line in lines]


def sweep_table(name: str, points: Sequence[sweeps.SweepPoint], root: str) -> str:
  """The Markdown summary of a sweep (see the module docstring); raises SweepResultsError without results."""
  found, missing = load_point_results(points, root)
  if not found:
    raise SweepResultsError(f"No point of sweep {name!r} under {root} has a results.json yet; run it first "
                            f"(python -m launch.local --sweep={name} --workdir_root={root}).")
  names = [p.name for p in points if p.name in found]
  out = [f"# Sweep {name}: {len(found)} of {len(points)} points with results ({root})", ""]
  out += [f"- `{p.name}`: " + (", ".join(f"{k}={v}" for k, v in p.overrides) or "(no overrides)")
          for p in points if p.name in found]
  test_sets: dict[str, None] = {}
  for results in found.values():
    test_sets.update(dict.fromkeys(r["test_set"] for r in results["rows"] if r.get("level") == "all"))
  for test_set in test_sets:
    cells: dict[str, dict[str, Mapping[str, Any]]] = {}  # method id -> point -> row
    labels: dict[str, str] = {}  # method id -> the first point's label (a label may name a point's own n)
    ns = set()
    for point in names:
      for r in found[point]["rows"]:
        if r.get("level") == "all" and r["test_set"] == test_set:
          cells.setdefault(r["method"], {})[point] = r
          labels.setdefault(r["method"], r.get("label") or r["method"])
          ns.add(r.get("n"))
    size = f"n = {ns.pop()}" if len(ns) == 1 else "n differs between points"
    out += ["", f"## {test_set} ({size})", "", "pass@1 % [95% CI] (ORACLE rows: share with a correct candidate):", ""]
    out += _table(["method", *names], [[labels[m], *(_pass_cell(by.get(p)) for p in names)]
                                       for m, by in cells.items()])
    out += ["", "executed layers per token:", ""]
    out += _table(["method", *names], [[labels[m], *(_layers_cell(by.get(p)) for p in names)]
                                       for m, by in cells.items()])
  if missing:
    out += ["", "Without results: " + ", ".join(f"`{n}` ({why})" for n, why in missing.items()) + "."]
  return "\n".join(out) + "\n"
