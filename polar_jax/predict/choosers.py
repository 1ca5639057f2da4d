"""Programs and answers for new questions from a finished workdir's trained choosers.

    from polar_jax.predict import WorkdirPredictor
    predictor = WorkdirPredictor("/tmp/polar_quick")
    predictor.methods()                     # what this workdir can run, with its evaluation's pass@1
    [p] = predictor.predict(["What is 7 + 5?"], method="polar", k=2)
    p.chosen.compact, p.chosen.answer       # the deployed program and its answer; p.runs: every program run

A workdir's choosers (`METHOD_DOCS`): PoLar's predictor (`<workdir>/predictor`, the train stage), the same
predictor trained on the menu's dense supervision (`predictor_dense`), and with a finished menu stage the
selection methods of `polar_jax.menu.select` (the best fixed program, the menu selectors on each cached feature
set, program votes, confidence selection, gated fallbacks). Selectors are not saved: they are refitted on the
menu's train rows and tuned on its validation rows exactly as the evaluation fits them (deterministic NumPy,
seconds), and a new question's features are computed as the evaluation computes a test question's.
`full_depth` (the plain model) is there for comparison, and `predict` runs it next to any other method unless
`full_depth=False`.

The default method is the one-run chooser with the best pass@1 in the workdir's evaluation (`results.json`,
pooled over its test sets; ties: fewer layers per token) - a choice made after seeing those test results, so
that pass@1 is optimistic for it. Without evaluation results it is PoLar's predictor.

A question's few-shot turns (prompts such as `raw_qa_3shot`) come from its dataset: the workdir's first dataset
unless the question names one. Without a gold answer a run's verdict is None.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

from polar_jax.errors import UserError

FULL_DEPTH = "full_depth"
PLACEHOLDER_GOLD = "?"  # `Example` needs an answer; without a gold one, verdicts are dropped
METHOD_DOCS = {
    "full_depth": "the plain model, every layer once (for comparison)",
    "polar": "PoLar's predictor (trained on the search records), its top-k programs",
    "polar_dense": "PoLar's predictor trained on the menu's dense supervision, its top-k programs",
    "best_fixed_program": "the menu program with the best training accuracy, for every question",
    "menu_selector": "a menu program per question from the question's features (menu selector)",
    "program_vote": "the majority answer of the k best training programs (k runs)",
    "confidence": "the most confident answer of the k best training programs (k runs)",
    "gated_fallback": "full depth, then the selector's program where full depth is predicted wrong",
}
ONE_RUN_PREFIXES = ("polar", "polar_dense", "best_fixed_program", "menu_selector")
RANKED_METHODS = ("polar", "polar_dense")  # their top-k programs (`k`)


class PredictError(UserError, ValueError):
  """A workdir without the chooser asked for, an unknown method, or bad questions; the message says the fix."""


@dataclasses.dataclass(frozen=True)
class Question:
  """A new question: its text, optionally its gold answer (then verdicts are computed), an id to show and the
  dataset whose few-shot examples its prompt uses (default: the workdir's first dataset)."""
  text: str
  gold: str | None = None
  id: str | None = None
  dataset: str | None = None


@dataclasses.dataclass(frozen=True)
class Run:
  """One program run on one question."""
  program: tuple[int, ...]
  answer: str | None
  text: str
  correct: bool | None  # None without a gold answer
  layers: int | None
  generated_tokens: int | None
  score: float | None = None  # the predictor's log-probability, where it ranked the program

  @property
  def compact(self) -> str:
    from polar_jax.programs.program import compact_text  # pylint: disable=import-outside-toplevel
    return compact_text(self.program) if self.program else "(no program)"

  def to_json(self) -> dict[str, Any]:
    return {"program": list(self.program), "compact": self.compact, "answer": self.answer, "text": self.text,
            "correct": self.correct, "layers": self.layers, "generated_tokens": self.generated_tokens,
            "score": self.score}


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A method's programs and answers on one question: `runs[chosen]` is the deployed answer (PoLar: its top-1;
  a multi-run method: the run whose answer it took; its runs are in the order it ran them); `full_depth` the
  plain model's run (or None)."""
  question: Question
  method: str
  runs: tuple[Run, ...]
  chosen: int | None
  full_depth: Run | None = None

  @property
  def answer_run(self) -> Run | None:
    return None if self.chosen is None else self.runs[self.chosen]

  def to_json(self) -> dict[str, Any]:
    return {"question": self.question.text, "gold": self.question.gold, "id": self.question.id,
            "dataset": self.question.dataset, "method": self.method, "chosen": self.chosen,
            "answer": None if self.answer_run is None else self.answer_run.answer,
            "program": None if self.answer_run is None else self.answer_run.compact,
            "runs": [r.to_json() for r in self.runs],
            "full_depth": None if self.full_depth is None else self.full_depth.to_json()}


