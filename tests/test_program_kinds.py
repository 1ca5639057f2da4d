"""One definition of program kinds: full, skip-only, repeat-only, skip+repeat, other (`polar_jax.programs.kinds`)."""

import itertools

import pytest

from polar_jax.programs.kinds import ProgramKind, is_block_edit, program_kind

FULL, SKIP, REPEAT, BOTH, OTHER = (ProgramKind.FULL, ProgramKind.SKIP_ONLY, ProgramKind.REPEAT_ONLY,
                                   ProgramKind.SKIP_AND_REPEAT, ProgramKind.OTHER)


@pytest.mark.parametrize("ids, depth, kind", [
    ((0, 1, 2, 3), 4, FULL),
    ((0, 2, 3), 4, SKIP),
    ((1,), 4, SKIP),
    ((3,), 4, SKIP),
    ((0, 1, 1, 2, 3), 4, REPEAT),
    ((0, 1, 2, 1, 2, 3), 4, REPEAT),
    ((0, 1, 2, 3, 0, 1, 2, 3), 4, REPEAT),  # The whole program twice.
    ((0, 1, 1, 1, 2, 3), 4, REPEAT),  # A block three times.
    ((0, 1, 2, 1, 2, 1, 2, 3), 4, REPEAT),
    ((0, 0, 2, 3), 4, BOTH),
    ((0, 1, 0, 1, 3), 4, BOTH),
    ((1, 1, 3, 3), 4, BOTH),
    ((0, 2, 1, 3), 4, OTHER),  # A reorder: every layer once, but not in order.
    ((0, 1, 2, 1, 3), 4, OTHER),  # A partial repeat: 1..2 again, then only 1.
    ((0, 1, 2, 3, 1, 3), 4, OTHER),
    ((0, 1, 0, 1, 2, 1, 2, 3), 4, OTHER),  # Two overlapping repeats.
    ((3, 2, 1, 0), 4, OTHER),
    ((0, 2, 0, 2), 4, OTHER),  # A repeat of a non-contiguous block.
    ((1, 0), 4, OTHER),
])
def test_kinds_of_hand_made_paths(ids, depth, kind):
  assert program_kind(ids, depth) is kind
  assert program_kind(list(ids), depth) is kind


def test_ambiguous_decompositions_are_found():
  # A greedy scan for the longest ascending block at each position gets these wrong.
  assert program_kind((0, 1, 0, 1, 2), 3) is REPEAT  # [0..1]x2 [2]
  assert program_kind((0, 0, 1), 2) is REPEAT  # [0]x2 [1]
  assert program_kind((0, 1, 1, 2), 3) is REPEAT  # [0] [1]x2 [2]
  assert program_kind((0, 1, 2, 2, 3, 4, 3, 4), 5) is REPEAT  # [0..1] [2]x2 [3..4]x2
  assert program_kind((0, 1, 2, 0, 1, 2, 2), 3) is OTHER  # [0..2]x2 then 2 again: not after the block


def test_depth_one_and_long_paths():
  assert program_kind((0,), 1) is FULL
  assert program_kind((0, 0), 1) is REPEAT
  assert program_kind((0,) * 5, 1) is REPEAT
  assert program_kind((0, 1, 2) * 4, 3) is REPEAT  # Longer than twice the depth.
  assert program_kind((0, 1, 2) * 3 + (0,), 3) is OTHER


def test_bad_paths_are_errors():
  with pytest.raises(ValueError, match="empty"):
    program_kind((), 4)
  with pytest.raises(ValueError, match="outside 0..3"):
    program_kind((0, 4), 4)


def _blocks_brute_force(ids):
  """Every split of `ids` into runs, each run a block written c times: the definition, tried exhaustively."""
  n = len(ids)
  for cuts in itertools.product((False, True), repeat=n - 1):
    bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
    last, ok = -1, True
    for lo, hi in zip(bounds, bounds[1:]):
      run = ids[lo:hi]
      size = next((s for s in range(1, len(run) + 1) if len(run) % s == 0 and run == run[:s] * (len(run) // s)
                   and run[:s] == list(range(run[0], run[0] + s))), None)
      if size is None or run[0] <= last:
        ok = False
        break
      last = run[size - 1]
    if ok:
      return True
  return False


def test_dynamic_program_matches_the_definition_on_every_short_path():
  depth = 3
  for n in range(1, 7):
    for ids in itertools.product(range(depth), repeat=n):
      assert is_block_edit(list(ids)) == _blocks_brute_force(list(ids)), ids
