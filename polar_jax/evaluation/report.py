"""The evaluation report: `results.json`, a Markdown table per test set, and two PNG plots.

- `results.md`: per test set, rows = methods, columns = pass@1, vote@k, pass@k (oracle), executed layers per
  token (= program length; full depth alongside) and per question (prefill + decode), seconds per question
  (deployed: ranking + rank-1 run; and with all k candidates); then pass@1..k (oracle) for the methods with
  several candidates, pass@1 per level, and the search-ablation oracles.
- `tradeoff.png`: accuracy vs mean executed layers per token for every method (the paper's trade-off figure),
  one panel per test set; filled markers pass@1, hollow markers pass@k (oracle).
- `layer_usage.png`: heatmap of how often PoLar's top-1 programs run each layer 0, 1 or 2 times.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np


def _pct(x: float | None) -> str:
  return "—" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 1) -> str:
  return "—" if x is None else f"{x:.{digits}f}"


def _secs(x: float | None) -> str:
  return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _with_ci(r: Mapping[str, Any]) -> str:
  value = r["pass@1"] if r["kind"] != "oracle" else r.get("oracle")
  ci = r.get("ci95")
  text = _pct(value) + (" (oracle)" if r["kind"] == "oracle" else "")
  return text if not ci or value is None else f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _diff(r: Mapping[str, Any]) -> str:
  if r.get("diff_vs_full") is None:
    return "—"
  lo, hi = r["diff_ci95"]
  return f"{100 * r['diff_vs_full']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _p(p: float | None) -> str:
  return "—" if p is None else f"{p:.3g}"


def _rows(results: Mapping[str, Any], test_set: str, level="all") -> list[Mapping[str, Any]]:
  return [r for r in results["rows"] if r["test_set"] == test_set and r["level"] == level]


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(line) + " |" for line in lines]
  return out


def markdown(results: Mapping[str, Any]) -> str:
  """The Markdown report (see the module docstring)."""
  k = results["k"]
  depth = results["model"]["depth"]
  task = results["task"]
  out = [f"# {results.get('title') or 'Evaluation results'}", ""]
  prefix = f", assistant prefix `{task['assistant_prefix']}`" if task.get("assistant_prefix") else ""
  out.append(f"Model **{results['model']['name']}**, full depth **{depth}** layers. Prompt `{task['prompt']}` "
             f"(template `{task['template']}`, answer format `{task['answer_format']}`{prefix}), at most "
             f"{task['max_new_tokens']} new tokens. pass@1 is the deployable accuracy; pass@k is an ORACLE (any of "
             f"the top-k candidates right by the ground truth); vote@k needs no ground truth.")
  out.append("")
  for name, info in results["test_sets"].items():
    levels = ", ".join(f"level {lv}: {n}" for lv, n in sorted(info["levels"].items()))
    out += [f"## {name}", "", f"n = {info['n']} questions ({', '.join(info['datasets'])}; {levels}).", ""]
    rows = _rows(results, name)
    lines = []
    for r in rows:
      lines.append([r["label"], str(r["n"]), _with_ci(r), _diff(r), _p(r.get("mcnemar_p")),
                    _pct((r["vote@k"] or {}).get(str(k))),
                    _pct((r["pass@k"] or {}).get(str(k))), _num(r["layers_per_token"]),
                    _num(r["layers_per_question"], 0), _secs(r["seconds_per_question"]),
                    _secs(r["seconds_per_question_all"])])
    out += _table(["method", "n", "pass@1 [95% CI]", "vs full depth [95% CI]", "McNemar p", f"vote@{k}",
                   f"pass@{k} (oracle)", f"layers/token (full {depth})", "layers/question", "s/question",
                   f"s/question (all {k})"], lines)
    out += ["", "pass@1 intervals: Wilson; differences: paired, 95% bootstrap over problems; an interval that "
            "includes 0 is no difference. ORACLE rows show the share of questions with a correct candidate."]
    multi = [r for r in rows if r["pass@k"] and (r.get("candidates_mean") or 0) > 1]
    if multi:
      out += ["", f"pass@k (oracle) and vote@k, k = 1..{k}:", ""]
      out += _table(["method"] + [f"pass@{i}" for i in range(1, k + 1)] + [f"vote@{i}" for i in range(1, k + 1)],
                    [[r["label"]] + [_pct(r["pass@k"][str(i)]) for i in range(1, k + 1)]
                     + [_pct(r["vote@k"][str(i)]) for i in range(1, k + 1)] for r in multi])
    level_keys = sorted(info["levels"], key=int)
    if len(level_keys) > 1:
      out += ["", "pass@1 per level:", ""]
      per_level = {(r["method"], r["level"]): r for r in results["rows"] if r["test_set"] == name}
      out += _table(["method"] + [f"level {lv}" for lv in level_keys],
                    [[r["label"]] + [_pct(per_level.get((r["method"], int(lv)), {}).get("pass@1"))
                                     for lv in level_keys] for r in rows])
    out.append("")
  search_rows = [r for r in results["rows"] if str(r["method"]).startswith("search_oracle") and r["level"] == "all"]
  if search_rows:
    out += ["## Search ablations (oracles over the searched questions' valid programs)", ""]
    out += _table(["method", "n", "has a valid program", "layers/token (shortest valid)",
                   "search: programs run/question", "search: layer executions/question"],
                  [[r["label"], str(r["n"]), _pct(r["oracle"]), _num(r["layers_per_token"]),
                    _num(r["info"].get("evaluations_mean")), _num(r["info"].get("search_layers_mean"), 0)]
                   for r in search_rows])
    out.append("")
  for r in results["rows"]:
    if r["level"] == "all" and "valid_cache_hits" in r.get("info", {}):
      i = r["info"]
      out.append(f"{r['label']} on {r['test_set']}: {i['searched_questions']} of {r['n']} questions have search "
                 f"records; {i['valid_cache_hits']} candidates scored correct and {i['invalid_cache_hits']} wrong "
                 "from the cache, the rest by our runs.")
      out.append("")
  notes = [r for r in results["rows"] if r["level"] == "all" and r.get("compiles")]
  if notes:
    out.append("Executor compiles inside the timed runs (their compile time is in the seconds): "
               + ", ".join(f"{r['method']} on {r['test_set']}: {r['compiles']}" for r in notes) + ".")
    out.append("")
  for s in results.get("skipped", []):
    out.append(f"- skipped {s['method']}: {s['reason']}")
  return "\n".join(out).rstrip() + "\n"


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


_FAMILY_STYLE = (("polar", "#d62728", "*"), ("full_depth_greedy", "black", "o"),
                 ("full_depth_sampling", "#7f7f7f", "v"), ("shortgpt", "#1f77b4", "s"), ("random", "#2ca02c", "D"),
                 ("router", "#9467bd", "P"), ("search_oracle", "#ff7f0e", "X"), ("best_fixed_program", "#17becf", "h"),
                 ("menu_oracle", "#bcbd22", "p"))


def _style(method: str) -> tuple[str, str]:
  for prefix, color, marker in _FAMILY_STYLE:
    if method.startswith(prefix):
      return color, marker
  return "#8c564b", "o"


def plot_tradeoff(results: Mapping[str, Any], path: os.PathLike | str) -> None:
  """Accuracy vs mean executed layers per token, one panel per test set (see the module docstring)."""
  plt = _plt()
  k, depth = results["k"], results["model"]["depth"]
  sets = list(dict.fromkeys(r["test_set"] for r in results["rows"] if r["level"] == "all")) or ["(no results)"]
  fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
  for ax, name in zip(axes[0], sets):
    for r in _rows(results, name):
      if r["layers_per_token"] is None:
        continue
      color, marker = _style(r["method"])
      x = r["layers_per_token"]
      y = r["oracle"] if r["kind"] == "oracle" else r["pass@1"]
      ci = r.get("ci95")
      yerr = [[max(0.0, 100 * (y - ci[0]))], [max(0.0, 100 * (ci[1] - y))]] if ci and y is not None else None
      ax.errorbar([x], [100 * y], yerr=yerr, color=color, marker=marker, ms=8, capsize=3, ls="none",
                  label=r["label"], zorder=3)
      top = (r["pass@k"] or {}).get(str(k))
      if r["kind"] != "oracle" and top is not None and (r.get("candidates_mean") or 0) > 1:
        ax.scatter([x], [100 * top], facecolors="none", edgecolors=color, marker=marker, s=80, zorder=3)
        ax.plot([x, x], [100 * y, 100 * top], color=color, lw=0.8, ls=":")
    ax.axvline(depth, color="gray", lw=0.8, ls="--")
    ax.set_xlabel(f"mean executed layers per token (full depth {depth})")
    ax.set_ylabel(f"accuracy %\n(filled: pass@1 with 95% CI; hollow: pass@{k}, oracle)")
    ax.set_title(name)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.15))
  fig.suptitle(f"{results['model']['name']}: accuracy vs executed layers")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)


def plot_layer_usage(results: Mapping[str, Any], path: os.PathLike | str) -> None:
  """Share of PoLar's top-1 programs that run each layer 0 / 1 / 2 times, one heatmap per test set."""
  plt = _plt()
  usage = results.get("polar_layer_usage") or {}
  depth = results["model"]["depth"]
  names = list(usage) or ["(no PoLar programs)"]
  fig, axes = plt.subplots(len(names), 1, figsize=(max(6, 0.3 * depth + 2), 2.2 * len(names) + 0.6),
                           squeeze=False)
  for ax, name in zip(axes[:, 0], names):
    table = np.asarray(usage.get(name, np.zeros((depth, 3))), np.float64)  # [D, 3]
    total = table.sum(axis=1, keepdims=True)
    share = np.divide(table, total, out=np.zeros_like(table), where=total > 0).T  # [3, D]
    image = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
    ax.set_yticks(range(share.shape[0]), [f"{i}x" if i < share.shape[0] - 1 else f">={i}x"
                                          for i in range(share.shape[0])])
    ax.set_xticks(range(depth), [str(i) for i in range(depth)], fontsize=6)
    ax.set_xlabel("layer")
    ax.set_title(f"{name}: layer usage of PoLar's top-1 programs (share of questions)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.025)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(results: Mapping[str, Any], out_dir: os.PathLike | str, *, plots: bool = True) -> dict[str, str]:
  """Writes results.json, results.md and (with `plots`) tradeoff.png, layer_usage.png; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files = {"results.json": out / "results.json", "results.md": out / "results.md"}
  files["results.json"].write_text(json.dumps(results, indent=1, default=_json_default), encoding="utf-8")
  files["results.md"].write_text(markdown(results), encoding="utf-8")
  if plots:
    files["tradeoff.png"] = out / "tradeoff.png"
    files["layer_usage.png"] = out / "layer_usage.png"
    plot_tradeoff(results, files["tradeoff.png"])
    plot_layer_usage(results, files["layer_usage.png"])
  return {name: str(p) for name, p in files.items()}


def _json_default(obj):
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  raise TypeError(f"Not JSON serializable: {type(obj).__name__}")
