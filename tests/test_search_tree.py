"""The search tree: edits and children, UCB on a hand-built tree, selection rules, synthetic searches."""

import dataclasses
import math

import numpy as np
import pytest

from polar_jax.programs import parse
from polar_jax.search import FunctionScorer, SearchConfig, SearchTree, search, without_timing
from polar_jax.search.tree import apply_edit, child_edits, children, spellable, ucb


def test_apply_edit_skips_and_inserts_copies_after_the_block():
  assert apply_edit((0, 1, 2, 3, 4), (1, 2, 0)) == (0, 3, 4)
  assert apply_edit((0, 1, 2, 3, 4), (1, 2, 1)) == (0, 1, 2, 1, 2, 3, 4)
  assert apply_edit((0, 1, 2), (2, 1, 3)) == (0, 1, 2, 2, 2, 2)


def test_children_of_the_full_program_are_counted_by_hand():
  full = tuple(range(6))
  # Skips: k=1..4 at 6,5,4,3 positions = 18. Repeats within max_len 12: k=1 r<=4 (6*4), k=2 r<=3 (5*3),
  # k=3 r<=2 (4*2), k=4 r=1 (3) = 50.
  assert len(children(full, 6)) == 68
  # Predictor space: the 18 skips and the 18 repeat-once edits.
  assert len(children(full, 6, space="predictor")) == 36
  # A tighter max_len removes the repeats that would exceed it.
  assert len(children(full, 6, max_len=7)) == 18 + 6


@pytest.mark.parametrize("space", ["cola", "predictor"])
@pytest.mark.parametrize("program", [tuple(range(7)), (0, 1, 1, 2, 5, 6), (3,), (0, 0, 1, 2, 2, 3, 4, 5, 6, 6)])
def test_children_are_distinct_in_bounds_one_edit_away_and_parseable(space, program):
  depth, max_len = 7, 10
  edits = child_edits(program, depth, max_len=max_len, space=space)
  kids = [apply_edit(program, e) for e in edits]
  assert kids, "every program here admits some edit"
  assert len(set(kids)) == len(kids)
  assert program not in kids
  for (pos, k, r), kid in zip(edits, kids):
    assert 1 <= len(kid) <= max_len
    assert 1 <= k <= 4 and 0 <= r <= 4 and 0 <= pos <= len(program) - k
    assert len(kid) == len(program) + (k * r if r else -k)
    assert all(0 <= x < depth for x in kid)
    if space == "predictor":
      assert parse(kid, depth) is not None
  if space == "predictor":  # Nothing parseable was dropped: compare with the unfiltered children.
    everything = children(program, depth, max_len=max_len)
    assert set(kids) == {c for c in everything if parse(c, depth) is not None}


def test_spellable_agrees_with_parse():
  rng = np.random.default_rng(0)
  checked = 0
  for depth in (1, 2, 3, 5, 8):
    frontier = [tuple(range(depth))]
    for _ in range(3):
      pool = [c for p in frontier for c in children(p, depth)]
      for c in pool:
        assert spellable(c, depth) == (parse(c, depth) is not None), c
      checked += len(pool)
      frontier = [pool[i] for i in rng.choice(len(pool), size=min(15, len(pool)), replace=False)]
  assert checked > 1000


def test_ucb_formula():
  # R/v + c sqrt(ln V / v) - lambda |pi| / D with V=10, D=4, c=1.8, lambda=5.
  values = ucb([3.0, 5.0, 0.0], [4, 5, 1], [3, 5, 3], total=10, depth=4, exploration=1.8, length_penalty=5.0)
  np.testing.assert_allclose(values, [-1.634316, -4.028495, -1.018631], atol=1e-6)
  with pytest.raises(ValueError, match="visited"):
    ucb([0.0], [0], [3], total=10, depth=4, exploration=1.8, length_penalty=5.0)


def _hand_built_tree(random_prob: float) -> SearchTree:
  """Root (V=10) with three visited children; only C = (1, 2, 3) is unexpanded."""
  config = SearchConfig(random_prob=random_prob)
  tree = SearchTree(4, config, np.random.default_rng(0))
  tree.visits[0] = 10
  tree.edits[0] = [(2, 1, 0), (0, 1, 1), (0, 1, 0)]  # A: skip layer 2; B: repeat layer 0; C: skip layer 0.
  for edit, visits, reward in zip(tree.edits[0], (4, 5, 1), (3.0, 5.0, 0.0)):
    node = tree._new_node(apply_edit(tree.programs[0], edit), 0)
    tree.kids[0].append(node)
    tree.visits[node], tree.reward[node] = visits, reward
  return tree


