"""The program executor against naive references: forward pass, per-layer loop, uncached generation."""

import jax.numpy as jnp
import numpy as np
import pytest

from polar_jax.models import transformer
from polar_jax.programs import Executor, Program, ProgramError, StopRule
from polar_jax.testing import reference_greedy, reference_logits, tiny_model


# The references run the program's layers one by one in Python (no scan, no cache, no schedule): unrolled and
# compiled once per program (`polar_jax.testing`).
naive_logits = reference_logits
naive_greedy = reference_greedy


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def model(request):
  return tiny_model(request.param)


@pytest.fixture(scope="module")
def executor(model):
  return Executor(model)


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40, 41, 42, 43, 44]]


def test_full_program_matches_forward(model, executor):
  ids = PROMPTS[0]
  ours = executor.prefill_logits([ids], Program.full(4))[0]
  ref = np.asarray(transformer.forward(model.params, model.config, jnp.asarray([ids]))[0])
  np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("program", [[0, 2, 3], [0, 1, 1, 2, 3], [0, 1, 2, 1, 2, 3], [3, 2, 1, 0], [1],
                                     [0, 0, 0, 1, 2, 3, 3]])
def test_program_matches_naive_loop(model, executor, program):
  for ids in PROMPTS[:2]:
    ours = executor.prefill_logits([ids], program)[0]
    np.testing.assert_allclose(ours, naive_logits(model, ids, program), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("program", [[0, 1, 1, 2, 3], [0, 1, 2, 1, 2, 3], [0, 0, 0, 1, 2, 3]])
def test_cached_generation_equals_uncached(model, executor, program):
  """The case the reference release gets wrong: a repeated layer needs its own cache slot per step."""
  res = executor.generate([PROMPTS[0]], program, 10, stop=StopRule(stop_ids=()))
  assert res.tokens[0] == naive_greedy(model, PROMPTS[0], program, 10)


@pytest.mark.parametrize("program", [[0, 1, 1, 2, 3], [0, 2, 3]])
def test_token_logprobs_are_the_reference_log_softmax(model, executor, program):
  """Each generated token's log-probability equals the uncached reference's log-softmax at that token."""
  res = executor.generate([PROMPTS[0]], program, 6, stop=StopRule(stop_ids=()))
  tokens = res.tokens[0]
  logits = naive_logits(model, PROMPTS[0] + tokens[:-1], program).astype(np.float64)  # [S, V]
  at = logits[len(PROMPTS[0]) - 1:]  # the positions that produced each generated token
  logp = at - at.max(axis=-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
  np.testing.assert_allclose(res.token_logprobs[0], logp[np.arange(len(tokens)), tokens], atol=1e-4)


def test_mixed_batch_equals_rows_alone(model, executor):
  programs = [[0, 1, 1, 2, 3], [0, 2, 3], [3, 2, 1, 0]]
  together = executor.generate(PROMPTS, programs, 8, stop=StopRule(stop_ids=()))
  assert together.schedule_length > 4
  for ids, program, tokens in zip(PROMPTS, programs, together.tokens):
    alone = executor.generate([ids], program, 8, stop=StopRule(stop_ids=()))
    assert alone.tokens[0] == tokens
  np.testing.assert_array_equal(together.layers_executed, [5 * 8, 3 * 8, 4 * 8])


def test_many_programs_one_compile():
  model = tiny_model("llama", num_layers=8)
  ex = Executor(model)
  rng = np.random.default_rng(0)
  programs = []
  while len(programs) < 20:
    n = int(rng.integers(3, 15))
    p = tuple(int(i) for i in np.sort(rng.integers(0, 8, n)))
    if p not in programs:
      programs.append(p)
  assert len({len(p) for p in programs}) > 5
  for p in programs:  # All schedules have <= 16 steps: one bucket.
    ex.generate([PROMPTS[0]], list(p), 4)
  assert ex.compiles == 1


def test_stop_rules(model, executor):
  free = executor.generate([PROMPTS[0]], Program.full(4), 10, stop=StopRule(stop_ids=()))
  first = free.tokens[0][2]
  stopped = executor.generate([PROMPTS[0]], Program.full(4), 10, stop=StopRule(stop_ids=(first,)))
  assert stopped.tokens[0] == free.tokens[0][:3]
  assert stopped.stopped[0] and not free.stopped[0]
  assert list(stopped.num_generated) == [3] and list(free.num_generated) == [10]


def test_sampling_is_seeded(model, executor):
  a = executor.generate(PROMPTS, Program.full(4), 8, temperature=1.0, seed=3, stop=StopRule(stop_ids=()))
  b = executor.generate(PROMPTS, Program.full(4), 8, temperature=1.0, seed=3, stop=StopRule(stop_ids=()))
  c = executor.generate(PROMPTS, Program.full(4), 8, temperature=1.0, seed=4, stop=StopRule(stop_ids=()))
  assert a.tokens == b.tokens and a.tokens != c.tokens


def test_a_rows_sample_does_not_depend_on_its_batch(model, executor):
  """Per-row keys: a row sampled alone equals the same row (same seed) beside other rows and other programs."""
  progs = [Program.full(4), Program([0, 1, 1, 2, 3], 4), Program([0, 2, 3], 4)]
  together = executor.generate(PROMPTS, progs, 8, temperature=1.0, seed=[11, 12, 13], stop=StopRule(stop_ids=()))
  for r in range(3):
    alone = executor.generate([PROMPTS[r]], [progs[r]], 8, temperature=1.0, seed=[11 + r],
                              stop=StopRule(stop_ids=()))
    assert alone.tokens[0] == together.tokens[r]
  swapped = executor.generate(PROMPTS, progs, 8, temperature=1.0, seed=[12, 11, 13], stop=StopRule(stop_ids=()))
  assert swapped.tokens != together.tokens
  with pytest.raises(ValueError, match="2 sampling seeds for 3 prompts"):
    executor.generate(PROMPTS, progs, 8, temperature=1.0, seed=[1, 2])


def test_bad_programs_fail_before_tracing():
  ex = Executor(tiny_model("llama"))
  with pytest.raises(ProgramError, match=r"Program index 4 out of range for a 4-layer model \(program position 2\)"):
    ex.generate([PROMPTS[0]], [0, 1, 4], 4)
  with pytest.raises(ProgramError, match="empty"):
    ex.generate([PROMPTS[0]], [[]], 4)
  with pytest.raises(ProgramError, match="2 programs for 3 prompts"):
    ex.generate(PROMPTS, [[0], [1]], 4)
  with pytest.raises(ProgramError, match="6-layer model"):
    ex.generate([PROMPTS[0]], [Program([0, 1], 6)], 4)
  assert ex.compiles == 0


def test_brace_stop_on_smollm2_and_batch_consistency():
  """On the real model: the boxed-answer stop rule, and mixed-program batches equal rows run alone."""
  from polar_jax.models import load_model
  model = load_model("smollm2-135m-instruct")
  ex = Executor(model)
  tok = model.tokenizer
  prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) + "The answer is \\boxed{"
             for q in ("What is 3 plus 4?", "What is 9 minus 2?", "What is 6 times 1?")]
  programs = [Program.full(30), Program([i for i in range(30) if i != 7], 30),
              Program(list(range(12)) + [10, 11] + list(range(12, 30)), 30)]
  together = ex.generate(prompts, programs, 12, stop=StopRule(close_brace_depth=1))
  assert all(together.stopped)
  assert all("}" in t for t in together.texts)
  for prompt, program, tokens in zip(prompts, programs, together.tokens):
    alone = ex.generate([prompt], [program], 12, stop=StopRule(close_brace_depth=1))
    assert alone.tokens[0] == tokens


