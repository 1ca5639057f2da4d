"""Deployable program selection on the menu: selectors fitted on train rows, tuned on validation, scored in the lab.

Every selector follows `polar_jax.menu.lab.Selector`: `fit(train, validation)` sees outcomes of train and
validation rows only; `choose(questions, answers)` names one menu program per test question from the
questions' features and, for multi-run methods, from `answers` (an `AnswersView`: the answers the model
writes under the programs it runs, and its confidence in them, never whether they are right; every program
it reads counts as a run of that question in the lab's cost).

- `MenuSelector` (one run): a multi-label logistic model, from frozen question features (`FeatureTable`:
  MiniLM sentence embeddings, or the LLM's own hidden state after the prompt at full depth), predicts for each
  menu program the probability that it answers correctly. It picks the most probable program, but leaves
  the anchor (the full program) only when the predicted gain over it exceeds a margin chosen on validation
  (`tune_margin`: and only if leaving it wins on validation beyond chance, McNemar p < 0.05); the L2 strength and the feature dimension (PCA fitted on train) are chosen by validation log-loss. On a
  matrix where nothing is learnable no margin helps on validation and the anchor is kept.
- `VoteSelector` (k runs): program self-consistency, the majority answer of the k programs with the best
  training accuracy; ties go to the answer of the better-ranked program. Unknown answers abstain.
- `ConfidenceSelector` (k runs): among the same k programs, the answer the model is most confident in
  (`answer_logprob`, mean log-probability of the reply through its answer); ties go to the better-ranked.
- `GatedFallback` (1 run, + 1 where it fires): runs full depth; a logistic model on the question features and
  full depth's answer confidence predicts that the full answer is wrong; above a threshold chosen on
  validation, the inner selector's program is run and its answer taken.

Everything is NumPy (deterministic, seconds on 2 cores); the features are computed once per question by
`polar_jax.menu.features` and cached next to the matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from polar_jax import stats
from polar_jax.menu.matrix import AnswersView, MenuQuestion, MenuView

L2_GRID = (0.1, 1.0, 10.0, 100.0)
DIM_GRID = (8, 32, 0)  # 0: every (standardized) feature
MARGIN_GRID = tuple(np.round(np.arange(0.0, 0.505, 0.025), 3))


class FeatureError(KeyError):
  """A question has no row in a feature table."""


@dataclasses.dataclass(frozen=True)
class FeatureTable:
  """Frozen per-question features: `vectors[i]` belongs to question `ids[i]` (float32 [n, F])."""
  name: str
  ids: tuple[str, ...]
  vectors: np.ndarray

  def __post_init__(self):
    if self.vectors.ndim != 2 or len(self.ids) != len(self.vectors):
      raise ValueError(f"FeatureTable {self.name!r}: {len(self.ids)} ids for vectors of shape {self.vectors.shape}.")
    object.__setattr__(self, "_index", {q: i for i, q in enumerate(self.ids)})

  def rows(self, questions: Sequence[MenuQuestion]) -> np.ndarray:
    index = self._index  # type: ignore[attr-defined]
    missing = [q.id for q in questions if q.id not in index]
    if missing:
      raise FeatureError(f"feature table {self.name!r} has no row for {len(missing)} questions (e.g. "
                         f"{missing[0]!r}); recompute the features for this menu (polar_jax.menu.features).")
    return self.vectors[[index[q.id] for q in questions]].astype(np.float64)


# --- a small, exact logistic model -------------------------------------------------------------------------------


class Standardizer:
  """Centers and scales on the training rows, then (optionally) projects onto their top principal directions."""

  def __init__(self, dim: int = 0):
    self.dim = int(dim)

  def fit(self, x: np.ndarray) -> "Standardizer":
    self.mean = x.mean(axis=0)
    self.scale = x.std(axis=0) + 1e-6
    z = (x - self.mean) / self.scale
    if self.dim and self.dim < z.shape[1]:
      _, _, vt = np.linalg.svd(z, full_matrices=False)
      self.proj = vt[:self.dim].T
      self.out_scale = (z @ self.proj).std(axis=0) + 1e-6
    else:
      self.proj, self.out_scale = None, None
    return self

  def __call__(self, x: np.ndarray) -> np.ndarray:
    z = (x - self.mean) / self.scale
    if self.proj is not None:
      z = (z @ self.proj) / self.out_scale
    return z


def _sigmoid(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 25) -> np.ndarray:
  """Independent L2-regularized logistic regressions, one per column of y [n, P], by Newton's method on
  x [n, F] with an unpenalized intercept. Returns weights [F + 1, P] (the last row is the intercept)."""
  n = x.shape[0]
  xb = np.concatenate([x, np.ones((n, 1))], axis=1)
  f = xb.shape[1]
  penalty = np.full(f, float(l2))
  penalty[-1] = 0.0
  w = np.zeros((f, y.shape[1]))
  for p in range(y.shape[1]):
    target = y[:, p].astype(np.float64)
    wp = np.zeros(f)
    wp[-1] = np.log((target.mean() + 1e-3) / (1 - target.mean() + 1e-3))
    for _ in range(iterations):
      prob = _sigmoid(xb @ wp)
      grad = xb.T @ (prob - target) + penalty * wp
      hess = (xb * (prob * (1 - prob))[:, None]).T @ xb + np.diag(penalty + 1e-8)
      step = np.linalg.solve(hess, grad)
      wp -= step
      if np.max(np.abs(step)) < 1e-7:
        break
    w[:, p] = wp
  return w


def predict_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  return _sigmoid(x @ w[:-1] + w[-1])


def log_loss(prob: np.ndarray, y: np.ndarray) -> float:
  prob = np.clip(prob, 1e-6, 1 - 1e-6)
  return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


@dataclasses.dataclass
class LogisticModel:
  """Standardizer + logistic weights with (dim, l2) chosen on validation log-loss."""
  dim: int = 0
  l2: float = 1.0
  scaler: Standardizer | None = None
  w: np.ndarray | None = None

  @classmethod
  def select(cls, x_tr, y_tr, x_va, y_va, dims=DIM_GRID, l2s=L2_GRID) -> "LogisticModel":
    best = None
    for dim in dims:
      scaler = Standardizer(dim).fit(x_tr)
      z_tr, z_va = scaler(x_tr), scaler(x_va)
      for l2 in l2s:
        w = fit_logistic(z_tr, y_tr, l2)
        loss = log_loss(predict_logistic(w, z_va), y_va) if len(y_va) else 0.0
        if best is None or loss < best[0] - 1e-12:
          best = (loss, cls(dim, l2, scaler, w))
    return best[1]

  def predict(self, x: np.ndarray) -> np.ndarray:
    return predict_logistic(self.w, self.scaler(x))


# --- ranking helpers ---------------------------------------------------------------------------------------------


def ranked_programs(view: MenuView) -> list[int]:
  """Program indices by training accuracy (ties: shorter, then lower index)."""
  acc = view.correct.mean(axis=0)
  lengths = [len(p) for p in view.programs]
  return sorted(range(len(acc)), key=lambda j: (-acc[j], lengths[j], j))


def gated_choice(prob: np.ndarray, margin: float, anchor: int, allowed: np.ndarray | None = None) -> np.ndarray:
  """Per row the most probable program (ties: lower index), or the anchor unless its predicted gain over the
  anchor exceeds `margin`."""
  p = prob if allowed is None else np.where(allowed[None, :], prob, -np.inf)
  best = np.argmax(p, axis=1)
  gain = p[np.arange(len(p)), best] - prob[:, anchor]
  return np.where(gain > margin, best, anchor)


def tune_margin(prob: np.ndarray, correct: np.ndarray, anchor: int, allowed: np.ndarray | None,
                margins: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float]:
  """(margin, validation accuracy, McNemar p vs the anchor) for the gated choice on validation rows.

  The margin is the middle of the plateau of margins with the best validation accuracy (robust to where the
  plateau ends). Leaving the anchor must pay on validation beyond chance: unless the chosen margin's choices
  win more validation questions than they lose against the anchor with McNemar p < alpha, the margin is
  infinite (the anchor everywhere). So on a matrix where nothing is learnable the anchor is kept.
  """
  rows = np.arange(len(correct))
  anchor_right = correct[:, anchor]
  scores = []
  for margin in margins:
    scores.append(float(correct[rows, gated_choice(prob, margin, anchor, allowed)].mean()) if len(rows) else 0.0)
  best = max(scores)
  plateau = [m for m, acc in zip(margins, scores) if acc >= best - 1e-12]
  margin = float(plateau[len(plateau) // 2])
  chosen_right = correct[rows, gated_choice(prob, margin, anchor, allowed)]
  wins, losses = int((chosen_right & ~anchor_right).sum()), int((~chosen_right & anchor_right).sum())
  p = stats.mcnemar_exact(wins, losses)
  if wins <= losses or p >= alpha:
    return float("inf"), float(anchor_right.mean()) if len(rows) else 0.0, p
  return margin, best, p


def vote(answers: Sequence[str], known: Sequence[bool]) -> int | None:
  """The position (in the given rank order) of the program whose answer wins the vote: the most frequent
  known answer; ties go to the answer first given by a better-ranked program. None when no answer is known."""
  counts: dict[str, int] = {}
  first: dict[str, int] = {}
  for pos, (a, k) in enumerate(zip(answers, known)):
    if k and a != "":
      counts[a] = counts.get(a, 0) + 1
      first.setdefault(a, pos)
  if not counts:
    return None
  winner = min(counts, key=lambda a: (-counts[a], first[a]))
  return first[winner]


def most_confident(logprobs: Sequence[float], known: Sequence[bool]) -> int | None:
  """The position of the highest known confidence (ties: the better-ranked); None when none is known."""
  best, pos = -np.inf, None
  for j, (lp, k) in enumerate(zip(logprobs, known)):
    if k and np.isfinite(lp) and lp > best:
      best, pos = float(lp), j
  return pos


# --- selectors ---------------------------------------------------------------------------------------------------


class MenuSelector:
  """The menu selector (module docstring). `max_length` limits the candidates to programs no longer than it
  (e.g. the model's depth: never more layers per token than full depth)."""
  deployable = True
  runs = 1

  def __init__(self, features: FeatureTable, *, name: str | None = None, anchor: int = 0,
               max_length: int | None = None, margins: Sequence[float] = MARGIN_GRID):
    self.features, self.anchor, self.max_length, self.margins = features, int(anchor), max_length, tuple(margins)
    self.name = name or f"menu_selector[{features.name}{'' if max_length is None else f',<={max_length}'}]"
    self.model: LogisticModel | None = None
    self.margin = float("inf")
    self.allowed: np.ndarray | None = None

  def fit(self, train: MenuView, validation: MenuView) -> None:
    lengths = np.array([len(p) for p in train.programs])
    self.allowed = None if self.max_length is None else lengths <= self.max_length
    x_tr, x_va = self.features.rows(train.questions), self.features.rows(validation.questions)
    self.model = LogisticModel.select(x_tr, train.correct, x_va, validation.correct)
    prob = self.model.predict(x_va)
    self.margin, self.validation_accuracy, self.validation_p = tune_margin(
        prob, validation.correct, self.anchor, self.allowed, self.margins)

  def predict(self, questions: Sequence[MenuQuestion]) -> np.ndarray:
    return self.model.predict(self.features.rows(questions))

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray:
    del answers
    return gated_choice(self.predict(questions), self.margin, self.anchor, self.allowed)

  def describe(self) -> dict[str, Any]:
    return {"features": self.features.name, "pca_dim": self.model.dim, "l2": self.model.l2,
            "margin": self.margin, "validation_accuracy": self.validation_accuracy,
            "validation_mcnemar_p": self.validation_p}


class VoteSelector:
  """Program self-consistency over the k best programs on train (module docstring)."""
  deployable = True

  def __init__(self, k: int, *, name: str | None = None):
    self.k = self.runs = int(k)
    self.name = name or f"program_vote[k={k}]"
    self.programs: list[int] = []

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del validation
    self.programs = ranked_programs(train)[:self.k]

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView) -> np.ndarray:
    runs = [answers.run(j) for j in self.programs]
    out = np.full(len(questions), self.programs[0], dtype=np.int64)
    for i in range(len(questions)):
      pos = self.pick(runs, i)
      if pos is not None:
        out[i] = self.programs[pos]
    return out

  def pick(self, runs: Sequence[dict[str, np.ndarray]], i: int) -> int | None:
    """The position (in rank order) of the program whose answer question i takes, or None."""
    return vote([r["answer"][i] for r in runs], [bool(r["known"][i]) for r in runs])

  def describe(self) -> dict[str, Any]:
    return {"programs": list(self.programs)}


