"""Per-question views of a finished run: what every method chose and answered on one question, and where the
methods disagree with full depth. Light: the standard library, numpy and the JSON files of a workdir.

Everything here reads method runs in their saved JSON form (`evaluation.outcomes.MethodRun.to_json`, the files
under `<workdir>/evaluate/runs/<test set>/<method>.json`), so the evaluation's report (`results.md`, the
`per_question` part of `results.json`) and `python -m polar_jax.inspect` show the same thing from the same data:

- `choices(run)`: per question id, the method's deployable answer (its rank-1 candidate) as a `Choice`;
- `compare_with_full_depth(runs, test_set)`: per method, on how many questions it runs another program than
  full depth, writes another answer, is right where full depth is wrong and wrong where full depth is right;
  and the questions where some method's verdict differs from full depth's, the most contested first;
- `per_question_results(runs, questions, cap)`: that summary and the first `cap` contested questions with their
  text, gold answer and the disagreeing methods' programs and answers (JSON, for results.json);
- `markdown(per_question)`: the same as Markdown (results.md's per-question section, the command's summary);
- `WorkdirView`: a workdir's runs, questions, search records and menu, read back; `question_markdown(view, id)`
  is one question's full view (every method, its candidates, the search's valid and invalid programs, the menu
  programs' answers).

Only `deployable` and `sampling` runs are compared with full depth: an ORACLE picks by the gold answer and a
`reference` row re-scores another run. The per-question view of one question shows every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from polar_jax.errors import UserError
from polar_jax.programs.program import compact_text

FULL_DEPTH = "full_depth_greedy"
COMPARED_KINDS = ("deployable", "sampling")
REPORT_CAP = 20  # contested questions per test set in results.md / results.json
QUESTIONS_FILE = "questions.jsonl"  # under evaluate/: one line per test question ({"test_set", Example fields})
RUNS_DIR = "runs"


class InspectError(UserError, ValueError):
  """A workdir, question id or test set that cannot be inspected; the message says what to give instead."""


@dataclasses.dataclass(frozen=True)
class Choice:
  """One method's deployable answer on one question: its rank-1 candidate (program () when it has none)."""
  method: str
  label: str
  kind: str
  program: tuple[int, ...]
  answer: str | None
  correct: bool
  candidates: int = 1
  text: str = ""

  @property
  def compact(self) -> str:
    return compact_text(self.program) if self.program else "(no program)"

  def to_json(self) -> dict[str, Any]:
    return {"method": self.method, "label": self.label, "kind": self.kind, "program": list(self.program),
            "compact": self.compact, "answer": self.answer, "correct": self.correct,
            "candidates": self.candidates}


def choices(run: Mapping[str, Any]) -> dict[str, Choice]:
  """Question id -> the run's rank-1 candidate on it (a question without candidates: no program, wrong)."""
  out = {}
  for outcome in run["outcomes"]:
    cands = outcome["candidates"]
    first = cands[0] if cands else {"program": [], "answer": None, "correct": False}
    out[str(outcome["id"])] = Choice(run["method"], run["label"], run["kind"], tuple(int(i) for i in first["program"]),
                                     first.get("answer"), bool(first["correct"]), len(cands), first.get("text", ""))
  return out


def _runs_of(runs: Sequence[Mapping[str, Any]], test_set: str) -> list[Mapping[str, Any]]:
  return [r for r in runs if r["test_set"] == test_set]


