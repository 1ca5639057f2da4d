"""Menu selectors run for real: fitted on the menu matrix's train rows (tuned on validation), then on each test
question the features are computed afresh (MiniLM on the text, one full-depth prefill of the prompt for the
LLM's state), the selector picks a menu program, and that program is run and scored like every other method.

The offline lab (`polar_jax.menu.lab`) scores the same selectors on the matrix's stored test cells without the
LLM; `tests/test_pipeline_selection.py` checks that both pick the same programs and get the same verdicts.
Fresh features go through the same float16 rounding as the cached ones, so the choices match exactly.

Methods (`SELECTION_METHODS`): the one-run menu selectors, on each feature set, unconstrained and limited to
programs no longer than full depth. The multi-run methods (program vote, confidence selection, gated
fallback) are scored in the lab only.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from polar_jax.evaluation.outcomes import MethodRun, run_ranked
from polar_jax.programs import Program


def selection_runs(model, task, matrix, menu_dir, examples: Sequence[Any], *, test_set: str,
                   feature_sets: Sequence[str] = ("minilm", "llm"), **common) -> list[MethodRun]:
  """One `MethodRun` per one-run menu selector on these test examples."""
  from polar_jax.menu import features as feats  # pylint: disable=import-outside-toplevel
  from polar_jax.menu import select  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import MenuQuestion  # pylint: disable=import-outside-toplevel
  cached = feats.load_features(menu_dir, matrix, feature_sets)
  fit_questions = [q for s in ("train", "validation") for q in matrix.questions(s)]
  questions = [MenuQuestion(ex.id, "test", ex.id.split("/")[0], int(ex.level), ex.group or ex.id, ex.question,
                            ex.answer) for ex in examples]
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  runs = []
  for name in feature_sets:
    start = time.perf_counter()
    if name == "minilm":
      fresh = feats.minilm_features([q.question for q in questions])
    else:
      fresh = feats.llm_features(model, task, questions)
    feature_seconds = time.perf_counter() - start
    fresh = fresh.astype(np.float16).astype(np.float32)  # the cache's rounding
    table = select.FeatureTable(name, tuple(q.id for q in fit_questions) + tuple(q.id for q in questions),
                                np.concatenate([cached[name].rows(fit_questions).astype(np.float32), fresh]))
    for selector in (select.MenuSelector(table), select.MenuSelector(table, max_length=matrix.depth)):
      selector.fit(train, validation)
      start = time.perf_counter()
      choice = selector.choose(questions)
      choose_seconds = time.perf_counter() - start
      ranked = [[Program(matrix.programs[int(j)], matrix.depth)] for j in choice]
      runs.append(run_ranked(
          model, examples, ranked, task, method=selector.name, test_set=test_set,
          label=f"Menu selector on {name} features{'' if selector.max_length is None else ', <= full depth'} "
                "(fitted on the menu's train rows, margin on validation)",
          overhead_seconds=feature_seconds / 2 + choose_seconds,  # the features serve both selectors
          info={"fitted": selector.describe(), "program_indices": [int(j) for j in choice],
                "feature_seconds": feature_seconds}, **common))
  return runs
