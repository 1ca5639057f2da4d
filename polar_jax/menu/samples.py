"""Full-depth sampled answers of the menu's test questions: the equal-compute baseline of the multi-run selectors.

Program self-consistency runs k menu programs and votes; the fair comparison at the same number of runs is the
full program sampled k times and voted (self-consistency). The lab needs those samples offline, so they are
computed once per temperature and kept next to the matrix:

  <menu dir>/samples/t<T>/s<j>.npz   sample j of every test question at temperature T

with `ids` (the matrix's test question ids, in order), `answer` (str, "" where none), `known`, `correct`,
`layers`, `generated_tokens`, `answer_logprob`, and `info` (JSON: temperature, sample, seed, model). Sample j
uses `program_eval.sample_seed(seed, j)` in one `run_programs` call, so it equals sample j of the pipeline's
`sampling` evaluation method (`evaluation.full_depth.full_depth_sampling`) on the same questions: a pair's
sample depends on its seed, question and program only, not on its batch. Each file is written when its sample
is done (atomic), so an interrupted computation keeps the finished samples and resumes with the next.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import numpy as np

from polar_jax.menu.matrix import MenuFileError, MenuMatrix, write_npz_atomic

SAMPLES_DIR = "samples"
TEMPERATURES = (0.3, 0.7, 1.0)  # the paper's sampling baselines (EvalOptions.temperatures)
NUM_SAMPLES = 5


@dataclasses.dataclass(frozen=True)
class SampleTable:
  """k full-depth samples per test question at one temperature: arrays [n, k] (column j = sample j)."""
  temperature: float
  ids: tuple[str, ...]
  answer: np.ndarray
  known: np.ndarray
  correct: np.ndarray
  layers: np.ndarray
  answer_logprob: np.ndarray

  @property
  def k(self) -> int:
    return int(self.answer.shape[1])


def sample_path(menu_dir, temperature: float, j: int) -> pathlib.Path:
  return pathlib.Path(menu_dir) / SAMPLES_DIR / f"t{float(temperature):g}" / f"s{int(j)}.npz"


def _test_ids(matrix: MenuMatrix) -> list[str]:
  return [q.id for q in matrix.questions("test")]


def load_samples(menu_dir, matrix: MenuMatrix, temperature: float, k: int = NUM_SAMPLES) -> SampleTable:
  """The first k samples at `temperature`; MenuFileError names a missing one or one of other questions."""
  ids = _test_ids(matrix)
  cols: dict[str, list[np.ndarray]] = {n: [] for n in ("answer", "known", "correct", "layers", "answer_logprob")}
  for j in range(int(k)):
    path = sample_path(menu_dir, temperature, j)
    if not path.exists():
      raise MenuFileError(f"{path} is missing: compute the menu's full-depth samples with `python -m polar_jax.lab "
                          "--compute_samples` (or polar_jax.menu.samples.ensure_samples), or leave them out "
                          "with --sampling=off.")
    with np.load(path, allow_pickle=False) as npz:
      if [str(x) for x in npz["ids"]] != ids:
        raise MenuFileError(f"{path} belongs to other questions than this menu's test rows; delete it and "
                            "recompute.")
      for name in cols:
        cols[name].append(np.asarray(npz[name]))
  arrays = {name: np.stack(v, axis=1) for name, v in cols.items()}
  return SampleTable(float(temperature), tuple(ids), **arrays)


def ensure_samples(menu_dir, matrix: MenuMatrix, *, model=None, task=None,
                   temperatures: Sequence[float] = TEMPERATURES, k: int = NUM_SAMPLES, seed: int = 0,
                   max_batch: int = 32, progress: bool = False) -> dict[float, SampleTable]:
  """Loads the samples per temperature, computing and saving the missing ones first (they need `model` and
  `task`: the matrix's own model and prompt)."""
  examples = None
  for t in temperatures:
    if float(t) <= 0:
      raise ValueError(f"Sampling temperatures must be > 0, got {t}; full depth greedy is the matrix's column 0.")
    for j in range(int(k)):
      path = sample_path(menu_dir, t, j)
      if path.exists():
        continue
      if model is None or task is None:
        raise MenuFileError(f"{path} is missing and computing it needs the LLM: pass model= and task= "
                            "(`python -m polar_jax.lab --compute_samples` loads the matrix's generating config).")
      if examples is None:
        from polar_jax.menu.features import examples_of  # pylint: disable=import-outside-toplevel
        examples = examples_of(matrix.questions("test"))
      write_sample(path, model, task, examples, float(t), j, seed=seed, max_batch=max_batch,
                   progress=f"samples T={float(t):g} #{j}" if progress else False)
  return {float(t): load_samples(menu_dir, matrix, t, k) for t in temperatures}


def write_sample(path: pathlib.Path, model, task, examples: Sequence[Any], temperature: float, j: int, *,
                 seed: int, max_batch: int, progress) -> None:
  """Sample j of every example at full depth, saved to `path`."""
  from polar_jax.program_eval import run_programs, sample_seed  # pylint: disable=import-outside-toplevel
  from polar_jax.programs import Program  # pylint: disable=import-outside-toplevel
  full = Program.full(model.config.num_layers)
  records = run_programs(model, examples, full, task, temperature=temperature, seed=sample_seed(seed, j),
                         max_batch=max_batch, progress=progress)
  info = {"temperature": temperature, "sample": j, "seed": seed, "model": getattr(model, "name", None),
          "max_new_tokens": task.max_new_tokens, "prompt": getattr(task.prompt, "name", None)}
  path.parent.mkdir(parents=True, exist_ok=True)
  write_npz_atomic(path, {
      "ids": np.asarray([str(ex.id) for ex in examples]),
      "answer": np.asarray([r.answer or "" for r in records]),
      "known": np.asarray([r.answer is not None for r in records]),
      "correct": np.asarray([bool(r.correct) for r in records]),
      "layers": np.asarray([r.layers for r in records], np.int32),
      "generated_tokens": np.asarray([r.generated_tokens for r in records], np.int32),
      "answer_logprob": np.asarray([np.nan if r.answer_logprob is None else r.answer_logprob for r in records],
                                   np.float32),
      "info": np.asarray(json.dumps(info))})
