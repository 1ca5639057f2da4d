"""Completion scoring (`Executor.score_completions`) against each row's own `prefill_logits`, and the cost of
shared program prefixes (`programs.prefix_sharing`)."""

from unittest import mock

import jax
import numpy as np
import pytest

from polar_jax.programs import Executor, completions
from polar_jax.programs.completions import ContextCache
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
  """One question: full, skip 2, repeat 5. Trunk = the heavy path (0 1 2 3 4 5 5); rows leave it after 6, 2
  and 7 steps and then run (), (3 4 5) and ()."""
  seq = _sequences(1, (10,))[0]
  progs = [FULL, _edits(2)[0], _edits(5)[1]]
  # Unshared: 3 rows x the merged 7 steps.
  plain = executor.score_completions([seq] * 3, progs, [7] * 3, share_prefixes=False)
  assert plain.executed_row_steps == 21 and plain.passes == 1
  # The trunk pass (1 row x 7 steps), then one pass of the three rows (3 x the longest suffix, 3 steps).
  shared = executor.score_completions([seq] * 3, progs, [7] * 3)
  assert shared.executed_row_steps == shared.needed_row_steps == 7 + 3 * 3 and shared.passes == 2
  for res in (plain, shared):
    _assert_rows_alone(executor, res, [seq] * 3, progs, [7] * 3)


def test_plan_of_hand_case():
  progs = [FULL, _edits(2)[0], _edits(5)[1]]
  assert heavy_path(progs) == _edits(5)[1]
  plan = plan_sharing([0, 0, 0], progs)
  assert plan.trunk.programs == (_edits(5)[1],) and plan.estimated_cost == 7 + 9
  assert [(g.programs, g.branch) for g in plan.groups] == [(((3, 4, 5), (), ()), (2, 6, 7))]
  assert plan.kept() == {0: [2, 6, 7]}
  # Without a cost per pass, each row is its own pass: the floor, 7 trunk nodes + 3 suffix steps.
  free = plan_sharing([0, 0, 0], progs, pass_cost=0)
  assert free.estimated_cost == 10 and [g.programs for g in free.groups] == [((3, 4, 5),), ((),), ((),)]
  assert [rows_bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]


def test_single_edits_of_one_trunk_merge_into_its_suffixes():
  """Every skip / repeat of a 6-layer trunk, on two questions: a row runs a suffix of the trunk from its own
  branch point, so a pass costs its rows x its longest suffix and nothing is added by merging; with no cost
  per pass the plan is the floor (the distinct (question, program prefix) nodes)."""
  progs = [FULL] + [e for i in range(D) for e in _edits(i)]
  questions = [q for q in range(2) for _ in progs]
  plan = plan_sharing(questions, progs * 2, pass_cost=0)
  nodes = {(q, p[:k]) for q, p in zip(questions, progs * 2) for k in range(1, len(p) + 1)}
  assert plan.estimated_cost == len(nodes)
  # The heavy path is the longest of the full program's continuations (repeat 5); every row's rest is a suffix
  # of the full program, which the trunk contains: no pass is longer than D steps.
  assert plan.trunk.programs == (_edits(5)[1],) * 2
  for g in plan.groups:
    assert all(p == FULL[D - len(p):] for p in g.programs)


def test_rests_with_one_tail_share_passes_across_trunks():
  """Two questions with different trunks (skip 1; repeat 1): an edit at layer 2 of either trunk leaves the rest
  (2, 3, 4, 5), a suffix of the full program's tail, so the two rows share one pass of 2 x 4 steps instead of
  joining their own trunk's short rows in two passes of 2 x 4."""
  x0, x1 = (0, 2, 3, 4, 5), (0, 1, 1, 2, 3, 4, 5)
  rows = [(0, x0), (0, (0, 2, 2, 3, 4, 5)), (0, x0 + (5,)), (1, x1), (1, (0, 1, 1, 2, 2, 3, 4, 5)), (1, x1 + (5,))]
  plan = plan_sharing([q for q, _ in rows], [p for _, p in rows], max_batch=2)
  long = [g for g in plan.groups if (2, 3, 4, 5) in g.programs]
  assert len(long) == 1 and long[0].programs == ((2, 3, 4, 5),) * 2 and long[0].questions == (0, 1)
  assert long[0].branch == (2, 4) and {g.programs for g in plan.groups if g is not long[0]} == {((), ())}


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


