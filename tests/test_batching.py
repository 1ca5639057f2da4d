"""Packing (question, program) pairs into batches with short shared schedules."""

import numpy as np
import pytest

from polar_jax.programs import merge_programs
from polar_jax.programs.batching import _lcs_lengths, loop_signature, plan_batches
from polar_jax.search.tree import children

DEPTH = 12
FULL = tuple(range(DEPTH))


def _round_pairs(questions=6, per_question=8, seed=0):
  rng = np.random.default_rng(seed)
  kids = children(FULL, DEPTH, space="predictor")
  pairs = [(q, FULL) for q in range(questions)]  # Every question's first round includes the full program.
  for q in range(questions):
    pairs += [(q, kids[i]) for i in rng.choice(len(kids), size=per_question, replace=False)]
  return pairs


def test_loop_signature():
  assert loop_signature(FULL) == ()
  assert loop_signature((0, 1, 2, 1, 2, 3)) == ((2, 1),)
  assert loop_signature((0, 0, 1, 3, 2)) == ((0, 0), (3, 2))


@pytest.mark.parametrize("max_batch", [1, 4, 16])
@pytest.mark.parametrize("per_question", [False, True])
def test_every_pair_once_within_size_and_waste(max_batch, per_question):
  pairs = _round_pairs()
  plan = plan_batches(pairs, max_batch, max_waste=0.25, per_question=per_question)
  flat = sorted(i for batch in plan for i in batch)
  assert flat == list(range(len(pairs)))
  for batch in plan:
    assert 1 <= len(batch) <= max_batch
    programs = [pairs[i][1] for i in batch]
    assert len(merge_programs(programs)) <= 1.25 * max(len(p) for p in programs)
    if per_question:
      assert len({pairs[i][0] for i in batch}) == 1


def test_same_program_across_questions_shares_a_batch_and_skips_ride_along():
  pairs = _round_pairs()
  plan = plan_batches(pairs, 16)
  full_rows = [i for i, (_, p) in enumerate(pairs) if p == FULL]
  assert any(set(full_rows) <= set(batch) for batch in plan)
  skip_only = {i for i, (_, p) in enumerate(pairs) if not loop_signature(p)}
  batch_of_full = next(b for b in plan if full_rows[0] in b)
  # Skip-only programs are subsequences of the full one: they join its batch at no schedule cost.
  assert len(merge_programs([pairs[i][1] for i in batch_of_full])) == DEPTH
  assert skip_only - set(full_rows) and (skip_only - set(full_rows)) & set(batch_of_full)


def test_zero_waste_only_merges_programs_that_fit_inside_the_longest():
  pairs = [(0, (0, 1, 2, 3)), (1, (0, 1, 1, 2, 3)), (2, (0, 2, 3)), (3, (0, 1, 2, 2, 3))]
  plan = plan_batches(pairs, 8, max_waste=0.0)
  for batch in plan:
    programs = [pairs[i][1] for i in batch]
    assert len(merge_programs(programs)) == max(len(p) for p in programs)
  assert len(plan) == 2  # The two different repeats cannot share without a longer schedule.


def test_per_question_plans_do_not_depend_on_other_questions():
  pairs = _round_pairs(questions=5, seed=1)
  alone = [(q, p) for q, p in pairs if q == 3]
  with_others = plan_batches(pairs, 4, per_question=True)
  mine = [[pairs[i] for i in batch] for batch in with_others if pairs[batch[0]][0] == 3]
  assert mine == [[alone[i] for i in batch] for batch in plan_batches(alone, 4, per_question=True)]


# Full-length programs that each loop back somewhere else (like random programs): no two share a schedule
# within max_waste=0.25 (checked in the test below).
UNLIKE = [(0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 10, 11),
          (0, 1, 2, 3, 4, 3, 4, 7, 8, 9, 10, 11), (0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 11),
          (0, 1, 2, 3, 4, 5, 9, 10, 11, 9, 10, 11), (0, 1, 2, 5, 6, 7, 6, 7, 8, 9, 10, 11),
          (0, 3, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11)]


def _shapes(pairs, plan):
  return [(len(b), len(merge_programs([pairs[i][1] for i in b]))) for b in plan]


@pytest.mark.parametrize("step_cost", [0.0, 1.5, 4.0, 64.0])
@pytest.mark.parametrize("max_batch", [3, 32])
def test_unlike_programs_every_pair_once_and_the_cost_never_rises(step_cost, max_batch):
  pairs = [(q, p) for q, p in enumerate(UNLIKE)] + [(0, UNLIKE[0]), (1, FULL), (2, UNLIKE[3][1:])]
  old = plan_batches(pairs, max_batch)
  new = plan_batches(pairs, max_batch, step_cost=step_cost, quantum=4)
  assert sorted(i for batch in new for i in batch) == list(range(len(pairs)))
  assert all(1 <= len(batch) <= max_batch for batch in new)
  cost = lambda plan: sum(-(-m // 4) * 4 * (step_cost + r) for r, m in _shapes(pairs, plan))
  assert cost(new) <= cost(old)
  if step_cost == 0:
    assert new == old
  for r, m in _shapes(pairs, old):  # The default plan bounds every schedule by max_waste.
    assert m <= 1.25 * DEPTH


def test_unlike_programs_run_alone_by_default_and_share_when_steps_are_dear():
  assert all(len(merge_programs([a, b])) > 1.25 * DEPTH for a in UNLIKE for b in UNLIKE if a != b)
  pairs = list(enumerate(UNLIKE))
  alone = [[i] for i in range(len(UNLIKE))]
  assert sorted(plan_batches(pairs, 32)) == alone  # Each alone within max_waste ...
  assert sorted(plan_batches(pairs, 32, step_cost=0.5, quantum=4)) == alone  # ... and when steps are cheap.
  dear = plan_batches(pairs, 32, step_cost=64.0, quantum=4)  # Steps cost far more than rows: share them.
  assert dear == [list(range(len(UNLIKE)))] and len(merge_programs(UNLIKE)) <= 2 * DEPTH


@pytest.mark.parametrize("per_question", [False, True])
def test_step_cost_zero_is_the_packing_on_search_rounds(per_question):
  for seed in range(3):
    pairs = _round_pairs(seed=seed)
    assert plan_batches(pairs, 8, per_question=per_question, step_cost=0.0, quantum=16) == plan_batches(
        pairs, 8, per_question=per_question)


def test_lcs_lengths_match_the_supersequence():
  rng = np.random.default_rng(0)
  for _ in range(50):
    a = tuple(rng.integers(0, 5, rng.integers(1, 9)).tolist())
    others = [tuple(rng.integers(0, 5, rng.integers(1, 9)).tolist()) for _ in range(4)] + [a]
    for b, common in zip(others, _lcs_lengths(a, others)):
      assert len(a) + len(b) - common == len(merge_programs([a, b]))  # Two sequences merge exactly.


def test_bad_arguments():
  with pytest.raises(ValueError, match="max_batch"):
    plan_batches([(0, FULL)], 0)
  with pytest.raises(ValueError, match="max_waste"):
    plan_batches([(0, FULL)], 4, max_waste=-1)
  with pytest.raises(ValueError, match="step_cost"):
    plan_batches([(0, FULL)], 4, step_cost=-1)
