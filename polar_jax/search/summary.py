"""The papers' findings computed from search records, written as `summary.json` and a PNG of layer usage.

Definitions (D = model depth; a question is *base-correct* when the full program's reward is above
`polar_jax.records.VALID_THRESHOLD`):

- base_correct_with_shorter_valid: share of base-correct questions with a valid program of length < D
  (CoLa finding 3 / PoLar "Occam's razor": 75.5% on Llama-3.2-3B).
- base_wrong_corrected: share of base-wrong questions with any valid program; base_wrong_corrected_shorter:
  with a valid program of length < D (PoLar: 36.2%).
- valid_lengths: histogram of the lengths of all valid programs, pooled over questions; shortest_valid: the
  mean length / unique-layer count of each question's shortest valid program, split C->C and W->C (CoLa
  figure 2).
- layers: per layer, over valid programs with each question weighted equally (a question's valid programs
  share weight 1): `skip` = share of programs that never run the layer, `repeat` = share that run it more
  than once, `usage` = mean number of runs (1.0 for the full program).
- valid_program_kinds: valid programs (pooled) per `polar_jax.programs.kinds.ProgramKind`: full, skip-only,
  repeat-only, skip and repeat, and other (outside the skip/repeat space: reorders, partial repeats).
Records without an initial score (imported from other tools) count only in the pooled statistics.

by_simulations: the headline shares as they stood after the first n simulations of the same run, for n in
`budgets` (by default N/8, N/4, N/2 and N of the run's N): each valid / invalid entry of our searches records
the simulation that first reached it (`simulation`), and a question's first n simulations do not depend on how
many follow (the tree never reads `num_simulations`), so one run of N simulations gives the findings of every
smaller budget. Records without the field (imported, or written before it existed) give no budget rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from polar_jax.programs.kinds import ProgramKind, program_kind
from polar_jax.records import VALID_THRESHOLD, SearchRecord


def _share(numerator: int, denominator: int) -> float | None:
  return numerator / denominator if denominator else None


def _mean(values: Sequence[float]) -> float | None:
  return float(np.mean(values)) if values else None


def summarize(records: Sequence[SearchRecord]) -> dict[str, Any]:
  """The findings above for records of one model (one depth)."""
  if not records:
    raise ValueError("summarize needs at least one search record.")
  depths = sorted({r.depth for r in records})
  if len(depths) != 1:
    raise ValueError(f"Records of several model depths {depths} cannot be summarized together; split them.")
  depth = depths[0]
  base_correct = base_wrong = shorter = corrected = corrected_shorter = solved = 0
  lengths: list[int] = []
  shortest = {"C->C": [], "W->C": []}
  shortest_unique = {"C->C": [], "W->C": []}
  skip = np.zeros(depth)
  repeat = np.zeros(depth)
  usage = np.zeros(depth)
  weighted_questions = 0
  kinds = {kind.value: 0 for kind in ProgramKind}
  for rec in records:
    programs = rec.valid_programs
    has_shorter = any(len(p) < depth for p in programs)
    solved += bool(programs)
    score = rec.initial_score
    if score is not None:
      if score > VALID_THRESHOLD:
        base_correct += 1
        shorter += has_shorter
      else:
        base_wrong += 1
        corrected += bool(programs)
        corrected_shorter += has_shorter
      if programs:
        best = min(programs, key=lambda p: (len(p), len(set(p))))
        case = "C->C" if score > VALID_THRESHOLD else "W->C"
        shortest[case].append(len(best))
        shortest_unique[case].append(len(set(best)))
    if not programs:
      continue
    weighted_questions += 1
    counts = np.stack([np.bincount(np.asarray(p), minlength=depth) for p in programs])  # [P, D]
    skip += (counts == 0).mean(0)
    repeat += (counts > 1).mean(0)
    usage += counts.mean(0)
    for p in programs:
      lengths.append(len(p))
      kinds[program_kind(p, depth).value] += 1
  n = max(weighted_questions, 1)
  hist = {str(k): int(v) for k, v in sorted(zip(*np.unique(lengths, return_counts=True)))} if lengths else {}
  evaluations = [r.evaluations for r in records]
  simulations = [r.simulations for r in records if r.simulations is not None]
  seconds = [r.seconds for r in records if r.seconds is not None]
  return {
      "questions": len(records),
      "depth": depth,
      "base_correct": base_correct,
      "base_wrong": base_wrong,
      "base_accuracy": _share(base_correct, base_correct + base_wrong),
      "oracle_accuracy": _share(solved, len(records)),
      "base_correct_with_shorter_valid": _share(shorter, base_correct),
      "base_wrong_corrected": _share(corrected, base_wrong),
      "base_wrong_corrected_shorter": _share(corrected_shorter, base_wrong),
      "valid_programs": len(lengths),
      "valid_program_kinds": kinds,
      "valid_lengths": {"histogram": hist, "mean": _mean(lengths),
                        "median": float(np.median(lengths)) if lengths else None,
                        "min": min(lengths, default=None), "max": max(lengths, default=None)},
      "shortest_valid": {case: {"questions": len(v), "mean_length": _mean(v),
                                "mean_unique_layers": _mean(shortest_unique[case])}
                         for case, v in shortest.items()},
      "layers": {"skip": (skip / n).round(6).tolist(), "repeat": (repeat / n).round(6).tolist(),
                 "usage": (usage / n).round(6).tolist()},
      "evaluations_mean": _mean(evaluations),
      "simulations_mean": _mean(simulations),
      # Per question wall time while it was active; questions overlap in a batched run, so this is no sum.
      "active_seconds_mean": _mean(seconds),
  }


def plot_search_layer_usage(summary: Mapping[str, Any], path: os.PathLike | str, title: str = "") -> None:
  """Per-layer mean runs and skip / repeat shares of valid programs (two axes), and their length histogram.

  Matplotlib is imported here and no backend is chosen (entry points choose it), so a notebook keeps its
  inline display.
  """
  import matplotlib.pyplot as plt  # Deferred: plotting is optional for the search itself.

  depth = summary["depth"]
  layers = np.arange(depth)
  step = 1 if depth <= 40 else 2 if depth <= 80 else 4
  fig = plt.figure(figsize=(max(12.0, 0.3 * depth + 4), 5.6))
  grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1], height_ratios=[1, 1], hspace=0.12, wspace=0.18)
  runs_ax = fig.add_subplot(grid[0, 0])
  share_ax = fig.add_subplot(grid[1, 0], sharex=runs_ax)
  hist_ax = fig.add_subplot(grid[:, 1])
  runs_ax.bar(layers, summary["layers"]["usage"], color="#6baed6", width=0.8)
  runs_ax.axhline(1.0, color="gray", lw=0.8, ls="--")
  runs_ax.set_ylabel("mean runs per\nvalid program", fontsize=9)
  runs_ax.set_ylim(0, max(1.25, 1.1 * max(summary["layers"]["usage"], default=1.0)))
  runs_ax.set_title(f"layer usage in valid programs ({summary['valid_programs']} programs, "
                    f"{summary['questions']} questions; each question weighs the same)", fontsize=10)
  runs_ax.tick_params(labelbottom=False)
  share_ax.plot(layers, 100 * np.asarray(summary["layers"]["skip"]), "o-", ms=4, color="#de2d26",
                label="skip the layer")
  share_ax.plot(layers, 100 * np.asarray(summary["layers"]["repeat"]), "s-", ms=4, color="#31a354",
                label="run it more than once")
  share_ax.set_ylabel("% of valid programs", fontsize=9)
  top = 100 * max(max(summary["layers"]["skip"], default=0.0), max(summary["layers"]["repeat"], default=0.0))
  share_ax.set_ylim(0, min(100.0, max(5.0, 1.3 * top)))
  share_ax.set_xlabel("layer", fontsize=9)
  share_ax.set_xticks(range(0, depth, step), [str(i) for i in range(0, depth, step)], fontsize=8)
  share_ax.legend(fontsize=8, loc="upper left", ncols=2, frameon=False)
  for ax in (runs_ax, share_ax):
    ax.grid(alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)
  hist = summary["valid_lengths"]["histogram"]
  hist_ax.bar([int(k) for k in hist], list(hist.values()), color="#756bb1", width=0.8)
  hist_ax.axvline(depth, color="gray", lw=0.8, ls="--")
  hist_ax.text(depth, 1.0, f" full depth {depth}", transform=hist_ax.get_xaxis_transform(), fontsize=8,
               color="gray", va="top")
  hist_ax.set_xlabel("program length (layers run per token)", fontsize=9)
  hist_ax.set_ylabel("valid programs", fontsize=9)
  hist_ax.set_title("valid program lengths", fontsize=10)
  hist_ax.tick_params(labelsize=8)
  hist_ax.grid(alpha=0.3, axis="y")
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
  hist_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  hist_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)


BUDGET_KEYS = ("base_correct_with_shorter_valid", "base_wrong_corrected", "base_wrong_corrected_shorter",
               "oracle_accuracy", "valid_programs", "evaluations_mean")


def at_simulations(record: SearchRecord, n: int) -> SearchRecord:
  """The record as it stood after its first n simulations: the entries first reached by then (`simulation`
  <= n), with evaluations counted the same way. Raises ValueError for entries that lack the field."""
  def kept(entries):
    out = []
    for e in entries:
      first = e.extra.get("simulation")
      if not isinstance(first, int) or isinstance(first, bool):
        raise ValueError(f"record {record.id!r}: program {list(e.program)} has no 'simulation' field, so the "
                         "record cannot be cut to a smaller budget (it was imported or written before the field).")
      if first <= n:
        out.append(e)
    return tuple(out)
  valid, invalid = kept(record.valid), kept(record.invalid)
  return dataclasses.replace(record, valid=valid, invalid=invalid, evaluations=len(valid) + len(invalid),
                             simulations=min(n, record.simulations) if record.simulations is not None else n)


def default_budgets(records: Sequence[SearchRecord]) -> list[int]:
  """N/8, N/4, N/2 and N (N: the largest simulations count of the records), the positive ones."""
  most = max((r.simulations or 0 for r in records), default=0)
  return sorted({b for b in (most // 8, most // 4, most // 2, most) if b > 0})


def by_simulations(records: Sequence[SearchRecord], budgets: Sequence[int] | None = None) -> dict[str, Any]:
  """{str(n): the `BUDGET_KEYS` of `summarize` on the records cut to n simulations}; {} when some entry has
  no `simulation` field (see the module docstring)."""
  budgets = default_budgets(records) if budgets is None else sorted(set(int(b) for b in budgets))
  out = {}
  try:
    for n in budgets:
      s = summarize([at_simulations(r, n) for r in records])
      out[str(n)] = {k: s[k] for k in BUDGET_KEYS}
  except ValueError:
    return {}
  return out


def write_summary(records: Sequence[SearchRecord], out_dir: os.PathLike | str,
                  title: str = "") -> dict[str, Any]:
  """Writes `summary.json` and `layer_usage.png` into `out_dir`; returns the summary."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  summary = summarize(records)
  budgets = by_simulations(records)
  if budgets:
    summary["by_simulations"] = budgets
  (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
  plot_search_layer_usage(summary, out / "layer_usage.png", title=title)
  return summary
