"""Selection methods on synthetic menus whose right choice is known, the vote and confidence rules by hand, the
answers view's cost accounting, and the shipped menu's lab rows."""

import numpy as np
import pytest

from polar_jax.menu import lab, select
from polar_jax.menu.matrix import MenuMatrix, MenuQuestion, empty_arrays

DEPTH = 6
PROGRAMS = [tuple(range(6)), (0, 1, 2, 3, 5), (0, 1, 2, 4, 5), (0, 1, 2, 3, 4, 3, 4, 5)]


def synthetic(n_per_split=(300, 150, 400), *, learnable=True, seed=0):
  """Questions of 3 hidden kinds; features are the kind's centre plus noise. Learnable: program k + 1 answers
  kind k correctly (90%), full depth 35% of everything; not learnable: every program right at random (full 50%,
  others 45%), independent of the features."""
  rng = np.random.default_rng(seed)
  questions, rows, kinds = [], [], []
  centres = rng.normal(size=(3, 16)) * 3
  for split, n in zip(("train", "validation", "test"), n_per_split):
    for i in range(n):
      kind = int(rng.integers(3))
      qid = f"syn/{split}/{i}"
      questions.append(MenuQuestion(qid, split, "syn", 1, qid, f"question {qid}", "1"))
      rows.append(centres[kind] + rng.normal(size=16))
      kinds.append(kind)
  n, p = len(questions), len(PROGRAMS)
  arrays = empty_arrays(n, p)
  kinds = np.array(kinds)
  if learnable:
    correct = rng.random((n, p)) < 0.05
    correct[:, 0] = rng.random(n) < 0.35
    correct[np.arange(n), kinds + 1] = rng.random(n) < 0.9
  else:
    correct = rng.random((n, p)) < 0.45
    correct[:, 0] = rng.random(n) < 0.5
  arrays["correct"] = correct
  arrays["layers"] = np.tile(np.array([len(x) for x in PROGRAMS], np.int32), (n, 1))
  arrays["answer_known"][:] = True
  arrays["answer"][:] = np.where(correct, "1", "2")
  arrays["answer_logprob"][:] = np.where(correct, -0.1, -1.0).astype(np.float32)
  matrix = MenuMatrix(PROGRAMS, DEPTH, questions, arrays, {"answers": True})
  features = select.FeatureTable("syn", tuple(q.id for q in questions), np.array(rows, np.float32))
  return matrix, features, kinds[[q.split == "test" for q in questions]]


def _fit_choose(selector, matrix):
  selector.fit(matrix.fit_view("train"), matrix.fit_view("validation"))
  answers = matrix.answers_view("test")
  return selector.choose(matrix.questions("test"), answers), answers


def test_menu_selector_recovers_the_known_choice():
  matrix, features, kinds = synthetic()
  choice, _ = _fit_choose(select.MenuSelector(features), matrix)
  assert np.mean(choice == kinds + 1) >= 0.95


def test_menu_selector_keeps_full_depth_when_nothing_is_learnable():
  matrix, features, _ = synthetic(learnable=False)
  selector = select.MenuSelector(features)
  choice, _ = _fit_choose(selector, matrix)
  assert np.mean(choice == 0) >= 0.95, selector.describe()


def test_gated_fallback_keeps_full_depth_when_nothing_is_learnable():
  matrix, features, _ = synthetic(learnable=False)
  gate = select.GatedFallback(select.MenuSelector(features), features)
  choice, _ = _fit_choose(gate, matrix)
  assert np.mean(choice == 0) >= 0.95, gate.describe()


def test_length_limit_excludes_longer_programs():
  matrix, features, kinds = synthetic()
  choice, _ = _fit_choose(select.MenuSelector(features, max_length=DEPTH), matrix)
  assert not np.any(choice == 3)  # the 8-layer program is never chosen
  assert np.mean(choice[kinds < 2] == kinds[kinds < 2] + 1) >= 0.95


def test_gated_fallback_runs_the_selector_only_where_full_depth_is_predicted_wrong():
  matrix, features, kinds = synthetic()
  inner = select.MenuSelector(features, max_length=DEPTH)
  choice, answers = _fit_choose(select.GatedFallback(inner, features), matrix)
  assert answers.ran[:, 0].all()  # full depth runs on every question
  test = lab.scoring_view(matrix)
  full_right = test.correct[:, 0]
  rows = np.arange(len(test))
  assert test.correct[rows, choice].mean() > full_right.mean() + 0.3
  row = lab.score_choice(test, choice, ran=answers.ran, n_boot=200)
  fired = choice != 0
  expected = DEPTH + np.where(fired, np.array([len(p) for p in PROGRAMS])[choice], 0)
  assert row["layers_per_token"] == pytest.approx(expected.mean())
  assert row["runs_per_question"] == pytest.approx(1 + fired.mean())


def test_vote_by_hand_with_ties():
  assert select.vote(["4", "5", "4"], [True, True, True]) == 0  # majority "4", first given by rank 0
  assert select.vote(["5", "4", "4"], [True, True, True]) == 1
  assert select.vote(["5", "4", "6"], [True, True, True]) == 0  # a three-way tie: the best-ranked program
  assert select.vote(["5", "4", "4", "5"], [True, True, True, True]) == 0  # 2-2: "5" came first
  assert select.vote(["", "4", "7"], [False, True, True]) == 1  # an unknown answer abstains
  assert select.vote(["", ""], [False, False]) is None


