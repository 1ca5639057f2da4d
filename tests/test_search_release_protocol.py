"""The release's MCTS as a protocol (`search/release.py`): its edits and UCB by hand, a scripted trace, searches."""

import dataclasses
import importlib.util
import json
import math
import pathlib

import pytest

from polar_jax import options
from polar_jax.search import FunctionScorer, SearchConfig, read_records, run_search, search
from polar_jax.search.release import ReleaseTree, release_children, release_ucb
from polar_jax.search.tree import RELEASE_MODEL_LENGTHS, release_length_bounds

ROOT = pathlib.Path(__file__).resolve().parent.parent
RELEASE = SearchConfig(protocol="polar_release", exploration=math.sqrt(2), min_len=3, max_len=5, leaves_per_round=1)


def test_root_children_by_hand():
  # D=4, bounds 1..8. Per position: skip 1, 2, 3, 4 entries, then repeat 1, 2, 3, 4 entries once; the empty
  # program (skip all 4) is left out.
  kids = release_children((0, 1, 2, 3), is_root=True, min_len=1, max_len=8)
  assert [c for c, _ in kids] == [
      (1, 2, 3), (2, 3), (3,), (0, 0, 1, 2, 3), (0, 1, 0, 1, 2, 3), (0, 1, 2, 0, 1, 2, 3), (0, 1, 2, 3, 0, 1, 2, 3),
      (0, 2, 3), (0, 3), (0,), (0, 1, 1, 2, 3), (0, 1, 2, 1, 2, 3), (0, 1, 2, 3, 1, 2, 3),
      (0, 1, 3), (0, 1), (0, 1, 2, 2, 3), (0, 1, 2, 3, 2, 3),
      (0, 1, 2), (0, 1, 2, 3, 3)]
  assert [e for _, e in kids][:8] == [(0, 1, 0), (0, 2, 0), (0, 3, 0), (0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1),
                                      (1, 1, 0)]
  # Without length limits the root has 8D - 12 children: D + (D-1) + (D-2) + (D-3) skips and as many repeats.
  assert len(release_children(tuple(range(5)), is_root=True, min_len=1, max_len=99)) == 28
  assert len(release_children(tuple(range(5)), is_root=True, min_len=1, max_len=99, max_block=2)) == 18


def test_length_bounds_keep_only_children_in_range():
  kids = release_children((0, 1, 2, 3), is_root=True, min_len=3, max_len=5)
  assert [c for c, _ in kids] == [(1, 2, 3), (0, 0, 1, 2, 3), (0, 2, 3), (0, 1, 1, 2, 3), (0, 1, 3), (0, 1, 2, 2, 3),
                                  (0, 1, 2), (0, 1, 2, 3, 3)]
  assert release_children((0, 1, 2), is_root=False, min_len=3, max_len=3) == []


def test_non_root_children_by_hand_single_layer_edits_and_one_program_per_tree():
  kids = release_children((0, 1, 1, 3), is_root=False, min_len=1, max_len=8)
  # Position 0: skip, repeat; 1: skip (repeating 1 would make it appear 3 times); 2: skip gives (0, 1, 3)
  # again, dropped; 3: skip, repeat.
  assert kids == [((1, 1, 3), (0, 1, 0)), ((0, 0, 1, 1, 3), (0, 1, 1)), ((0, 1, 3), (1, 1, 0)),
                  ((0, 1, 1), (3, 1, 0)), ((0, 1, 1, 3, 3), (3, 1, 1))]
  seen = {(0, 1, 3)}
  kids = release_children((0, 1, 1, 3), is_root=False, min_len=1, max_len=8, seen=seen)
  assert [c for c, _ in kids] == [(1, 1, 3), (0, 0, 1, 1, 3), (0, 1, 1), (0, 1, 1, 3, 3)]
  assert seen == {(0, 1, 3), (1, 1, 3), (0, 0, 1, 1, 3), (0, 1, 1), (0, 1, 1, 3, 3)}


