"""The paper's predictor on dense supervision: does richer supervision alone break its collapse to full depth?

The predictor (`polar_jax.predictor`, network and decoding unchanged) is trained on the menu matrix's train rows
instead of the sparse search records: a question's valid programs are the menu programs that answer it
correctly, its invalid ones the rest (questions no menu program answers give no target, as questions without a
valid program in the search supervision do); it is validated on the validation rows. Its top-1 program per test
question is the method's answer.

- `ensure_dense(matrix, top1_file, checkpoint=...)`: trains (or resumes) the predictor in `checkpoint` and
  writes `top1_file` (`dense_predictor.json`): per test question its top-1 program and that program's menu index
  (-1 when it is not a menu program), with the training's summary. The lab scores the top-1s from that file
  (`DensePredictorChoice`; `find_top1` looks next to the matrix, then in a workdir's `predictor_dense/`); the
  pipeline's train stage trains it in `<workdir>/predictor_dense/` and its `polar_dense` evaluation method runs
  the top-1s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Sequence

import numpy as np

from polar_jax.menu.matrix import AnswersView, MenuFileError, MenuMatrix, MenuQuestion, MenuView

TOP1_FILE = "dense_predictor.json"
WORKDIR_DIR = "predictor_dense"  # in a pipeline workdir, next to menu/


def menu_supervision(matrix: MenuMatrix, split: str) -> list:
  """`SupervisionRecord`s of a fit split (train / validation): valid = the menu programs answering correctly."""
  from polar_jax.predictor.supervision import SupervisionRecord  # pylint: disable=import-outside-toplevel
  view = matrix.fit_view(split)
  out = []
  for i, q in enumerate(view.questions):
    valid = tuple(matrix.programs[j] for j in np.flatnonzero(view.correct[i]))
    invalid = tuple(matrix.programs[j] for j in np.flatnonzero(~view.correct[i]))
    if valid:
      out.append(SupervisionRecord(q.id, q.question, q.gold, float(view.correct[i, 0]), matrix.depth, valid,
                                   invalid, source=f"menu matrix, {split} row {i}"))
  return out


def find_top1(menu_dir) -> pathlib.Path | None:
  """The dense predictor's file for a menu directory: next to the matrix (the shipped menu), or in the workdir's
  `predictor_dense/` (a pipeline run's menu/); None when neither exists."""
  for path in (pathlib.Path(menu_dir) / TOP1_FILE, pathlib.Path(menu_dir).parent / WORKDIR_DIR / TOP1_FILE):
    if path.exists():
      return path
  return None


def ensure_dense(matrix: MenuMatrix, top1_file, *, trainer, encoder, checkpoint) -> dict[str, Any]:
  """The dense predictor's test top-1s (`top1_file`), training it in `checkpoint` first when the file is missing
  (`trainer`: `options.TrainOptions`; `encoder`: the frozen question encoder; a killed training resumes)."""
  path = pathlib.Path(top1_file)
  if path.exists():
    return load_top1(path, matrix)
  from polar_jax import train  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.predict import ProgramPredictor  # pylint: disable=import-outside-toplevel
  ckpt = pathlib.Path(checkpoint)
  train_sup, val_sup = menu_supervision(matrix, "train"), menu_supervision(matrix, "validation")
  if not train_sup:
    raise MenuFileError("No menu program answers any training question of this menu; the dense predictor has "
                        "nothing to train on.")
  start = time.perf_counter()
  result = train.train_predictor(trainer, ckpt, train_sup, encoder, validation=val_sup or None)
  seconds = time.perf_counter() - start
  predictor = ProgramPredictor.from_checkpoint(ckpt, encoder, depth=matrix.depth, decode=trainer.decode)
  questions = matrix.questions("test")
  top1 = top1_programs(predictor, questions)
  index = {p: j for j, p in enumerate(matrix.programs)}
  payload = {
      "depth": matrix.depth, "ids": [q.id for q in questions], "programs": [list(p) if p is not None else None for p in top1],
      "menu_index": [index.get(p, -1) if p is not None else -1 for p in top1],
      "train_questions": len(train_sup), "validation_questions": len(val_sup),
      "train_seconds": seconds, "best_step": result.best_step, "best_val_loss": result.best_val_loss,
      "encoder": type(encoder).__name__, "decode": dataclasses.asdict(trainer.decode),
      "made_by": "polar_jax.menu.dense.ensure_dense (the paper's predictor on the menu's train rows, validated "
                 "on its validation rows)"}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, separators=(",", ":")))
  os.replace(tmp, path)
  return load_top1(path, matrix)


def top1_programs(predictor, questions: Sequence[MenuQuestion]) -> list[tuple[int, ...] | None]:
  """The predictor's top-1 program (layer ids) per question; None where it decodes nothing."""
  decoded = predictor.predict([q.question for q in questions])
  return [tuple(d.top1.ids) if d.top1 is not None else None for d in decoded]


def load_top1(path, matrix: MenuMatrix) -> dict[str, Any]:
  """A `dense_predictor.json`, checked against the matrix's test questions and programs."""
  path = pathlib.Path(path)
  try:
    payload = json.loads(path.read_text())
    ids, programs, menu_index, _ = payload["ids"], payload["programs"], payload["menu_index"], payload["depth"]
  except FileNotFoundError:
    raise MenuFileError(f"{path} is missing: train the dense predictor with `python -m polar_jax.lab "
                        "--dense_predictor=train` (or polar_jax.menu.dense.ensure_dense).") from None
  except (ValueError, KeyError, TypeError) as e:
    raise MenuFileError(f"{path} is not a dense predictor file ({e}); delete it and retrain.") from None
  if ids != [q.id for q in matrix.questions("test")]:
    raise MenuFileError(f"{path} belongs to other test questions than this menu's; delete it and retrain.")
  for p, j in zip(programs, menu_index):
    if j >= 0 and (j >= matrix.n_programs or list(matrix.programs[j]) != p):
      raise MenuFileError(f"{path} names menu program {j} for {p}, which is not this menu's; delete it and "
                          "retrain.")
  return payload


class DensePredictorChoice:
  """The lab's row of the dense predictor: its (already fitted) top-1 per test question, from the file."""
  deployable = True
  name = "polar_dense"

  def __init__(self, payload: dict[str, Any]):
    self.payload = payload

  def fit(self, train: MenuView, validation: MenuView) -> None:
    del train, validation  # fitted by ensure_dense on the same train / validation rows

  def choose(self, questions: Sequence[MenuQuestion], answers: AnswersView | None = None) -> np.ndarray:
    del answers
    by_id = dict(zip(self.payload["ids"], self.payload["menu_index"]))
    choice = np.array([by_id[q.id] for q in questions], dtype=np.int64)
    outside = int((choice < 0).sum())
    if outside:
      raise MenuFileError(f"The dense predictor's top-1 is not a menu program on {outside} of {len(choice)} test "
                          "questions, so the lab cannot score it offline; the pipeline's polar_dense evaluation "
                          "method runs them.")
    return choice

  def describe(self) -> dict[str, Any]:
    full = tuple(range(int(self.payload["depth"])))
    progs = [tuple(p) if p is not None else None for p in self.payload["programs"]]
    return {"top1_full_share": float(np.mean([p == full for p in progs])) if progs else None,
            "distinct_top1": len(set(progs)), "train_questions": self.payload["train_questions"],
            "validation_questions": self.payload["validation_questions"],
            "train_seconds": self.payload["train_seconds"]}
