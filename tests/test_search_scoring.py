"""The search's scorer (TaskScorer) on tiny random models: rewards are the evaluation's verdicts, batched scores
equal single runs, stats count what ran, and a search end to end."""

import pytest

from polar_jax import data
from polar_jax.program_eval import TaskConfig, run_programs
from polar_jax.programs import Program
from polar_jax.search import SearchConfig, read_records, run_search, summarize
from polar_jax.search.scoring import TaskScorer
from polar_jax.testing import tiny_model

DEPTH = 6
NEW_TOKENS = 3
# The tiny vocabulary has no closing brace, so a reply inside an opened box is all of its generated words.
BOXED = data.PromptConfig("tiny_boxed", template="question", assistant_prefix="\\boxed{", answer_format="boxed")
TASK = TaskConfig(BOXED, max_new_tokens=NEW_TOKENS)
PROGRAMS = [Program(p, DEPTH) for p in ([0, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5],
                                        [0, 1, 2, 3, 4, 5, 4, 5], [0, 1, 2, 3])]


@pytest.fixture(scope="module")
def setup():
  """Three questions whose gold answer is the full program's reply, so full depth is always right."""
  model = tiny_model(num_layers=DEPTH, seed=0)
  questions = [data.Example(f"q{q}", " ".join(f"w{(11 * q + 3 * j) % 90 + 2}" for j in range(5 + q)), "?")
               for q in range(3)]
  full = run_programs(model, questions, Program.full(DEPTH), TASK)
  examples = [data.Example(ex.id, ex.question, r.answer) for ex, r in zip(questions, full)]
  return model, examples


def test_batched_scores_equal_single_runs_and_stats_count_them(setup):
  model, examples = setup
  scorer = TaskScorer(model, examples, TASK, max_batch=4)
  pairs = [(q, p) for p in PROGRAMS for q in range(3)][:13]
  scored = scorer.score(pairs)
  assert len(scored) == len(pairs)
  assert len({s.answer for s in scored}) > 2  # The programs change the replies, so the comparison means something.
  for (q, program), s in zip(pairs, scored):
    alone = run_programs(model, [examples[q]], program, TASK)[0]
    assert (s.answer, s.layers) == (alone.answer, alone.layers)
    assert s.reward == (1.0 if alone.correct else 0.0) == float(s.answer == examples[q].answer)
  assert all(s.reward == 1.0 for (_, p), s in zip(pairs, scored) if p.is_full)
  stats = scorer.stats
  assert (stats.calls, stats.rows) == (1, len(pairs))
  assert stats.batches >= 4  # 13 rows, max_batch=4.
  assert stats.row_steps == sum(len(p) for _, p in pairs)
  assert stats.row_steps <= stats.schedule_steps and 0 < stats.schedule_utilization <= 1
  assert 0 < stats.tokens <= NEW_TOKENS * len(pairs) and stats.seconds > 0


def test_per_question_never_mixes_questions(setup):
  model, examples = setup
  pairs = [(q, p) for q in range(3) for p in PROGRAMS[:2]]
  packed = TaskScorer(model, examples, TASK, max_batch=8)
  alone = TaskScorer(model, examples, TASK, max_batch=8, per_question=True)
  assert [s.answer for s in alone.score(pairs)] == [s.answer for s in packed.score(pairs)]
  assert (packed.stats.batches, alone.stats.batches) == (1, 3)


def test_search_with_the_task_scorer(setup, tmp_path):
  """Rewards, memoization (every distinct program of a question is run once) and the records of a search."""
  model, examples = setup
  scorer = TaskScorer(model, examples, TASK, max_batch=4)
  run = run_search(examples, scorer, SearchConfig(num_simulations=20, space="predictor", leaves_per_round=5),
                   tmp_path / "s.jsonl", shard=(0, 1))
  records = read_records(tmp_path / "s.jsonl")
  assert [r.id for r in records] == ["q0", "q1", "q2"]
  assert scorer.stats.rows == run.evaluations == sum(r.evaluations for r in records)
  for rec, ex in zip(records, examples):
    programs = [e.program for e in rec.valid + rec.invalid]
    assert len(programs) == len(set(programs)) == rec.evaluations
    assert rec.initial_score == 1.0 and rec.initial_answer == ex.answer
    assert tuple(range(DEPTH)) in rec.valid_programs
    assert all(e.answer == ex.answer for e in rec.valid)
    assert all(e.answer != ex.answer for e in rec.invalid)
  assert summarize(records)["base_correct"] == 3


def test_task_scorer_matches_the_evaluation_path_for_choice_loglik():
  """TaskScorer's rewards are run_programs' verdicts, multiple-choice log-likelihood included."""
  model = tiny_model(num_layers=4, seed=1)
  examples = [data.Example(id=f"q{i}", question=f"w{10 + i} w{20 + i}", answer="A", choices=("w3 w4", "w5", "w6 w7"))
              for i in range(3)]
  task = TaskConfig(data.get_preset("paper"), max_new_tokens=3, choice_scoring="loglik")
  pairs = [(i, Program(p, 4)) for i in range(3) for p in ([0, 1, 2, 3], [0, 0, 1, 2, 3], [3])]
  scorer = TaskScorer(model, examples, task, max_batch=4)
  scored = scorer.score(pairs)
  runs = run_programs(model, examples, pairs, task)
  assert [s.reward for s in scored] == [float(r.correct) for r in runs]
  assert [s.answer for s in scored] == [r.answer for r in runs]
  assert [s.layers for s in scored] == [r.layers for r in runs] == [len(p) * 3 for _, p in pairs]
  assert {s.answer for s in scored} <= {"A", "B", "C"}
  assert scorer.stats.tokens == 0 and scorer.stats.batches >= 3
