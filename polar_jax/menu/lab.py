"""The offline selection lab: score any per-question choice of a menu program exactly, without the LLM.

A *selector* is fitted on the matrix's train rows (`fit(train, validation)`: `MenuView`s with outcomes; tune
on validation) and then names one menu program per test question (`choose(questions, answers) -> program
indices`) from the questions and, for multi-run methods, from `answers` (`MenuMatrix.answers_view`: the
answers and confidences of the programs it runs, no outcome). `lab_table` fits each selector, asks it for its
test choices and scores them here, the only place that reads test outcomes (`scoring_view` below): pass@1 with
its Wilson interval, the paired difference against full depth (program 0) and against the best fixed program
with cluster-bootstrap intervals and McNemar's exact p (`polar_jax.stats`), and the cost: runs per question,
executed layers per token (the summed lengths of every program run on the question: the chosen one and each one
whose answer was read) and per question (the matrix's `layers` of those runs).

Built in:
- `full_depth`: program 0 everywhere.
- `best_fixed_program`: the one program with the highest training accuracy (ties: the shorter, then the
  better-ranked), applied to every test question. A per-input selector that cannot beat it adds nothing.
- `best_fixed_per_dataset`: the best training program of each question's dataset (it knows the task label).
  A per-input selector that only beats this by recognizing the task has learned the task, not the question.
- `menu_oracle` (ORACLE, not deployable): a question counts when any menu program answers it correctly
  (the first correct program in menu order is "chosen"; full depth when none is).
- with full-depth samples (`polar_jax.menu.samples`), `sampling[T=t]` (one sample) and `sampling_vote[k=K,T=t]`
  (self-consistency over K samples), and on every multi-run row with K runs per question `vs_sampling`: the
  equal-compute comparison with each `sampling_vote[k=K,...]` row.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from polar_jax import stats
from polar_jax.menu import select
from polar_jax.menu.matrix import AnswersView, MenuMatrix, MenuQuestion, MenuView


class Selector(Protocol):
  name: str
  deployable: bool

  def fit(self, train: MenuView, validation: MenuView) -> None: ...

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray: ...


class FullDepth:
  name, deployable = "full_depth", True

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del train, validation

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray:
    del answers
    return np.zeros(len(questions), dtype=np.int64)


def best_fixed_index(view: MenuView) -> int:
  """The program with the highest accuracy on `view` (ties: shorter, then lower index)."""
  return int(select.ranked_programs(view)[0])


class BestFixedProgram:
  name, deployable = "best_fixed_program", True

  def __init__(self):
    self.index = 0

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del validation
    self.index = best_fixed_index(train)

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray:
    del answers
    return np.full(len(questions), self.index, dtype=np.int64)


def scoring_view(matrix: MenuMatrix) -> MenuView:
  """The test rows with outcomes: for this module's scorer only (see `MenuMatrix.fit_view`)."""
  return matrix._view("test")  # pylint: disable=protected-access


def oracle_choice(test: MenuView) -> np.ndarray:
  """Per question the first correct program in menu order, or 0 (full depth) when none is (ORACLE)."""
  any_correct = test.correct.any(axis=1)
  return np.where(any_correct, test.correct.argmax(axis=1), 0)