class ConfidenceSelector(VoteSelector):
  """The most confident answer among the k best programs on train (module docstring)."""

  def __init__(self, k: int, *, name: str | None = None):
    super().__init__(k, name=name or f"confidence[k={k}]")

  def pick(self, runs: Sequence[dict[str, np.ndarray]], i: int) -> int | None:
    return most_confident([r["logprob"][i] for r in runs], [bool(r["known"][i]) for r in runs])


def _gate_inputs(features: FeatureTable, questions, logprob: np.ndarray) -> np.ndarray:
  lp = np.where(np.isfinite(logprob), logprob, -10.0)
  return np.concatenate([features.rows(questions), lp[:, None]], axis=1)


class GatedFallback:
  """Full depth first; the inner selector's program only where full depth is predicted wrong (module docstring)."""
  deployable = True
  runs = 2

  def __init__(self, inner, features: FeatureTable, *, name: str | None = None,
               thresholds: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))):
    self.inner, self.features, self.thresholds = inner, features, tuple(thresholds)
    self.name = name or f"gated_fallback[{features.name}->{inner.name}]"
    self.threshold = float("inf")

  def fit(self, train: MenuView, validation: MenuView) -> None:
    self.inner.fit(train, validation)
    x_tr = _gate_inputs(self.features, train.questions, train.answer_logprob[:, 0])
    x_va = _gate_inputs(self.features, validation.questions, validation.answer_logprob[:, 0])
    wrong_tr, wrong_va = ~train.correct[:, [0]], ~validation.correct[:, [0]]
    self.model = LogisticModel.select(x_tr, wrong_tr, x_va, wrong_va)
    p_wrong = self.model.predict(x_va)[:, 0]
    fallback = self.inner.choose(validation.questions, None)
    # The gain over full depth as a function of the threshold: 1 - t, so the margin tuner's rules apply (the
    # middle of the best plateau; full depth everywhere unless the gate wins on validation beyond chance).
    prob = np.zeros((len(validation), 2))
    prob[:, 1] = p_wrong
    two = np.stack([validation.correct[:, 0], validation.correct[np.arange(len(validation)), fallback]], axis=1)
    margin, self.validation_accuracy, self.validation_p = tune_margin(prob, two, 0, None,
                                                                      [float(t) for t in self.thresholds])
    self.threshold = margin

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView) -> np.ndarray:
    full = answers.run(0)
    p_wrong = self.model.predict(_gate_inputs(self.features, questions, full["logprob"]))[:, 0]
    fallback = self.inner.choose(questions, None)
    return np.where(p_wrong > self.threshold, fallback, 0)

  def describe(self) -> dict[str, Any]:
    return {"threshold": self.threshold, "validation_accuracy": self.validation_accuracy,
            "validation_mcnemar_p": self.validation_p, "inner": self.inner.describe()}


def selection_methods(features: Mapping[str, FeatureTable], depth: int, *, ks: Sequence[int] = (3, 5),
                      with_answers: bool = True) -> list[Any]:
  """The lab's selection methods for the given feature tables (answer-based ones need `with_answers`)."""
  out: list[Any] = []
  for table in features.values():
    out.append(MenuSelector(table))
    out.append(MenuSelector(table, max_length=depth))
  if with_answers:
    out += [VoteSelector(k) for k in ks] + [ConfidenceSelector(k) for k in ks]
    for table in features.values():
      out.append(GatedFallback(MenuSelector(table, max_length=depth), table))
  return out