def test_no_layer_more_than_twice_and_multi_layer_blocks_only_at_the_root():
  assert [c for c, _ in release_children((0, 0, 1, 1), is_root=False, min_len=1, max_len=8)] == [(0, 1, 1), (0, 0, 1)]
  # The rule is on the child: no repeat at all once some layer appears 3 times.
  assert all(e[2] == 0 for _, e in release_children((0, 0, 0, 1), is_root=False, min_len=1, max_len=8))
  program = (0, 1, 2, 2, 3, 4)
  assert {e[1] for _, e in release_children(program, is_root=False, min_len=1, max_len=20)} == {1}
  assert {e[1] for _, e in release_children(tuple(range(6)), is_root=True, min_len=1, max_len=20)} == {1, 2, 3, 4}


def test_release_length_bounds_per_model_and_by_depth():
  assert RELEASE_MODEL_LENGTHS["Qwen3-8B"] == (36, 24, 44)
  assert RELEASE_MODEL_LENGTHS["Llama-3.2-3B"] == (28, 16, 32)
  assert RELEASE_MODEL_LENGTHS["Qwen1.5-MoE-A2.7B"] == (24, 16, 28)
  assert RELEASE_MODEL_LENGTHS["Qwen3-30B-A3B"] == (48, 36, 54)
  for depth, lo, hi in RELEASE_MODEL_LENGTHS.values():  # One depth, one pair of bounds.
    assert release_length_bounds(depth) == (lo, hi)
  assert release_length_bounds(30) == (18, 34)  # Not in the release: 28's offsets.
  assert release_length_bounds(4) == (1, 8)  # 24's offsets, min clipped to 1.
  release = SearchConfig(protocol="polar_release")
  assert release.length_bounds(36) == (24, 44) and release.resolved_max_len(36) == 44
  assert dataclasses.replace(release, min_len=30).length_bounds(36) == (30, 44)
  assert SearchConfig().length_bounds(36) == (1, 72)  # CoLa unchanged.


def test_release_ucb_by_hand():
  # R/v - 5 |pi| / D + sqrt(2 ln(N + 1) / v), D = 4.
  assert release_ucb(1.0, 2, 3, root_visits=3, depth=4) == pytest.approx(0.5 - 3.75 + 1.1774100225, abs=1e-9)
  assert release_ucb(1.0, 2, 3, 3, 4) == 1.0 / 2 - 5 * 3 / 4 + math.sqrt(2 * math.log(3 + 1) / 2)  # Bit for bit.
  assert release_ucb(0.0, 1, 5, root_visits=0, depth=4) == -6.25  # ln 1 = 0: no exploration bonus.
  assert release_ucb(1.0, 2, 3, 3, 4, exploration=1.8) == pytest.approx(-3.25 + 1.8 * math.sqrt(math.log(4) / 2))
  with pytest.raises(ValueError, match="backed-up"):
    release_ucb(0.0, 0, 3, 1, 4)


class ScriptedRng:
  """random() and choice() from scripts (choice by index), logging what choice was offered."""

  def __init__(self, randoms, indexes):
    self.randoms, self.indexes, self.offered = list(randoms), list(indexes), []

  def random(self):
    return self.randoms.pop(0)

  def choice(self, seq):
    self.offered.append(list(seq))
    return seq[self.indexes.pop(0)]


def _step(tree, reward_of):
  walk = tree.select()
  program = tree.programs[walk[-1]]
  tree.backup(walk, reward_of(program))
  return walk, program


