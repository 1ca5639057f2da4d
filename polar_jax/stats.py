"""Uncertainty for accuracy tables (NumPy only): Wilson intervals, McNemar's exact test, the paired bootstrap.

Every results table reports, per method and test set, the accuracy with a 95% Wilson interval and, against a
reference method on the same questions (full-depth greedy), the paired difference with a 95% paired-bootstrap
interval and McNemar's exact p-value. A difference whose interval includes zero is "no difference".

Clusters: where one problem appears in several phrasings (the v1 arithmetic ladder's levels 1 and 3 phrase
each of 81 problems ten ways), questions are not independent draws, so the bootstrap resamples problems
(`groups`: one label per question) with all their questions, not questions. Without groups every question
is its own cluster.

The bootstrap is seeded (`numpy.random.default_rng(seed)`) and percentile-based; the same inputs and seed give
the same interval on every machine.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

Z95 = 1.959963984540054  # The 0.975 quantile of the standard normal.
DEFAULT_BOOTSTRAP = 10_000


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
  if n < 0 or not 0 <= successes <= n:
    raise ValueError(f"wilson needs 0 <= successes <= n, got successes={successes}, n={n}.")
  if n == 0:
    return (0.0, 1.0)
  p = successes / n
  denom = 1 + z * z / n
  center = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, center - half), min(1.0, center + half))


def mcnemar_exact(b: int, c: int) -> float:
  """Two-sided exact McNemar p-value from the discordant counts: b questions right only under the method, c
  right only under the reference. Under the null each discordant question is a fair coin: p = min(1, 2 P(X <=
  min(b, c))), X ~ Binomial(b + c, 1/2). No discordant question: p = 1."""
  if b < 0 or c < 0:
    raise ValueError(f"mcnemar_exact needs counts >= 0, got b={b}, c={c}.")
  n, k = b + c, min(b, c)
  if n == 0:
    return 1.0
  # Sum in log space: exact enough for n in the hundreds of thousands.
  log_half_n = n * math.log(0.5)
  tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
             for i in range(k + 1))
  return min(1.0, 2.0 * tail)


def _group_index(n: int, groups: Sequence[Any] | None) -> tuple[np.ndarray, int]:
  if groups is None:
    return np.arange(n), n
  if len(groups) != n:
    raise ValueError(f"groups has {len(groups)} labels for {n} questions; give one label per question.")
  labels: dict[Any, int] = {}
  index = np.array([labels.setdefault(g, len(labels)) for g in groups], dtype=np.int64)
  return index, len(labels)


def paired_bootstrap(x: Sequence[float], y: Sequence[float], *, groups: Sequence[Any] | None = None,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
  """(mean(x - y), lo, hi): the paired difference of two per-question scores and its percentile interval from
  a (cluster) bootstrap. With `groups`, whole clusters are resampled and the difference is the ratio of the
  resampled sums to the resampled question counts."""
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"paired_bootstrap needs two equal-length vectors, got shapes {x.shape} and {y.shape}.")
  n = len(x)
  if n == 0:
    return (0.0, 0.0, 0.0)
  index, n_groups = _group_index(n, groups)
  diff_sum = np.bincount(index, weights=x - y, minlength=n_groups)
  size = np.bincount(index, minlength=n_groups).astype(np.float64)
  rng = np.random.default_rng(seed)
  stats = np.empty(n_boot)
  chunk = max(1, 2_000_000 // n_groups)
  for start in range(0, n_boot, chunk):
    draw = rng.integers(0, n_groups, size=(min(chunk, n_boot - start), n_groups))
    stats[start:start + len(draw)] = diff_sum[draw].sum(axis=1) / size[draw].sum(axis=1)
  alpha = (1 - level) / 2
  lo, hi = np.quantile(stats, [alpha, 1 - alpha])
  return (float((x - y).mean()), float(lo), float(hi))


def compare(correct: Sequence[bool], reference: Sequence[bool], *, groups: Sequence[Any] | None = None,
            n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
  """Accuracy of `correct` with its Wilson interval, and against `reference` (the same questions, in the same
  order): the paired difference, its bootstrap interval, McNemar's exact p, the discordant counts, and whether
  the interval says better / worse / no difference."""
  a, r = np.asarray(correct, dtype=bool), np.asarray(reference, dtype=bool)
  if a.shape != r.shape:
    raise ValueError(f"compare needs one outcome per question for both methods, got {a.shape} and {r.shape}.")
  n = int(a.size)
  k = int(a.sum())
  wins, losses = int((a & ~r).sum()), int((~a & r).sum())
  diff, lo, hi = paired_bootstrap(a, r, groups=groups, n_boot=n_boot, seed=seed)
  verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference"
  return {"n": n, "n_groups": _group_index(n, groups)[1], "pass1": k / n if n else None,
          "ci95": list(wilson(k, n)), "diff_vs_full": diff, "diff_ci95": [lo, hi],
          "mcnemar_p": mcnemar_exact(wins, losses), "wins": wins, "losses": losses, "verdict": verdict}
