"""The LLM scorer on a tiny random model: batched scores equal single runs, and a search end to end."""

import pytest

from polar_jax.programs import Executor, Program, StopRule
from polar_jax.search import SearchConfig, run_search, read_records, summarize
from polar_jax.search.scoring import LLMScorer
from polar_jax.testing import tiny_model

DEPTH = 6
NEW_TOKENS = 3
STOP = StopRule(stop_ids=())  # Random models rarely emit EOS; always generate NEW_TOKENS.


def _first_word(text, example):
  word = text.split()[0] if text.split() else None
  return word, word == example["answer"]


@pytest.fixture(scope="module")
def setup():
  model = tiny_model(num_layers=DEPTH, seed=0)
  executor = Executor(model)
  examples = []
  for q in range(3):
    prompt = " ".join(f"w{(11 * q + 3 * j) % 90 + 2}" for j in range(5 + q))
    full = executor.generate([prompt], Program.full(DEPTH), NEW_TOKENS, stop=STOP).texts[0]
    examples.append({"id": f"q{q}", "question": prompt, "answer": full.split()[0]})  # Full depth is right.
  scorer = LLMScorer(model, examples, prompt_fn=lambda e: e["question"], verify_fn=_first_word,
                     max_new_tokens=NEW_TOKENS, stop=STOP, max_batch=4, executor=executor)
  return model, executor, examples, scorer


def test_batched_scores_equal_single_runs(setup):
  _, executor, examples, scorer = setup
  programs = [Program(p, DEPTH) for p in ([0, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5],
                                          [0, 1, 2, 3, 4, 5, 4, 5], [0, 1, 2, 3])]
  pairs = [(q, p) for p in programs for q in range(3)][:13]
  scored = scorer.score(pairs)
  assert len(scored) == len(pairs) and scorer.stats.rows == len(pairs)
  assert scorer.stats.batches >= 4  # max_batch=4
  for (q, program), s in zip(pairs, scored):
    text = executor.generate([examples[q]["question"]], [program], NEW_TOKENS, stop=STOP).texts[0]
    assert s.answer == text.split()[0]
    assert s.reward == float(s.answer == examples[q]["answer"])
    assert s.layers == len(program) * NEW_TOKENS
  assert all(s.reward == 1.0 for (q, p), s in zip(pairs, scored) if p.is_full)


def test_search_with_the_llm_scorer(setup, tmp_path):
  _, executor, examples, scorer = setup
  before = scorer.stats.rows
  run = run_search(examples, scorer, SearchConfig(num_simulations=20, space="predictor", leaves_per_round=5),
                   tmp_path / "s.jsonl", shard=(0, 1))
  records = read_records(tmp_path / "s.jsonl")
  assert [r.id for r in records] == ["q0", "q1", "q2"]
  assert scorer.stats.rows - before == run.evaluations == sum(r.evaluations for r in records)
  for rec, ex in zip(records, examples):
    assert rec.initial_score == 1.0 and rec.initial_answer == ex["answer"]
    assert (0, 1, 2, 3, 4, 5) in rec.valid_programs
    assert all(e.answer == ex["answer"] for e in rec.valid)
    assert all(e.answer != ex["answer"] for e in rec.invalid)
    assert rec.layers == NEW_TOKENS * sum(len(e.program) for e in rec.valid + rec.invalid)
  assert summarize(records)["base_correct"] == 3


def test_task_scorer_matches_the_evaluation_path():
  """TaskScorer's rewards are run_programs' verdicts (the evaluation's path), multiple-choice log-likelihood
  included."""
  from polar_jax.data import Example, get_preset
  from polar_jax.program_eval import TaskConfig, run_programs
  from polar_jax.search.scoring import TaskScorer
  model = tiny_model(num_layers=4, seed=1)
  examples = [Example(id=f"q{i}", question=f"w{10 + i} w{20 + i}", answer="A", choices=("w3 w4", "w5", "w6 w7"))
              for i in range(3)]
  task = TaskConfig(get_preset("paper"), max_new_tokens=3, choice_scoring="loglik")
  pairs = [(i, Program(p, 4)) for i in range(3) for p in ([0, 1, 2, 3], [0, 0, 1, 2, 3], [3])]
  scored = TaskScorer(model, examples, task, max_batch=4).score(pairs)
  runs = run_programs(model, examples, pairs, task)
  assert [s.reward for s in scored] == [float(r.correct) for r in runs]
  assert [s.answer for s in scored] == [r.answer for r in runs]
  assert {s.answer for s in scored} <= {"A", "B", "C"}
