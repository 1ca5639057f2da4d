"""Completion scoring (`Executor.score_completions`) against each row's own `prefill_logits`, and the cost of
shared program prefixes (`programs.prefix_sharing`)."""

import jax
import numpy as np
import pytest

from polar_jax.programs import Executor
from polar_jax.programs.prefix_sharing import heavy_path, plan_sharing, rows_bucket
from polar_jax.testing import tiny_model

D = 6
FULL = tuple(range(D))


def _edits(i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Skip layer i, repeat layer i: the MCTS children of the full program."""
  return FULL[:i] + FULL[i + 1:], FULL[:i + 1] + (i,) + FULL[i + 1:]


@pytest.fixture(scope="module")
def executor():
  return Executor(tiny_model("llama", num_layers=D))


def _sequences(seed: int, lengths) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 96, n).tolist() for n in lengths]


_ALONE: dict = {}


def _alone(executor, ids, program, start):
  """(argmax, logprobs, top-2 margins) of one row from its own prefill_logits."""
  key = (id(executor), tuple(ids), tuple(program))
  if key not in _ALONE:
    _ALONE[key] = executor.prefill_logits([ids], program)[0]
  logits = _ALONE[key][start - 1:]
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  top2 = np.sort(logits, axis=-1)[:, -2:]
  return logits.argmax(-1), logp[np.arange(len(ids) - start), ids[start:]], top2[:, 1] - top2[:, 0]


def _assert_rows_alone(executor, res, seqs, progs, starts):
  for r, (ids, program, start) in enumerate(zip(seqs, progs, starts)):
    argmax, logprobs, margin = _alone(executor, ids, program, start)
    assert margin.min() > 1e-4, "test input has a near-tie (logits agree to ~1e-5)"
    np.testing.assert_array_equal(res.argmax[r], argmax, err_msg=f"row {r}")
    np.testing.assert_allclose(res.logprobs[r], logprobs, atol=1e-5, rtol=1e-5, err_msg=f"row {r}")
    assert res.argmax[r].shape == (len(ids) - start + 1,) and res.logprobs[r].dtype == np.float32


# Programs sharing all (the duplicate full program), some (skips, repeats, a looped block) and no steps with
# the full program; three questions, one of them twice with another completion start (m = 0 included).
PROGRAMS = [FULL, FULL, *_edits(2), *_edits(5), (0, 1, 2, 1, 2, 3, 4, 5), FULL[1:], (5, 4, 3, 2, 1, 0)]


@pytest.mark.parametrize("share", [True, False])
def test_scores_equal_rows_alone(executor, share):
  seqs = _sequences(0, (9, 12, 7))
  rows = [(q, p) for q, subset in ((0, PROGRAMS), (1, PROGRAMS[1::2]), (2, PROGRAMS)) for p in subset]
  rows += [(1, FULL), (1, _edits(3)[1]), (2, _edits(0)[0])]
  s = [seqs[q] for q, _ in rows]
  p = [prog for _, prog in rows]
  starts = [len(x) - 1 - r % 4 for r, x in enumerate(s[:-3])] + [len(s[-3]), 3, 1]
  res = executor.score_completions(s, p, starts, share_prefixes=share)
  _assert_rows_alone(executor, res, s, p, starts)
  np.testing.assert_array_equal(res.layers_executed, [len(x) for x in p])


def test_hand_counted_plan(executor):
  """One question: full, skip 2, repeat 5. Trunk = the heavy path (0 1 2 3 4 5 5); rows leave it at 6, 2, 7."""
  seq = _sequences(1, (10,))[0]
  progs = [FULL, _edits(2)[0], _edits(5)[1]]
  # Unshared: 3 rows x the merged 7 steps.
  plain = executor.score_completions([seq] * 3, progs, [7] * 3, share_prefixes=False)
  assert plain.executed_row_steps == 21
  # Two groups: trunk 0 1 (1 row x 2) | skip 2 runs 3 4 5 (1 x 3) | trunk 2-5 (1 x 4) | full and repeat 5
  # run their suffixes () and (5) merged (2 x 1).
  two = executor.score_completions([seq] * 3, progs, [7] * 3, max_groups=2)
  assert two.executed_row_steps == two.needed_row_steps == 2 + 3 + 4 + 2
  # Three groups: the full program takes the trunk state after 6 steps (no step of its own); trunk 1 x 1 more.
  three = executor.score_completions([seq] * 3, progs, [7] * 3, max_groups=3)
  assert three.executed_row_steps == 2 + 3 + 4 + 0 + 1 + 0
  for res in (plain, two, three):
    _assert_rows_alone(executor, res, [seq] * 3, progs, [7] * 3)


def test_plan_of_hand_case():
  progs = [FULL, _edits(2)[0], _edits(5)[1]]
  assert heavy_path(progs) == _edits(5)[1]
  two = plan_sharing([0, 0, 0], progs, max_groups=2)
  assert two.starts == (2, 6) and two.estimated_cost == 11
  assert [s.programs for s in two.trunk] == [((),), ((0, 1),), ((2, 3, 4, 5),)]
  assert [s.programs for s in two.groups] == [((3, 4, 5),), ((), (5,))]
  three = plan_sharing([0, 0, 0], progs, max_groups=3)
  assert three.starts == (2, 6, 7) and three.estimated_cost == 10
  assert [rows_bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]


def test_single_edits_cost_less(executor):
  """Two questions x all single edits of the full program: sharing executes fewer (row, step) pairs."""
  seqs = _sequences(2, (11, 8))
  progs = [e for i in range(D) for e in _edits(i)]
  s = [seqs[q] for q in range(2) for _ in progs]
  p = progs * 2
  starts = [len(x) - 2 - r % 3 for r, x in enumerate(s)]
  shared = executor.score_completions(s, p, starts)
  plain = executor.score_completions(s, p, starts, share_prefixes=False)
  assert shared.executed_row_steps < 0.8 * plain.executed_row_steps
  for a, b in zip(shared.argmax + shared.logprobs, plain.argmax + plain.logprobs):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  compiles = executor.compiles
  again = executor.score_completions(s, p, starts)
  assert executor.compiles == compiles and again.executed_row_steps == shared.executed_row_steps


def test_bad_completion_start(executor):
  with pytest.raises(ValueError, match="completion_starts"):
    executor.score_completions([[1, 2, 3]], FULL, [0])


def test_smollm2_scores_equal_rows_alone():
  from polar_jax.models import load_model
  ex = Executor(load_model("smollm2-135m-instruct"))
  tok = ex.model.tokenizer
  questions = ["The capital of France is Paris", "Two plus two equals four"]
  seqs = [tok.encode(q) for q in questions]
  full = tuple(range(30))
  progs = [full, full[:7] + full[8:], full[:20] + (19,) + full[20:]]
  s = [x for x in seqs for _ in progs]
  p = progs * 2
  starts = [len(x) - 2 for x in s]
  res = ex.score_completions(s, p, starts)
  _assert_rows_alone(ex, res, s, p, starts)
