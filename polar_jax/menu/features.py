"""Frozen per-question features for the menu selectors, computed once and cached next to the matrix.

Two feature sets (`FEATURE_SETS`):
- "minilm": the all-MiniLM-L6-v2 sentence embedding of the question text (mean of its token states over the
  real tokens, L2-normalized: how the model is used for sentence similarity), 384 dims;
- "llm": the LLM's own final-normed hidden state at the last prompt token under full depth (the state from
  which it writes the first answer token, with the task's prompt, few-shot turns included), D dims. It costs
  one prefill of the prompt, which full depth would run anyway.

Files: `<menu dir>/features/<name>.npz` with `ids` (the matrix's question ids, in its order) and `vectors`
(float16 [n, F]; the selectors standardize them). `load_features` reads them back and checks the ids;
`ensure_features` computes what is missing (the LLM only when "llm" is missing).
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from polar_jax.menu.matrix import MenuFileError, MenuMatrix, MenuQuestion, write_npz_atomic
from polar_jax.menu.select import FeatureTable

FEATURES_DIR = "features"
FEATURE_SETS = ("minilm", "llm")
LLM_BATCH = 16
LLM_LENGTH_QUANTUM = 32


def feature_path(menu_dir: pathlib.Path | str, name: str) -> pathlib.Path:
  return pathlib.Path(menu_dir) / FEATURES_DIR / f"{name}.npz"


def minilm_features(texts: Sequence[str]) -> np.ndarray:
  """Mean-pooled, L2-normalized MiniLM sentence embeddings [n, 384]."""
  from polar_jax.predictor.encoder import MiniLMEncoder  # pylint: disable=import-outside-toplevel
  encoder = MiniLMEncoder()
  out = []
  for lo in range(0, len(texts), 256):
    feats, mask = encoder.encode(list(texts[lo:lo + 256]))
    pooled = (feats * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9))
  return np.concatenate(out).astype(np.float32)


def examples_of(questions: Sequence[MenuQuestion]) -> list[Any]:
  from polar_jax import data  # pylint: disable=import-outside-toplevel
  return [data.Example(q.id, q.question, q.gold, q.level, group=q.group) for q in questions]


def llm_features(model, task, questions: Sequence[MenuQuestion]) -> np.ndarray:
  """The final-normed full-depth hidden state at each prompt's last token [n, D]."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from polar_jax.models import transformer  # pylint: disable=import-outside-toplevel
  from polar_jax.program_eval import prompt_ids  # pylint: disable=import-outside-toplevel
  from polar_jax.programs import bucket_length  # pylint: disable=import-outside-toplevel
  ids = prompt_ids(model, examples_of(questions), task)
  hidden = jax.jit(lambda p, t, m: transformer.hidden_states(p, model.config, t, m))
  out = np.zeros((len(ids), model.config.hidden_size), np.float32)
  order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
  for lo in range(0, len(order), LLM_BATCH):
    rows = order[lo:lo + LLM_BATCH]
    s = bucket_length(max(len(ids[i]) for i in rows), LLM_LENGTH_QUANTUM)
    tokens = np.full((LLM_BATCH, s), model.tokenizer.pad_id or 0, np.int32)
    mask = np.zeros((LLM_BATCH, s), np.int32)
    for r, i in enumerate(rows):  # right padding: real tokens keep positions 0..n-1 (causal attention)
      tokens[r, :len(ids[i])] = ids[i]
      mask[r, :len(ids[i])] = 1
    h = np.asarray(hidden(model.params, jnp.asarray(tokens), jnp.asarray(mask)), np.float32)
    for r, i in enumerate(rows):
      out[i] = h[r, len(ids[i]) - 1]
  return out


def save_features(menu_dir, name: str, ids: Sequence[str], vectors: np.ndarray) -> None:
  path = feature_path(menu_dir, name)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_npz_atomic(path, {"ids": np.asarray(list(ids)), "vectors": np.asarray(vectors, np.float16)})


def load_features(menu_dir, matrix: MenuMatrix, names: Sequence[str] = FEATURE_SETS) -> dict[str, FeatureTable]:
  """The cached feature tables of a menu directory; MenuFileError names a missing or stale one."""
  ids = [q.id for s in ("train", "validation", "test") for q in matrix.questions(s)]
  out = {}
  unknown = [n for n in names if n not in FEATURE_SETS]
  if unknown:
    raise MenuFileError(f"Unknown feature sets {unknown}; use {list(FEATURE_SETS)} (--features=minilm,llm).")
  for name in names:
    path = feature_path(menu_dir, name)
    if not path.exists():
      raise MenuFileError(f"{path} is missing: compute the menu's features with polar_jax.menu.features."
                          "ensure_features (the pipeline's menu stage and `python -m polar_jax.lab "
                          "--compute_features` do it).")
    with np.load(path, allow_pickle=False) as npz:
      table = FeatureTable(name, tuple(str(x) for x in npz["ids"]), npz["vectors"].astype(np.float32))
    if sorted(table.ids) != sorted(ids):
      raise MenuFileError(f"{path} belongs to other questions than this menu's; delete it and recompute.")
    out[name] = table
  return out


def _reuse_table(menu_dir, name: str, questions: Sequence[MenuQuestion], prior_dir, prior: MenuMatrix) -> bool:
  """Copies the rows of `questions` from an earlier menu's table when it holds them all with the same text."""
  known = {q.id: q.question for s in ("train", "validation", "test") for q in prior.questions(s)}
  if any(known.get(q.id) != q.question for q in questions) or not feature_path(prior_dir, name).exists():
    return False
  table = load_features(prior_dir, prior, (name,))[name]
  row = {i: r for r, i in enumerate(table.ids)}
  save_features(menu_dir, name, [q.id for q in questions], table.vectors[[row[q.id] for q in questions]])
  return True


def ensure_features(menu_dir, matrix: MenuMatrix, *, model=None, task=None,
                    names: Sequence[str] = FEATURE_SETS, reuse: tuple[Any, MenuMatrix] | None = None
                    ) -> dict[str, FeatureTable]:
  """Loads the cached feature tables, computing and saving the missing ones (the LLM feature needs `model` and
  `task`: the matrix's own model and prompt). `reuse`: (directory, matrix) of an earlier menu of the same model
  and task (`build.reusable_cells` checks that); its tables give the rows of the questions it holds with the
  same text, and only a table that covers every question is taken (the others are computed)."""
  questions = [q for s in ("train", "validation", "test") for q in matrix.questions(s)]
  ids = [q.id for q in questions]
  for name in names:
    if feature_path(menu_dir, name).exists():
      continue
    if reuse is not None and _reuse_table(menu_dir, name, questions, *reuse):
      continue
    if name == "minilm":
      vectors = minilm_features([q.question for q in questions])
    elif name == "llm":
      if model is None or task is None:
        raise MenuFileError(f"{feature_path(menu_dir, name)} is missing and computing it needs the LLM: pass "
                            "model= and task= (`python -m polar_jax.lab --compute_features` loads them from "
                            "the matrix's generating config).")
      vectors = llm_features(model, task, questions)
    else:
      raise MenuFileError(f"Unknown feature set {name!r}; use one of {FEATURE_SETS} (--features=minilm,llm).")
    save_features(menu_dir, name, ids, vectors)
  return load_features(menu_dir, matrix, names)