def test_ucb_on_a_hand_built_tree_and_selection_by_it():
  tree = _hand_built_tree(random_prob=0.0)
  assert [tree.programs[c] for c in tree.kids[0]] == [(0, 1, 3), (0, 0, 1, 2, 3), (1, 2, 3)]
  np.testing.assert_allclose(tree.ucb_of_kids(0), [-1.634316, -4.028495, -1.018631], atol=1e-6)
  path = tree.select()
  # C has the highest UCB; it was visited but never expanded, so it is expanded and its first (shuffled)
  # child becomes the leaf.
  c = tree.kids[0][2]
  assert path[:2] == [0, c] and len(path) == 3
  assert tree.programs[path[2]] in children((1, 2, 3), 4)
  assert tree.visits[0] == 11 and tree.visits[c] == 2 and tree.visits[path[2]] == 1
  tree.backup(path, 1.0)
  assert tree.reward[0] == 1.0 and tree.reward[c] == 1.0 and tree.reward[path[2]] == 1.0
  # UCB after the backup: C now has R=1, v=2, V=11.
  expected = 1 / 2 + 1.8 * math.sqrt(math.log(11) / 2) - 5.0 * 3 / 4
  assert tree.ucb_of_kids(0)[2] == pytest.approx(expected)


def test_random_choice_goes_to_an_unexplored_child():
  tree = _hand_built_tree(random_prob=1.0)
  a, b, _ = tree.kids[0]
  tree.edits[a] = []  # A and C expanded (terminal), so B is the only unexplored child...
  tree.edits[tree.kids[0][2]] = []
  path = tree.select()
  assert path[1] == b  # ...and it is chosen although its UCB is the lowest.


def test_unvisited_children_come_first_in_random_order():
  config = SearchConfig(num_simulations=50, leaves_per_round=1)
  tree = SearchTree(5, config, np.random.default_rng(1))
  tree.backup(tree.select(), 0.0)  # The root.
  all_kids = children(tuple(range(5)), 5)
  leaves = []
  for _ in range(len(all_kids)):
    path = tree.select()
    assert len(path) == 2  # Never deeper while the root has unvisited children.
    leaves.append(tree.programs[path[1]])
    tree.backup(path, 0.0)
  assert sorted(leaves) == sorted(all_kids)
  assert leaves != all_kids  # Shuffled, not generation order.
  assert len(tree.select()) >= 2


def _skip2_repeat0(index, ids):
  return float(2 not in ids and ids.count(0) >= 2)


EXAMPLES = [{"id": f"q{i}", "question": f"question {i}", "answer": str(i)} for i in range(4)]


# Found for every one of 200 question ids (hence seeds) in both settings; at D=6 the cola space has 68 root
# children, more than 64 simulations, so "unvisited children first" never reaches the two-edit target there.
@pytest.mark.parametrize("space,depth", [("predictor", 6), ("cola", 5)])
def test_search_finds_the_synthetic_target_within_64_simulations(space, depth):
  scorer = FunctionScorer(_skip2_repeat0, depth=depth)
  records = search(EXAMPLES[:2], scorer, SearchConfig(num_simulations=64, space=space))
  for rec in records:
    assert rec.initial_score == 0.0  # The full program keeps layer 2.
    assert rec.simulations == 64
    assert rec.valid, rec.id
    for entry in rec.valid:
      assert 2 not in entry.program and entry.program.count(0) >= 2
      assert entry.visits >= 1
    assert rec.evaluations == len(rec.valid) + len(rec.invalid) <= 64
  assert scorer.pairs == sum(r.evaluations for r in records)  # The memo: each program scored once.


def test_widening_goes_deeper_than_one_edit():
  scorer = FunctionScorer(lambda i, ids: 0.0, depth=8)
  plain = search(EXAMPLES[:1], scorer, SearchConfig(num_simulations=64))[0]
  wide = search(EXAMPLES[:1], scorer, SearchConfig(num_simulations=64, widening=1.0))[0]
  one_edit = set(children(tuple(range(8)), 8)) | {tuple(range(8))}
  assert all(p in one_edit for p in plain.invalid_programs)
  # One skip removes at most 4 layers; the length penalty pulls the widened search to shorter programs.
  assert min(len(p) for p in wide.invalid_programs) < 8 - 4


def test_same_seed_same_output_regardless_of_order_and_batching():
  config = SearchConfig(num_simulations=40, space="predictor", seed=3)
  scorer = FunctionScorer(_skip2_repeat0, depth=6)
  first = [without_timing(r) for r in search(EXAMPLES, scorer, config, max_active=4)]
  again = [without_timing(r) for r in search(EXAMPLES, scorer, config, max_active=4)]
  assert first == again
  reordered = EXAMPLES[::-1]
  one_at_a_time = {r.id: without_timing(r) for r in search(reordered, scorer, config, max_active=1)}
  # Only the record of how the driver batched differs.
  assert all(one_at_a_time[r.id].config["max_active"] == 1 and r.config["max_active"] == 4 for r in first)
  assert [dataclasses.replace(one_at_a_time[r.id], config=r.config) for r in first] == first
  other_seed = [without_timing(r) for r in search(EXAMPLES, scorer, SearchConfig(
      num_simulations=40, space="predictor", seed=4), max_active=4)]
  assert other_seed != first


