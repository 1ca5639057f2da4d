"""The program menu's dense outcome matrix: every menu program run on every train, validation and test question.

Storage (no pickle; `numpy.load(..., allow_pickle=False)` reads it):
  menu.json    programs (layer ids; index 0 is the full program), depth, the questions in row order (id, split,
               dataset, level, group, question, gold), how the programs were ranked, the generating config
  matrix.npz   [questions, programs] arrays: correct (bool), answer (str, "" where unknown), answer_known
               (bool), gold_logprob (float32, NaN where no one-pass prefill computed it), answer_logprob
               (float32: the model's confidence in the answer it wrote, `RunRecord.answer_logprob`; NaN where
               unknown), layers (int32: layer executions of the run), generated_tokens (int16; -1 where the run
               was decided by one prefill)

The guard: test rows are for exact offline scoring only. Fitting code gets `fit_view("train")` /
`fit_view("validation")` (outcomes included) and `questions("test")` (ids, texts, levels: no outcome); asking
`fit_view("test")` raises `TestRowsError`. Only the scorer (`polar_jax.menu.lab`) reads test outcomes, through
`scoring_view`, which no selector receives.

Multi-run selectors (answer voting, confidence selection, gated fallback) decide from what running programs on
a test question would show at deployment: the answers the model wrote and its confidence in them, never
whether they are right. They get `answers_view("test")`, an `AnswersView` that holds exactly those arrays and
records every (question, program) cell read: the lab counts each read program as a run of that question, so a
method's cost is what it looked at.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from polar_jax.errors import UserError
from polar_jax.workdir import write_json_atomic

MENU_FILE = "menu.json"
MATRIX_FILE = "matrix.npz"
SPLITS = ("train", "validation", "test")
FIT_SPLITS = ("train", "validation")
ARRAYS = ("correct", "answer", "answer_known", "gold_logprob", "answer_logprob", "layers", "generated_tokens")
FORMAT_VERSION = 2


class TestRowsError(RuntimeError):
  """Fitting code asked for the outcomes of test questions."""


class MenuFileError(UserError, ValueError):
  """A menu directory is missing, incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class MenuQuestion:
  id: str
  split: str
  dataset: str
  level: int
  group: str
  question: str
  gold: str

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MenuView:
  """The rows of one split: questions and their [n, programs] outcome arrays (read-only)."""
  split: str
  questions: tuple[MenuQuestion, ...]
  programs: tuple[tuple[int, ...], ...]
  correct: np.ndarray
  answer: np.ndarray
  answer_known: np.ndarray
  gold_logprob: np.ndarray
  answer_logprob: np.ndarray
  layers: np.ndarray
  generated_tokens: np.ndarray

  @property
  def ids(self) -> list[str]:
    return [q.id for q in self.questions]

  @property
  def groups(self) -> list[str]:
    return [q.group or q.id for q in self.questions]

  def __len__(self) -> int:
    return len(self.questions)


def _frozen(a: np.ndarray) -> np.ndarray:
  a = np.asarray(a)
  a.setflags(write=False)
  return a