def read_questions(path: str | pathlib.Path) -> list[Question]:
  """A jsonl of questions: one object per line with "question" (and optionally "answer", "id", "dataset");
  PredictError names the first bad line."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise PredictError(f"--questions={path}: no such file; give a jsonl file with one {{\"question\": ...}} per line.")
  out = []
  allowed = {"question", "answer", "id", "dataset"}
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path} line {number}"
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise PredictError(f"{where} is not JSON ({e}); write one object per line, e.g. "
                         "{\"question\": \"What is 7 + 5?\", \"answer\": \"12\"}.") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) or not obj["question"].strip():
      raise PredictError(f"{where} needs a non-empty string \"question\", e.g. {{\"question\": \"What is 7 + 5?\"}}.")
    unknown = sorted(set(obj) - allowed)
    if unknown:
      raise PredictError(f"{where} has unknown fields {unknown}; a line may hold {sorted(allowed)}.")
    for key in ("answer", "id", "dataset"):
      value = obj.get(key)
      if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
        raise PredictError(f"{where}: \"{key}\" must be a string (or a number), got {obj[key]!r}.")
    out.append(Question(obj["question"], None if obj.get("answer") is None else str(obj["answer"]),
                        None if obj.get("id") is None else str(obj["id"]),
                        None if obj.get("dataset") is None else str(obj["dataset"])))
  if not out:
    raise PredictError(f"{path} holds no question; write one {{\"question\": ...}} per line.")
  return out


def _done(workdir: pathlib.Path, stage: str) -> bool:
  return (workdir / stage / "done.json").exists()


class WorkdirPredictor:
  """A finished workdir's choosers for new questions (module docstring). The model, predictors and fitted
  selectors load on first use."""

  def __init__(self, workdir: str | pathlib.Path):
    from polar_jax import options as options_lib  # pylint: disable=import-outside-toplevel
    self.workdir = pathlib.Path(workdir).expanduser()
    config = self.workdir / "config.json"
    if not config.is_file():
      raise PredictError(f"{self.workdir} is not a pipeline workdir (no config.json): give the --workdir of a run "
                         "of python -m polar_jax.main.")
    try:
      self.opts = options_lib.pipeline_options(json.loads(config.read_text()))
    except ValueError as e:
      raise PredictError(f"{config} does not read as this version's config ({e}); rerun the pipeline in a new "
                         "workdir.") from None
    if not _done(self.workdir, "train") and not _done(self.workdir, "menu"):
      raise PredictError(f"{self.workdir} has no trained chooser: its train stage has not finished (and no menu "
                         "stage either). Finish the run: python -m polar_jax.main --config=<its config> "
                         f"--workdir={self.workdir} (--config.stages=convert,search,menu,train at least).")
    self._menu = self._tables = None
    self._model = self._task = self._encoder = None
    self.depth = self._depth()
    self._predictors: dict[str, Any] = {}
    self._fitted: dict[str, Any] = {}

  def _depth(self) -> int:
    info = self.workdir / "convert" / "model.json"
    if info.exists():
      return int(json.loads(info.read_text())["depth"])
    return self.model.depth  # no record of the conversion: ask the model

  # --- what the workdir has ------------------------------------------------------------------------------------

  @property
  def datasets(self) -> list[str]:
    return [d.strip() for d in self.opts.data.datasets.split(",") if d.strip()]

  @property
  def menu(self):
    if self._menu is None and _done(self.workdir, "menu"):
      from polar_jax.menu.matrix import MenuMatrix  # pylint: disable=import-outside-toplevel
      self._menu = MenuMatrix.load(self.workdir / "menu")
    return self._menu

  def _feature_sets(self) -> list[str]:
    from polar_jax.menu import features  # pylint: disable=import-outside-toplevel
    return [n for n in features.FEATURE_SETS if features.feature_path(self.workdir / "menu", n).exists()]

  def available(self) -> list[str]:
    """The methods this workdir can run, one-run choosers first."""
    trained = _done(self.workdir, "train")
    out = ["polar"] if trained and (self.workdir / "predictor" / "best").exists() else []
    multi = []
    if self.menu is not None:
      from polar_jax.menu import lab  # pylint: disable=import-outside-toplevel
      names = list(reversed(self._feature_sets()))  # the LLM's state first
      out += [f"menu_selector[{n}{bound}]" for n in names for bound in ("", f",<={self.depth}")]
      if lab.has_answers(self.menu):
        multi = ([f"{kind}[k={k}]" for kind in ("program_vote", "confidence") for k in (3, 5)]
                 + [f"gated_fallback[{n}->menu_selector[{n},<={self.depth}]]" for n in names])
    if trained and (self.workdir / "predictor_dense" / "best").exists():
      out.append("polar_dense")
    if self.menu is not None:
      out.append("best_fixed_program")
    return out + multi + [FULL_DEPTH]

  def evaluated(self) -> dict[str, dict[str, Any]]:
    """method -> {"label", "pass1" (pooled over the evaluation's test sets), "n", "layers_per_token"} from
    evaluate/results.json ({} without one)."""
    path = self.workdir / "evaluate" / "results.json"
    if not path.exists():
      return {}
    try:
      rows = json.loads(path.read_text())["rows"]
    except (ValueError, KeyError, TypeError):
      return {}
    pooled: dict[str, dict[str, Any]] = {}
    for r in rows:
      if r.get("level") != "all" or r.get("pass@1") is None or r.get("test_set") == "search records":
        continue
      p = pooled.setdefault(r["method"], {"label": r["label"], "right": 0.0, "n": 0, "layers": 0.0})
      p["right"] += r["pass@1"] * r["n"]
      p["n"] += r["n"]
      p["layers"] += (r.get("layers_per_token") or 0.0) * r["n"]
    name_of = {"full_depth_greedy": FULL_DEPTH}
    return {name_of.get(m, m): {"label": p["label"], "pass1": p["right"] / p["n"], "n": p["n"],
                                "layers_per_token": p["layers"] / p["n"]} for m, p in pooled.items() if p["n"]}

  def methods(self) -> list[dict[str, Any]]:
    """What `available()` lists, each with what it is and its pooled pass@1 in the evaluation (None if absent)."""
    scores = self.evaluated()
    return [{"method": m, "about": METHOD_DOCS[m.split("[")[0]], "one_run": m.split("[")[0] in ONE_RUN_PREFIXES,
             **({k: scores[m][k] for k in ("pass1", "n", "layers_per_token")} if m in scores else
                {"pass1": None, "n": 0, "layers_per_token": None})} for m in self.available()]

  def default_method(self) -> tuple[str, str]:
    """(method, why): the one-run chooser with the best pooled pass@1 in results.json (module docstring)."""
    candidates = [m for m in self.methods() if m["one_run"]]
    if not candidates:
      raise PredictError(f"{self.workdir} has no one-run chooser (no predictor/best, no menu); finish its train or "
                         "menu stage, or pick a --method from: " + ", ".join(self.available()) + ".")
    scored = [m for m in candidates if m["pass1"] is not None]
    if scored:
      order = {m["method"]: i for i, m in enumerate(candidates)}
      best = min(scored, key=lambda m: (-m["pass1"], m["layers_per_token"], order[m["method"]]))
      return best["method"], (f"the best pass@1 of this workdir's one-run choosers in evaluate/results.json: "
                              f"{100 * best['pass1']:.1f}% on {best['n']} test questions, chosen after seeing them")
    first = candidates[0]["method"]
    return first, "no evaluation results in this workdir; " + ("PoLar's predictor" if first == "polar" else
                                                               "its first one-run chooser")

  def check_method(self, method: str) -> str:
    if method not in self.available():
      needs = ("a finished train stage (predictor/best)" if method in ("polar", "polar_dense") else
               "a finished menu stage with its features" if method.split("[")[0] in METHOD_DOCS else None)
      why = f"it needs {needs}" if needs else "no such method"
      raise PredictError(f"--method={method}: {self.workdir} cannot run it ({why}); this workdir has: "
                         + ", ".join(self.available()) + ".")
    return method

  # --- loading -------------------------------------------------------------------------------------------------

  @property
  def model(self):
    if self._model is None:
      from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
      self._model = pipeline.load_model_for(self.opts)
    return self._model

  @property
  def task(self):
    if self._task is None:
      from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
      self._task = pipeline.task_config(self.opts)
    return self._task

  def program_predictor(self, method: str):
    """The trained `ProgramPredictor` of "polar" (predictor/) or "polar_dense" (predictor_dense/)."""
    if method not in self._predictors:
      from polar_jax.predictor import ProgramPredictor  # pylint: disable=import-outside-toplevel
      from polar_jax.predictor.encoder import make_encoder  # pylint: disable=import-outside-toplevel
      if self._encoder is None:
        self._encoder = make_encoder(self.opts.encoder, self.model)
      folder = self.workdir / ("predictor" if method == "polar" else "predictor_dense")
      self._predictors[method] = ProgramPredictor.from_checkpoint(folder, self._encoder, depth=self.depth,
                                                                  decode=self.opts.predictor.decode)
    return self._predictors[method]

  def _cached_tables(self):
    if self._tables is None:
      from polar_jax.menu import features  # pylint: disable=import-outside-toplevel
      self._tables = features.load_features(self.workdir / "menu", self.menu, self._feature_sets())
    return self._tables

  # --- predicting ----------------------------------------------------------------------------------------------

  def _examples(self, questions: Sequence[Question]):
    from polar_jax import data  # pylint: disable=import-outside-toplevel
    known = set(data.list_datasets())
    out = []
    for i, q in enumerate(questions):
      dataset = q.dataset or self.datasets[0]
      if dataset not in known:
        raise PredictError(f"Question {i + 1} names dataset {dataset!r}, which is unknown; its few-shot turns come "
                           f"from a dataset such as {', '.join(self.datasets)}.")
      out.append(data.Example(f"{dataset}/predict/{i}", q.text, q.gold or PLACEHOLDER_GOLD))
    return out

  def _run(self, record, has_gold: bool, score: float | None = None, layers: int | None = None) -> Run:
    return Run(tuple(int(i) for i in record.program), record.answer, record.text,
               bool(record.correct) if has_gold else None, int(record.layers if layers is None else layers),
               int(record.generated_tokens), score)

  def predict(self, questions: Sequence[str | Question], method: str | None = None, *, k: int = 1,
              full_depth: bool = True, max_batch: int = 16) -> list[Prediction]:
    """Each question's programs and answers under `method` (default: `default_method()`); `k` > 1 runs the
    top-k programs of "polar" / "polar_dense"; `full_depth` also runs the plain model for comparison."""
    from polar_jax.evaluation.outcomes import run_ranked  # pylint: disable=import-outside-toplevel
    from polar_jax.programs import Program  # pylint: disable=import-outside-toplevel
    questions = [q if isinstance(q, Question) else Question(str(q)) for q in questions]
    if not questions:
      raise PredictError("No question given: pass --question=\"What is 7 + 5?\" or --questions=FILE.jsonl.")
    if any(not q.text.strip() for q in questions):
      raise PredictError("A question is empty; give its text.")
    if k < 1:
      raise PredictError(f"--k must be >= 1, got {k}.")
    method = self.check_method(method) if method else self.default_method()[0]
    if k > 1 and method not in RANKED_METHODS:
      raise PredictError(f"--k={k} ranks the predictor's programs; {method} chooses one program per question "
                         "(use --method=polar or polar_dense, or --k=1).")
    examples = self._examples(questions)
    common = dict(max_batch=max_batch)
    model, task = self.model, self.task
    gold = [q.gold is not None for q in questions]
    full_run = None
    if full_depth or method == FULL_DEPTH:
      full = run_ranked(model, examples, [[Program.full(self.depth)]] * len(examples), task, method=FULL_DEPTH,
                        label="full depth", test_set="predict", **common)
      full_run = [self._run(o.candidates[0], g) for o, g in zip(full.outcomes, gold)]
    if method == FULL_DEPTH:
      return [Prediction(q, method, (r,), 0, r) for q, r in zip(questions, full_run)]
    if method in RANKED_METHODS:
      decoded = self.program_predictor(method).predict([q.text for q in questions])
      ranked = [[c.program for c in d.candidates[:k]] for d in decoded]
      scores = [[c.score for c in d.candidates[:k]] for d in decoded]
      run = run_ranked(model, examples, ranked, task, method=method, label=method, test_set="predict",
                       scores=scores, **common)
      runs = [tuple(self._run(c, g, c.score) for c in o.candidates) for o, g in zip(run.outcomes, gold)]
      return [Prediction(q, method, r, 0 if r else None, f)
              for q, r, f in zip(questions, runs, full_run or [None] * len(questions))]
    return self._menu_predict(method, questions, examples, gold, full_run, common)

  def _menu_predict(self, method, questions, examples, gold, full_run, common) -> list[Prediction]:
    from polar_jax.evaluation import selection  # pylint: disable=import-outside-toplevel
    from polar_jax.evaluation.outcomes import run_ranked  # pylint: disable=import-outside-toplevel
    from polar_jax.menu import lab, select  # pylint: disable=import-outside-toplevel
    from polar_jax.menu.matrix import MenuQuestion  # pylint: disable=import-outside-toplevel
    from polar_jax.programs import Program  # pylint: disable=import-outside-toplevel
    matrix = self.menu
    train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
    mqs = [MenuQuestion(ex.id, "test", ex.id.split("/")[0], 0, ex.id, ex.question, ex.answer) for ex in examples]
    if method == "best_fixed_program":
      choice = [lab.best_fixed_index(train)] * len(examples)
      selector = None
    else:
      tables = {}
      for name in self._feature_sets():
        if method.startswith((f"menu_selector[{name}", f"gated_fallback[{name}->")):  # the features it reads
          tables[name] = selection.fresh_feature_table(name, self._cached_tables()[name], matrix, mqs,
                                                       self.model, self.task)[0]
      by_name = {s.name: s for s in select.selection_methods(tables, matrix.depth, with_answers=lab.has_answers(matrix))}
      selector = by_name[method]
      selector.fit(train, validation)
    if selector is None or isinstance(selector, select.MenuSelector):  # one run: the chosen program
      if selector is not None:
        choice = selector.choose(mqs)
      ranked = [[Program(matrix.programs[int(j)], matrix.depth)] for j in choice]
      run = run_ranked(self.model, examples, ranked, self.task, method=method, label=method, test_set="predict",
                       **common)
      runs = [(self._run(o.candidates[0], g),) for o, g in zip(run.outcomes, gold)]
      return [Prediction(q, method, r, 0, f) for q, r, f in zip(questions, runs, full_run or [None] * len(questions))]
    live = selection.LiveAnswers(self.model, self.task, examples, matrix.programs, matrix.depth, **common)
    picked = selector.choose(mqs, live)
    for j in sorted(set(int(j) for j in picked)):  # the chosen run (a gated fallback's program is not read yet)
      live.run(j, [i for i, c in enumerate(picked) if int(c) == j])
    out = []
    for i, q in enumerate(questions):
      read = [j for q, j in live.records if q == i]  # in the order the method ran them (a vote: rank order)
      runs = tuple(self._run(live.records[(i, j)], gold[i]) for j in read)
      out.append(Prediction(q, method, runs, read.index(int(picked[i])), None if full_run is None else full_run[i]))
    return out