def test_pass_shapes_do_not_depend_on_the_call():
  """A group pass's compiled shape is its rows, schedule and completion length only: a call with another number
  of questions (so another number of trunk states to branch from) compiles just its own trunk pass."""
  ex = Executor(tiny_model("llama", num_layers=D), max_batch=2)
  seqs = _sequences(3, (11, 11, 11))
  progs = [FULL] + [e for i in range(D) for e in _edits(i)]

  def call(n_q):
    s = [seqs[q] for q in range(n_q) for _ in progs]
    before = ex.compiles
    ex.score_completions(s, progs * n_q, [9] * len(s))
    return ex.compiles - before

  call(2), call(3)  # every group shape (1 or 2 rows) is compiled here
  assert call(1) == 1 and call(2) == 0


def test_banks_grow_to_powers_of_two_within_the_budget():
  """Bank slot counts are powers of two (at least 64), so that few gather shapes compile; the byte budget caps
  them, and a bank too small for one call's programs is refused (the call then runs whole sequences)."""
  tail, context = (8, 2, 4), (1, 2, 3)
  slot = 2 * 16 * 8 * 2 * 4 * 4  # k and v, 16 steps (the quantum) x tail, float32
  programs = [tuple(range(i % 5 + 1)) + (i,) for i in range(200)]
  cache = ContextCache(max_bytes=1 << 30)
  bank, _, missing = cache.slots({context: programs[:70]}, tail, np.float32)
  assert bank["k"].shape[0] == 128 and len(missing[context]) == 70
  marks = np.arange(128, dtype=np.float32)[:, None, None, None, None] + 1
  bank["k"], bank["v"] = bank["k"] + marks, bank["v"] - marks  # stands for what the first call's entries wrote
  bank, _, missing = cache.slots({context: programs[70:150]}, tail, np.float32)
  assert bank["k"].shape[0] == 256 and len(missing[context]) == 80
  # Growing keeps every written slot and zero-fills the new ones; then a longer program widens every slot.
  np.testing.assert_array_equal(bank["k"][:128], np.broadcast_to(marks, (128, 16) + tail))
  np.testing.assert_array_equal(bank["v"][:128], -np.broadcast_to(marks, (128, 16) + tail))
  assert not np.asarray(bank["k"][128:]).any() and not np.asarray(bank["v"][128:]).any()
  bank, _, _ = cache.slots({context: [tuple(range(20))]}, tail, np.float32)
  assert bank["k"].shape[:2] == (256, 32)  # `bank` is the cache's own dict: these are the arrays later calls read
  np.testing.assert_array_equal(bank["k"][:128, :16], np.broadcast_to(marks, (128, 16) + tail))
  np.testing.assert_array_equal(bank["v"][:128, :16], -np.broadcast_to(marks, (128, 16) + tail))
  assert not np.asarray(bank["k"][:, 16:]).any() and not np.asarray(bank["v"][:, 16:]).any()
  held = sorted(cache._lru.values()) + sorted(bank["free"])
  assert len(cache) == 151 and sorted(held) == list(range(256))  # every slot held or free, once
  # A growth that fails leaves the bank as it was: every held entry still reads its own slot.
  entries, free, k_before = dict(cache._lru), list(bank["free"]), np.asarray(bank["k"])
  with mock.patch.object(completions, "_grow", side_effect=MemoryError("no room")), pytest.raises(MemoryError):
    cache.slots({context: [tuple(range(40 + i)) for i in range(120)]}, tail, np.float32)
  assert bank["k"].shape[:2] == (256, 32) and bank["free"] == free and dict(cache._lru) == entries
  np.testing.assert_array_equal(bank["k"], k_before)
  capped = ContextCache(max_bytes=100 * slot)
  assert capped.slots({context: programs[:70]}, tail, np.float32)[0]["k"].shape[0] == 100
  assert capped.slots({context: programs[70:180]}, tail, np.float32) is None


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


