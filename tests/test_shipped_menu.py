"""The shipped menu matrix of the embedded default: it loads, matches the config that generates it, is small, and
the lab scores it without the LLM."""

import pathlib

import pytest

from polar_jax import lab as lab_app
from polar_jax import options
from polar_jax.menu import features, lab
from polar_jax.menu.matrix import MenuMatrix

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("model", "data", "task", "search", "menu", "seed")


def _default_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return options.to_json(options.pipeline_options(module.get_config()))


def test_shipped_matrix_matches_its_generator_and_scores():
  shipped = lab_app.SHIPPED
  files = [shipped / "matrix.npz", shipped / "menu.json"] + sorted((shipped / "features").glob("*.npz"))
  assert sum(f.stat().st_size for f in files) < 5_000_000
  matrix = MenuMatrix.load(shipped)
  generator = matrix.info["config"]
  now = _default_config()
  # Menu options that do not shape the matrix (added after it was built) are not compared.
  not_matrix = {"menu": ("dense_predictor", "reuse")}
  for key in SECTIONS:
    drop = lambda section: ({k: v for k, v in section.items() if k not in not_matrix.get(key, ())}
                            if isinstance(section, dict) else section)
    there, here = drop(generator[key]), drop(now[key])
    assert there == here, f"{key}: the shipped matrix was made by another config; regenerate it"
  assert matrix.n("test") >= 1000 and matrix.n("train") > 0 and matrix.n("validation") > 0
  assert matrix.n_programs == now["menu"]["top_k"] + 1
  table = lab.lab_table(matrix, n_boot=1000)
  assert table["n_test"] == matrix.n("test")
  full = table["methods"]["full_depth"]
  assert 0.2 < full["pass1"] < 0.8
  assert table["methods"]["menu_oracle"]["pass1"] >= full["pass1"]
  # Every cell's reply is kept (answers and confidences), and the selectors' features cover every question.
  assert matrix.info["answers"] and lab.has_answers(matrix)
  tables = features.load_features(shipped, matrix)
  assert set(tables) == {"minilm", "llm"}
  selectors = lab.all_selectors(tables, matrix.depth)
  table = lab.lab_table(matrix, selectors, n_boot=200)
  for sel in selectors:
    row = table["methods"][sel.name]
    assert row["deployable"] and 0 <= row["pass1"] <= 1 and row["runs_per_question"] >= 1
