"""Building the program menu: rank the searched programs, run the top K (plus full depth) on every question.

Ranking (`rank_programs`): a program's score is the number of *training* questions (the searched train
split, never validation or test) for which the search found it valid; the full program is always index 0,
then the top K others by that count (ties: shorter, then lexicographic ids).

Running (`build_menu`): the questions (train, validation, test rows in that order) are cut into chunks of
`chunk_questions`; each chunk runs every menu program on its questions through `program_eval.run_programs`
(the task's reward: with `teacher_forced` a pair is certified correct by one prefill where that is exact, and
the gold log-probability comes with it; with `answers` every other pair is generated so that its answer and
the model's confidence in it are known) and is written atomically as `chunks/<index>.npz`. A killed run redoes at most
the chunk it was in (a temporary file that a kill during a write leaves is ignored and removed); when all chunks exist
they are assembled into `matrix.npz` + `menu.json` (`polar_jax.menu.matrix`). The plan (`plan.json`: programs and
question ids) is written first, atomically; a rerun that finds a different plan refuses to mix them.

Reuse (`reuse=`, config `menu.reuse`): an earlier menu of the same model, prompt task, reward and answers mode
(checked against its recorded config) lends the cells it holds: a (question, program) pair it ran, matched by
question id, question text, gold and the program's layer ids, is copied, and only the other cells are run. A
new search that changes a few menu programs then costs their columns, not the whole matrix. The copied cells
are what a fresh run computes up to batch composition (float rounding of near-ties; `tests/test_menu.py`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import re
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from polar_jax.menu.matrix import ARRAYS, MenuFileError, MenuMatrix, MenuQuestion, empty_arrays, write_npz_atomic
from polar_jax.records import SearchRecord
from polar_jax.workdir import write_json_atomic

PLAN_FILE = "plan.json"
CHUNKS = "chunks"
ANSWERS_FLAG = "complete_answers"  # a chunk's 0-d bool: every cell's reply is known in full
CHUNK_NAME = re.compile(r"\d{5,}\.npz")  # chunks/<index>.npz; not the `.tmp.npz` of a write in progress


def chunk_path(out_dir: os.PathLike | str, index: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / CHUNKS / f"{index:05d}.npz"


def rank_programs(records: Iterable[SearchRecord], depth: int, train_ids: set[str], top_k: int) -> tuple[
    list[tuple[int, ...]], list[int]]:
  """(programs, counts): the full program, then the top_k programs by training questions they are valid for."""
  full = tuple(range(depth))
  counts: collections.Counter = collections.Counter()
  for rec in records:
    if rec.id in train_ids:
      for program in set(rec.valid_programs):
        if tuple(program) != full:
          counts[tuple(program)] += 1
  ranked = sorted(counts, key=lambda p: (-counts[p], len(p), p))[:max(0, int(top_k))]
  full_count = sum(1 for rec in records if rec.id in train_ids and full in set(map(tuple, rec.valid_programs)))
  return [full] + ranked, [full_count] + [counts[p] for p in ranked]


def menu_questions(parts: Sequence[tuple[str, str, Sequence[Any]]]) -> tuple[list[MenuQuestion], list[Any]]:
  """(questions, examples) from (split, dataset, examples) parts, in the given order."""
  questions, examples = [], []
  for split, dataset, exs in parts:
    for ex in exs:
      questions.append(MenuQuestion(ex.id, split, dataset, int(ex.level), ex.group or ex.id, ex.question,
                                    ex.answer))
      examples.append(ex)
  ids = [q.id for q in questions]
  if len(set(ids)) != len(ids):
    dup = [i for i, c in collections.Counter(ids).items() if c > 1][:3]
    raise ValueError(f"Menu question ids must be unique across splits; repeated: {dup}. Is a dataset named twice "
                     "in config.data.datasets?")
  return questions, examples


def _fill(arrays: dict[str, np.ndarray], row: int, col: int, record) -> None:
  arrays["correct"][row, col] = bool(record.correct)
  # A pair decided negative by one prefill (a wrong digit) knows only a prefix of its answer: not kept.
  known = record.answer is not None and (record.decided_by != "one_pass" or bool(record.correct))
  arrays["answer_known"][row, col] = known
  arrays["answer"][row, col] = (record.answer or "")[:24] if known else ""
  arrays["gold_logprob"][row, col] = np.nan if record.gold_logprob is None else record.gold_logprob
  arrays["answer_logprob"][row, col] = np.nan if record.answer_logprob is None else record.answer_logprob
  arrays["layers"][row, col] = int(record.layers)
  arrays["generated_tokens"][row, col] = -1 if record.decided_by == "one_pass" else int(record.generated_tokens)


def _complete_chunk(model, task, examples: Sequence[Any], programs, arrays: dict[str, np.ndarray],
                    max_batch: int) -> dict[str, np.ndarray]:
  """Completes a chunk written before answers were kept in full (no `answer_logprob`, one-pass negatives with
  unknown answers): the pairs one prefill certified correct get their confidence from the stored gold
  log-probability (the reply is the canonical completion through the gold, `program_eval.confidence`); every
  other pair is generated, which is what a fresh build with answers does for it."""
  from polar_jax.program_eval import run_programs  # pylint: disable=import-outside-toplevel
  from polar_jax.program_eval.one_pass import canonical_completion  # pylint: disable=import-outside-toplevel
  from polar_jax.program_eval.task import Prompts  # pylint: disable=import-outside-toplevel
  arrays = {k: np.array(v) for k, v in arrays.items()}
  arrays.setdefault("answer_logprob", np.full(arrays["correct"].shape, np.nan, np.float32))
  certified = arrays["correct"] & (arrays["generated_tokens"] == -1)
  prompts = Prompts(model, examples, task)
  for i in range(len(examples)):
    completion = canonical_completion(prompts, i)
    for j in np.flatnonzero(certified[i]):
      arrays["answer_logprob"][i, j] = arrays["gold_logprob"][i, j] / completion.gold_end
  cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(~certified))]
  generate = dataclasses.replace(task, reward="generate")
  records = run_programs(model, examples, [(i, programs[j]) for i, j in cells], generate, max_batch=max_batch)
  for (i, j), record in zip(cells, records):
    keep_gold = arrays["gold_logprob"][i, j]
    _fill(arrays, i, j, record)
    arrays["gold_logprob"][i, j] = keep_gold  # the prefill's value; generation computes none
  return arrays


REUSE_KEYS = (("model",), ("task",), ("menu", "reward"), ("menu", "answers"))


def _config_part(config: Any, keys: Sequence[str]) -> Any:
  for k in keys:
    config = config.get(k) if isinstance(config, dict) else None
  return config


def reusable_cells(prior: MenuMatrix, config: dict[str, Any], questions: Sequence[MenuQuestion],
                   programs: Sequence[Sequence[int]]) -> dict[tuple[int, int], tuple[int, int]]:
  """{(row, col) of the new plan: (row, col) of `prior`} for the cells `prior` holds (module docstring).

  Raises MenuFileError when `prior` was made with another model, task, reward or answers mode (its recorded
  config says), or by another depth."""
  depth = len(programs[0]) if programs else prior.depth  # programs[0] is the full program
  if prior.depth != depth:
    raise MenuFileError(f"menu.reuse: the earlier menu is for a {prior.depth}-layer model, this one has {depth} "
                        "layers; point menu.reuse at a menu of this model, or leave it empty.")
  theirs = prior.info.get("config") or {}
  for keys in REUSE_KEYS:
    a, b = _config_part(theirs, keys), _config_part(config, keys)
    if a != b:
      raise MenuFileError(f"menu.reuse: the earlier menu was made with {'.'.join(keys)}={json.dumps(a)}, this run "
                          f"has {json.dumps(b)}; its cells would not be this run's. Point menu.reuse at a menu of "
                          "the same model and task, or leave it empty.")
  # The build copies whole rows, test outcomes included, into the new matrix; no selector sees this.
  rows = {q.id: (i, q) for i, q in enumerate(prior._questions)}  # pylint: disable=protected-access
  cols = {p: j for j, p in enumerate(prior.programs)}
  out = {}
  for r, q in enumerate(questions):
    i, old = rows.get(q.id, (None, None))
    if old is None or (old.question, str(old.gold)) != (q.question, str(q.gold)):
      continue
    for c, p in enumerate(programs):
      j = cols.get(tuple(int(layer) for layer in p))
      if j is not None:
        out[(r, c)] = (i, j)
  return out


def finished_chunks(out_dir: os.PathLike | str, answers: bool = True) -> int:
  """How many chunks a build in out_dir would skip (written, and with every reply kept if answers are asked)."""
  done = 0
  for path in sorted((pathlib.Path(out_dir) / CHUNKS).glob("*.npz")):
    if not CHUNK_NAME.fullmatch(path.name):  # a killed write's temporary file, maybe torn
      continue
    with np.load(path, allow_pickle=False) as npz:
      done += int(not answers or (ANSWERS_FLAG in npz.files and bool(npz[ANSWERS_FLAG])))
  return done


def build_menu(model, task, questions: Sequence[MenuQuestion], examples: Sequence[Any],
               programs: Sequence[Sequence[int]], out_dir: os.PathLike | str, *, chunk_questions: int = 50,
               max_batch: int = 32, answers: bool = True, info: dict[str, Any] | None = None,
               on_chunk: Callable[[int, int, float], None] | None = None,
               reuse: MenuMatrix | None = None) -> MenuMatrix:
  """Runs every program on every question in resumable chunks and returns the assembled matrix.

  With `answers` (the default) every cell's reply is known in full (`run_programs(answers=True)`: one prefill
  certifies the correct pairs, the others are generated), so answer voting and confidence selection can be
  scored on the matrix; without it one-pass negatives keep no answer (cheaper). A chunk written without
  answers is completed in place when answers are asked for. `reuse`: an earlier menu whose cells are copied
  (module docstring; `info["config"]` must be this run's config for the checks).
  """
  from polar_jax.program_eval import run_programs  # pylint: disable=import-outside-toplevel
  from polar_jax.programs import Program  # pylint: disable=import-outside-toplevel

  out = pathlib.Path(out_dir)
  (out / CHUNKS).mkdir(parents=True, exist_ok=True)
  plan = {"programs": [list(p) for p in programs], "ids": [q.id for q in questions],
          "chunk_questions": int(chunk_questions)}
  plan_path = out / PLAN_FILE
  if plan_path.exists():
    if json.loads(plan_path.read_text()) != plan:
      raise MenuFileError(f"{plan_path} holds a different menu plan (programs, questions or chunk size); delete "
                          f"{out} to rebuild the menu.")
  else:
    write_json_atomic(plan_path, plan)
  for stale in (out / CHUNKS).glob("*.tmp.npz"):  # left by a write that a kill interrupted
    stale.unlink()
  depth = model.config.num_layers
  progs = [Program(tuple(p), depth) for p in programs]
  lent = {}
  if reuse is not None:
    lent = reusable_cells(reuse, (info or {}).get("config") or {}, questions, programs)
    prior = {k: reuse._arrays[k] for k in ARRAYS}  # pylint: disable=protected-access  (see reusable_cells)
  n_chunks = -(-len(questions) // chunk_questions)
  for c in range(n_chunks):
    path = chunk_path(out, c)
    lo, hi = c * chunk_questions, min(len(questions), (c + 1) * chunk_questions)
    chunk_examples = list(examples[lo:hi])
    start = time.perf_counter()
    if path.exists():
      with np.load(path, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
      if not answers or bool(stored.get(ANSWERS_FLAG, False)):
        continue
      arrays = _complete_chunk(model, task, chunk_examples, progs, stored, max_batch)
    else:
      arrays = empty_arrays(hi - lo, len(progs))
      cells = []
      for i in range(len(chunk_examples)):
        for j in range(len(progs)):
          source = lent.get((lo + i, j))
          if source is None:
            cells.append((i, j))
          else:
            for k in ARRAYS:
              arrays[k][i, j] = prior[k][source]
      records = run_programs(model, chunk_examples, [(i, progs[j]) for i, j in cells], task, max_batch=max_batch,
                             answers=answers) if cells else []
      for (i, j), record in zip(cells, records):
        _fill(arrays, i, j, record)
    write_npz_atomic(path, {**{k: arrays[k] for k in ARRAYS}, ANSWERS_FLAG: np.array(answers)})
    if on_chunk is not None:
      on_chunk(c + 1, n_chunks, time.perf_counter() - start)
  full = empty_arrays(len(questions), len(progs))
  for c in range(n_chunks):
    lo = c * chunk_questions
    with np.load(chunk_path(out, c), allow_pickle=False) as npz:
      for k in ARRAYS:
        if k in npz.files:
          full[k][lo:lo + len(npz[k])] = npz[k]
  info = {**(info or {}), "answers": bool(answers)}
  matrix = MenuMatrix(programs, depth, questions, full, info)
  matrix.save(out)
  return matrix
