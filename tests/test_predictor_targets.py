"""Targets, weights and the loss, against the release README's example and the release's loss formula."""

import warnings

import numpy as np
import pytest

from polar_jax.predictor.loss import polar_loss
from polar_jax.predictor.supervision import SupervisionRecord
from polar_jax.predictor.targets import OutsideSpaceWarning, TargetOptions, build_examples, program_targets
from polar_jax.programs import IGNORE_INDEX as X

FULL7 = tuple(range(7))


def _record(valid, question="q", depth=7):
  return SupervisionRecord(id=question, question=question, gold="", initial_score=0.0, depth=depth,
                           valid=tuple(tuple(p) for p in valid), source=f"test, record {question}")


def test_readme_example_paths():
  # README: valid [0, 1, 2, 4, 5, 6] (skip layer 3) and [0, 1, 2, 2, 3, 4, 5] (repeat 2, skip 6), D = 7.
  b, ops = program_targets([0, 1, 2, 4, 5, 6], 7)
  np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(ops, [1, X, X, 0, 1, X, X])
  b, ops = program_targets([0, 1, 2, 2, 3, 4, 5], 7)
  np.testing.assert_array_equal(b, [0, 0, 1, 1, 0, 0, 1])
  np.testing.assert_array_equal(ops, [1, X, 2, 1, X, X, 0])
  b, ops = program_targets(FULL7, 7)  # full depth: fewest segments, largest first
  np.testing.assert_array_equal(b, [0, 0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(ops, [1, X, X, X, 1, X, X])
  assert program_targets([0, 1, 1, 1, 2, 3, 4, 5, 6], 7) is None  # a layer run three times


def test_full_depth_program_is_downweighted_only_when_a_shorter_one_is_valid():
  records = [_record([FULL7, [0, 1, 2, 4, 5, 6]], "a"), _record([FULL7, [0, 1, 2, 2, 3, 4, 5, 6]], "b")]
  table, report = build_examples(records, 7, TargetOptions(original_weight=0.3, normalize_per_question=False))
  np.testing.assert_allclose(table.weight, [0.3, 1.0, 1.0, 1.0])
  np.testing.assert_array_equal(table.question_index, [0, 0, 1, 1])
  np.testing.assert_array_equal(table.length, [7, 6, 7, 8])
  table, _ = build_examples(records, 7, TargetOptions(original_weight=0.3, normalize_per_question=True))
  np.testing.assert_allclose(table.weight, [0.15, 0.5, 0.5, 0.5])
  table, _ = build_examples(records, 7, TargetOptions(original_weight=1.0, normalize_per_question=False))
  np.testing.assert_allclose(table.weight, 1.0)
  assert report.examples == 4 and report.questions_with_examples == 2


def test_at_most_max_programs_per_question_deterministically():
  rng = np.random.default_rng(0)
  programs = {tuple(sorted(rng.choice(12, size=rng.integers(4, 11), replace=False).tolist())) for _ in range(200)}
  record = SupervisionRecord(id="x", question="How many?", gold="", initial_score=0.0, depth=12,
                             valid=tuple(sorted(programs)))
  options = TargetOptions(max_programs=50)
  first, report = build_examples([record], 12, options)
  again, _ = build_examples([record], 12, options)
  assert len(first) == 50 and report.programs_not_sampled == len(programs) - 50
  np.testing.assert_array_equal(first.boundaries, again.boundaries)
  np.testing.assert_array_equal(first.op_labels, again.op_labels)
  other, _ = build_examples([record], 12, TargetOptions(max_programs=50, seed=7))
  assert not np.array_equal(first.length, other.length) or not np.array_equal(first.boundaries, other.boundaries)
  np.testing.assert_allclose(first.weight, 1 / 50)


def test_programs_outside_the_space_are_counted_and_warned_about():
  records = [_record([[0, 1, 1, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]], "a"),
             _record([[0, 2, 1, 3, 4, 5, 6]], "b"), _record([], "c")]
  with pytest.warns(OutsideSpaceWarning, match="2 of 3 sampled valid programs are outside.*test, record a"):
    table, report = build_examples(records, 7)
  assert report.programs_outside_space == 2 and report.examples == 1
  assert report.questions_without_valid == 1 and report.questions_with_examples == 1
  assert report.outside_space_samples[1] == ("test, record b", (0, 2, 1, 3, 4, 5, 6))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    build_examples([_record([FULL7])], 7)  # nothing outside: no warning


def _release_loss(torch, seg_logits, op_logits, seg_t, op_t, path_lens, ex_w, beta):
  """The release's training loss, written out with the torch losses it uses."""
  bce = torch.nn.BCEWithLogitsLoss(reduction="none")
  ce = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")
  seg_per = bce(seg_logits[:, 1:], seg_t[:, 1:]).mean(dim=1)
  b, d, _ = op_logits.shape
  tok = ce(op_logits.reshape(-1, 3), op_t.reshape(-1)).reshape(b, d)
  mask = (op_t != -100).float()
  op_per = (tok * mask).sum(1) / mask.sum(1).clamp(min=1.0)
  w = torch.ones_like(seg_per)
  if beta:
    w = torch.exp(-beta * path_lens)
    w = w / (w.mean() + 1e-8)
  w = w * ex_w
  w = w / (w.mean() + 1e-8)
  return float((w * (seg_per + op_per)).mean())


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_loss_equals_release_formula_with_padded_rows(beta):
  torch = pytest.importorskip("torch")
  programs = [[0, 1, 2, 4, 5, 6], [0, 1, 2, 2, 3, 4, 5], list(FULL7), [3, 4, 5, 5, 6], [0, 0, 1, 2, 3, 4, 5, 6]]
  targets = [program_targets(p, 7) for p in programs]
  rng = np.random.default_rng(0)
  n, pad = len(programs), 3
  batch = {
      "boundaries": np.stack([t[0] for t in targets] + [np.zeros(7, np.int32)] * pad),
      "op_labels": np.stack([t[1] for t in targets] + [np.full(7, X, np.int32)] * pad),
      "length": np.array([len(p) for p in programs] + [0] * pad, np.int32),
      "weight": np.array([0.3, 1.0, 0.5, 0.25, 1.0] + [0.0] * pad, np.float32),
      "valid": np.arange(n + pad) < n,
  }
  seg = rng.normal(size=(n + pad, 7)).astype(np.float32)
  ops = rng.normal(size=(n + pad, 7, 3)).astype(np.float32)
  ours, metrics = polar_loss(seg, ops, batch, length_beta=beta)
  expected = _release_loss(torch, torch.from_numpy(seg[:n]), torch.from_numpy(ops[:n]),
                           torch.from_numpy(batch["boundaries"][:n]).float(),
                           torch.from_numpy(batch["op_labels"][:n]).long(),
                           torch.from_numpy(batch["length"][:n]).float(), torch.from_numpy(batch["weight"][:n]), beta)
  np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
  assert float(metrics["boundary_loss"]) > 0 and float(metrics["op_loss"]) > 0