class AnswersView:
  """What running menu programs on a split's questions shows without the gold answer: per cell the extracted
  answer (`answer`, "" where none), whether it is known, the model's confidence (`answer_logprob`, NaN where
  unknown) and the layers the run cost. Reading a column marks those cells as run (`ran`)."""

  def __init__(self, questions: Sequence[MenuQuestion], programs, answer, answer_known, answer_logprob, layers):
    self.questions, self.programs = tuple(questions), tuple(programs)
    self._answer, self._known = np.asarray(answer), np.asarray(answer_known)
    self._logprob, self._layers = np.asarray(answer_logprob), np.asarray(layers)
    self.ran = np.zeros(self._answer.shape, bool)

  def __len__(self) -> int:
    return len(self.questions)

  def run(self, program: int, rows: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Runs `program` on `rows` (default: every question): {"answer", "known", "logprob"} for those rows."""
    rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
    self.ran[rows, program] = True
    return {"answer": self._answer[rows, program].copy(), "known": self._known[rows, program].copy(),
            "logprob": self._logprob[rows, program].astype(np.float64)}

  def layers_of_runs(self, choice: np.ndarray) -> np.ndarray:
    """Per question the layers of every program run on it (the chosen one counts as run)."""
    ran = self.ran.copy()
    ran[np.arange(len(self)), choice] = True
    return np.where(ran, self._layers, 0).sum(axis=1)


class MenuMatrix:
  """The menu matrix in memory (module docstring). Build with `MenuMatrix(...)` or `MenuMatrix.load(dir)`."""

  def __init__(self, programs: Sequence[Sequence[int]], depth: int, questions: Sequence[MenuQuestion],
               arrays: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None):
    self.programs = tuple(tuple(int(i) for i in p) for p in programs)
    self.depth = int(depth)
    self._questions = tuple(questions)
    self.info = dict(info or {})
    if not self.programs or self.programs[0] != tuple(range(self.depth)):
      raise MenuFileError("A menu's program 0 must be the full program (0..depth-1).")
    shape = (len(self._questions), len(self.programs))
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
      raise MenuFileError(f"The menu matrix lacks arrays {missing}; it needs {list(ARRAYS)}.")
    self._arrays = {k: _frozen(arrays[k]) for k in ARRAYS}
    for k, a in self._arrays.items():
      if a.shape != shape:
        raise MenuFileError(f"Menu array {k!r} has shape {a.shape}, expected {shape} (questions x programs).")
    self._rows = {s: np.array([i for i, q in enumerate(self._questions) if q.split == s], dtype=np.int64)
                  for s in SPLITS}
    unknown = {q.split for q in self._questions} - set(SPLITS)
    if unknown:
      raise MenuFileError(f"Menu questions have unknown splits {sorted(unknown)}; use {SPLITS}.")

  # --- access -------------------------------------------------------------------------------------------------

  @property
  def n_programs(self) -> int:
    return len(self.programs)

  @property
  def lengths(self) -> np.ndarray:
    return np.array([len(p) for p in self.programs])

  def n(self, split: str) -> int:
    return int(len(self._rows[split]))

  def questions(self, split: str) -> tuple[MenuQuestion, ...]:
    """The questions of a split without their outcomes (what a selector may see of test questions)."""
    return tuple(self._questions[i] for i in self._rows[self._split(split)])

  def fit_view(self, split: str) -> MenuView:
    """Train or validation rows with outcomes, for fitting and tuning. Test rows raise TestRowsError."""
    if self._split(split) not in FIT_SPLITS:
      raise TestRowsError(f"Test outcomes are not for fitting or tuning: fit on 'train', tune on 'validation'; "
                          f"only polar_jax.menu.lab scores test rows.")
    return self._view(split)

  def answers_view(self, split: str) -> AnswersView:
    """A split's answers without outcomes (the module docstring): what multi-run selectors may see of test rows."""
    rows = self._rows[self._split(split)]
    a = self._arrays
    return AnswersView(self.questions(split), self.programs, a["answer"][rows], a["answer_known"][rows],
                       a["answer_logprob"][rows], a["layers"][rows])

  def _split(self, split: str) -> str:
    if split not in SPLITS:
      raise ValueError(f"Unknown menu split {split!r}; use one of {SPLITS}.")
    return split

  def _view(self, split: str) -> MenuView:
    rows = self._rows[self._split(split)]
    return MenuView(split, tuple(self._questions[i] for i in rows), self.programs,
                    **{k: _frozen(self._arrays[k][rows]) for k in ARRAYS})

  # --- files --------------------------------------------------------------------------------------------------

  def save(self, directory: os.PathLike | str) -> None:
    """Writes matrix.npz then menu.json, each atomically (menu.json last: its presence means complete)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(directory / MATRIX_FILE, self._arrays)
    meta = {"format_version": FORMAT_VERSION, "depth": self.depth, "programs": [list(p) for p in self.programs],
            "questions": [q.to_json() for q in self._questions], "info": self.info}
    write_json_atomic(directory / MENU_FILE, meta)

  @classmethod
  def load(cls, directory: os.PathLike | str) -> MenuMatrix:
    directory = pathlib.Path(directory)
    meta_path, arrays_path = directory / MENU_FILE, directory / MATRIX_FILE
    for path in (meta_path, arrays_path):
      if not path.exists():
        raise MenuFileError(f"{path} is missing: point at a menu directory (a workdir's menu/, written by the "
                            "pipeline's menu stage) or run that stage first.")
    try:
      meta = json.loads(meta_path.read_text())
      with np.load(arrays_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
      questions = [MenuQuestion(**q) for q in meta["questions"]]
    except (ValueError, KeyError, TypeError, OSError) as e:
      raise MenuFileError(f"{directory}: cannot read the menu ({type(e).__name__}: {e}); regenerate it with the "
                          "pipeline's menu stage.") from None
    if meta.get("format_version") == 1 and "answer_logprob" not in arrays:  # written before confidences existed
      arrays["answer_logprob"] = np.full(arrays["correct"].shape, np.nan, np.float32)
    elif meta.get("format_version") != FORMAT_VERSION:
      raise MenuFileError(f"{meta_path}: format_version {meta.get('format_version')!r}, this code reads "
                          f"{FORMAT_VERSION}.")
    return cls(meta["programs"], meta["depth"], questions, arrays, meta.get("info"))


def write_npz_atomic(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  """A compressed .npz written next to `path` and renamed into place (a killed write leaves no half file)."""
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def empty_arrays(n_questions: int, n_programs: int) -> dict[str, np.ndarray]:
  shape = (n_questions, n_programs)
  return {"correct": np.zeros(shape, bool), "answer": np.full(shape, "", dtype="<U24"),
          "answer_known": np.zeros(shape, bool), "gold_logprob": np.full(shape, np.nan, np.float32),
          "answer_logprob": np.full(shape, np.nan, np.float32),
          "layers": np.zeros(shape, np.int32), "generated_tokens": np.full(shape, -1, np.int16)}