def test_a_scripted_trace_of_four_simulations_by_hand():
  tree = ReleaseTree(4, RELEASE)
  tree.rng = ScriptedRng(randoms=[0.5, 0.05, 0.9, 0.9], indexes=[5, 0, 0, 2, 3])
  reward_of = lambda p: float(p == (0, 1, 3))
  names = lambda walk: [tree.programs[n] for n in walk]
  walk, _ = _step(tree, reward_of)  # The full program's scoring, not a simulation.
  assert walk.initial and names(walk) == [(0, 1, 2, 3)] and tree.simulations == 0 and tree.visits[0] == 0
  # 1: the root is expanded; the leaf is a random child in program order: index 5 is (0, 1, 3).
  walk, leaf = _step(tree, reward_of)
  offered = [tree.programs[c] for c in tree.rng.offered[0]]
  assert offered == [(0, 0, 1, 2, 3), (0, 1, 1, 2, 3), (0, 1, 2), (0, 1, 2, 2, 3), (0, 1, 2, 3, 3), (0, 1, 3),
                     (0, 2, 3), (1, 2, 3)]
  assert offered[5] == leaf == (0, 1, 3)
  e = walk[1]
  assert tree.ucb[e] == 1 - 5 * 3 / 4 + 0.0  # N = 0 before this simulation.
  # 2: no random move (0.5); E is the only child with a finite UCB; it is expanded (single-layer edits
  # within 3..5): (0,0,1,3), (0,1,1,3), (0,1,3,3); index 0.
  walk, leaf = _step(tree, reward_of)
  assert names(walk) == [(0, 1, 2, 3), (0, 1, 3), (0, 0, 1, 3)]
  assert [tree.programs[c] for c in tree.children[e]] == [(0, 0, 1, 3), (0, 1, 1, 3), (0, 1, 3, 3)]
  assert tree.ucb[e] == pytest.approx(0.5 - 3.75 + math.sqrt(2 * math.log(2) / 2))  # -2.417445, N = 1
  assert tree.ucb[walk[2]] == pytest.approx(0 - 5 + math.sqrt(2 * math.log(2)))
  # 3: a random move (0.05 < 0.1) to the first child not fully explored, (1, 2, 3), never backed up; it is
  # expanded and its child index 2, (1, 2, 3, 3), is the leaf. (1, 2, 3) itself is not scored.
  walk, leaf = _step(tree, reward_of)
  a = walk[1]
  assert names(walk) == [(0, 1, 2, 3), (1, 2, 3), (1, 2, 3, 3)]
  assert tree.rng.offered[2] == tree.children[0]  # Generation order, all 8 open.
  assert tree.ucb[a] == pytest.approx(0 - 3.75 + math.sqrt(2 * math.log(3)))  # -2.267696, N = 2
  # 4: UCB is stored: E's -2.417 (from simulation 2) loses to A's -2.268 although E's value now would be
  # 0.5 - 3.75 + sqrt(ln 4) = -2.073. Under A, (1, 2, 3, 3) is the only child backed up; its children are
  # (2,3,3), (1,1,2,3,3), (1,3,3), (1,2,2,3,3) ((1,2,3) exists already, repeating 3 gives it 3 copies).
  walk, leaf = _step(tree, reward_of)
  assert names(walk) == [(0, 1, 2, 3), (1, 2, 3), (1, 2, 3, 3), (2, 3, 3)]
  assert [tree.programs[c] for c in tree.rng.offered[4]] == [(1, 1, 2, 3, 3), (1, 2, 2, 3, 3), (1, 3, 3), (2, 3, 3)]
  assert tree.simulations == 4 and tree.visits[0] == 4 and tree.reward[0] == 1.0
  assert tree.visits[a] == 2 and tree.visits[e] == 2 and tree.reward[e] == 1.0
  assert tree.program_visits()[(1, 2, 3)] == 2 and not tree.rng.randoms and not tree.rng.indexes
  assert sum(tree.scored) == 5  # The full program, (0,1,3), (0,0,1,3), (1,2,3,3), (2,3,3); not (1,2,3).


def test_a_simulation_that_scores_nothing_backs_up_the_last_reward():
  # D=2, lengths 1..2: root (0,1) -> (1,), (0,); (0,) -> (0,0); (1,) -> (1,1); nothing below those.
  config = dataclasses.replace(RELEASE, min_len=1, max_len=2)
  tree = ReleaseTree(2, config)
  tree.rng = ScriptedRng(randoms=[0.9] * 20, indexes=[0] * 20)
  rewards = {(0, 1): 1.0, (0, 0): 1.0}
  reward_of = lambda p: rewards.get(p, 0.0)
  leaves = [_step(tree, reward_of) for _ in range(8)]
  assert [p for w, p in leaves] == [(0, 1), (0,), (0, 0), (0, 0), (1, 1), (1, 1), (0, 1), (0, 1)]
  assert [w.evaluates for w, _ in leaves[1:]] == [True, True, False, True, False, False, False]
  # Simulations back up 0, 1, then 1 (last scored), 0, then 0 three times (the last scored, (1, 1), although
  # the full program's own reward is 1): the root's sum is 2.
  assert tree.simulations == 7 and tree.visits[0] == 7 and tree.reward[0] == 2.0
  x, y = tree.children[0][1], tree.children[0][0]
  assert tree.programs[x] == (0,) and tree.visits[x] == 3 and tree.reward[x] == 2.0
  assert tree.programs[y] == (1,) and tree.visits[y] == 2 and not tree.scored[y]  # (1,) is never scored.
  assert all(tree.fully_explored)