def _context_rows(seed: int):
  """Two shared contexts (20 and 27 tokens) continued by several questions, each question under programs that
  share all, some and none of their steps; one row whose completion starts inside its context."""
  rng = np.random.default_rng(seed)
  contexts = [rng.integers(1, 96, n).tolist() for n in (20, 27)]
  seqs, ctx = [], []
  for c in contexts:
    for n in (5, 8, 6):
      seqs.append(c + rng.integers(1, 96, n).tolist())
      ctx.append(len(c))
  rows = [(q, p) for q in range(len(seqs)) for p in PROGRAMS[(q % 3)::2]]
  s = [seqs[q] for q, _ in rows]
  p = [prog for _, prog in rows]
  c = [ctx[q] for q, _ in rows]
  starts = [len(x) - 1 - r % 3 for r, x in enumerate(s)]
  starts[0] = c[0] - 3  # the context is cut to leave the position before the completion in the row
  return s, p, starts, c


@pytest.mark.parametrize("share", [True, False])
def test_shared_contexts_score_as_rows_alone(share):
  ex = Executor(tiny_model("llama", num_layers=D))
  s, p, starts, c = _context_rows(3)
  res = ex.score_completions(s, p, starts, share_prefixes=share, context_lengths=c)
  _assert_rows_alone(ex, res, s, p, starts)
  totals = ex._scorer.totals
  distinct = {(tuple(x[:n]), prog) for x, prog, n in zip(s[1:], p[1:], c[1:])}
  assert 0 < totals["context_programs"] <= len(distinct) + 2  # + trunks that are nobody's row in a part
  assert len(ex._scorer.contexts) == totals["context_programs"]
  # A second call computes no context again and gives the same bits.
  computed = totals["context_programs"]
  again = ex.score_completions(s, p, starts, share_prefixes=share, context_lengths=c)
  assert totals["context_programs"] == computed and totals["context_hits"] > 0
  for a, b in zip(res.argmax + res.logprobs, again.argmax + again.logprobs):
    np.testing.assert_array_equal(a, b)


def test_contexts_of_edits_run_from_the_full_programs_states():
  """A program that starts like the full program takes those steps' context keys and values from the full
  program's pass (once per context) and runs only the rest: hand-counted work, results equal to rows alone."""
  ex = Executor(tiny_model("llama", num_layers=D))
  context, question = _sequences(7, [27, 6])
  progs = [*_edits(4), *_edits(5)]  # runs from step 4 / 5 / 4 (a prefix of the full program) / 6 -> suffixes
  seqs = [context + question] * len(progs)  # (5,), (4, 5), (4,), (5,): one pass of 2 merged steps
  starts = [len(seqs[0]) - 2] * len(progs)
  res = ex.score_completions(seqs, progs, starts, context_lengths=[27] * len(progs))
  _assert_rows_alone(ex, res, seqs, progs, starts)
  totals, p = ex._scorer.totals, ex.prompt_bucket(27)
  assert totals["context_trunks"] == 1 and totals["context_programs"] == 4
  rows = completions.CONTEXT_ROWS  # 4 edits: one pass
  assert totals["context_token_layers"] == D * p + rows * 2 * p  # the trunk's D steps + one pass of 2 steps


