"""The offline selection lab: fit and score selectors on a menu matrix exactly, without the LLM.

  python -m polar_jax.lab                                  # the shipped matrix of the embedded default
  python -m polar_jax.lab --matrix=/tmp/polar_default/menu --out=/tmp/lab.json
  python -m polar_jax.lab --learning_curve=/tmp/curve     # + test pass@1 vs training questions (JSON, PNG)

Prints the table (pass@1 with 95% Wilson intervals; against full depth the paired difference with its 95%
cluster-bootstrap interval and McNemar's exact p; layers per token) and writes JSON (`--out`):
  {"n_test", "n_programs", "methods": {name: {"pass1", "ci95", "diff_vs_full", "diff_ci95", "mcnemar_p",
   "layers_per_token", "deployable", ...}}}
Rows: full depth, the best fixed program, every selection method of `polar_jax.menu.select` (menu selectors on
each feature set, program votes and confidence selection at k = 3, 5, gated fallbacks), full-depth sampling and
its self-consistency at k = 3, 5 per temperature (from the menu's `samples/`; `--compute_samples` computes them)
with the equal-runs comparison of every multi-run method, and the menu oracle.
Selectors are fitted on the matrix's train rows and tuned on its validation rows; only the scorer reads test
outcomes (`polar_jax.menu.matrix`). The question features are read from the menu's `features/` folder
(shipped with the default matrix; `--compute_features` computes missing ones).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

from polar_jax import resources
from polar_jax.errors import user_errors
from polar_jax.menu.matrix import SHIPPED


_MATRIX = flags.DEFINE_string("matrix", None, "A menu directory (a workdir's menu/); default: the shipped one.")
_OUT = flags.DEFINE_string("out", None, "Write the table as JSON here.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
_N_BOOT = flags.DEFINE_integer("n_boot", 10000, "Bootstrap resamples.")
_FEATURES = flags.DEFINE_list("features", ["minilm", "llm"], "Question feature sets for the menu selectors.")
_COMPUTE = flags.DEFINE_bool("compute_features", False, "Compute missing feature files (MiniLM; the LLM's "
                             "feature loads the model of the matrix's generating config) and cache them.")
_SAMPLING = flags.DEFINE_enum("sampling", "auto", ["auto", "on", "off"], "Full-depth sampling rows (self-"
                              "consistency at equal runs) from the menu's samples/ folder: auto = the temperatures "
                              "whose samples are all there; on = every --temperatures (missing ones are an error "
                              "unless --compute_samples).")
_TEMPERATURES = flags.DEFINE_list("temperatures", ["0.3", "0.7", "1.0"], "Sampling temperatures.")
_COMPUTE_SAMPLES = flags.DEFINE_bool("compute_samples", False, "Compute missing full-depth samples (loads the "
                                     "matrix's model; about 4 minutes per sample of 1000 questions on 2 cores).")
_DENSE = flags.DEFINE_enum("dense_predictor", "auto", ["auto", "train", "off"], "The paper's predictor trained on "
                           "the menu's dense supervision (polar_dense): auto = its row when the menu's "
                           "dense_predictor.json is there; train = train it first if it is not (minutes).")
_DENSE_CKPT = flags.DEFINE_string("dense_checkpoint", None, "Where --dense_predictor=train keeps its checkpoints "
                                  "(default: the menu's dense_predictor/ folder).")
_CURVE = flags.DEFINE_string("learning_curve", None, "Also write the learning curve (JSON and PNG) to this "
                             "folder.")


def _model_and_task(matrix):
  """The model and prompt of the config that generated the matrix (menu.json's info.config)."""
  from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import MenuFileError  # pylint: disable=import-outside-toplevel
  config = matrix.info.get("config")
  if not config:
    raise MenuFileError("This menu's menu.json has no generating config; compute its LLM features in Python "
                        "with polar_jax.menu.features.ensure_features(dir, matrix, model=..., task=...).")
  opts = pipeline.validate_config(config)
  return pipeline.load_model_for(opts), pipeline.task_config(opts)


def _dense(directory, matrix):
  """The dense predictor's lab row as `--dense_predictor` asks."""
  from polar_jax.menu import dense  # pylint: disable=import-outside-toplevel
  found = dense.find_top1(directory)
  if _DENSE.value == "off" or (_DENSE.value == "auto" and found is None):
    return []
  if found is None:  # --dense_predictor=train
    import dataclasses  # pylint: disable=import-outside-toplevel
    from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
    from polar_jax.predictor.encoder import make_encoder  # pylint: disable=import-outside-toplevel
    model, _ = _model_and_task(matrix)
    opts = pipeline.validate_config(matrix.info["config"])
    found = pathlib.Path(directory) / dense.TOP1_FILE
    dense.ensure_dense(matrix, found, trainer=dataclasses.replace(opts.predictor, progress=True),
                       encoder=make_encoder(opts.encoder, model),
                       checkpoint=_DENSE_CKPT.value or pathlib.Path(directory) / "dense_predictor")
  return [dense.DensePredictorChoice(dense.load_top1(found, matrix))]


def _samples(directory, matrix):
  """The sample tables the flags ask for (`--sampling`, `--temperatures`, `--compute_samples`)."""
  from polar_jax.menu import samples  # pylint: disable=import-outside-toplevel
  if _SAMPLING.value == "off":
    return []
  try:
    temperatures = [float(t) for t in _TEMPERATURES.value]
  except ValueError:
    raise samples.MenuFileError(f"--temperatures must be numbers, got {_TEMPERATURES.value}.") from None
  if _SAMPLING.value == "auto" and not _COMPUTE_SAMPLES.value:
    temperatures = [t for t in temperatures if all(samples.sample_path(directory, t, j).exists()
                                                   for j in range(samples.NUM_SAMPLES))]
  if _COMPUTE_SAMPLES.value:
    model, task = _model_and_task(matrix)
    return list(samples.ensure_samples(directory, matrix, model=model, task=task, temperatures=temperatures,
                                       progress=True).values())
  return [samples.load_samples(directory, matrix, t) for t in temperatures]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from polar_jax.menu import features, lab  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import MenuMatrix  # pylint: disable=import-outside-toplevel
  resources.enable_compilation_cache()  # before the first compile (--compute runs the LLM)
  try:
    directory = _MATRIX.value or SHIPPED
    matrix = MenuMatrix.load(directory)
    names = [n for n in _FEATURES.value if n]
    if _COMPUTE.value:
      missing = [n for n in names if not features.feature_path(directory, n).exists()]
      model, task = _model_and_task(matrix) if "llm" in missing else (None, None)
      tables = features.ensure_features(directory, matrix, model=model, task=task, names=names)
    else:
      tables = features.load_features(directory, matrix, names)
    selectors = lab.all_selectors(tables, matrix.depth, with_answers=lab.has_answers(matrix))
    selectors += _dense(directory, matrix)
    table = lab.lab_table(matrix, selectors, seed=_SEED.value, n_boot=_N_BOOT.value,
                          samples=_samples(directory, matrix))
    if _CURVE.value:
      import matplotlib  # pylint: disable=import-outside-toplevel
      matplotlib.use("Agg")  # A PNG file; the library chooses no backend.
      from polar_jax.menu import plots  # pylint: disable=import-outside-toplevel
      curve = lab.learning_curve(matrix, lambda: lab.all_selectors(tables, matrix.depth,
                                                                   with_answers=lab.has_answers(matrix)),
                                 seed=_SEED.value)
      out = pathlib.Path(_CURVE.value)
      out.mkdir(parents=True, exist_ok=True)
      (out / "learning_curve.json").write_text(json.dumps(curve, indent=2))
      plots.plot_learning_curve(curve, out / "learning_curve.png")
  except user_errors() as e:
    print(f"polar_jax.lab: error: {e}", file=sys.stderr)
    return 2
  print(lab.markdown(table))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(table, indent=2))
  return 0


if __name__ == "__main__":
  from polar_jax.options_io import strict_flags_parser
  app.run(main, flags_parser=strict_flags_parser("polar_jax.lab"))
