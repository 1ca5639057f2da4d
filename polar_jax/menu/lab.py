"""The offline selection lab: score any per-question choice of a menu program exactly, without the LLM.

A *selector* is fitted on the matrix's train rows (`fit(train, validation)`: `MenuView`s with outcomes; tune
on validation) and then names one menu program per test question from the questions alone
(`choose(questions) -> program indices`). `lab_table` fits each selector, asks it for its test choices and
scores them here, the only place that reads test outcomes (`scoring_view` below): pass@1 with its
Wilson interval, the paired difference against full depth (program 0) with a cluster-bootstrap interval and
McNemar's exact p (`polar_jax.stats`), and the executed layers per token (the chosen program's length) and
per question (the matrix's `layers` of the chosen run).

Built in:
- `full_depth`: program 0 everywhere.
- `best_fixed_program`: the one program with the highest training accuracy (ties: the shorter, then the
  better-ranked), applied to every test question. A per-input selector that cannot beat it adds nothing.
- `menu_oracle` (ORACLE, not deployable): a question counts when any menu program answers it correctly
  (the first correct program in menu order is "chosen"; full depth when none is).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from polar_jax import stats
from polar_jax.menu.matrix import MenuMatrix, MenuQuestion, MenuView


class Selector(Protocol):
  name: str
  deployable: bool

  def fit(self, train: MenuView, validation: MenuView) -> None: ...

  def choose(self, questions: Sequence[MenuQuestion]) -> np.ndarray: ...


class FullDepth:
  name, deployable = "full_depth", True

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del train, validation

  def choose(self, questions: Sequence[MenuQuestion]) -> np.ndarray:
    return np.zeros(len(questions), dtype=np.int64)


def best_fixed_index(view: MenuView) -> int:
  """The program with the highest accuracy on `view` (ties: shorter, then lower index)."""
  acc = view.correct.mean(axis=0)
  lengths = np.array([len(p) for p in view.programs])
  order = sorted(range(len(acc)), key=lambda j: (-acc[j], lengths[j], j))
  return int(order[0])


class BestFixedProgram:
  name, deployable = "best_fixed_program", True

  def __init__(self):
    self.index = 0

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del validation
    self.index = best_fixed_index(train)

  def choose(self, questions: Sequence[MenuQuestion]) -> np.ndarray:
    return np.full(len(questions), self.index, dtype=np.int64)


def scoring_view(matrix: MenuMatrix) -> MenuView:
  """The test rows with outcomes: for this module's scorer only (see `MenuMatrix.fit_view`)."""
  return matrix._view("test")  # pylint: disable=protected-access


def oracle_choice(test: MenuView) -> np.ndarray:
  """Per question the first correct program in menu order, or 0 (full depth) when none is (ORACLE)."""
  any_correct = test.correct.any(axis=1)
  return np.where(any_correct, test.correct.argmax(axis=1), 0)


def score_choice(test: MenuView, choice: Sequence[int], *, deployable: bool = True, seed: int = 0,
                 n_boot: int = stats.DEFAULT_BOOTSTRAP) -> dict[str, Any]:
  """The lab's row for one per-question choice of program indices on the test rows."""
  choice = np.asarray(choice, dtype=np.int64)
  if choice.shape != (len(test),):
    raise ValueError(f"A choice names one program per test question: got shape {choice.shape}, "
                     f"expected ({len(test)},).")
  if len(test) and (choice.min() < 0 or choice.max() >= len(test.programs)):
    raise ValueError(f"Program indices must be in 0..{len(test.programs) - 1}.")
  rows = np.arange(len(test))
  correct = test.correct[rows, choice]
  row = stats.compare(correct, test.correct[:, 0], groups=test.groups, seed=seed, n_boot=n_boot)
  lengths = np.array([len(p) for p in test.programs])
  row.update({"layers_per_token": float(lengths[choice].mean()) if len(test) else None,
              "layers_per_question": float(test.layers[rows, choice].mean()) if len(test) else None,
              "full_depth_layers_per_token": float(lengths[0]), "deployable": bool(deployable),
              "programs_used": int(len(set(choice.tolist())))})
  return row