def test_contexts_of_one_length_share_passes():
  """Rows that continue different contexts of one padded length (25 and 27 tokens: 32) read one bank and run in
  the same passes: two questions under the same edits cost the passes of one (with twice the rows), the
  results equal each row alone, and generation runs them as one batch with the same tokens as plain
  generation."""
  model = tiny_model("llama", num_layers=D)
  first, second, q1, q2 = _sequences(9, [25, 27, 6, 7])
  progs = [FULL, *_edits(2), *_edits(4)]
  seqs = [first + q1] * len(progs) + [second + q2] * len(progs)
  c = [25] * len(progs) + [27] * len(progs)
  p = progs * 2
  starts = [len(x) - 2 for x in seqs]
  ex = Executor(model)
  res = ex.score_completions(seqs, p, starts, context_lengths=c)
  _assert_rows_alone(ex, res, seqs, p, starts)
  assert len(ex._scorer.contexts.banks) == 1 and ex._scorer.totals["context_trunks"] == 2
  one = Executor(model).score_completions(seqs[:len(progs)], progs, starts[:len(progs)], context_lengths=c[:len(progs)])
  assert res.passes == one.passes
  batches = []
  original = ex._generate_batch
  ex._generate_batch = lambda *a, **k: batches.append(len(a[0])) or original(*a, **k)
  out = ex.generate(seqs, p, 5, context_lengths=c)
  plain = Executor(model).generate(seqs, p, 5)
  assert batches == [len(seqs)] and out.tokens == plain.tokens


def test_each_pass_heads_only_its_own_completions():
  """The LM head of a pass covers its own rows' longest completion: two passes (max_batch 2, rows in order),
  completions of 1 and 6 tokens, take 4 and 8 positions (not 8 and 8), with results equal to each row alone."""
  ex = Executor(tiny_model("llama", num_layers=D), max_batch=2)
  short, long_ = _sequences(10, [9, 14])
  seqs = [short, short, long_, long_]
  progs = [FULL, _edits(3)[0], FULL, _edits(3)[1]]
  starts = [8, 8, 8, 8]
  res = ex.score_completions(seqs, progs, starts, share_prefixes=False)
  _assert_rows_alone(ex, res, seqs, progs, starts)
  assert res.passes == 2 and ex._scorer.totals["head_tokens"] == 2 * 4 + 2 * 8


def test_context_cache_within_its_budget():
  """No room: the rows run their whole sequences. Room for one call's programs: the next call's programs take
  the least recently used slots, and every result still equals the row alone."""
  model = tiny_model("llama", num_layers=D)
  s, p, starts, c = _context_rows(4)
  tiny = Executor(model, context_cache_bytes=1)
  _assert_rows_alone(tiny, tiny.score_completions(s, p, starts, context_lengths=c), s, p, starts)
  assert len(tiny._scorer.contexts) == 0 and tiny._scorer.totals["context_programs"] == 0
  cfg = model.config
  # One context (27 tokens, padded to 32), slots of 16 steps: room for 8 entries besides the context's trunk
  # (the full program's hidden states before each step, keys and values).
  first, second = [FULL, *_edits(1), *_edits(4)], [*_edits(2), *_edits(3), FULL[1:], FULL[:3]]
  seq = s[-1]
  slot = 2 * 16 * 32 * cfg.num_kv_heads * cfg.head_dim * 4
  trunk = ((D + 1) * 32 * cfg.hidden_size + 2 * D * 32 * cfg.num_kv_heads * cfg.head_dim) * 4
  ex = Executor(model, context_cache_bytes=8 * slot + trunk)
  for progs in (first, second, first):
    rows = [seq] * len(progs)
    starts = [len(seq) - 2] * len(progs)
    res = ex.score_completions(rows, progs, starts, context_lengths=[27] * len(progs))
    _assert_rows_alone(ex, res, rows, progs, starts)
    assert len(ex._scorer.contexts) <= 8 and ex._scorer.contexts.bytes <= 8 * slot + trunk
  # 5 entries, then 6 new ones (3 evicted), then the 3 evicted ones of `first` again.
  assert ex._scorer.totals["context_programs"] == 5 + 6 + 3


