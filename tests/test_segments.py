"""Tests for polar_jax.programs.segments: the segment form, the canonical parse and its inverse."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from polar_jax.programs import IGNORE_INDEX
from polar_jax.programs import MAX_BLOCK
from polar_jax.programs import OP_KEEP
from polar_jax.programs import OP_NAMES
from polar_jax.programs import OP_REPEAT
from polar_jax.programs import OP_SKIP
from polar_jax.programs import Program
from polar_jax.programs import ProgramError
from polar_jax.programs import Segment
from polar_jax.programs import Segmentation
from polar_jax.programs import parse
from polar_jax.programs import render
from polar_jax.programs import render_ops
from polar_jax.programs import spans_from_boundaries

K, S, R, X = OP_KEEP, OP_SKIP, OP_REPEAT, IGNORE_INDEX


def _seg(depth, sizes, ops):
  starts = np.cumsum([0] + list(sizes))[:-1]
  return Segmentation(depth, tuple(Segment(int(a), b, o) for a, b, o in zip(starts, sizes, ops)))


def test_constants_match_the_release():
  assert (OP_SKIP, OP_KEEP, OP_REPEAT) == (0, 1, 2)
  assert OP_NAMES == ("skip", "keep", "repeat")
  assert IGNORE_INDEX == -100 and MAX_BLOCK == 4


# Expected arrays worked out by hand: each layer's op is fixed by how often it runs (0 / 1 / 2 times);
# a keep or skip region is cut into as few segments as possible, larger first; a repeated block is one segment.
@pytest.mark.parametrize("depth, ids, boundaries, op_labels", [
    # README example: layer 3 skipped -> [0-2] keep, [3] skip, [4-6] keep.
    (7, [0, 1, 2, 4, 5, 6], [0, 0, 0, 1, 1, 0, 0], [K, X, X, S, K, X, X]),
    # README example: layer 2 looped, layer 6 skipped -> [0-1] keep, [2] repeat, [3-5] keep, [6] skip.
    (7, [0, 1, 2, 2, 3, 4, 5], [0, 0, 1, 1, 0, 0, 1], [K, X, R, K, X, X, S]),
    # Full depth 6: two keeps, the larger first (4 + 2, not 3 + 3 or 2 + 4).
    (6, list(range(6)), [0, 0, 0, 0, 1, 0], [K, X, X, X, K, X]),
    # Keep 0-4 (4 + 1), skip 5-7 (one segment), keep 8.
    (9, [0, 1, 2, 3, 4, 8], [0, 0, 0, 0, 1, 1, 0, 0, 1], [K, X, X, X, K, S, X, X, K]),
    # Block [2, 3] looped: one repeat segment of size 2; then keep 4-7.
    (8, [0, 1, 2, 3, 2, 3, 4, 5, 6, 7], [0, 0, 1, 0, 1, 0, 0, 0], [K, X, R, X, K, X, X, X]),
    # Two single-layer repeats side by side are two segments (a size-2 repeat would spell 2 3 2 3).
    (5, [0, 1, 2, 2, 3, 3, 4], [0, 0, 1, 1, 1], [K, X, R, R, K]),
])
def test_parse_pins_release_labels(depth, ids, boundaries, op_labels):
  seg = parse(ids, depth)
  np.testing.assert_array_equal(seg.boundaries(), boundaries)
  np.testing.assert_array_equal(seg.op_labels(), op_labels)
  assert seg.boundaries().dtype == np.int32 and seg.op_labels().dtype == np.int32
  assert render(seg) == Program(ids, depth)
  assert Segmentation.from_arrays(boundaries, op_labels) == seg


@pytest.mark.parametrize("ids", [
    [0, 0, 0, 1, 2, 3],  # a layer run three times
    [1, 0, 2, 3],  # reordered
    [0, 1, 2, 1, 3],  # layer 1 twice but not as a looped block
    [0, 1, 0, 2, 3],  # layer 0 twice, not adjacent to itself nor as a block with 1
    [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5],  # a repeated block of 5 > MAX_BLOCK layers
    [0, 1, 2, 1, 2, 1, 2, 3],  # a block run three times
])
def test_parse_returns_none_outside_the_space(ids):
  assert parse(ids, 6) is None


def test_parse_max_block_and_inputs():
  five = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
  seg = parse(five, 6, max_block=5)
  assert seg.spans == ((0, 5), (5, 1)) and seg.ops == (R, K)
  p = Program([0, 2], 3)
  assert parse(p) == parse((0, 2), 3) == parse(np.array([0, 2]), depth=3)
  assert parse(list(range(4)) * 3, 4) is None  # longer than 2 * depth: not in the space
  with pytest.raises(ProgramError, match=r"needs depth="):
    parse([0, 1])
  with pytest.raises(ProgramError, match=r"depth=4 for a program of a 3-layer"):
    parse(p, depth=4)
  with pytest.raises(ProgramError, match=r"Program index 3 out of range"):
    parse([0, 3], 3)
  with pytest.raises(ProgramError, match=r"at least one layer"):
    parse([], 3)


def test_segmentation_validation():
  with pytest.raises(ProgramError, match=r"starts at layer 3 but the previous one ends at 2"):
    Segmentation(4, (Segment(0, 2, K), Segment(3, 1, K)))
  with pytest.raises(ProgramError, match=r"size 5"):
    Segmentation(5, (Segment(0, 5, K),))
  with pytest.raises(ProgramError, match=r"op 3"):
    Segmentation(2, (Segment(0, 2, 3),))
  with pytest.raises(ProgramError, match=r"cover layers 0..1 of a 3-layer"):
    Segmentation(3, (Segment(0, 2, K),))
  with pytest.raises(ProgramError, match=r"op_labels\[1\] = 1 but layer 1 starts no segment"):
    Segmentation.from_arrays([0, 0, 1], [K, K, K])
  with pytest.raises(ProgramError, match=r"op -100"):
    Segmentation.from_arrays([0, 1], [K, X])
  with pytest.raises(ProgramError, match=r"same length"):
    Segmentation.from_arrays([0, 1], [K, K, K])


def test_render_and_render_ops():
  spans, ops = ((0, 2), (2, 1), (3, 3)), (R, S, K)
  assert render_ops(6, spans, ops) == (0, 1, 0, 1, 3, 4, 5)
  assert render_ops(3, ((0, 3),), (S,)) == ()
  with pytest.raises(ProgramError, match=r"empty program"):
    render(_seg(3, [3], [S]))
  with pytest.raises(ProgramError, match=r"does not continue at layer 2"):
    render_ops(4, ((0, 2), (3, 1)), (K, K))
  with pytest.raises(ProgramError, match=r"cover layers 0..1 of a 4-layer"):
    render_ops(4, ((0, 2),), (K,))
  with pytest.raises(ProgramError, match=r"op 5"):
    render_ops(2, ((0, 2),), (5,))
  with pytest.raises(ValueError):
    render_ops(2, ((0, 2),), (K, K))


def test_spans_from_boundaries_cuts_long_segments():
  assert spans_from_boundaries(np.zeros(10)) == ((0, 4), (4, 4), (8, 2))
  assert spans_from_boundaries([0, 0, 0, 0, 0, 0, 1, 0, 0, 0]) == ((0, 4), (4, 2), (6, 4))
  assert spans_from_boundaries([1, 1, 0]) == ((0, 1), (1, 2))


# Random segmentations: sizes 1..MAX_BLOCK tiling the depth, random ops, at least one layer run.
@st.composite
def segmentations(draw, max_depth=16):
  depth = draw(st.integers(1, max_depth))
  sizes = []
  while sum(sizes) < depth:
    sizes.append(draw(st.integers(1, min(MAX_BLOCK, depth - sum(sizes)))))
  ops = draw(st.lists(st.sampled_from((S, K, R)), min_size=len(sizes), max_size=len(sizes)))
  if all(o == S for o in ops):
    ops[draw(st.integers(0, len(ops) - 1))] = draw(st.sampled_from((K, R)))
  return _seg(depth, sizes, ops)


@settings(max_examples=200, deadline=None)
@given(segmentations())
def test_render_parse_render_is_identity_and_parse_is_canonical(seg):
  program = render(seg)
  canonical = parse(program)
  assert canonical is not None
  assert render(canonical) == program
  assert canonical.num_segments <= seg.num_segments
  assert parse(render(canonical)) == canonical
  assert Segmentation.from_arrays(canonical.boundaries(), canonical.op_labels()) == canonical
  assert Segmentation.from_arrays(seg.boundaries(), seg.op_labels()) == seg


def _release_key(seg):
  """The release's order: fewer segments, fewer skips, more repeats, lexicographically larger sizes."""
  return (seg.num_segments, seg.ops.count(S), -seg.ops.count(R), tuple(-size for _, size in seg.spans))