def score_choice(test: MenuView, choice: Sequence[int], *, deployable: bool = True, seed: int = 0,
                 n_boot: int = stats.DEFAULT_BOOTSTRAP, ran: np.ndarray | None = None,
                 references: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """The lab's row for one per-question choice of program indices on the test rows.

  ran: bool [n, programs], the programs whose runs the method read (the chosen one always counts): the cost.
  references: other methods' per-question correctness by name (the best fixed program's, ...) to compare with
    as well (`vs_<name>`: the paired difference, its cluster-bootstrap interval, McNemar p and the verdict).
  """
  choice = np.asarray(choice, dtype=np.int64)
  if choice.shape != (len(test),):
    raise ValueError(f"A choice names one program per test question: got shape {choice.shape}, "
                     f"expected ({len(test)},).")
  if len(test) and (choice.min() < 0 or choice.max() >= len(test.programs)):
    raise ValueError(f"Program indices must be in 0..{len(test.programs) - 1}.")
  rows = np.arange(len(test))
  lengths = np.array([len(p) for p in test.programs])
  runs = np.zeros(test.correct.shape, bool) if ran is None else np.array(ran, bool)
  runs[rows, choice] = True
  cost = {"layers_per_token": float((runs * lengths[None]).sum(axis=1).mean()) if len(test) else None,
          "layers_per_question": float((runs * test.layers).sum(axis=1).mean()) if len(test) else None,
          "runs_per_question": float(runs.sum(axis=1).mean()) if len(test) else None,
          "programs_used": int(len(set(choice.tolist())))}
  return score_correct(test, test.correct[rows, choice], cost, deployable=deployable, seed=seed, n_boot=n_boot,
                       references=references)


def score_correct(test: MenuView, correct: np.ndarray, cost: dict[str, Any], *, deployable: bool = True,
                  seed: int = 0, n_boot: int = stats.DEFAULT_BOOTSTRAP,
                  references: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """The lab's row for per-question correctness on the test rows (`score_choice`'s, for methods whose answers
  are not one menu program's, such as full-depth sampling); `cost` holds its layers and runs."""
  correct = np.asarray(correct, dtype=bool)
  row = stats.compare(correct, test.correct[:, 0], groups=test.groups, seed=seed, n_boot=n_boot)
  row.update(cost)
  row.update({"full_depth_layers_per_token": float(len(test.programs[0])), "deployable": bool(deployable)})
  for name, reference in (references or {}).items():
    ref = stats.compare(correct, reference, groups=test.groups, seed=seed, n_boot=n_boot)
    row[f"vs_{name}"] = {"diff": ref["diff_vs_full"], "diff_ci95": ref["diff_ci95"],
                         "mcnemar_p": ref["mcnemar_p"], "verdict": ref["verdict"]}
  return row


def sampling_rows(test: MenuView, tables: Sequence[Any], *, ks: Sequence[int] = (3, 5), seed: int = 0,
                  n_boot: int = stats.DEFAULT_BOOTSTRAP, references: dict[str, np.ndarray] | None = None
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Full-depth sampling rows from `menu.samples.SampleTable`s: `sampling[T=t]` (the first sample: one run) and
  `sampling_vote[k=K,T=t]` (self-consistency: the majority answer of the first K samples, ties to the earlier
  sample, the same vote as `select.VoteSelector`'s). Returns (rows, per-row correctness)."""
  rows, correct_of = {}, {}
  depth = len(test.programs[0])
  for table in tables:
    if list(table.ids) != [q.id for q in test.questions]:
      raise ValueError(f"The T={table.temperature:g} samples are of other questions than the test rows.")
    t = f"{table.temperature:g}"
    variants = [(f"sampling[T={t}]", 1)] + [(f"sampling_vote[k={k},T={t}]", k) for k in ks if k <= table.k]
    for name, k in variants:
      picks = [select.vote(table.answer[i, :k], table.known[i, :k]) for i in range(len(test))]
      correct = np.array([p is not None and bool(table.correct[i, p]) for i, p in enumerate(picks)])
      cost = {"layers_per_token": float(k * depth), "layers_per_question": float(table.layers[:, :k].sum(1).mean()),
              "runs_per_question": float(k), "programs_used": 1, "temperature": table.temperature}
      rows[name] = score_correct(test, correct, cost, seed=seed, n_boot=n_boot, references=references)
      correct_of[name] = correct
  return rows, correct_of


def default_selectors() -> list[Selector]:
  return [FullDepth(), BestFixedProgram(), BestFixedPerDataset()]


def all_selectors(features=None, depth: int | None = None, *, with_answers: bool = True) -> list[Selector]:
  """The built-in baselines and every selection method the lab knows (`polar_jax.menu.select`; the feature-
  based ones for each table in `features`, the answer-based ones with `with_answers`)."""
  out = default_selectors()
  if depth is not None:
    out += select.selection_methods(features or {}, depth, with_answers=with_answers)
  return out


def has_answers(matrix: MenuMatrix) -> bool:
  """Whether the matrix keeps every reply (answers and confidences): what answer-based selectors need."""
  return bool(matrix.info.get("answers"))


def lab_table(matrix: MenuMatrix, selectors: Iterable[Selector] | None = None, *, seed: int = 0,
              n_boot: int = stats.DEFAULT_BOOTSTRAP, samples: Sequence[Any] = ()) -> dict[str, Any]:
  """Fits every selector on train (and validation), scores its test choices; adds the full-depth sampling rows
  of `samples` (`menu.samples.SampleTable`s, with the equal-runs comparisons) and the menu oracle."""
  selectors = list(selectors) if selectors is not None else default_selectors()
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  questions = matrix.questions("test")
  test = scoring_view(matrix)
  methods: dict[str, Any] = {}
  per_dataset = BestFixedPerDataset()
  per_dataset.fit(train, validation)
  rows = np.arange(len(test))
  references = {"best_fixed": test.correct[:, best_fixed_index(train)],
                "best_fixed_per_dataset": test.correct[rows, per_dataset.choose(questions)]}
  correct_of: dict[str, np.ndarray] = {}
  for sel in selectors:
    start = time.perf_counter()
    sel.fit(train, validation)
    answers = matrix.answers_view("test")
    choice = sel.choose(questions, answers)
    seconds = time.perf_counter() - start
    methods[sel.name] = {**score_choice(test, choice, deployable=sel.deployable, seed=seed, n_boot=n_boot,
                                        ran=answers.ran, references=references),
                         "fit_choose_seconds": seconds}
    correct_of[sel.name] = test.correct[rows, np.asarray(choice, np.int64)]
    if hasattr(sel, "describe"):
      methods[sel.name]["fitted"] = sel.describe()
  if samples:
    sampled, sampled_correct = sampling_rows(test, samples, seed=seed, n_boot=n_boot, references=references)
    methods.update(sampled)
    equal_runs_comparisons(methods, correct_of, sampled, sampled_correct, test, seed=seed, n_boot=n_boot)
  methods["menu_oracle"] = score_choice(test, oracle_choice(test), deployable=False, seed=seed, n_boot=n_boot)
  return {"n_test": len(test), "n_train": len(train), "n_validation": len(validation),
          "n_programs": matrix.n_programs, "methods": methods}


def equal_runs_comparisons(methods: dict[str, Any], correct_of: dict[str, np.ndarray], sampled: dict[str, Any],
                           sampled_correct: dict[str, np.ndarray], test: MenuView, *, seed: int, n_boot: int) -> None:
  """Adds to every multi-run row `vs_sampling`: per sampling row with the same (whole) number of runs per
  question, the paired difference, its interval, McNemar p and the verdict (the equal-compute comparison)."""
  for name, row in methods.items():
    runs = row.get("runs_per_question")
    if name not in correct_of or runs is None or runs <= 1 or float(runs) != round(float(runs)):
      continue
    out = {}
    for other, srow in sampled.items():
      if srow["runs_per_question"] == runs:
        ref = stats.compare(correct_of[name], sampled_correct[other], groups=test.groups, seed=seed, n_boot=n_boot)
        out[other] = {"diff": ref["diff_vs_full"], "diff_ci95": ref["diff_ci95"], "mcnemar_p": ref["mcnemar_p"],
                      "verdict": ref["verdict"], "layers_per_token": srow["layers_per_token"]}
    if out:
      row["vs_sampling"] = out


class BestFixedPerDataset:
  """The best training program of each question's dataset (a baseline that knows the task label: what a
  per-input selector must beat to show it does more than recognize the task)."""
  name, deployable = "best_fixed_per_dataset", True

  def __init__(self):
    self.by_dataset: dict[str, int] = {}
    self.default = 0

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del validation
    self.default = best_fixed_index(train)
    datasets = np.array([q.dataset for q in train.questions])
    for d in sorted(set(datasets)):
      self.by_dataset[str(d)] = best_fixed_index(subset_view(train, np.flatnonzero(datasets == d)))

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray:
    del answers
    return np.array([self.by_dataset.get(q.dataset, self.default) for q in questions], dtype=np.int64)

  def describe(self) -> dict[str, Any]:
    return {"programs": dict(self.by_dataset)}


def subset_view(view: MenuView, rows: Sequence[int]) -> MenuView:
  """The given rows of a view (e.g. fewer training questions for a learning curve)."""
  rows = np.asarray(rows, dtype=np.int64)
  arrays = {f.name: getattr(view, f.name)[rows] for f in dataclasses.fields(view)
            if isinstance(getattr(view, f.name), np.ndarray)}
  return dataclasses.replace(view, questions=tuple(view.questions[i] for i in rows), **arrays)


def learning_curve(matrix: MenuMatrix, make_selectors: Callable[[], Iterable[Selector]], *,
                   sizes: Sequence[int] = (50, 100, 200, 0), seed: int = 0) -> dict[str, Any]:
  """Each selector's test pass@1 (Wilson interval) when fitted on the first n of a seeded permutation of the
  training questions (nested subsets; 0 = all), validation and test unchanged."""
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  order = np.random.default_rng(seed).permutation(len(train))
  test, questions = scoring_view(matrix), matrix.questions("test")
  rows = np.arange(len(test))
  out: dict[str, Any] = {"n_test": len(test), "sizes": [], "methods": {}}
  for size in sizes:
    n = len(train) if size <= 0 or size > len(train) else int(size)
    if n in out["sizes"]:
      continue
    out["sizes"].append(n)
    part = subset_view(train, np.sort(order[:n]))
    for sel in make_selectors():
      sel.fit(part, validation)
      answers = matrix.answers_view("test")
      k = int(test.correct[rows, sel.choose(questions, answers)].sum())
      out["methods"].setdefault(sel.name, []).append(
          {"n_train": n, "pass1": k / len(test), "ci95": list(stats.wilson(k, len(test)))})
  full = int(test.correct[:, 0].sum())
  out["full_depth"] = {"pass1": full / len(test), "ci95": list(stats.wilson(full, len(test)))}
  return out


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
           "| method | pass@1 [95% CI] | vs full depth [95% CI] | McNemar p | vs best fixed [95% CI] | "
           "vs best per dataset [95% CI] | runs | layers/token | deployable |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]

  def vs(r, name):
    bf = r.get(f"vs_{name}")
    return (f"{100 * bf['diff']:+.1f} [{100 * bf['diff_ci95'][0]:+.1f}, {100 * bf['diff_ci95'][1]:+.1f}]"
            if bf else "")
  for name, r in table["methods"].items():
    vs_bf = f"{vs(r, 'best_fixed')} | {vs(r, 'best_fixed_per_dataset')}"
    lines.append(f"| {name} | {100 * r['pass1']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] | "
                 f"{100 * r['diff_vs_full']:+.1f} [{100 * r['diff_ci95'][0]:+.1f}, {100 * r['diff_ci95'][1]:+.1f}] | "
                 f"{r['mcnemar_p']:.3g} | {vs_bf} | {r['runs_per_question']:.2f} | {r['layers_per_token']:.1f} | "
                 f"{'yes' if r['deployable'] else 'ORACLE'} |")
  equal = [(name, other, c) for name, r in table["methods"].items() for other, c in r.get("vs_sampling", {}).items()]
  if equal:
    lines += ["", "Equal runs: each multi-run method against full-depth sampling self-consistency with as many runs "
              "per question (paired difference, cluster-bootstrap 95% interval, McNemar p).", "",
              "| method | layers/token | vs | its layers/token | difference [95% CI] | McNemar p | verdict |",
              "|---|---:|---|---:|---:|---:|---|"]
    for name, other, c in equal:
      lines.append(f"| {name} | {table['methods'][name]['layers_per_token']:.1f} | {other} | "
                   f"{c['layers_per_token']:.1f} | {100 * c['diff']:+.1f} [{100 * c['diff_ci95'][0]:+.1f}, "
                   f"{100 * c['diff_ci95'][1]:+.1f}] | {c['mcnemar_p']:.3g} | {c['verdict']} |")
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
