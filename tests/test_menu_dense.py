"""The paper's predictor on the menu's dense supervision (`polar_jax.menu.dense`): its targets are the matrix's
correct cells, it trains and writes its test top-1s, and the lab scores them (or refuses what it cannot score)."""

import dataclasses
import json

import numpy as np
import pytest

from polar_jax import options
from polar_jax.menu import dense, lab
from polar_jax.menu import matrix as menu_matrix
from polar_jax.menu.matrix import MenuFileError, MenuMatrix, MenuQuestion, empty_arrays

PROGRAMS = [tuple(range(6)), (0, 1, 2, 3, 5), (0, 1, 2, 4, 5), (0, 1, 2, 3, 4, 3, 4, 5)]


def _matrix(seed=0):
  rng = np.random.default_rng(seed)
  questions = [MenuQuestion(f"d/{s}/{i}", s, "d", 1, f"d/{s}/{i}", f"What is {i} plus {i + 3}?", str(2 * i + 3))
               for s, n in (("train", 24), ("validation", 8), ("test", 10)) for i in range(n)]
  arrays = empty_arrays(len(questions), len(PROGRAMS))
  arrays["correct"] = rng.random(arrays["correct"].shape) < 0.4
  arrays["correct"][0] = False  # a train question no program answers: no target
  arrays["layers"][:] = [len(p) for p in PROGRAMS]
  return MenuMatrix(PROGRAMS, 6, questions, arrays, {})


def test_dense_supervision_is_the_correct_cells():
  matrix = _matrix()
  sup = dense.menu_supervision(matrix, "train")
  view = matrix.fit_view("train")
  assert len(sup) == int(view.correct.any(axis=1).sum()) and sup[0].id != "d/train/0"
  for record in sup:
    i = [q.id for q in view.questions].index(record.id)
    assert set(record.valid) == {PROGRAMS[j] for j in np.flatnonzero(view.correct[i])}
    assert set(record.invalid) == {PROGRAMS[j] for j in np.flatnonzero(~view.correct[i])}
  with pytest.raises(menu_matrix.TestRowsError, match="Test outcomes are not for fitting"):
    dense.menu_supervision(matrix, "test")


def test_ensure_dense_trains_writes_top1s_and_the_lab_scores_them(tmp_path):
  from polar_jax.predictor.encoder import MiniLMEncoder
  matrix = _matrix()
  trainer = options.TrainOptions()
  trainer = dataclasses.replace(trainer, progress=False,
                                train=dataclasses.replace(trainer.train, num_steps=6, batch_size=8, warmup_steps=1),
                                checkpoint=dataclasses.replace(trainer.checkpoint, every_steps=6))
  top1 = tmp_path / "dense_predictor.json"
  payload = dense.ensure_dense(matrix, top1, trainer=trainer, encoder=MiniLMEncoder(), checkpoint=tmp_path / "ckpt")
  assert payload["ids"] == [q.id for q in matrix.questions("test")]
  for program, j in zip(payload["programs"], payload["menu_index"]):
    assert j == (PROGRAMS.index(tuple(program)) if tuple(program) in PROGRAMS else -1)
  assert (tmp_path / "ckpt" / "best").exists() and dense.find_top1(tmp_path) == top1
  again = dense.ensure_dense(matrix, top1, trainer=None, encoder=None, checkpoint=None)  # reused, not retrained
  assert again == payload
  choice = dense.DensePredictorChoice(payload)
  if min(payload["menu_index"]) >= 0:
    table = lab.lab_table(matrix, [lab.FullDepth(), choice], n_boot=100)
    test = lab.scoring_view(matrix)
    expected = test.correct[np.arange(len(test)), payload["menu_index"]].mean()
    assert table["methods"]["polar_dense"]["pass1"] == pytest.approx(expected)
  outside = dict(payload, menu_index=[-1] + payload["menu_index"][1:])
  with pytest.raises(MenuFileError, match="not a menu program on 1 of 10 test questions"):
    dense.DensePredictorChoice(outside).choose(matrix.questions("test"))
  top1.write_text(json.dumps(dict(payload, ids=payload["ids"][1:])))
  with pytest.raises(MenuFileError, match="other test questions than this menu's"):
    dense.load_top1(top1, matrix)
  top1.write_text("{")
  with pytest.raises(MenuFileError, match="is not a dense predictor file"):
    dense.load_top1(top1, matrix)
  # In a workdir the file sits in predictor_dense/, next to menu/.
  (tmp_path / "run" / "menu").mkdir(parents=True)
  (tmp_path / "run" / "predictor_dense").mkdir()
  (tmp_path / "run" / "predictor_dense" / "dense_predictor.json").write_text("{}")
  assert dense.find_top1(tmp_path / "run" / "menu") == tmp_path / "run" / "predictor_dense" / "dense_predictor.json"
  assert dense.find_top1(tmp_path / "run") is None
