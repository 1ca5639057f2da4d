"""Menu selectors run for real: fitted on the menu matrix's train rows (tuned on validation), then on each test
question the features are computed afresh (MiniLM on the text, one full-depth prefill of the prompt for the
LLM's state), the selector picks a menu program, and that program is run and scored like every other method.

The offline lab (`polar_jax.menu.lab`) scores the same selectors on the matrix's stored test cells without the
LLM; `tests/test_pipeline_selection.py` checks that both pick the same programs and get the same verdicts.
Fresh features go through the same float16 rounding as the cached ones, so the choices match exactly.

Methods: the one-run menu selectors, on each feature set, unconstrained and limited to programs no longer
than full depth; and the multi-run ones (program vote and confidence selection at k = 3, 5, the gated
fallback per feature set), which read live runs through `LiveAnswers`, the same interface as the lab's
answers view: a program is run on a question when the method reads it. A multi-run row's candidate carries
the layers of every run on the question (its layers per token is the method's whole cost per answer token)
and its seconds are those of every run it read.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome, run_ranked
from polar_jax.programs import Program


class LiveAnswers:
  """`AnswersView`'s interface over real runs: `run(program, rows)` runs the menu program on those questions
  (once; `run_programs(answers=True)`, so every reply and its confidence are known) and returns what the lab's
  view returns."""

  def __init__(self, model, task, examples: Sequence[Any], programs, depth: int, **common):
    self.model, self.task, self.examples, self.common = model, task, list(examples), common
    self.programs = [Program(tuple(p), depth) for p in programs]
    self.records: dict[tuple[int, int], Any] = {}
    self.ran = np.zeros((len(self.examples), len(self.programs)), bool)
    self.label: str | None = None  # the method now reading (`multi_run` sets it): its bars say so

  def __len__(self) -> int:
    return len(self.examples)

  def run(self, program: int, rows=None) -> dict[str, np.ndarray]:
    from polar_jax.program_eval import run_programs  # pylint: disable=import-outside-toplevel
    rows = list(range(len(self))) if rows is None else [int(i) for i in rows]
    todo = [i for i in rows if (i, program) not in self.records]
    if todo:
      common = dict(self.common)
      if common.get("progress"):  # the bar names the method (and test set) and the menu program it runs
        shown = self.label or (common["progress"] if isinstance(common["progress"], str) else "selection")
        common["progress"] = f"{shown}: menu program {program}"
      records = run_programs(self.model, self.examples, [(i, self.programs[program]) for i in todo], self.task,
                             answers=True, **common)
      for i, record in zip(todo, records):
        self.records[(i, program)] = record
    self.ran[rows, program] = True
    got = [self.records[(i, program)] for i in rows]
    return {"answer": np.array([(r.answer or "")[:24] for r in got]),
            "known": np.array([r.answer is not None for r in got]),
            "logprob": np.array([np.nan if r.answer_logprob is None else r.answer_logprob for r in got])}


def multi_run(live: LiveAnswers, selector, questions, examples, *, test_set: str, label: str,
              overhead_seconds: float) -> MethodRun:
  """A multi-run selector's row: its choice per question from live runs, the chosen run as the answer."""
  ran_before = live.ran.copy()
  live.ran[:] = False
  live.label = f"{selector.name} on {test_set}"
  start = time.perf_counter()
  try:
    choice = selector.choose(questions, live)
    for i, j in enumerate(choice):
      live.run(int(j), [i])
  finally:
    live.label = None
  choose_seconds = time.perf_counter() - start
  outcomes, seconds = [], 0.0
  for i, ex in enumerate(examples):
    records = [live.records[(i, int(j))] for j in np.flatnonzero(live.ran[i])]
    seconds += sum(r.seconds for r in records)
    chosen = Candidate.from_run_record(live.records[(i, int(choice[i]))])
    chosen = dataclasses.replace(chosen, layers=int(sum(r.layers for r in records)))
    outcomes.append(QuestionOutcome(str(ex.id), int(ex.level), (chosen,)))
  runs_per_question = float(live.ran.sum(axis=1).mean())
  live.ran |= ran_before
  return MethodRun(method=selector.name, label=label, kind="deployable", test_set=test_set,
                   outcomes=tuple(outcomes), overhead_seconds=overhead_seconds, top1_seconds=seconds,
                   info={"fitted": selector.describe(), "program_indices": [int(j) for j in choice],
                         "runs_per_question": runs_per_question,
                         "choose_seconds_with_runs": choose_seconds,
                         "cost": "layers of every run the method read; seconds of those runs"})