def test_sets(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  return list(dict.fromkeys(r["test_set"] for r in runs))


def compare_with_full_depth(runs: Sequence[Mapping[str, Any]], test_set: str) -> dict[str, Any]:
  """Every compared method of one test set against full depth (module docstring); {} without a full-depth run.

  Returns {"n": questions, "summary": [{method, label, n, other_program, other_answer, fixes, breaks}],
  "contested": [(id, [methods whose verdict differs])], most methods first, then test-set order}."""
  runs = _runs_of(runs, test_set)
  full_run = next((r for r in runs if r["method"] == FULL_DEPTH), None)
  if full_run is None:
    return {}
  full = choices(full_run)
  order = list(full)
  summary, differ = [], {i: [] for i in order}
  for run in runs:
    if run["method"] == FULL_DEPTH or run["kind"] not in COMPARED_KINDS:
      continue
    mine = choices(run)
    ids = [i for i in order if i in mine]
    row = {"method": run["method"], "label": run["label"], "n": len(ids),
           "other_program": sum(mine[i].program != full[i].program for i in ids),
           "other_answer": sum(mine[i].answer != full[i].answer for i in ids),
           "fixes": sum(mine[i].correct and not full[i].correct for i in ids),
           "breaks": sum(full[i].correct and not mine[i].correct for i in ids)}
    summary.append(row)
    for i in ids:
      if mine[i].correct != full[i].correct:
        differ[i].append(run["method"])
  position = {i: n for n, i in enumerate(order)}
  contested = sorted(((i, m) for i, m in differ.items() if m), key=lambda item: (-len(item[1]), position[item[0]]))
  return {"n": len(order), "summary": summary, "contested": contested}


def per_question_results(runs: Sequence[Mapping[str, Any]], questions: Mapping[str, Mapping[str, Mapping[str, Any]]],
                         cap: int = REPORT_CAP) -> dict[str, Any]:
  """Per test set: the comparison with full depth and the first `cap` contested questions (module docstring).

  questions: test set -> question id -> {"question", "gold", ...} (missing ones are shown without text)."""
  out = {}
  for name in test_sets(runs):
    compared = compare_with_full_depth(runs, name)
    if not compared:
      continue
    by_method = {r["method"]: choices(r) for r in _runs_of(runs, name)}
    shown = []
    for qid, methods in compared["contested"][:cap]:
      info = questions.get(name, {}).get(qid, {})
      shown.append({"id": qid, "question": info.get("question"), "gold": info.get("gold"),
                    "full_depth": by_method[FULL_DEPTH][qid].to_json(),
                    "disagree": [by_method[m][qid].to_json() for m in methods]})
    out[name] = {"n": compared["n"], "summary": compared["summary"], "contested": len(compared["contested"]),
                 "questions": shown}
  return out


# --- Markdown --------------------------------------------------------------------------------------------------


def _cell(text: Any) -> str:
  return "—" if text is None or text == "" else str(text).replace("|", "\\|").replace("\n", " ")


def _reply(text: str, limit: int = 32) -> str:
  """A generation as a short repr (its newlines visible), cut to `limit` characters."""
  if not text:
    return ""  # not kept (e.g. a menu row: the matrix keeps the answer, not the reply)
  shown = repr(text.strip("\n"))
  return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _yes(correct: bool) -> str:
  return "yes" if correct else "no"


def _table(header: Sequence[str], lines: Iterable[Sequence[Any]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return out + ["| " + " | ".join(_cell(x) for x in line) + " |" for line in lines]


def _choice_line(c: Mapping[str, Any]) -> list[Any]:
  return [c["label"], f"`{c['compact']}`", len(c["program"]), c["answer"], _yes(c["correct"])]


CHOICE_HEADER = ("method", "program (rank 1)", "steps", "answer", "correct")


def question_header(qid: str, question: str | None, gold: Any) -> str:
  text = _cell(question) if question else "(question text not in this workdir)"
  return f"**{qid}**: {text} (gold: {_cell(gold)})"


def summary_markdown(name: str, part: Mapping[str, Any]) -> list[str]:
  """The comparison table of one test set (the per-method counts against full depth)."""
  out = [f"### {name}", "",
         f"{part['contested']} of {part['n']} questions have a method whose verdict differs from full depth's.", ""]
  out += _table(("method", "n", "other program", "other answer", "right where full depth is wrong",
                 "wrong where full depth is right"),
                [[r["label"], r["n"], r["other_program"], r["other_answer"], r["fixes"], r["breaks"]]
                 for r in part["summary"]])
  return out


def markdown(per_question: Mapping[str, Any]) -> str:
  """results.md's per-question section (also the command's summary without --id); "" when there is nothing."""
  if not per_question:
    return ""
  out = ["## Per question: where methods disagree with full depth", "",
         "Deployable and sampling methods only (ORACLE rows pick by the gold answer). `python -m polar_jax.inspect "
         "--workdir=W --id=ID` shows one question with every method, its candidates and the search's programs.", ""]
  for name, part in per_question.items():
    out += summary_markdown(name, part)
    if part["questions"]:
      more = part["contested"] - len(part["questions"])
      n = len(part["questions"])
      out += ["", f"The {'most contested question' if n == 1 else f'{n} most contested questions'}"
              + (f" ({more} more: `python -m polar_jax.inspect --workdir=W --set='{name}' --max_questions=0`)"
                 if more > 0 else "") + ", full depth first, then the methods whose verdict differs:", ""]
    for q in part["questions"]:
      out += [question_header(q["id"], q["question"], q["gold"]), ""]
      out += _table(CHOICE_HEADER, [_choice_line(q["full_depth"])] + [_choice_line(c) for c in q["disagree"]])
      out.append("")
    out.append("")
  return "\n".join(out).rstrip() + "\n"


# --- a workdir read back ---------------------------------------------------------------------------------------


class WorkdirView:
  """A workdir's evaluation runs, test questions, search records and menu, as the files hold them.

  runs: the saved method runs (JSON dicts); with a results.json, those of its rows, in its order;
  questions: id -> {"question", "gold", "level", "where": [test sets / "search" / "menu <split>"]};
  records: id -> `SearchRecord`; menu: the `MenuMatrix` or None.
  """

  def __init__(self, workdir: str | pathlib.Path):
    from polar_jax.search.records import read_records  # pylint: disable=import-outside-toplevel
    self.workdir = pathlib.Path(workdir).expanduser()
    if not self.workdir.is_dir():
      raise InspectError(f"There is no workdir at {self.workdir}; give the --workdir of a pipeline run "
                         "(python -m polar_jax.main --config=... --workdir=DIR).")
    self.runs = self._load_runs()
    self.questions: dict[str, dict[str, Any]] = {}
    path = self.workdir / "evaluate" / QUESTIONS_FILE
    if path.exists():
      for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
          try:
            q = json.loads(line)
            self._add(str(q["id"]), q["question"], q["answer"], q.get("level"), q["test_set"])
          except (ValueError, KeyError, TypeError) as e:
            raise InspectError(f"{path} line {number} is not a test question ({type(e).__name__}: {e}); rerun "
                               "the evaluate stage to rewrite it.") from None
    self.menu = None
    if (self.workdir / "menu" / "done.json").exists():
      from polar_jax.menu.matrix import MenuMatrix  # pylint: disable=import-outside-toplevel
      self.menu = MenuMatrix.load(self.workdir / "menu")
      for split in ("train", "validation", "test"):
        for q in self.menu.questions(split):
          self._add(q.id, q.question, q.gold, q.level, f"menu {split}")
    records = read_records(self.workdir / "search" / "records.jsonl")
    self.records = {r.id: r for r in records}
    for r in records:
      self._add(r.id, r.question, r.gold, r.level, "search")
    for run in self.runs:  # ids the other files do not name (an evaluation written before questions.jsonl)
      for outcome in run["outcomes"]:
        self._add(str(outcome["id"]), None, None, outcome.get("level"), run["test_set"])

  def _load_runs(self) -> list[dict[str, Any]]:
    root = self.workdir / "evaluate" / RUNS_DIR
    runs = []
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
      try:
        run = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(run, dict) or not {"method", "label", "kind", "test_set", "outcomes"} <= set(run):
          raise ValueError("not a saved method run")
      except ValueError as e:
        raise InspectError(f"{path} is not a saved method run ({e}); delete it and rerun the evaluate stage to "
                           "recompute that method.") from None
      runs.append(run)
    results = self.workdir / "evaluate" / "results.json"
    if results.exists():  # what the evaluation reported, in its order (not runs of methods it no longer lists)
      try:
        rows = json.loads(results.read_text())["rows"]
        order = {key: i for i, key in enumerate(dict.fromkeys((r["test_set"], r["method"]) for r in rows))}
      except (ValueError, KeyError, TypeError) as e:
        raise InspectError(f"{results} does not read ({type(e).__name__}: {e}); rerun the evaluate stage.") from None
      runs = sorted((r for r in runs if (r["test_set"], r["method"]) in order),
                    key=lambda r: order[(r["test_set"], r["method"])])
    return runs

  def _add(self, qid: str, question: str | None, gold: Any, level: Any, where: str) -> None:
    q = self.questions.setdefault(qid, {"question": None, "gold": None, "level": level, "where": []})
    if q["question"] is None and question is not None:
      q["question"], q["gold"] = question, gold
    if where not in q["where"]:
      q["where"].append(where)

  # --- lookups -------------------------------------------------------------------------------------------------

  @property
  def test_sets(self) -> list[str]:
    return test_sets(self.runs)

  def check_set(self, name: str | None) -> list[str]:
    """The test sets to show: all, or `name` (InspectError naming the known ones)."""
    if name is None:
      return self.test_sets
    if name not in self.test_sets:
      known = ", ".join(repr(s) for s in self.test_sets) or "none (the evaluate stage has not run)"
      raise InspectError(f"No test set {name!r} in {self.workdir}'s evaluation runs; test sets: {known}.")
    return [name]

  def check_id(self, qid: str) -> dict[str, Any]:
    if qid not in self.questions:
      close = difflib.get_close_matches(qid, list(self.questions), n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      example = next(iter(self.questions), None)
      known = (f"; ids look like {example!r} (python -m polar_jax.inspect --workdir={self.workdir} lists the "
               "contested ones)" if example else "; this workdir holds no questions yet")
      raise InspectError(f"No question {qid!r} in {self.workdir} (its evaluation runs, search records or "
                         f"menu){hint}{known}.")
    return self.questions[qid]

  def per_question(self, names: Sequence[str], cap: int) -> dict[str, Any]:
    runs = [r for r in self.runs if r["test_set"] in names]
    questions = {name: self.questions for name in names}
    return per_question_results(runs, questions, cap=cap if cap > 0 else 10 ** 9)


def question_markdown(view: WorkdirView, qid: str, *, test_set: str | None = None, max_programs: int = 20) -> str:
  """One question: its text and gold answer; per test set it is in, every method's rank-1 program, answer and
  verdict (and the other candidates of methods with several); the search's valid and invalid programs; the menu
  programs' answers on it."""
  q = view.check_id(qid)
  out = [f"# {qid}", "", f"Question: {_cell(q['question']) if q['question'] else '(text not in this workdir)'}",
         f"Gold answer: {_cell(q['gold'])}", f"In: {', '.join(q['where'])}", ""]
  for name in view.check_set(test_set):
    here = [(r, choices(r)) for r in _runs_of(view.runs, name)]
    here = [(r, c[qid]) for r, c in here if qid in c]
    if not here:
      continue
    full = next((c for r, c in here if r["method"] == FULL_DEPTH), None)
    out += [f"## {name}: every method on this question", ""]
    if full is not None:
      out += [f"Full depth answers {_cell(full.answer)} ({'right' if full.correct else 'wrong'}).", ""]
    lines = []
    for run, c in here:
      label = c.label + ("" if c.kind in COMPARED_KINDS else f" [{c.kind}]")
      differs = "" if full is None or run["method"] == FULL_DEPTH else (
          "verdict differs" if c.correct != full.correct else "other answer" if c.answer != full.answer else "")
      lines.append([label, f"`{c.compact}`", len(c.program), c.answer, _yes(c.correct), _reply(c.text),
                    c.candidates, differs])
    out += _table(CHOICE_HEADER + ("reply", "candidates", "vs full depth"), lines)
    several = [(run, c) for run, c in here if c.candidates > 1]
    for run, c in several:
      outcome = next(o for o in run["outcomes"] if str(o["id"]) == qid)
      out += ["", f"{c.label}, all {c.candidates} candidates:", ""]
      out += _table(("rank", "program", "steps", "answer", "correct", "score"),
                    [[k + 1, f"`{compact_text(x['program'])}`", len(x["program"]), x.get("answer"),
                      _yes(x["correct"]), None if x.get("score") is None else f"{x['score']:.3f}"]
                     for k, x in enumerate(outcome["candidates"])])
    out.append("")
  record = view.records.get(qid)
  if record is None:
    out += ["## Search", "", "Not searched (the search runs on train and validation questions only; test questions "
            "never are).", ""]
  else:
    score = "—" if record.initial_score is None else f"{record.initial_score:g}"
    out += ["## Search", "", f"{len(record.valid)} valid and {len(record.invalid)} invalid programs in "
            f"{record.simulations} simulations; full depth scored {score} (answer {_cell(record.initial_answer)}).",
            ""]
    for title, entries in (("valid", record.valid), ("invalid", record.invalid)):
      if not entries:
        continue
      shown = entries if max_programs <= 0 else entries[:max_programs]
      more = len(entries) - len(shown)
      out += [f"{title.capitalize()} programs (shortest first"
              + (f"; {more} more with --max_programs=0" if more else "") + "):", ""]
      out += _table(("program", "steps", "visits", "answer"),
                    [[f"`{compact_text(e.program)}`", len(e.program), e.visits, e.answer] for e in shown])
      out.append("")
  if view.menu is not None:
    row = next(((split, i) for split in ("train", "validation", "test")
                for i, m in enumerate(view.menu.questions(split)) if m.id == qid), None)
    if row is not None:
      split, i = row
      from polar_jax.menu.lab import scoring_view  # pylint: disable=import-outside-toplevel
      cells = scoring_view(view.menu) if split == "test" else view.menu.fit_view(split)  # inspection, no fitting
      out += [f"## Menu programs on this question ({split} row of the menu matrix)", ""]
      out += _table(("#", "program", "steps", "answer", "correct"),
                    [[j, f"`{compact_text(p)}`", len(p), cells.answer[i, j] if cells.answer_known[i, j] else None,
                      _yes(bool(cells.correct[i, j]))] for j, p in enumerate(view.menu.programs)])
      out.append("")
  return "\n".join(out).rstrip() + "\n"