def _all_segmentations(depth):
  for k in range(1, depth + 1):
    for sizes in itertools.product(range(1, MAX_BLOCK + 1), repeat=k):
      if sum(sizes) == depth:
        for ops in itertools.product((S, K, R), repeat=k):
          yield _seg(depth, sizes, ops)


@pytest.fixture(scope="module")
def space():
  """depth -> {program ids: every segmentation spelling it}, by brute force over all segmentations."""
  out = {}
  for depth in range(1, 7):
    by_program = {}
    for seg in _all_segmentations(depth):
      ids = render_ops(depth, seg.spans, seg.ops)
      if ids:
        by_program.setdefault(ids, []).append(seg)
    out[depth] = by_program
  return out


def test_parse_is_the_global_optimum_of_the_release_order(space):
  # The release memoizes the best tail per (cursor, position); the order is preserved by prefixing a
  # segment, so that is the global optimum, and it is unique (a program fixes each layer's op).
  for depth, by_program in space.items():
    for ids, segs in by_program.items():
      keys = sorted(_release_key(s) for s in segs)
      assert len(keys) == 1 or keys[0] < keys[1], (depth, ids)
      assert parse(ids, depth) == min(segs, key=_release_key), (depth, ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=10))
def test_parse_is_none_exactly_outside_the_space(space, ids):
  assert (parse(ids, 5) is not None) == (tuple(ids) in space[5])