def fresh_feature_table(name: str, cached, matrix, questions: Sequence[Any], model, task):
  """(A feature table with the cached features of the matrix's train and validation rows and fresh ones of
  `questions` (`MenuQuestion`s; MiniLM on the text, or the LLM's prompt state), seconds spent on the fresh
  ones). Fresh features get the cache's float16 rounding, so a question's choice matches the lab's."""
  from polar_jax.menu import features as feats  # pylint: disable=import-outside-toplevel
  from polar_jax.menu import select  # pylint: disable=import-outside-toplevel
  fit_questions = [q for s in ("train", "validation") for q in matrix.questions(s)]
  start = time.perf_counter()
  vectors = (feats.minilm_features([q.question for q in questions]) if name == "minilm" else
             feats.llm_features(model, task, questions))
  seconds = time.perf_counter() - start
  vectors = vectors.astype(np.float16).astype(np.float32)  # the cache's rounding
  table = select.FeatureTable(name, tuple(q.id for q in fit_questions) + tuple(q.id for q in questions),
                              np.concatenate([cached.rows(fit_questions).astype(np.float32), vectors]))
  return table, seconds


def selection_runs(model, task, matrix, menu_dir, examples: Sequence[Any], *, test_set: str,
                   feature_sets: Sequence[str] = ("minilm", "llm"), multi_run_methods: bool = True,
                   ks: Sequence[int] = (3, 5), saved: Callable[[str, Callable[[], MethodRun]], MethodRun] | None = None,
                   **common) -> list[MethodRun]:
  """One `MethodRun` per selection method on these test examples (module docstring).

  saved(method, compute): a finished method's saved run, else `compute()` saved (the evaluation's run store,
  so an interrupted evaluation resumes per selection method; fresh features are computed only when a method
  that needs them is not saved yet)."""
  from polar_jax.menu import features as feats  # pylint: disable=import-outside-toplevel
  from polar_jax.menu import select  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import MenuQuestion  # pylint: disable=import-outside-toplevel
  saved = saved or (lambda method, compute: compute())
  cached = feats.load_features(menu_dir, matrix, feature_sets)
  questions = [MenuQuestion(ex.id, "test", ex.id.split("/")[0], int(ex.level), ex.group or ex.id, ex.question,
                            ex.answer) for ex in examples]
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  live = LiveAnswers(model, task, examples, matrix.programs, matrix.depth, **common)
  runs = []
  if multi_run_methods:
    for selector in [select.VoteSelector(k) for k in ks] + [select.ConfidenceSelector(k) for k in ks]:
      kind = "most confident answer" if isinstance(selector, select.ConfidenceSelector) else "majority answer"

      def compute(selector=selector, kind=kind):
        selector.fit(train, validation)
        return multi_run(live, selector, questions, examples, test_set=test_set, overhead_seconds=0.0,
                         label=f"{len(selector.programs)} best training programs, {kind} "
                               f"({len(selector.programs)} runs)")
      runs.append(saved(selector.name, compute))
  for name in feature_sets:
    fresh: dict[str, Any] = {}

    def table_of(name=name, fresh=fresh):
      """The feature table with this test set's fresh features (computed once, on first use)."""
      if not fresh:
        fresh["table"], fresh["seconds"] = fresh_feature_table(name, cached[name], matrix, questions, model, task)
      return fresh["table"], fresh["seconds"]

    for max_length in (None, matrix.depth):
      def compute(name=name, max_length=max_length, table_of=table_of):
        table, feature_seconds = table_of()
        selector = select.MenuSelector(table, max_length=max_length)
        selector.fit(train, validation)
        start = time.perf_counter()
        choice = selector.choose(questions)
        choose_seconds = time.perf_counter() - start
        ranked = [[Program(matrix.programs[int(j)], matrix.depth)] for j in choice]
        return run_ranked(
            model, examples, ranked, task, method=selector.name, test_set=test_set,
            label=f"Menu selector on {name} features{'' if max_length is None else ', <= full depth'} "
                  "(fitted on the menu's train rows, margin on validation)",
            overhead_seconds=feature_seconds / 2 + choose_seconds,  # the features serve both selectors
            info={"fitted": selector.describe(), "program_indices": [int(j) for j in choice],
                  "feature_seconds": feature_seconds},
            **{**common, "progress": f"{selector.name} on {test_set}" if common.get("progress") else False})
      runs.append(saved(select.MenuSelector(cached[name], max_length=max_length).name, compute))
    if multi_run_methods:
      def compute_gate(name=name, table_of=table_of):
        table, feature_seconds = table_of()
        gate = select.GatedFallback(select.MenuSelector(table, max_length=matrix.depth), table)
        gate.fit(train, validation)
        return multi_run(live, gate, questions, examples, test_set=test_set, overhead_seconds=feature_seconds,
                         label=f"Gated fallback: full depth, then the {name} selector (<= full depth) where "
                               "full depth is predicted wrong")
      gate_name = select.GatedFallback(select.MenuSelector(cached[name], max_length=matrix.depth), cached[name]).name
      runs.append(saved(gate_name, compute_gate))
  return runs