def default_selectors() -> list[Selector]:
  return [FullDepth(), BestFixedProgram()]


def all_selectors() -> list[Selector]:
  """The built-in baselines and every selection method the lab knows."""
  return default_selectors()


def lab_table(matrix: MenuMatrix, selectors: Iterable[Selector] | None = None, *, seed: int = 0,
              n_boot: int = stats.DEFAULT_BOOTSTRAP) -> dict[str, Any]:
  """Fits every selector on train (and validation), scores its test choices; adds the menu oracle."""
  selectors = list(selectors) if selectors is not None else default_selectors()
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  questions = matrix.questions("test")
  test = scoring_view(matrix)
  methods: dict[str, Any] = {}
  for sel in selectors:
    start = time.perf_counter()
    sel.fit(train, validation)
    choice = sel.choose(questions)
    seconds = time.perf_counter() - start
    methods[sel.name] = {**score_choice(test, choice, deployable=sel.deployable, seed=seed, n_boot=n_boot),
                         "fit_choose_seconds": seconds}
  methods["menu_oracle"] = score_choice(test, oracle_choice(test), deployable=False, seed=seed, n_boot=n_boot)
  return {"n_test": len(test), "n_train": len(train), "n_validation": len(validation),
          "n_programs": matrix.n_programs, "methods": methods}


def coverage_curve(matrix: MenuMatrix, ks: Sequence[int] | None = None) -> dict[str, Any]:
  """Menu coverage on test vs K: the share of test questions some program among the first K menu programs
  (full depth plus the K - 1 best-ranked) answers correctly (an ORACLE curve), with Wilson intervals."""
  test = scoring_view(matrix)
  p = matrix.n_programs
  ks = sorted({k for k in (ks or [1, 2, 3, 5, 9, 17, 33, 65]) if 1 <= k <= p} | {p})
  out = []
  for k in ks:
    solved = int(test.correct[:, :k].any(axis=1).sum())
    out.append({"k": k, "coverage": solved / len(test), "ci95": list(stats.wilson(solved, len(test)))})
  full = int(test.correct[:, 0].sum())
  return {"n_test": len(test), "curve": out, "full_depth": full / len(test),
          "full_depth_ci95": list(stats.wilson(full, len(test)))}


def markdown(table: dict[str, Any]) -> str:
  """The lab table as Markdown (a row per method)."""
  lines = [f"Offline lab: {table['n_test']} test questions, {table['n_programs']} menu programs "
           f"(fitted on {table['n_train']} train, tuned on {table['n_validation']} validation questions).", "",
           "| method | pass@1 [95% CI] | vs full depth [95% CI] | McNemar p | layers/token | deployable |",
           "|---|---:|---:|---:|---:|---|"]
  for name, r in table["methods"].items():
    lines.append(f"| {name} | {100 * r['pass1']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] | "
                 f"{100 * r['diff_vs_full']:+.1f} [{100 * r['diff_ci95'][0]:+.1f}, {100 * r['diff_ci95'][1]:+.1f}] | "
                 f"{r['mcnemar_p']:.3g} | {r['layers_per_token']:.1f} | {'yes' if r['deployable'] else 'ORACLE'} |")
  return "\n".join(lines)


def program_accuracy(matrix: MenuMatrix) -> list[dict[str, Any]]:
  """Per menu program: its length, training accuracy and test accuracy with Wilson intervals (a report)."""
  train, test = matrix.fit_view("train"), scoring_view(matrix)
  out = []
  for j, program in enumerate(matrix.programs):
    k = int(test.correct[:, j].sum())
    out.append({"index": j, "length": len(program), "train_accuracy": float(train.correct[:, j].mean()),
                "test_accuracy": k / len(test), "test_ci95": list(stats.wilson(k, len(test)))})
  return out