def test_a_failed_context_computation_leaves_no_entry(monkeypatch):
  """Entries whose keys and values were never written (the computation raised: out of memory, an interrupt) are
  dropped, so a later call computes them instead of reading empty slots."""
  ex = Executor(tiny_model("llama", num_layers=D))
  context, question = _sequences(8, [27, 6])
  seqs, progs = [context + question] * 2, list(_edits(3))
  starts = [len(seqs[0]) - 2] * 2
  ex.score_completions(seqs[:1], progs[:1], starts[:1])  # the scorer exists (no context used)
  scorer = ex._scorer

  def fail(*args, **kwargs):
    raise MemoryError("no room")
  with monkeypatch.context() as m:
    m.setattr(scorer, "_context_suffix", fail)
    with pytest.raises(MemoryError):
      ex.score_completions(seqs, progs, starts, context_lengths=[27, 27])
  assert len(scorer.contexts) == 0
  _assert_rows_alone(ex, ex.score_completions(seqs, progs, starts, context_lengths=[27, 27]), seqs, progs, starts)
  assert len(scorer.contexts) == 2


def test_sliding_window_models_ignore_contexts():
  ex = Executor(tiny_model("gemma3_text"))
  s, p, starts, c = _context_rows(5)
  p = [tuple(x % 4 for x in prog) for prog in p]  # the tiny Gemma has 4 layers
  res = ex.score_completions(s[:6], p[:6], starts[:6], context_lengths=c[:6])
  assert ex._scorer.totals["context_programs"] == 0
  plain = ex.score_completions(s[:6], p[:6], starts[:6])
  for a, b in zip(res.argmax + res.logprobs, plain.argmax + plain.logprobs):
    np.testing.assert_array_equal(a, b)


def test_smollm2_few_shot_contexts_score_as_rows_alone():
  """The embedded default's prompts: two datasets' few-shot contexts (`Prompts.context_length`), programs
  that share all, some and none of their steps."""
  from polar_jax import data
  from polar_jax.models import load_model
  from polar_jax.program_eval.task import Prompts, TaskConfig
  ex = Executor(load_model("smollm2-135m-instruct"))
  task = TaskConfig.from_preset("raw_qa_3shot", max_new_tokens=8, few_shot_split="auto")
  seqs, ctx = [], []
  for dataset in ("arith_level11", "arith_level13"):
    examples = data.load_split(dataset, "train", limit=7, seed=0)  # the first four are the shot candidates
    prompts = Prompts(ex.model, examples, task)
    lengths = [prompts.context_length(i) for i in range(len(examples))]
    shared = lengths[-1]
    assert 60 < shared < len(prompts.ids(6)) - 5 and lengths[4:] == [shared] * 3
    assert len({tuple(prompts.ids(i)[:shared]) for i in range(4, 7)}) == 1
    assert ex.model.tokenizer.decode(prompts.ids(4)[:shared]).endswith("\n\nQuestion:")  # the question follows
    # Shot candidates are shown other shots: their contexts are their own, except the spare's (index 3), which is
    # shown everyone's shots.
    assert lengths[3] == shared and prompts.ids(3)[:shared] == prompts.ids(4)[:shared]
    for i in range(3):
      assert 60 < lengths[i] < len(prompts.ids(i)) - 5 and prompts.ids(i)[:lengths[i]] != prompts.ids(4)[:shared]
      assert ex.model.tokenizer.decode(prompts.ids(i)[:lengths[i]]).endswith("\n\nQuestion:")
    for i in (0, 4, 5, 6):
      seqs.append(prompts.ids(i) + ex.model.tokenizer.encode(" " + examples[i].answer))
      ctx.append(lengths[i])
  full = tuple(range(30))
  progs = [full, full[:7] + full[8:], full[:20] + (19,) + full[20:], full[::-1][:12]]
  s = [x for x in seqs for _ in progs]
  p = progs * len(seqs)
  c = [n for n in ctx for _ in progs]
  starts = [len(x) - 2 for x in s]
  res = ex.score_completions(s, p, starts, context_lengths=c)
  _assert_rows_alone(ex, res, s, p, starts)
  # Per dataset two contexts (question 0's own and the shared one), under each of the four programs.
  assert ex._scorer.totals["context_programs"] == 2 * 2 * len(progs)
  assert ex._scorer.totals["context_trunks"] == 4


