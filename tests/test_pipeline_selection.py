"""The selection methods run for real (the evaluation's `selection` method) agree with the offline lab on the same
questions: the same program per question from freshly computed features and live runs, and the same verdict
when the chosen program runs."""

import numpy as np
import pytest

from polar_jax import data, pipeline
from polar_jax.evaluation import selection
from polar_jax.lab import SHIPPED
from polar_jax.menu import features, select
from polar_jax.menu.lab import scoring_view
from polar_jax.menu.matrix import MenuMatrix


@pytest.fixture(scope="module")
def shipped():
  return MenuMatrix.load(SHIPPED)


def test_pipeline_selectors_agree_with_the_lab(shipped):
  opts = pipeline.validate_config(shipped.info["config"])
  model, task = pipeline.load_model_for(opts), pipeline.task_config(opts)
  examples = data.load_split("arith_level11", "test", limit=6) + data.load_split("arith_level13", "test", limit=6)
  test_questions = shipped.questions("test")
  row_of = {q.id: i for i, q in enumerate(test_questions)}
  assert all(ex.id in row_of for ex in examples)
  rows = np.array([row_of[ex.id] for ex in examples])

  tables = features.load_features(SHIPPED, shipped)
  train, validation = shipped.fit_view("train"), shipped.fit_view("validation")
  lab_choice = {}
  selectors = [select.VoteSelector(k) for k in (3, 5)] + [select.ConfidenceSelector(k) for k in (3, 5)]
  for table in tables.values():
    selectors += [select.MenuSelector(table), select.MenuSelector(table, max_length=shipped.depth),
                  select.GatedFallback(select.MenuSelector(table, max_length=shipped.depth), table)]
  for sel in selectors:
    sel.fit(train, validation)
    lab_choice[sel.name] = sel.choose(test_questions, shipped.answers_view("test"))[rows]

  runs = selection.selection_runs(model, task, shipped, SHIPPED, examples, test_set="t", max_batch=16)
  assert sorted(r.method for r in runs) == sorted(lab_choice)
  test = scoring_view(shipped)
  moved = 0
  for run in runs:
    got = np.array(run.info["program_indices"])
    np.testing.assert_array_equal(got, lab_choice[run.method], err_msg=run.method)
    moved += int((got != 0).sum())
    for i, outcome in enumerate(run.outcomes):
      cand = outcome.candidates[0]
      assert cand.program == shipped.programs[got[i]]
      assert cand.correct == bool(test.correct[rows[i], got[i]]), (run.method, outcome.id)
  assert moved > 0  # the selectors leave full depth on some of these questions: the agreement is not trivial


def test_pipeline_sampling_equals_the_shipped_samples(shipped):
  """The evaluation's sampling method on 12 test questions draws the shipped samples of those questions (the
  lab's equal-runs baseline), on the real model: a pair's sample depends on its seed, question and program only."""
  from polar_jax.evaluation.full_depth import full_depth_sampling
  from polar_jax.menu import samples
  opts = pipeline.validate_config(shipped.info["config"])
  model, task = pipeline.load_model_for(opts), pipeline.task_config(opts)
  examples = (data.load_split("arith_level11", "test", limit=12)[6:]
              + data.load_split("arith_level13", "test", limit=12)[6:])
  row_of = {q.id: i for i, q in enumerate(shipped.questions("test"))}
  rows = np.array([row_of[ex.id] for ex in examples])
  table = samples.load_samples(SHIPPED, shipped, 0.7, 3)
  run = full_depth_sampling(model, examples, task, temperature=0.7, num_samples=3, test_set="t",
                            seed=opts.evaluate.sampling_seed, max_batch=8)
  got = np.array([[c.answer or "" for c in o.candidates] for o in run.outcomes])
  np.testing.assert_array_equal(got, table.answer[rows])
  assert (np.array([[c.correct for c in o.candidates] for o in run.outcomes]) == table.correct[rows]).all()
  assert len(set(got.ravel().tolist())) > 3  # the samples differ: the comparison means something


def test_selection_methods_resume_after_an_interruption(shipped, tmp_path):
  """Through the evaluation's run store: an evaluation killed after the first selection method loads that
  method's saved run on the rerun and computes only the rest (their features only when needed)."""
  from polar_jax.evaluation.outcomes import MethodRun
  opts = pipeline.validate_config(shipped.info["config"])
  model, task = pipeline.load_model_for(opts), pipeline.task_config(opts)
  examples = data.load_split("arith_level13", "test", limit=4)
  computed = []

  def store(kill_after):
    def saved(method, compute):
      path = tmp_path / f"{method}.json"
      if path.exists():
        return MethodRun.load(path)
      if len(computed) == kill_after:
        raise KeyboardInterrupt  # the kill
      computed.append(method)
      run = compute()
      run.save(path)
      return run
    return saved

  common = dict(test_set="t", feature_sets=("minilm",), multi_run_methods=False, max_batch=8)
  with pytest.raises(KeyboardInterrupt):
    selection.selection_runs(model, task, shipped, SHIPPED, examples, saved=store(1), **common)
  assert computed == ["menu_selector[minilm]"]
  runs = selection.selection_runs(model, task, shipped, SHIPPED, examples, saved=store(99), **common)
  assert computed == ["menu_selector[minilm]", "menu_selector[minilm,<=30]"]
  fresh = selection.selection_runs(model, task, shipped, SHIPPED, examples, **common)
  assert [r.info["program_indices"] for r in runs] == [r.info["program_indices"] for r in fresh]
  assert [[o.candidates[0].correct for o in r.outcomes] for r in runs] == \
      [[o.candidates[0].correct for o in r.outcomes] for r in fresh]
