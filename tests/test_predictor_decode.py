"""Decoding: thresholded boundaries with forced cuts, beam search over ops, length penalty, empty programs."""

import itertools

import numpy as np
import pytest

from polar_jax.predictor.decode import DecodeOptions, decode_one, decode_programs, segment_spans
from polar_jax.programs import Program, render_ops


def _boundaries(depth, cuts):
  logits = np.full(depth, -3.0)
  logits[list(cuts)] = 3.0
  return logits


def test_segments_cut_at_threshold_and_every_four_layers():
  assert segment_spans(_boundaries(10, [3, 9])) == ((0, 3), (3, 4), (7, 2), (9, 1))
  assert segment_spans(_boundaries(10, [])) == ((0, 4), (4, 4), (8, 2))
  logits = np.array([5.0, 0.0, -1e-3, -5.0])  # sigmoid(0) = 0.5 is a boundary (>=), index 0 never is
  assert segment_spans(logits) == ((0, 1), (1, 3))
  assert segment_spans(logits, threshold=0.6) == ((0, 4),)


def _ops(*rows):
  """Op logits whose log-softmax is log(rows) (rows are probabilities)."""
  return np.log(np.asarray(rows, np.float64))


def test_beam_search_follows_the_release():
  # Two segments (0-1, 2-3); segment A prefers skip, B prefers repeat.
  ops = _ops([.6, .3, .1], [.6, .3, .1], [.1, .4, .5], [.1, .4, .5])
  out = decode_one(_boundaries(4, [2]), ops, DecodeOptions(beam_size=2, top_k_ops=2, top_k=5))
  assert [c.program.ids for c in out.candidates] == [(2, 3, 2, 3), (2, 3)]
  np.testing.assert_allclose([c.score for c in out.candidates], np.log([.30, .24]))
  assert out.candidates[0].spans == ((0, 2), (2, 2)) and out.candidates[0].ops == (0, 2)
  assert isinstance(out.top1, Program) and out.top1.depth == 4
  # A length penalty re-ranks: log .24 - 0.5 * 2 > log .30 - 0.5 * 4.
  penalised = decode_one(_boundaries(4, [2]), ops, DecodeOptions(beam_size=4, top_k_ops=2, length_penalty=0.5))
  assert [c.program.ids for c in penalised.candidates] == [(2, 3), (2, 3, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3, 2, 3)]
  np.testing.assert_allclose(penalised.candidates[0].score, np.log(.24))  # scores stay log-probabilities


def test_wide_beam_equals_brute_force_ranking():
  rng = np.random.default_rng(0)
  depth = 7
  boundaries, ops = rng.normal(size=depth), rng.normal(size=(depth, 3))
  spans = segment_spans(boundaries)
  logp = ops - np.log(np.exp(ops).sum(-1, keepdims=True))
  ranked = sorted(((sum(logp[s, o] for (s, _), o in zip(spans, seq)), seq)
                   for seq in itertools.product(range(3), repeat=len(spans))), reverse=True)
  expected = [(render_ops(depth, spans, seq), score) for score, seq in ranked if render_ops(depth, spans, seq)]
  options = DecodeOptions(beam_size=3 ** len(spans), top_k_ops=3, top_k=10)
  out = decode_one(boundaries, ops, options)
  assert [c.program.ids for c in out.candidates] == [ids for ids, _ in expected[:len(out.candidates)]]
  np.testing.assert_allclose([c.score for c in out.candidates], [s for _, s in expected[:len(out.candidates)]])
  assert len({c.program for c in out.candidates}) == len(out.candidates)


def test_all_skip_beam_is_dropped_and_counted():
  ops = _ops(*[[.8, .15, .05]] * 4)
  out = decode_one(_boundaries(4, [2]), ops, DecodeOptions(beam_size=3, top_k=3))
  assert out.num_empty == 1
  assert [c.program.ids for c in out.candidates] == [(2, 3), (0, 1)]


def test_batched_decoding_equals_per_question():
  rng = np.random.default_rng(1)
  b, o = rng.normal(size=(3, 9)), rng.normal(size=(3, 9, 3))
  batched = decode_programs(b, o)
  for i in range(3):
    assert batched[i] == decode_one(b[i], o[i])
  with pytest.raises(ValueError, match=r"boundary logits \[B, D\] and op logits \[B, D, 3\]"):
    decode_programs(b, o[:, :8])
  with pytest.raises(ValueError, match="top_k_ops must be 1..3"):
    DecodeOptions(top_k_ops=4)