def test_generation_prefills_one_token_after_kept_prompt_states():
  """Rows scored with keep_prompts keep their prompts' own keys / values (`PromptState`, from the trunk and
  group passes; without shared prefixes, from the groups alone); generating those prompts under those programs
  then prefills only each prompt's last token, with the same tokens as plain generation. A batch in which one
  row has no state prefills as before and takes the others' states out; none is left behind."""
  model = tiny_model("llama", num_layers=D)
  s, p, starts, c = _context_rows(5)
  ex = Executor(model)
  prompts = [x[:st] for x, st in zip(s, starts)]
  plain = ex.generate(prompts, p, 6)
  states = ex._scorer_of().prompt_states
  for share in (True, False):
    res = ex.score_completions(s, p, starts, share_prefixes=share, context_lengths=c, keep_prompts=True)
    used, kept = ex.generation_totals["prompt_states_used"], ex._scorer.totals["prompt_states_kept"]
    assert res.keep_prompts(range(len(s))) == len(s) == len(states)
    assert res.keep_prompts([0, 1]) == 0 and ex._scorer.totals["prompt_states_kept"] - kept == len(s)  # kept once
    state = states[tuple(prompts[1]), p[1]]
    assert (state.context, state.length) == (c[1], starts[1] - c[1] - 1)
    assert states[tuple(prompts[0]), p[0]].length == 0  # row 0's context is cut to all its prompt but the last
    before = ex.generation_totals["prefill_token_layers"]
    out = ex.generate(prompts, p, 6, context_lengths=c)
    assert out.tokens == plain.tokens and ex.generation_totals["prompt_states_used"] - used == len(s)
    for a, b in zip(out.token_logprobs, plain.token_logprobs):
      np.testing.assert_allclose(a, b, atol=1e-4)  # float32 rounding of other batch shapes
    assert not states
    one_token = ex.generation_totals["prefill_token_layers"] - before
    # Row 1 without a state: its batch (the rows of its context length) prefills as before; row 0's batch and
    # the other context's use theirs.
    res.keep_prompts([r for r in range(len(s)) if r != 1])
    again = ex.generate(prompts, p, 6, context_lengths=c)
    assert again.tokens == plain.tokens and not states
    assert ex.generation_totals["prompt_states_used"] - used == len(s) + 1 + sum(n == max(c) for n in c)
    before = ex.generation_totals["prefill_token_layers"]
    ex.generate(prompts, p, 6, context_lengths=c)  # no states: the rest of each prompt is prefilled
    assert ex.generation_totals["prefill_token_layers"] - before > 4 * one_token


def test_generation_continues_kept_contexts():
  """`Executor.generate` with context_lengths: rows batch by context and prefill only what follows it, the
  context's keys / values coming from the scorer's bank (computed once per program, shared with scoring).
  Same tokens as plain generation, with two contexts interleaved in the input order, a row without a context,
  and again when the bank has no room."""
  model = tiny_model("llama", num_layers=D)
  s, p, _, c = _context_rows(6)
  s, p, c = s[::2] + [[5, 6, 7]], p[::2] + [FULL], c[::2] + [0]  # both contexts, interleaved; a short prompt
  plain_ex = Executor(model)
  plain = plain_ex.generate(s, p, 6)
  for room in (4 << 30, 1):
    ex = Executor(model, context_cache_bytes=room)
    out = ex.generate(s, p, 6, context_lengths=c)
    assert out.tokens == plain.tokens and out.texts == plain.texts
    np.testing.assert_array_equal(out.num_generated, plain.num_generated)
    for a, b in zip(out.token_logprobs, plain.token_logprobs):
      np.testing.assert_allclose(a, b, atol=1e-4)  # float32 rounding of other batch shapes
    programs = len({(tuple(x[:n]), prog) for x, prog, n in zip(s, p, c) if n})
    if room > 1:
      assert ex._scorer.totals["context_programs"] == programs  # computed once, then read by every row
      # Only what follows a context was prefilled.
      assert ex.generation_totals["prefill_token_layers"] < plain_ex.generation_totals["prefill_token_layers"] / 2
    else:
      assert len(ex._scorer.contexts) == 0
