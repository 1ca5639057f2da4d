"""`python -m polar_jax.predict` on the session's quick workdir (`conftest.quick_run`): on a test question of the
evaluation it chooses the programs the evaluation chose and gets the same answers; new questions; bad input."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from polar_jax import predict

ROOT = pathlib.Path(__file__).resolve().parent.parent
ONE_RUN = ("polar", "polar_dense", "best_fixed_program", "menu_selector")


def run_predict(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "polar_jax.predict", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def workdir(quick_run):
  return quick_run.workdir


def _top(workdir, slug, qid):
  run = json.loads((workdir / "evaluate" / "runs" / "arith_level11" / f"{slug}.json").read_text())
  return next(o for o in run["outcomes"] if o["id"] == qid)["candidates"]


def _known(workdir):
  """The evaluation's first test question."""
  return json.loads((workdir / "evaluate" / "questions.jsonl").read_text().splitlines()[0])


def test_methods_and_the_default_without_the_model(workdir):
  p = predict.WorkdirPredictor(workdir)
  methods = {m["method"]: m for m in p.methods()}
  for name in ("polar", "polar_dense", "best_fixed_program", "menu_selector[llm]", "menu_selector[minilm,<=30]",
               "program_vote[k=3]", "gated_fallback[llm->menu_selector[llm,<=30]]", "full_depth"):
    assert name in methods
  rows = {r["method"]: r for r in json.loads((workdir / "results.json").read_text())["rows"] if r["level"] == "all"}
  assert methods["polar"]["pass1"] == pytest.approx(rows["polar"]["pass@1"])
  best, why = p.default_method()
  assert best.split("[")[0] in ONE_RUN and "evaluate/results.json" in why
  assert rows[best]["pass@1"] == max(r["pass@1"] for m, r in rows.items() if m.split("[")[0] in ONE_RUN)


def test_a_known_test_question_gets_the_evaluations_programs_and_answers(workdir, tmp_path):
  known = _known(workdir)
  questions = tmp_path / "q.jsonl"
  questions.write_text(json.dumps({"question": known["question"], "answer": known["answer"], "id": known["id"]})
                       + "\n" + json.dumps({"question": "What is 7 + 5?"}) + "\n")
  out = tmp_path / "p.jsonl"
  res = run_predict(f"--workdir={workdir}", f"--questions={questions}", "--method=polar", "--k=2",
                    "--method=menu_selector[llm]", f"--out={out}")
  assert res.returncode == 0, res.stderr[-3000:]
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(x["id"], x["method"]) for x in lines] == [(known["id"], "polar"), (known["id"], "menu_selector[llm]"),
                                                      (None, "polar"), (None, "menu_selector[llm]")]
  polar, selector, new_polar, _ = lines
  expected = _top(workdir, "polar", known["id"])[:2]
  assert [(r["compact"], r["answer"], r["correct"]) for r in polar["runs"]] == \
      [(c["compact"], c["answer"], c["correct"]) for c in expected]
  [chosen] = _top(workdir, "menu_selector_llm", known["id"])
  assert (selector["program"], selector["answer"]) == (chosen["compact"], chosen["answer"])
  [full] = _top(workdir, "full_depth_greedy", known["id"])
  assert (polar["full_depth"]["answer"], polar["full_depth"]["correct"]) == (full["answer"], full["correct"])
  assert new_polar["gold"] is None and all(r["correct"] is None for r in new_polar["runs"])
  # What it prints: each question, each method's programs with their answers, the one it answers with.
  text = res.stdout
  assert f"[{known['id']}] {known['question']}  (gold: {known['answer']})" in text
  assert "[question 2] What is 7 + 5?" in text
  first = next(line for line in text.splitlines() if line.lstrip().startswith("polar #1"))
  assert expected[0]["compact"] in first and f"answer={expected[0]['answer'] or '—'}" in first
  assert "<- its answer" in first and f"correct={'yes' if expected[0]['correct'] else 'no'}" in first
  assert sum(line.lstrip().startswith("full depth") for line in text.splitlines()) == 2
  assert "correct=" not in text.split("[question 2]")[1]  # no gold, no verdict


def test_the_default_method_is_said_and_run(workdir):
  known = _known(workdir)
  best, _ = predict.WorkdirPredictor(workdir).default_method()
  res = run_predict(f"--workdir={workdir}", f"--question={known['question']}", "--nofull_depth")
  assert res.returncode == 0, res.stderr[-3000:]
  assert res.stdout.startswith(f"method: {best} (default: the best pass@1 of this workdir's one-run choosers")
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", best).strip("_")  # the run file's name (evaluation.protocol)
  chosen = _top(workdir, slug, known["id"])[0]
  line = next(line for line in res.stdout.splitlines() if line.lstrip().startswith(best))
  assert f" {chosen['compact']} " in line
  if chosen["answer"] is not None:  # a menu row decided by one prefill keeps no answer
    assert f"answer={chosen['answer']} " in line
  assert not any(line.lstrip().startswith("full depth") for line in res.stdout.splitlines())  # --nofull_depth


def test_bad_input_is_one_line(workdir, tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"question": "What is 1 + 1?"}\nnot json\n')
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  shutil.copy(workdir / "config.json", unfinished / "config.json")
  for args, message in (
      ([f"--workdir={unfinished}", "--question=What is 1 + 1?"], "has no trained chooser: its train stage has not "
                                                                  "finished"),
      ([f"--workdir={tmp_path / 'nothing'}", "--question=x"], "is not a pipeline workdir"),
      ([f"--workdir={workdir}", f"--questions={bad}"], f"{bad} line 2 is not JSON"),
      ([f"--workdir={workdir}", f"--questions={tmp_path / 'none.jsonl'}"], "no such file"),
      ([f"--workdir={workdir}", "--question=x", "--method=polr"], "--method=polr: "),
      ([f"--workdir={workdir}", "--question=x", "--method=best_fixed_program", "--k=2"], "--k=2 ranks"),
      ([f"--workdir={workdir}"], "No question given"),
      ([f"--workdir={workdir}", "--question=x", "--dataset=gsm9k"], "names dataset 'gsm9k', which is unknown"),
  ):
    res = run_predict(*args, timeout=300)
    assert res.returncode == 2, (args, res.stderr[-2000:])
    assert res.stderr.startswith("polar_jax.predict: error: ") and message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
  res = run_predict(f"--workdir={workdir}", "--question=x", "--method=polr", timeout=300)
  assert "this workdir has: polar, menu_selector[llm]" in res.stderr  # what to pick instead


def test_read_questions_checks_every_field(tmp_path):
  path = tmp_path / "q.jsonl"
  path.write_text('{"question": "What is 2 + 2?", "answer": 4, "dataset": "arith_level1"}\n\n')
  assert predict.read_questions(path) == [predict.Question("What is 2 + 2?", "4", None, "arith_level1")]
  for line, message in (('{"q": "x"}', 'needs a non-empty string "question"'), ('{"question": ""}', "non-empty"),
                        ('{"question": "x", "gold": "1"}', re.escape("unknown fields ['gold']")),
                        ('{"question": "x", "answer": true}', '"answer" must be a string'), ("", "holds no question")):
    path.write_text(line + "\n")
    with pytest.raises(predict.PredictError, match=message):
      predict.read_questions(path)