def test_confidence_by_hand_with_ties():
  assert select.most_confident([-0.5, -0.1, -0.3], [True, True, True]) == 1
  assert select.most_confident([-0.2, -0.2, -0.3], [True, True, True]) == 0  # a tie: the better-ranked
  assert select.most_confident([-0.01, -0.4], [False, True]) == 1  # unknown answers do not count
  assert select.most_confident([float("nan"), -0.4], [True, True]) == 1
  assert select.most_confident([-1.0], [False]) is None


def test_vote_and_confidence_selectors_count_their_runs():
  matrix, _, _ = synthetic()
  for cls in (select.VoteSelector, select.ConfidenceSelector):
    choice, answers = _fit_choose(cls(3), matrix)
    assert answers.ran.sum(axis=1).tolist() == [3] * len(choice)
    row = lab.score_choice(lab.scoring_view(matrix), choice, ran=answers.ran, n_boot=200)
    ranked = select.ranked_programs(matrix.fit_view("train"))[:3]
    assert row["layers_per_token"] == pytest.approx(sum(len(PROGRAMS[j]) for j in ranked))
    assert row["runs_per_question"] == 3


def test_confidence_picks_the_right_answer_when_confidence_tells():
  matrix, _, _ = synthetic()
  choice, _ = _fit_choose(select.ConfidenceSelector(4), matrix)
  test = lab.scoring_view(matrix)
  rows = np.arange(len(test))
  # Synthetic confidence is high exactly on correct cells: the choice is right wherever any program is.
  assert (test.correct[rows, choice] == test.correct.any(axis=1)).all()


def test_answers_view_holds_no_outcome():
  matrix, _, _ = synthetic()
  answers = matrix.answers_view("test")
  assert not hasattr(answers, "correct") and not hasattr(answers, "gold_logprob")
  assert set(answers.run(0)) == {"answer", "known", "logprob"}


def test_missing_feature_rows_are_named():
  matrix, features, _ = synthetic()
  short = select.FeatureTable("short", features.ids[:10], features.vectors[:10])
  with pytest.raises(select.FeatureError, match="no row for"):
    select.MenuSelector(short).fit(matrix.fit_view("train"), matrix.fit_view("validation"))


def test_logistic_matches_a_known_solution():
  """Newton's method on a separable-with-noise problem: weights point the right way, probabilities calibrated."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2000, 2))
  p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))
  y = (rng.random(2000) < p)[:, None]
  w = select.fit_logistic(x, y, l2=1e-3)
  np.testing.assert_allclose(w[:, 0], [2.0, -1.0, 0.5], atol=0.25)


def _sample_table(matrix, answers, correct, temperature=0.7):
  from polar_jax.menu.samples import SampleTable
  answers = np.asarray(answers)
  return SampleTable(temperature, tuple(q.id for q in matrix.questions("test")), answers, answers != "",
                     np.asarray(correct, bool), np.full(answers.shape, 12, np.int32),
                     np.zeros(answers.shape, np.float32))


def test_sampling_rows_vote_by_hand_and_compare_at_equal_runs():
  """Four test questions with hand-made samples: sampling[T] is the first sample, the k-vote takes the majority
  (ties to the earlier sample, unknown answers abstain); every 3-run row gets its equal-runs comparison."""
  matrix, _, _ = synthetic((30, 20, 4))
  test = lab.scoring_view(matrix)
  answers = [["4", "5", "5", "6", "6"],  # vote@3 "5" (sample 1), vote@5 tie 5/6 -> "5"
             ["", "7", "8", "8", "8"],  # sample 0 unknown; vote@3 tie 7/8 -> "7", vote@5 "8"
             ["1", "1", "2", "2", "2"],
             ["", "", "", "", ""]]  # nothing known: wrong
  correct = [[False, True, True, False, False], [False, False, True, True, True],
             [True, True, False, False, False], [False] * 5]
  rows, correct_of = lab.sampling_rows(test, [_sample_table(matrix, answers, correct)], n_boot=200)
  assert correct_of["sampling[T=0.7]"].tolist() == [False, False, True, False]
  assert correct_of["sampling_vote[k=3,T=0.7]"].tolist() == [True, False, True, False]
  assert correct_of["sampling_vote[k=5,T=0.7]"].tolist() == [True, True, False, False]
  assert rows["sampling_vote[k=5,T=0.7]"]["layers_per_token"] == 5 * DEPTH
  assert rows["sampling_vote[k=3,T=0.7]"]["layers_per_question"] == 36
  assert rows["sampling[T=0.7]"]["pass1"] == 0.25
  table = lab.lab_table(matrix, [select.VoteSelector(3), lab.FullDepth()], n_boot=200,
                        samples=[_sample_table(matrix, answers, correct)])
  vote = table["methods"]["program_vote[k=3]"]
  assert set(vote["vs_sampling"]) == {"sampling_vote[k=3,T=0.7]"}  # only the row with as many runs
  program_correct = test.correct[np.arange(4), _fit_choose(select.VoteSelector(3), matrix)[0]]
  assert vote["vs_sampling"]["sampling_vote[k=3,T=0.7]"]["diff"] == pytest.approx(
      program_correct.mean() - 0.5)
  assert "vs_sampling" not in table["methods"]["full_depth"]
  assert "Equal runs" in lab.markdown(table)

