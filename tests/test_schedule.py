"""Tests for polar_jax.programs.schedule: bucketing, merging programs, and batch schedules."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from polar_jax.programs import Program
from polar_jax.programs import ProgramError
from polar_jax.programs import bucket_length
from polar_jax.programs import make_schedule
from polar_jax.programs import merge_programs


def _is_subsequence(small, big):
  it = iter(big)
  return all(any(x == y for y in it) for x in small)


def _row_programs(schedule):
  """What each row runs: the schedule's ids at its active steps, in order."""
  return [tuple(schedule.ids[row].tolist()) for row in schedule.active]


@pytest.mark.parametrize("n, quantum, max_len, expected", [
    (1, 8, None, 8), (8, 8, None, 8), (9, 8, None, 16), (0, 8, None, 0), (5, 1, None, 5),
    (9, 8, 12, 12), (13, 8, 12, 13), (30, 16, 64, 32),
])
def test_bucket_length(n, quantum, max_len, expected):
  assert bucket_length(n, quantum, max_len) == expected


def test_merge_programs_basics():
  assert merge_programs([(0, 1, 2)] * 3) == (0, 1, 2)
  assert merge_programs([(0, 2), (0, 1, 2), (1,)]) == (0, 1, 2)
  assert merge_programs([(0, 1, 2), (0, 2, 2, 3), (1, 1)]) == (0, 1, 1, 2, 2, 3)
  with pytest.raises(ProgramError, match=r"at least one"):
    merge_programs([])


def _variants(depth=30):
  """The full program and 8 single edits of the search: skips of 1 / 3 / 4 layers, repeats of 1-4 layers."""
  full = list(range(depth))
  skip = lambda a, b: full[:a] + full[b + 1:]
  loop = lambda a, b, extra: full[:b + 1] + full[a:b + 1] * extra + full[b + 1:]
  return [full, skip(5, 5), skip(10, 12), skip(20, 23), loop(3, 3, 1), loop(10, 11, 1), loop(15, 18, 1),
          loop(25, 25, 2), loop(7, 8, 2)]


def test_merge_of_single_edit_variants_is_optimal_and_deterministic():
  programs = _variants()
  merged = merge_programs(programs)
  assert all(_is_subsequence(p, merged) for p in programs)
  # Every extra loop step sits at its own place, so 30 + 1 + 2 + 4 + 2 + 4 = 43 is the shortest possible.
  assert len(merged) == 43
  assert Program(merged, 30).compact() == "0-2 [3]x2 4-6 [7-8]x3 9 [10-11]x2 12-14 [15-18]x2 19-24 [25]x3 26-29"
  for order in itertools.islice(itertools.permutations(programs), 0, 5000, 997):
    assert merge_programs(order) == merged


def test_single_program_schedule_is_the_program():
  p = Program.from_compact("0-9 [10-11]x2 12-29", 30)
  s = make_schedule([p])
  assert s.length == len(p) == 32 and s.padded_length == 32 and s.batch_size == 1
  np.testing.assert_array_equal(s.ids[:32], p.ids)
  assert s.active.all() and s.ids.dtype == np.int32 and s.active.dtype == bool
  s = make_schedule([p], quantum=24)
  assert s.padded_length == 48
  assert not s.active[:, 32:].any() and not s.ids[32:].any()
  assert s.row_steps().tolist() == [32] and s.utilization == 1.0
  with pytest.raises(ValueError):
    s.ids[0] = 3  # read-only


def test_duplicates_cost_nothing():
  p = Program([0, 1, 1, 3], 4)
  s = make_schedule([p, p, Program([0, 1, 1, 3], 4)])
  assert s.length == 4 and s.active[:, :4].all()
  assert s.programs == (p, p, p)


def test_variant_batch_schedule():
  programs = [Program(v, 30) for v in _variants()]
  s = make_schedule(programs)
  assert s.length == 43 and s.padded_length == 48
  assert _row_programs(s) == [p.ids for p in programs]
  assert s.row_steps().tolist() == [len(p) for p in programs]


def test_steps_no_row_runs_are_dropped():
  # The pairwise merge keeps a step that no row's leftmost embedding uses; the schedule drops it.
  batch = [(1, 1, 0), (0, 1, 0, 1), (1, 0), (0, 0, 0), (0, 0, 1, 1)]
  programs = [Program(ids, 2) for ids in batch]
  s = make_schedule(programs, quantum=1)
  assert s.length < len(merge_programs(batch))
  assert s.active[:, :s.length].any(axis=0).all()
  assert _row_programs(s) == batch


def test_schedule_errors():
  with pytest.raises(ProgramError, match=r"one model depth; got depths \[4, 5\] \(row 0 has 4, row 2 has 5\)"):
    make_schedule([Program([0], 4), Program([1], 4), Program([0], 5)])
  with pytest.raises(ProgramError, match=r"padded_length=4 is shorter than the merged schedule \(5 steps"):
    make_schedule([Program([0, 1, 2], 4), Program([0, 2, 2, 3], 4)], padded_length=4)
  assert make_schedule([Program([0, 1, 2], 4), Program([0, 2, 2, 3], 4)], padded_length=5).padded_length == 5
  with pytest.raises(ProgramError, match=r"padded_length=4 is shorter than the schedule \(5 steps\)"):
    make_schedule([Program([0, 1, 2], 4), Program([0, 2, 2, 3], 4)]).padded(4)
  with pytest.raises(ProgramError, match=r"at least one program"):
    make_schedule([])
  with pytest.raises(ProgramError, match=r"Row 0 is a list, not a Program"):
    make_schedule([[0, 1]])


_DEPTH = 10
_program_ids = st.lists(st.integers(0, _DEPTH - 1), min_size=1, max_size=2 * _DEPTH)


def _edit(start, size, extra):
  """The full program with layers start..start+size-1 skipped (extra == 0) or run `extra` more times."""
  stop = min(start + size, _DEPTH)
  full = list(range(_DEPTH))
  if extra:
    return full[:stop] + full[start:stop] * extra + full[stop:]
  return full[:start] + full[stop:] or [0]


# Mostly near-full programs (like search candidates), some arbitrary ones.
_near_full = st.builds(_edit, st.integers(0, _DEPTH - 1), st.integers(1, 4), st.integers(0, 2))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_near_full, _program_ids), min_size=1, max_size=8), st.sampled_from([1, 8]))
def test_random_batches(batch, quantum):
  programs = [Program(ids, _DEPTH) for ids in batch]
  s = make_schedule(programs, quantum=quantum)
  assert _row_programs(s) == [p.ids for p in programs]
  assert s.row_steps().tolist() == [len(p) for p in programs]
  assert max(map(len, programs)) <= s.length <= sum(len(p) for p in set(programs))
  assert s.active[:, :s.length].any(axis=0).all()  # no step that no row runs
  assert s.padded_length == bucket_length(s.length, quantum)
  assert not s.active[:, s.length:].any() and not s.ids[s.length:].any()
  assert make_schedule(programs[::-1], quantum=quantum).ids.tolist() == s.ids.tolist()  # order-independent
  repadded, direct = s.padded(s.length + 3), make_schedule(programs, padded_length=s.length + 3)
  assert (repadded.ids.tolist(), repadded.active.tolist(), repadded.length) == (
      direct.ids.tolist(), direct.active.tolist(), direct.length)