def test_number_stop_rule_agrees_with_host_checker():
  """The on-device number scanner stops at the first token where the data package's host rule says done."""
  from polar_jax.data import make_stop_checker
  from polar_jax.models import load_model
  model = load_model("smollm2-135m-instruct")
  ex = Executor(model)
  tok = model.tokenizer
  prefix = "The answer is "
  prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) + prefix
             for q in ("Evaluate: 3 + 7", "How many legs does a spider have?", "What is 12 times 12?")]
  res = ex.generate(prompts, Program.full(30), 16, stop=StopRule(stop_after_number=True))
  done = make_stop_checker("last_number", prefix)
  assert all(res.stopped)
  by_number = 0
  for tokens in res.tokens:
    assert not done(tok.decode(tokens[:-1]))
    if tokens[-1] not in tok.stop_ids:  # Else the turn ended first ("12.<|im_end|>").
      assert done(tok.decode(tokens)), tok.decode(tokens)
      by_number += 1
  assert by_number >= 1


def test_shared_prefix_prefill_equals_plain(model):
  """Rows sharing a long prompt prefix (a chat template) give the same tokens with and without sharing it."""
  shared = Executor(model, min_shared_prefix=8)
  plain = Executor(model, share_prefix=False)
  head = list(range(20, 45))  # 25 shared tokens: a prefix of 24 is computed once per program.
  prompts = [head + [5, 6, 7], head + [9], head + [50, 51, 52, 53, 54], head + [9]]
  programs = [[0, 1, 1, 2, 3], [0, 2, 3], [0, 1, 1, 2, 3], [3, 2, 1, 0]]
  a = shared.generate(prompts, programs, 6, stop=StopRule(stop_ids=()))
  b = plain.generate(prompts, programs, 6, stop=StopRule(stop_ids=()))
  assert shared._shared_prefix_length([list(p) for p in prompts]) == 24
  assert a.tokens == b.tokens