def _skip2_repeat0(index, ids):
  return float(2 not in ids and ids.count(0) >= 2)


EXAMPLES = [{"id": f"q{i}", "question": f"question {i}", "answer": str(i)} for i in range(3)]


@pytest.mark.parametrize("leaves_per_round", [1, 4])
def test_search_finds_the_planted_programs(leaves_per_round):
  config = dataclasses.replace(RELEASE, num_simulations=60, min_len=3, max_len=7, seed=42,
                               leaves_per_round=leaves_per_round)
  scorer = FunctionScorer(_skip2_repeat0, depth=5)
  records = search(EXAMPLES[:2], scorer, config)
  for rec in records:
    assert rec.initial_score == 0.0 and rec.simulations == 60
    assert rec.valid and all(2 not in p and p.count(0) >= 2 for p in rec.valid_programs)
    assert rec.evaluations == len(rec.valid) + len(rec.invalid) <= 61
    assert all(3 <= len(p) <= 7 for p in rec.valid_programs + rec.invalid_programs if len(p) != 5)
    assert rec.config["protocol"] == "polar_release" and SearchConfig.from_json(rec.config) == config
  assert scorer.pairs == sum(r.evaluations for r in records)  # The memo: each program scored once.
  # One seed for every question, as in the release: same rewards, same search.
  first, second = records
  assert (first.valid, first.invalid) == (second.valid, second.invalid)


def test_one_leaf_per_round_is_the_sequential_release():
  config = dataclasses.replace(RELEASE, num_simulations=40, min_len=3, max_len=7, seed=3)
  rec = search(EXAMPLES[:1], FunctionScorer(_skip2_repeat0, depth=5), config, max_active=1)[0]
  tree = ReleaseTree(5, config)
  scored = {}
  for _ in range(41):
    walk = tree.select()
    program = tree.programs[walk[-1]]
    tree.backup(walk, scored.setdefault(program, _skip2_repeat0(0, program)))
  assert tree.simulations == 40
  assert set(rec.valid_programs + rec.invalid_programs) == set(scored)
  visits = tree.program_visits()
  assert {e.program: e.visits for e in rec.valid + rec.invalid} == {p: visits.get(p, 0) for p in scored}


def test_protocol_config_validation_and_old_configs():
  with pytest.raises(ValueError, match="protocol must be one of"):
    SearchConfig(protocol="alphazero")
  with pytest.raises(ValueError, match="space='cola'"):
    SearchConfig(protocol="polar_release", space="predictor")
  with pytest.raises(ValueError, match="min_len"):
    SearchConfig(min_len=9, max_len=8)
  assert SearchConfig().to_json()["protocol"] == "cola"
  old = {k: v for k, v in SearchConfig(num_simulations=7).to_json().items() if k not in ("protocol", "min_len")}
  assert SearchConfig.from_json(old) == SearchConfig(num_simulations=7)


def test_a_records_file_from_before_the_protocol_field_resumes(tmp_path):
  config = SearchConfig(num_simulations=6, leaves_per_round=2)
  path = tmp_path / "records.jsonl"
  run_search(EXAMPLES[:2], FunctionScorer(_skip2_repeat0, depth=4), config, path, shard=(0, 1))
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  for obj in lines:
    del obj["config"]["protocol"], obj["config"]["min_len"]
  path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
  run = run_search(EXAMPLES, FunctionScorer(_skip2_repeat0, depth=4), config, path, shard=(0, 1))
  assert run.skipped == 2 and run.written == 1 and len(read_records(path)) == 3


def _default_config(arg):
  spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return options.pipeline_options(module.get_config(arg)).search


def test_the_default_config_argument():
  plain = _default_config(None)
  assert plain.protocol == "cola" and plain.num_simulations == 24 and plain.space == "predictor"
  release = _default_config("protocol=polar_release")
  assert release.tree() == SearchConfig(protocol="polar_release", num_simulations=100, exploration=math.sqrt(2),
                                        leaves_per_round=1, seed=42)
  assert release.tree().length_bounds(30) == (18, 34)
  assert _default_config("protocol=polar_release,sims=7").num_simulations == 7
