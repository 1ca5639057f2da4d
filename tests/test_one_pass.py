"""The one-pass reward: hand-made greedy paths through `decide`, and equality with generate-then-verify on
SmolLM2 across ladder levels and prompt presets."""

import dataclasses
import random

import pytest

from polar_jax import data
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig, run_programs
from polar_jax.program_eval.one_pass import canonical_completion, decide
from polar_jax.program_eval.task import Prompts
from polar_jax.programs import executor_for
from polar_jax.search.tree import children


@pytest.fixture(scope="module")
def model():
  return load_model("smollm2-135m-instruct")


def _setup(model, preset, gold="16", max_new_tokens=12):
  example = dataclasses.replace(data.load_split("arith_level1", "validation", limit=1, seed=0)[0], answer=gold)
  task = TaskConfig.from_preset(preset, max_new_tokens=max_new_tokens, dataset="arith_level1")
  prompts = Prompts(model, [example], task)
  return example, task, canonical_completion(prompts, 0)


def _ids(model, *pieces):
  return [model.tokenizer.encode(p, add_special_tokens=False)[0] for p in pieces]


def test_decide_walks_the_known_greedy_path(model):
  tok = model.tokenizer
  example, task, completion = _setup(model, "free_prefix")
  assert [tok.decode([t]) for t in completion.tokens] == ["1", "6", "."]
  say = lambda *pieces: decide(_ids(model, *pieces), completion, example, task, tok, tok.stop_ids)
  right = say("1", "6", ".", " To")  # the number completes at " To": generation would stop there, correct
  assert right.decided and right.correct and right.answer == "16" and right.generated == 4
  newline = say("1", "6", "\n", "x")  # deviates from the guessed tail, but the newline ends the number
  assert newline.decided and newline.correct and newline.generated == 3
  assert say("1", "7", "x", "x").decided and not say("1", "7", "x", "x").correct  # a wrong digit
  assert say("1", "6", "7", "x").decided and not say("1", "6", "7", "x").correct  # the number grows
  assert not say("0", "x", "x", "x").decided  # `016` is 16: left to generation
  assert not say(" ", "x", "x", "x").decided  # a space first: the answer may still come
  assert not say("1", "6", ".", "5").decided  # `16.5` or `16.50...`: unknown beyond the prefill
  eos = decide([tok.stop_ids[0]] + _ids(model, "x", "x", "x"), completion, example, task, tok, tok.stop_ids)
  assert eos.decided and not eos.correct and eos.generated == 1


def test_budget_and_boxed_prefix(model):
  tok = model.tokenizer
  example, task, completion = _setup(model, "free_prefix", max_new_tokens=2)
  short = decide(_ids(model, "1", "6", ".", " To"), completion, example, task, tok, tok.stop_ids)
  assert short.decided and short.correct and short.generated == 2  # the budget ends it after `16`
  example, task, completion = _setup(model, "paper_prefix")  # `The answer is \boxed{` opened the box
  assert tok.decode(list(completion.tokens)) == "16}" and not completion.digit_positions
  boxed = decide(_ids(model, "1", "6", "}", "x"), completion, example, task, tok, tok.stop_ids)
  assert boxed.decided and boxed.correct
  assert not decide(_ids(model, "1", "7", "}", "x")[:2] + _ids(model, "x", "x"), completion, example, task, tok,
                    tok.stop_ids).decided  # inside a box a wrong digit may still be an equivalent expression


@pytest.mark.parametrize("preset", ["free_prefix", "raw_qa", "paper_prefix", "raw_qa_3shot"])
def test_one_pass_equals_generate_then_verify(model, preset):
  """Undecided pairs are generated; with few-shot contexts (raw_qa_3shot) that generation prefills only its
  prompt's last token: the context's keys / values and the prompt's own come from the one pass."""
  rng = random.Random(0)
  depth = model.depth
  programs = [tuple(range(depth))] + rng.sample(children(tuple(range(depth)), depth, space="predictor"), 4)
  decided = total = with_context = 0
  ex = executor_for(model)
  used, kept = ex.generation_totals["prompt_states_used"], ex._scorer_of().totals["prompt_states_kept"]
  for dataset in ("arith_level1", "arith_level3"):
    examples = data.load_split(dataset, "validation", limit=3, seed=1)
    pairs = [(i, p) for i in range(len(examples)) for p in programs]
    few_shot = "auto" if data.get_preset(preset).few_shot else None
    generated = run_programs(model, examples, pairs, TaskConfig.from_preset(preset, max_new_tokens=12,
                                                                            few_shot_split=few_shot))
    one_pass = run_programs(model, examples, pairs, TaskConfig.from_preset(preset, max_new_tokens=12,
                                                                           reward="teacher_forced",
                                                                           few_shot_split=few_shot))
    for g, o in zip(generated, one_pass):
      assert o.correct == g.correct, (preset, g.text, o.text)
      assert o.decided_by in ("one_pass", "generate")
      if o.decided_by == "generate":  # generated exactly as before, keeping the prefill's gold log-probability
        assert o == dataclasses.replace(g, seconds=o.seconds, gold_logprob=o.gold_logprob,
                                        answer_logprob=o.answer_logprob)
        assert o.gold_logprob is None or o.gold_logprob < 0
        assert (o.answer_logprob is None) == (g.answer_logprob is None)
        assert o.answer_logprob is None or abs(o.answer_logprob - g.answer_logprob) < 1e-3  # batch shapes differ
      else:
        assert o.gold_logprob is not None and o.gold_logprob < 0 and o.layers == len(o.program)
        if o.correct:
          assert (o.text, o.answer) == (g.text, g.answer)
    decided += sum(o.decided_by == "one_pass" for o in one_pass)
    total += len(pairs)
    prompts = Prompts(model, examples, TaskConfig.from_preset(preset, few_shot_split=few_shot))
    with_context += sum(o.decided_by == "generate" and prompts.context_length(i) >= ex.min_shared_prefix
                        for (i, _), o in zip(pairs, one_pass))
  if preset != "paper_prefix":  # SmolLM2 rarely boxes the right answer: few pairs are decided there
    assert decided >= total // 2
  # Every undecided pair that continues a shared context (the chat template; few-shot turns) took its prompt's
  # keys / values from the one pass (`completions.PromptState`) and prefilled only the prompt's last token, and
  # the one pass kept no other state (these calls fit the budget, and every generated batch has all its states).
  used = ex.generation_totals["prompt_states_used"] - used
  assert used == with_context == ex._scorer_of().totals["prompt_states_kept"] - kept
  if preset in ("free_prefix", "raw_qa_3shot"):
    assert used >= 1  # the path is exercised on real weights
