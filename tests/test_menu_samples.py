"""Full-depth samples of the menu's test questions (`polar_jax.menu.samples`): computed once per temperature
and sample, resumed, checked against the questions, and equal to the pipeline's sampling method."""

import numpy as np
import pytest

from polar_jax import data
from polar_jax.evaluation.full_depth import full_depth_sampling
from polar_jax.menu import samples
from polar_jax.menu.features import examples_of
from polar_jax.menu.matrix import MenuFileError, MenuMatrix, MenuQuestion, empty_arrays
from polar_jax.program_eval import TaskConfig
from polar_jax.testing import tiny_model

TASK = TaskConfig(data.PromptConfig("tiny", template="question", answer_format="last_number"), max_new_tokens=5)


def _matrix(n_test=6):
  questions = [MenuQuestion(f"tiny/{s}/{i}", s, "tiny", 1, f"g{s}{i}", " ".join(f"w{(5 * i + j) % 90 + 2}"
                                                                                 for j in range(3 + i)), str(i))
               for s, n in (("train", 3), ("validation", 2), ("test", n_test)) for i in range(n)]
  programs = [tuple(range(4)), (0, 2, 3)]
  return MenuMatrix(programs, 4, questions, empty_arrays(len(questions), 2), {})


def test_samples_are_the_pipeline_sampling_methods_and_resume(tmp_path):
  model, matrix = tiny_model(), _matrix()
  got = samples.ensure_samples(tmp_path, matrix, model=model, task=TASK, temperatures=(1.5,), k=3, seed=2)[1.5]
  assert got.answer.shape == (6, 3) and got.k == 3
  examples = examples_of(matrix.questions("test"))
  run = full_depth_sampling(model, examples, TASK, temperature=1.5, num_samples=3, test_set="t", seed=2,
                            max_batch=4)  # another batch size: the samples do not depend on it
  for i, outcome in enumerate(run.outcomes):
    assert [c.answer or "" for c in outcome.candidates] == got.answer[i].tolist()
    assert [bool(c.correct) for c in outcome.candidates] == got.correct[i].tolist()
  assert (got.layers == 4 * np.array([[c.generated_tokens for c in o.candidates] for o in run.outcomes])).all()
  # Resume: a deleted sample is recomputed (equal), the others are only loaded (no model needed).
  samples.sample_path(tmp_path, 1.5, 1).unlink()
  with pytest.raises(MenuFileError, match=r"s1.npz is missing and computing it needs the LLM"):
    samples.ensure_samples(tmp_path, matrix, temperatures=(1.5,), k=3, seed=2)
  again = samples.ensure_samples(tmp_path, matrix, model=model, task=TASK, temperatures=(1.5,), k=3, seed=2)[1.5]
  assert (again.answer == got.answer).all()
  with pytest.raises(MenuFileError, match="--compute_samples"):
    samples.load_samples(tmp_path, matrix, 0.3, 3)
  with pytest.raises(MenuFileError, match="other questions than this menu's test rows"):
    samples.load_samples(tmp_path, _matrix(n_test=5), 1.5, 3)
  with pytest.raises(ValueError, match="temperatures must be > 0"):
    samples.ensure_samples(tmp_path, matrix, model=model, task=TASK, temperatures=(0.0,), k=1)
