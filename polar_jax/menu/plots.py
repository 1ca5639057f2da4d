"""The menu's plots: coverage on test vs K (an ORACLE curve), per-program accuracy vs length, and the selectors'
learning curve (test pass@1 vs training questions).

Matplotlib is imported inside the functions and no backend is chosen here (entry points choose it), so a
notebook shows the figures inline.
"""

from __future__ import annotations

import os
import pathlib

from polar_jax.menu import lab
from polar_jax.menu.matrix import MenuMatrix


def plot_menu(matrix: MenuMatrix, out_dir: os.PathLike | str, *, search_oracle: float | None = None) -> list[str]:
  """Writes coverage.png and programs.png into out_dir; returns their paths."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(out_dir)
  cov = lab.coverage_curve(matrix)
  ks = [c["k"] for c in cov["curve"]]
  ys = [100 * c["coverage"] for c in cov["curve"]]
  err = [[max(0.0, 100 * (c["coverage"] - c["ci95"][0])) for c in cov["curve"]],
         [max(0.0, 100 * (c["ci95"][1] - c["coverage"])) for c in cov["curve"]]]
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  ax.errorbar(ks, ys, yerr=err, marker="o", capsize=3, label="best of the first K menu programs (ORACLE)")
  full, lo, hi = (100 * cov["full_depth"], 100 * cov["full_depth_ci95"][0], 100 * cov["full_depth_ci95"][1])
  ax.axhline(full, color="k", ls="--", label=f"full depth {full:.1f}%")
  ax.axhspan(lo, hi, color="k", alpha=0.08)
  if search_oracle is not None:
    ax.axhline(100 * search_oracle, color="tab:red", ls=":",
               label=f"search oracle {100 * search_oracle:.1f}% (searched train questions, not test)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(ks, [str(k) for k in ks])
  ax.set_xlabel("K: menu programs (full depth + K-1 best-ranked)")
  ax.set_ylabel("test questions solved (%)")
  ax.set_title(f"Menu coverage on {cov['n_test']} test questions (95% Wilson intervals)", fontsize=10)
  ax.legend(fontsize=8, loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths = [str(out / "coverage.png")]
  fig.savefig(paths[0])
  plt.close(fig)

  rows = lab.program_accuracy(matrix)
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  for r in rows:
    color = "k" if r["index"] == 0 else "tab:blue"
    ax.errorbar(r["length"], 100 * r["test_accuracy"],
                yerr=[[max(0.0, 100 * (r["test_accuracy"] - r["test_ci95"][0]))],
                      [max(0.0, 100 * (r["test_ci95"][1] - r["test_accuracy"]))]],
                marker="s" if r["index"] == 0 else "o", color=color, capsize=2, alpha=0.8)
  ax.scatter([], [], marker="s", color="k", label="full program")
  ax.scatter([], [], marker="o", color="tab:blue", label="menu program")
  ax.set_xlabel("program length (layers per token)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"Per-program test accuracy ({len(rows)} menu programs, 95% Wilson intervals)", fontsize=10)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(str(out / "programs.png"))
  fig.savefig(paths[1])
  plt.close(fig)
  return paths


def plot_learning_curve(curve: dict, path: os.PathLike | str) -> str:
  """Test pass@1 vs the number of training questions, one line per selector (95% Wilson intervals), with the
  full-depth band; returns the path."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=120)
  names = [n for n in curve["methods"] if n != "full_depth"]
  markers = "osD^v<>phX*P"
  colors = list(plt.get_cmap("tab10").colors) + ["navy", "magenta", "saddlebrown", "lime"]  # 14 distinct hues
  for i, name in enumerate(names):
    pts = curve["methods"][name]
    xs = [p["n_train"] * (1 + 0.015 * (i - len(names) / 2)) for p in pts]  # small offsets: bars stay apart
    ys = [100 * p["pass1"] for p in pts]
    err = [[100 * (p["pass1"] - p["ci95"][0]) for p in pts], [100 * (p["ci95"][1] - p["pass1"]) for p in pts]]
    ax.errorbar(xs, ys, yerr=err, marker=markers[i % len(markers)], color=colors[i % len(colors)],
                capsize=2, lw=1.2, ms=5, label=name)
  full = curve["full_depth"]
  ax.axhline(100 * full["pass1"], color="k", ls="--", lw=1, label=f"full depth {100 * full['pass1']:.1f}%")
  ax.axhspan(100 * full["ci95"][0], 100 * full["ci95"][1], color="k", alpha=0.08)
  ax.set_xscale("log", base=2)
  ax.set_xticks(curve["sizes"], [str(n) for n in curve["sizes"]])
  ax.set_xlabel("training questions the selector is fitted on (validation and test fixed)")
  ax.set_ylabel(f"test pass@1 (%), n = {curve['n_test']}")
  ax.set_title("Learning curves of the selection methods (95% Wilson intervals)", fontsize=10)
  ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return str(path)
