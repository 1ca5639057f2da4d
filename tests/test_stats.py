"""polar_jax.stats against hand-computed values: Wilson intervals, exact McNemar, the (cluster) bootstrap."""

import math

import numpy as np
import pytest

from polar_jax import stats


def test_wilson_hand_computed():
  # 5 of 10: centre 0.5, half-width 1.96 sqrt(0.025 + 1.96^2/400) / (1 + 1.96^2/10) = 0.26340.
  lo, hi = stats.wilson(5, 10)
  assert lo == pytest.approx(0.236593, abs=1e-5) and hi == pytest.approx(0.763407, abs=1e-5)
  # 0 of 20: the lower end is 0, the upper end z^2/n / (1 + z^2/n) = 0.161135.
  lo, hi = stats.wilson(0, 20)
  assert lo == 0.0 and hi == pytest.approx(0.161135, abs=1e-5)
  assert stats.wilson(0, 0) == (0.0, 1.0)
  with pytest.raises(ValueError):
    stats.wilson(3, 2)


def test_mcnemar_exact_small_tables():
  assert stats.mcnemar_exact(0, 0) == 1.0
  assert stats.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)  # P(X <= 1), X ~ Bin(10, 1/2), doubled.
  assert stats.mcnemar_exact(9, 1) == stats.mcnemar_exact(1, 9)
  assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
  assert stats.mcnemar_exact(3, 3) == 1.0  # 2 * 42/64 capped at 1.
  assert stats.mcnemar_exact(2, 6) == pytest.approx(2 * (1 + 8 + 28) / 256)


def test_bootstrap_is_seeded_and_brackets_the_difference():
  rng = np.random.default_rng(1)
  x, y = rng.random(300) < 0.6, rng.random(300) < 0.5
  a = stats.paired_bootstrap(x, y, seed=3, n_boot=2000)
  assert a == stats.paired_bootstrap(x, y, seed=3, n_boot=2000)
  assert a != stats.paired_bootstrap(x, y, seed=4, n_boot=2000)
  diff, lo, hi = a
  assert diff == pytest.approx(x.mean() - y.mean()) and lo < diff < hi
  # The normal approximation of the paired difference gives about the same width.
  d = x.astype(float) - y
  half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
  assert hi - lo == pytest.approx(2 * half, rel=0.15)
  assert stats.paired_bootstrap([1, 1, 1], [0, 0, 0]) == (1.0, 1.0, 1.0)


def test_cluster_bootstrap_resamples_problems():
  # Ten phrasings of each of 30 problems, all phrasings of a problem alike: 30 independent draws, not 300.
  rng = np.random.default_rng(0)
  per_problem = rng.random(30) < 0.5
  x = np.repeat(per_problem, 10)
  y = np.zeros_like(x)
  groups = np.repeat(np.arange(30), 10)
  _, lo_q, hi_q = stats.paired_bootstrap(x, y, seed=0)
  _, lo_g, hi_g = stats.paired_bootstrap(x, y, groups=groups, seed=0)
  assert (hi_g - lo_g) > 2.5 * (hi_q - lo_q)  # sqrt(10) wider, about.
  # With one question per group the cluster bootstrap is the plain one.
  assert stats.paired_bootstrap(x, y, groups=list(range(300)), seed=5) == stats.paired_bootstrap(x, y, seed=5)
  with pytest.raises(ValueError, match="one label per question"):
    stats.paired_bootstrap(x, y, groups=[0, 1])


def test_compare_counts_and_verdict():
  ref = [True] * 50 + [False] * 50
  method = [True] * 50 + [True] * 30 + [False] * 20
  out = stats.compare(method, ref, seed=0, n_boot=2000)
  assert out["n"] == 100 and out["pass1"] == 0.8 and out["wins"] == 30 and out["losses"] == 0
  assert out["diff_vs_full"] == pytest.approx(0.3) and out["diff_ci95"][0] > 0 and out["verdict"] == "better"
  assert out["mcnemar_p"] == pytest.approx(2 * 0.5 ** 30)
  assert out["ci95"] == pytest.approx(list(stats.wilson(80, 100)))
  same = stats.compare(ref, ref, seed=0, n_boot=500)
  assert same["diff_ci95"] == [0.0, 0.0] and same["verdict"] == "no difference" and same["mcnemar_p"] == 1.0