def test_memo_hits_count_as_simulations():
  # D=2 with max_len 2: root (0,1) -> (0,), (1,), (0,0), (1,1), (0,1,...)... the space is tiny, so 30
  # simulations must revisit programs; every simulation still counts and nothing is scored twice.
  scorer = FunctionScorer(lambda i, ids: float(ids == (1,)), depth=2)
  rec = search(EXAMPLES[:1], scorer, SearchConfig(num_simulations=30, max_len=2))[0]
  assert rec.simulations == 30
  assert rec.evaluations == scorer.pairs < 30
  assert rec.valid_programs == ((1,),)
  total = sum(e.visits for e in rec.valid + rec.invalid if e.program != (0, 1))
  assert total >= 29  # Every non-root simulation ended below the root.


@pytest.mark.parametrize("protocol,leaves", [("cola", 8), ("cola", 1), ("polar_release", 1)])
def test_a_longer_search_cut_to_fewer_simulations_equals_the_shorter_search(protocol, leaves):
  # The budget rows of summary.json rest on this: a question's first n simulations do not depend on how many
  # follow, so the entries first reached by simulation n are exactly a run of n simulations' entries.
  from polar_jax.search.summary import at_simulations, by_simulations, summarize
  depth = 6
  def config(n):
    return SearchConfig(num_simulations=n, space="predictor" if protocol == "cola" else "cola", seed=5,
                        leaves_per_round=leaves, protocol=protocol, min_len=2, max_len=9)
  def reward(i, ids):  # Depends on the question, so the trees differ.
    return float((i + len(ids)) % 3 == 0)
  long = search(EXAMPLES, FunctionScorer(reward, depth=depth), config(48))
  for n in (8, 24, 48):
    short = search(EXAMPLES, FunctionScorer(reward, depth=depth), config(n))
    for a, b in zip(long, short):
      cut = at_simulations(a, n)
      strip = lambda entries: sorted((e.program, e.answer) for e in entries)
      assert strip(cut.valid) == strip(b.valid) and strip(cut.invalid) == strip(b.invalid), (protocol, n, a.id)
      assert cut.evaluations == b.evaluations and cut.simulations == n
      assert all(1 <= e.extra["simulation"] <= n or (protocol == "polar_release" and e.extra["simulation"] == 0)
                 for e in b.valid + b.invalid)
    rows = by_simulations(long, [n])
    assert rows[str(n)]["oracle_accuracy"] == summarize(short)["oracle_accuracy"]
  assert long[0].simulations == 48 and any(e.extra["simulation"] > 24 for e in long[0].valid + long[0].invalid)
  # An imported record (no 'simulation' fields) gives no budget rows, and cutting it says why.
  bare = dataclasses.replace(long[0], valid=tuple(dataclasses.replace(e, extra={}) for e in long[0].valid),
                             invalid=tuple(dataclasses.replace(e, extra={}) for e in long[0].invalid))
  assert by_simulations([bare]) == {}
  with pytest.raises(ValueError, match="no 'simulation' field"):
    at_simulations(bare, 8)


def test_on_round_reports_completed_simulations_every_round():
  # The pipeline's search bar counts simulations: it must move every round and end at questions x N.
  from polar_jax.search.mcts import search_stream
  seen = []
  config = SearchConfig(num_simulations=24, space="predictor", leaves_per_round=4)
  records = list(search_stream(EXAMPLES, range(4), FunctionScorer(_skip2_repeat0, depth=6), config, max_active=2,
                               on_round=seen.append))
  assert len(records) == 4
  assert seen == sorted(seen) and seen[-1] == 4 * 24
  assert len(seen) == 2 * 24 // 4  # two waves of 6 rounds (2 active questions, 4 leaves per round)
  assert seen[0] == 2 * 4 and len(set(seen)) == len(seen)  # it moves every round


def test_leaves_per_round_changes_nothing_while_the_search_stays_at_the_root():
  # Under "unvisited children first" a budget of at most (root children + 1) simulations evaluates the root and
  # the first children of its random order, whatever the virtual losses: one round of all the leaves is the
  # same search as sequential MCTS (the embedded default: 228 root children, 24 or 96 simulations). Beyond
  # that budget, or with widening, the rounds do change what is found.
  depth = 8
  def reward(i, ids):
    return float((i + len(ids)) % 3 == 0)
  def run(leaves, sims, **kwargs):
    config = SearchConfig(num_simulations=sims, space="predictor", leaves_per_round=leaves, seed=5, **kwargs)
    return [dataclasses.replace(without_timing(r), config={})
            for r in search(EXAMPLES, FunctionScorer(reward, depth=depth), config)]
  # The default (SmolLM2, 30 layers, predictor space) is such a search up to 229 simulations.
  assert len(children(tuple(range(30)), 30, space="predictor")) + 1 == 229
  budget = len(children(tuple(range(depth)), depth, space="predictor")) + 1
  sequential = run(1, budget)
  assert run(8, budget) == sequential and run(budget, budget) == sequential
  assert all(r.evaluations == budget for r in sequential)
  assert run(budget + 20, budget + 20) != run(1, budget + 20)
  assert run(40, 40, widening=1.0) != run(1, 40, widening=1.0)
