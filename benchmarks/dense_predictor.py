"""Does dense supervision alone break the predictor's collapse to the full program? (the [selection] question 1)

The paper's predictor (`polar_jax.predictor`, decoding unchanged) is trained on the menu matrix's train rows
instead of the sparse search records: a question's valid programs are the menu programs that answer it
correctly (questions no menu program answers give no target, as in the search supervision), validated on the
validation rows. Its top-1 program on each test question is then scored exactly on the matrix where it is a
menu program; a top-1 outside the menu cannot be scored offline and is counted and reported (not guessed).

  python benchmarks/dense_predictor.py [--matrix=DIR] [--out=JSON] [--workdir=DIR]

Prints JSON: the top-1 distribution (share equal to the full program, share inside the menu), pass@1 of the
scored questions with a Wilson interval and, on the same questions, full depth and the best fixed program.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

from absl import app, flags

_MATRIX = flags.DEFINE_string("matrix", None, "A menu directory; default: the shipped one.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON here.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the predictor's checkpoints go (default: a temp dir).")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from polar_jax import options, stats, train  # pylint: disable=import-outside-toplevel
  from polar_jax.menu import lab  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import SHIPPED, MenuMatrix  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.encoder import MiniLMEncoder  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.predict import ProgramPredictor  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.supervision import SupervisionRecord  # pylint: disable=import-outside-toplevel

  matrix = MenuMatrix.load(_MATRIX.value or SHIPPED)
  depth = matrix.depth

  def supervision(split):
    view = matrix.fit_view(split)
    out = []
    for i, q in enumerate(view.questions):
      valid = tuple(matrix.programs[j] for j in np.flatnonzero(view.correct[i]))
      invalid = tuple(matrix.programs[j] for j in np.flatnonzero(~view.correct[i]))
      if valid:
        out.append(SupervisionRecord(q.id, q.question, q.gold, float(view.correct[i, 0]), depth, valid, invalid,
                                     source=f"menu matrix, {split} row {i}"))
    return out

  train_sup, val_sup = supervision("train"), supervision("validation")
  config = options.pipeline_options(matrix.info["config"]).predictor if matrix.info.get("config") else None
  trainer = dataclasses.replace(config or options.TrainOptions(), progress=False)
  workdir = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="dense_predictor_"))
  encoder = MiniLMEncoder()
  start = time.perf_counter()
  train.train_predictor(trainer, workdir, train_sup, encoder, validation=val_sup or None)
  train_seconds = time.perf_counter() - start
  predictor = ProgramPredictor.from_checkpoint(workdir, encoder, depth=depth, decode=trainer.decode)
  questions = matrix.questions("test")
  decoded = predictor.predict([q.question for q in questions])
  index = {p: j for j, p in enumerate(matrix.programs)}
  top1 = [tuple(d.top1.ids) if d.top1 is not None else None for d in decoded]
  test = lab.scoring_view(matrix)
  scored = np.array([p in index for p in top1])
  rows = np.flatnonzero(scored)
  choice = np.array([index[top1[i]] for i in rows], dtype=np.int64)
  correct = test.correct[rows, choice]
  fixed = lab.best_fixed_index(matrix.fit_view("train"))
  k = int(correct.sum())
  counts = collections.Counter(top1)
  result = {
      "n_test": len(questions), "n_train_targets": len(train_sup), "n_validation_targets": len(val_sup),
      "train_seconds": train_seconds,
      "top1_full_share": counts.get(tuple(range(depth)), 0) / len(questions),
      "top1_in_menu_share": float(scored.mean()), "distinct_top1": len(counts),
      "most_common_top1": [{"program": list(p) if p else None, "count": c} for p, c in counts.most_common(3)],
      "scored": {"n": int(len(rows)), "pass1": k / max(len(rows), 1), "ci95": list(stats.wilson(k, len(rows))),
                 "vs_full": stats.compare(correct, test.correct[rows, 0], groups=[test.groups[i] for i in rows],
                                          n_boot=2000),
                 "full_depth_pass1": float(test.correct[rows, 0].mean()) if len(rows) else None,
                 "best_fixed_pass1": float(test.correct[rows, fixed].mean()) if len(rows) else None}}
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
