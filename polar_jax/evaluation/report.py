"""The evaluation report: `results.json`, a Markdown table per test set, and two PNG plots.

- `results.md`: per test set, rows = methods, columns = pass@1, vote@k, pass@k (oracle), executed layers per
  token (= program length; full depth alongside) and per question (prefill + decode), seconds per question
  (deployed: ranking + rank-1 run; and with all k candidates); then pass@1..k (oracle) for the methods with
  several candidates, pass@1 per level, and the search-ablation oracles; last, per test set, where the methods
  disagree with full depth and the most contested questions (`polar_jax.inspect`, from `results["per_question"]`).
- `tradeoff.png`: accuracy vs mean executed layers per token for every method (the paper's trade-off figure),
  one panel per test set; filled markers pass@1 with their 95% Wilson intervals, white markers pass@k
  (oracle); a marker per method family, a number per method (legend on the right), coincident points spread
  sideways. ShortGPT rows that remove no layer are not drawn (they are full depth).
- `layer_usage.png`: heatmap of how often PoLar's top-1 programs run each layer 0, 1 or 2+ times.

Matplotlib is imported inside the plotting functions and no backend is chosen here (entry points choose it),
so a notebook shows the figures inline.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from polar_jax import inspect as inspect_lib


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
  section = inspect_lib.markdown(results.get("per_question") or {})
  if section:
    out += ["", section]
  return "\n".join(out).rstrip() + "\n"


def console_summary(results: Mapping[str, Any], report: str = "results.md") -> str:
  """What a run prints at its end: per test set one line per method (pass@1 with its interval, the paired
  difference with full depth, layers per token, seconds per question), then where the full report is. The
  oracles, levels and per-question sections stay in the report, so the console fits on one screen."""
  depth = results["model"]["depth"]
  out = []
  for name, info in results["test_sets"].items():
    lines = [[r["label"], _with_ci(r), _diff(r), _num(r["layers_per_token"]), _secs(r["seconds_per_question"])]
             for r in _rows(results, name) if r["kind"] != "oracle"]
    out += [f"{name} (n = {info['n']}):"]
    out += _table(["method", "pass@1 [95% CI]", "vs full depth [95% CI]", f"layers/token (full {depth})",
                   "s/question"], lines)
  oracles = sum(1 for r in results["rows"] if r["kind"] == "oracle" and r["level"] == "all")
  out.append(f"Full report ({oracles} oracle rows, pass@k, levels, per-question disagreements): {report}")
  return "\n".join(out) + "\n"


def _plt():
  # No backend is chosen here: command-line entry points choose a file backend, a notebook keeps its inline one.
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


# Method family (a prefix of the method id) -> colour and marker; every family has its own marker, and the
# members of a family (ShortGPT's n, the three search spaces, ...) get lighter shades of its colour.
_FAMILY_STYLE = (("polar", "#d62728", "*"), ("full_depth_greedy", "#000000", "o"),
                 ("full_depth_sampling", "#7f7f7f", "v"), ("shortgpt", "#1f77b4", "s"), ("random", "#2ca02c", "D"),
                 ("router", "#9467bd", "P"), ("search_oracle", "#ff7f0e", "X"), ("best_fixed_program", "#17becf", "h"),
                 ("menu_oracle", "#bcbd22", "p"), ("menu_selector", "#8c564b", "^"), ("gated_fallback", "#e377c2", "<"),
                 ("program_vote", "#1b9e77", ">"), ("confidence", "#393b79", "d"))
_OTHER_STYLE = ("other", "#555555", "8")


def _family(method: str) -> tuple[str, str, str]:
  for style in _FAMILY_STYLE:
    if method.startswith(style[0]):
      return style
  return _OTHER_STYLE


def _shade(color: str, i: int, n: int) -> tuple[float, float, float]:
  """Member i of n of a family: the family colour, mixed with up to 55% white for the last member."""
  rgb = np.array([int(color[j:j + 2], 16) / 255 for j in (1, 3, 5)])
  t = 0.55 * i / (n - 1) if n > 1 else 0.0
  return tuple(float(v) for v in rgb + (1 - rgb) * t)


def _plotted_rows(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
  """Level-"all" rows with a layer count, in table order, without ShortGPT rows that remove no layer (those
  are full depth again, which has its own row)."""
  out = []
  for r in results["rows"]:
    if r["level"] != "all" or r["layers_per_token"] is None:
      continue
    if str(r["method"]).startswith("shortgpt") and (r.get("info") or {}).get("n") == 0:
      continue
    out.append(r)
  return out


def _number_ranges(numbers: Sequence[int]) -> str:
  """[3, 4, 5, 9] -> "3-5,9"."""
  parts, nums = [], sorted(numbers)
  i = 0
  while i < len(nums):
    j = i
    while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
      j += 1
    parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
    i = j + 1
  return ",".join(parts)


def _spread(points: Sequence[tuple[float, float]], size: float) -> tuple[list[float], list[int]]:
  """Sideways shifts (in page points) that keep markers of `size` points apart, and a group id per point.

  `points` are page coordinates in points. In order of x, each marker stays where it is unless it would cover
  one already placed; then it moves right until it is free and joins the group of the first one it touched.
  """
  shifts, groups = [0.0] * len(points), list(range(len(points)))
  placed: list[int] = []
  for i in sorted(range(len(points)), key=lambda j: (points[j][0], j)):
    x, y = points[i]
    first = None
    while True:
      hits = [j for j in placed if abs(x + shifts[i] - points[j][0] - shifts[j]) < size - 1e-6
              and abs(y - points[j][1]) < size]
      if not hits:
        break
      first = hits[0] if first is None else first
      shifts[i] = max(points[j][0] + shifts[j] + size - x for j in hits)
    if first is not None:
      groups[i] = groups[first]
    placed.append(i)
  return shifts, groups


def plot_tradeoff(results: Mapping[str, Any], path: os.PathLike | str) -> dict[str, Any]:
  """Accuracy vs mean executed layers per token, one panel per test set (see the module docstring).

  Every method family has its own marker and colour (lighter shades for the members of a family) and every
  method a number, shown next to its point and in the legend on the right. A marker that would cover another
  is moved right on the page (its data are not changed); markers moved together share one label.

  Returns what was drawn: `legend` ([{number, method, label, color, marker}]) and `markers` ({test set:
  [(method, x, y)]}, the filled markers' centres on the page in points).
  """
  import textwrap  # pylint: disable=import-outside-toplevel
  from matplotlib import transforms  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  plt = _plt()
  k, depth = results["k"], results["model"]["depth"]
  rows = _plotted_rows(results)
  sets = list(dict.fromkeys(r["test_set"] for r in rows)) or ["(no results)"]
  methods = list(dict.fromkeys(r["method"] for r in rows))
  order = {style[0]: i for i, style in enumerate(_FAMILY_STYLE + (_OTHER_STYLE,))}
  methods.sort(key=lambda m: order[_family(m)[0]])  # stable: table order inside a family
  members: dict[str, list[str]] = {}
  for m in methods:
    members.setdefault(_family(m)[0], []).append(m)
  style = {m: (_shade(_family(m)[1], members[_family(m)[0]].index(m), len(members[_family(m)[0]])), _family(m)[2])
           for m in methods}
  number = {m: i + 1 for i, m in enumerate(methods)}
  labels: dict[str, str] = {}
  for r in rows:
    labels.setdefault(r["method"], r["label"])

  fig, axes = plt.subplots(1, len(sets), figsize=(6.2 * len(sets), 5.2), squeeze=False)
  panels = []
  for ax, name in zip(axes[0], sets):
    panel = [r for r in rows if r["test_set"] == name]
    points = [(r["layers_per_token"], 100 * (r["oracle"] if r["kind"] == "oracle" else r["pass@1"] or 0.0))
              for r in panel]
    xs = [x for x, _ in points] + [depth]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 2.5  # multi-run methods far to the right
    # Limits by hand: the shifted markers do not take part in autoscaling.
    if log_x:
      ax.set_xscale("log")
      lo, hi = min(xs) / 1.12, max(xs) * 1.12
      ticks = sorted({t for t in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                      if lo <= t <= hi and abs(t - depth) > 0.15 * depth} | {depth})
      ax.set_xticks(ticks, [str(t) for t in ticks])
      ax.minorticks_off()
    else:
      pad = max(0.08 * (max(xs) - min(xs)), 1.0)
      lo, hi = min(xs) - pad, max(xs) + pad
    ax.set_xlim(lo, hi)
    ax.set_ylim(-3, 103)
    ax.axvline(depth, color="gray", lw=0.8, ls="--", zorder=1)
    ax.set_xlabel(f"mean executed layers per token (dashed: full depth {depth}"
                  + ("; log scale, several runs add up)" if log_x else ")"))
    ax.set_ylabel(f"accuracy % (filled: pass@1 or an ORACLE share, bars: 95% Wilson CI;\n"
                  f"white: pass@{k} of the top-{k} candidates, an oracle)", fontsize=9)
    ax.set_title(f"{name} (n = {panel[0]['n']})" if panel else name)
    ax.grid(alpha=0.3)
    panels.append((ax, panel, points))
  fig.suptitle(f"{results['model']['name']}: accuracy vs executed layers")
  fig.tight_layout()  # before placing markers: their page positions must be final

  drawn: dict[str, list[tuple[str, float, float]]] = {}
  for ax, panel, points in panels:
    page = [tuple(v * 72 / fig.dpi) for v in ax.transData.transform(points)] if points else []
    shifts, groups = _spread(page, size=9.0)
    if panel:
      drawn[panel[0]["test_set"]] = [(r["method"], page[i][0] + shifts[i], page[i][1]) for i, r in enumerate(panel)]
    for i, r in enumerate(panel):
      x, y = points[i]
      color, marker = style[r["method"]]
      shift = ax.transData + transforms.ScaledTranslation(shifts[i] / 72, 0, fig.dpi_scale_trans)
      ci = r.get("ci95")
      yerr = [[max(0.0, y - 100 * ci[0])], [max(0.0, 100 * ci[1] - y)]] if ci else None
      ax.errorbar([x], [y], yerr=yerr, color=color, marker=marker, ms=11 if marker == "*" else 8, capsize=2.5,
                  elinewidth=1, ls="none", zorder=3, transform=shift, mec="black", mew=0.4)
      top = (r["pass@k"] or {}).get(str(k))
      if r["kind"] != "oracle" and top is not None and (r.get("candidates_mean") or 0) > 1:
        ax.scatter([x], [100 * top], facecolors="white", edgecolors=color, marker=marker, s=70, zorder=3,
                   linewidths=1.4, transform=shift)
        ax.plot([x, x], [y, 100 * top], color=color, lw=0.8, ls=":", transform=shift)
    for group in dict.fromkeys(groups):
      members_ = [i for i in range(len(panel)) if groups[i] == group]
      last = max(members_, key=lambda i: page[i][0] + shifts[i])
      text = _number_ranges([number[panel[i]["method"]] for i in members_])
      ax.annotate(text, points[last], xytext=(shifts[last] + 6, 3), textcoords="offset points", fontsize=8,
                  va="bottom", color="#222222", zorder=4)
  handles = [Line2D([], [], color=style[m][0], marker=style[m][1], ls="none", ms=10 if style[m][1] == "*" else 7,
                    mec="black", mew=0.4,
                    label=textwrap.fill(f"{number[m]}. {labels[m]}", 58, subsequent_indent="    "))
             for m in methods]
  if handles:
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=8, frameon=False,
               handletextpad=0.4, labelspacing=0.5)
  fig.text(0.01, -0.01, "A marker that would cover another is moved right on the page and shares its label; "
           "the values are unchanged.", fontsize=8, color="#444444")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return {"legend": [{"number": number[m], "method": m, "label": labels[m], "color": style[m][0],
                      "marker": style[m][1]} for m in methods], "markers": drawn}


def plot_layer_usage(results: Mapping[str, Any], path: os.PathLike | str) -> None:
  """Share of PoLar's top-1 programs that run each layer 0 / 1 / 2+ times, one heatmap per test set."""
  plt = _plt()
  usage = results.get("polar_layer_usage") or {}
  depth = results["model"]["depth"]
  names = list(usage) or ["(no PoLar programs)"]
  fig, axes = plt.subplots(len(names), 1, figsize=(max(7.0, 0.32 * depth + 2.5), 2.4 * len(names) + 0.8),
                           squeeze=False)
  step = 1 if depth <= 40 else 2 if depth <= 80 else 4
  for ax, name in zip(axes[:, 0], names):
    table = np.asarray(usage.get(name, np.zeros((depth, 3))), np.float64)  # [D, 3]
    total = table.sum(axis=1, keepdims=True)
    share = np.divide(table, total, out=np.zeros_like(table), where=total > 0).T  # [3, D]
    image = ax.imshow(100 * share, aspect="auto", cmap="viridis", vmin=0, vmax=100, origin="lower",
                      interpolation="nearest")
    ax.set_yticks(range(share.shape[0]), [f"{i}x" if i < share.shape[0] - 1 else f"{i}x or more"
                                          for i in range(share.shape[0])], fontsize=9)
    ax.set_ylabel("times the layer runs", fontsize=9)
    ax.set_xticks(range(0, depth, step), [str(i) for i in range(0, depth, step)], fontsize=8)
    ax.set_xlabel("layer", fontsize=9)
    n = int(total.max()) if total.size else 0
    ax.set_title(f"{name}: how often PoLar's top-1 program runs each layer ({n} questions)", fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.015)
    bar.set_label("% of questions", fontsize=9)
    bar.ax.tick_params(labelsize=8)
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
