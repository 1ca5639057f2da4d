"""`python -m polar_jax.inspect` on the session's quick workdir (`conftest.quick_run`): the summary of where methods
disagree with full depth (the same text as results.md's per-question section), one question in full, bad input."""

import json
import pathlib
import subprocess
import sys

import pytest

from polar_jax.inspect import per_question
from polar_jax.programs import Program

ROOT = pathlib.Path(__file__).resolve().parent.parent


def inspect(*args):
  return subprocess.run([sys.executable, "-m", "polar_jax.inspect", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)


@pytest.fixture(scope="module")
def workdir(quick_run):
  return quick_run.workdir


def _run(workdir, method):
  return json.loads((workdir / "evaluate" / "runs" / "arith_level11" / f"{method}.json").read_text())


def _by_id(run):
  return {o["id"]: o for o in run["outcomes"]}


def test_run_files_carry_compact_programs_next_to_the_ids(workdir):
  for name in ("polar", "full_depth_greedy", "best_fixed_program", "menu_selector_llm"):
    for outcome in _run(workdir, name)["outcomes"]:
      for cand in outcome["candidates"]:
        keys = list(cand)
        assert keys.index("compact") == keys.index("program") + 1
        assert cand["compact"] == Program(cand["program"], 30).compact()


def test_summary_counts_and_results_md_section(workdir):
  res = inspect(f"--workdir={workdir}", "--max_questions=20")
  assert res.returncode == 0, res.stderr
  # The same text as results.md's per-question section (results.md caps at 20 questions per test set too).
  results_md = (workdir / "results.md").read_text()
  assert res.stdout == results_md[results_md.index("## Per question: where methods disagree with full depth"):]
  # The counts, recomputed here from the run files, for every compared method of results.json.
  full = _by_id(_run(workdir, "full_depth_greedy"))
  rows = [r for r in json.loads((workdir / "results.json").read_text())["rows"]
          if r["level"] == "all" and r["kind"] in ("deployable", "sampling") and r["method"] != "full_depth_greedy"]
  assert len(rows) > 10
  files = {json.loads(p.read_text())["method"]: json.loads(p.read_text())
           for p in (workdir / "evaluate" / "runs" / "arith_level11").glob("*.json")}
  contested = set()
  for row in rows:
    mine = _by_id(files[row["method"]])
    top = {i: o["candidates"][0] for i, o in mine.items()}
    fixes = sum(top[i]["correct"] and not full[i]["candidates"][0]["correct"] for i in full)
    breaks = sum(full[i]["candidates"][0]["correct"] and not top[i]["correct"] for i in full)
    other = sum(top[i]["program"] != full[i]["candidates"][0]["program"] for i in full)
    assert f"| {row['label']} | 12 | {other} | " in res.stdout and f" | {fixes} | {breaks} |" in res.stdout
    contested |= {i for i in full if top[i]["correct"] != full[i]["candidates"][0]["correct"]}
  assert contested and f"{len(contested)} of 12 questions have a method whose verdict differs" in res.stdout
  questions = {json.loads(line)["id"]: json.loads(line) for line in
               (workdir / "evaluate" / "questions.jsonl").read_text().splitlines()}
  assert set(questions) == set(full)
  for qid in contested:  # every contested question is listed with its text and gold answer
    assert f"**{qid}**: {questions[qid]['question']} (gold: {questions[qid]['answer']})" in res.stdout
  capped = inspect(f"--workdir={workdir}", "--max_questions=1")
  assert capped.returncode == 0 and capped.stdout.count("**arith_level11/test/") == 1
  assert f"({len(contested) - 1} more: `python -m polar_jax.inspect" in capped.stdout


def test_one_test_question_in_full(workdir):
  full = _by_id(_run(workdir, "full_depth_greedy"))
  polar = _by_id(_run(workdir, "polar"))
  qid = next(iter(full))
  question = next(json.loads(line) for line in (workdir / "evaluate" / "questions.jsonl").read_text().splitlines()
                  if json.loads(line)["id"] == qid)
  res = inspect(f"--workdir={workdir}", f"--id={qid}")
  assert res.returncode == 0, res.stderr
  out = res.stdout
  assert f"Question: {question['question']}" in out and f"Gold answer: {question['answer']}" in out
  answer = full[qid]["candidates"][0]["answer"]
  assert f"Full depth answers {answer} ({'right' if full[qid]['candidates'][0]['correct'] else 'wrong'})" in out
  for name in ("polar", "best_fixed_program", "menu_selector_llm", "program_vote_k_3", "shortgpt_n4", "router"):
    run = _run(workdir, name)
    top = _by_id(run)[qid]["candidates"][0]
    line = next(line for line in out.splitlines() if line.startswith(f"| {run['label']}"))
    assert f"| `{top['compact']}` | {len(top['program'])} | {top['answer'] or '—'} | " \
           f"{'yes' if top['correct'] else 'no'} |" in line, line
  for rank, cand in enumerate(polar[qid]["candidates"], start=1):  # PoLar's top-k, each with its answer
    assert f"| {rank} | `{cand['compact']}` | {len(cand['program'])} | {cand['answer'] or '—'} |" in out
  assert "Not searched" in out and "test row of the menu matrix" in out


def test_a_searched_question_shows_the_search_programs(workdir):
  record = json.loads((workdir / "search" / "records.jsonl").read_text().splitlines()[0])
  res = inspect(f"--workdir={workdir}", f"--id={record['id']}")
  assert res.returncode == 0, res.stderr
  assert f"{len(record['valid'])} valid and {len(record['invalid'])} invalid programs" in res.stdout
  for entry in record["valid"] + record["invalid"]:
    assert f"| `{Program(entry['program'], 30).compact()}` | {len(entry['program'])} | {entry['visits']} |" \
        in res.stdout
  valid_part = res.stdout.split("Valid programs")[1].split("Invalid programs")[0]
  assert valid_part.count("| `") == len(record["valid"])


@pytest.mark.parametrize("args, message", [
    (["--id=arith_level11/test/99999"], "No question 'arith_level11/test/99999' in "),
    (["--set=gsm8k"], "No test set 'gsm8k' in "),
    (["--max_questions=-1"], "must be >= 0"),
], ids=["unknown id", "unknown set", "negative cap"])
def test_bad_input_is_one_line(workdir, args, message):
  res = inspect(f"--workdir={workdir}", *args)
  assert res.returncode == 2 and res.stdout == ""
  assert res.stderr.startswith("polar_jax.inspect: error: ") and message in res.stderr
  assert res.stderr.count("\n") == 1, res.stderr


def test_bad_workdirs_are_one_line(tmp_path):
  for args, message in ((["--workdir=" + str(tmp_path / "nothing")], "There is no workdir at"),
                        ([], "--workdir is required"), (["--workdr=x"], "Unknown command line flag 'workdr'")):
    res = inspect(*args)
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
  empty = inspect(f"--workdir={tmp_path}")  # a directory without an evaluation
  assert empty.returncode == 2 and "has no evaluation runs yet" in empty.stderr


def test_compare_with_full_depth_on_hand_made_runs():
  def run(method, kind, answers, programs):
    return {"method": method, "label": method, "kind": kind, "test_set": "t",
            "outcomes": [{"id": f"q{i}", "level": 0, "candidates": [
                {"program": p, "answer": a, "correct": a == "1"}]} for i, (a, p) in enumerate(zip(answers, programs))]}
  full = run("full_depth_greedy", "deployable", ["1", "2", "1", "3"], [[0, 1]] * 4)
  other = run("x", "deployable", ["1", "1", "2", "3"], [[0, 1], [1], [0], [0, 0, 1]])
  oracle = run("o", "oracle", ["1"] * 4, [[0]] * 4)
  got = per_question.compare_with_full_depth([full, other, oracle], "t")
  assert got["summary"] == [{"method": "x", "label": "x", "n": 4, "other_program": 3, "other_answer": 2, "fixes": 1,
                             "breaks": 1}]  # the oracle is not compared
  assert got["contested"] == [("q1", ["x"]), ("q2", ["x"])]
  section = per_question.per_question_results([full, other], {"t": {"q1": {"question": "Q?", "gold": "1"}}})
  assert section["t"]["questions"][0]["disagree"][0]["compact"] == "1"
  assert "**q1**: Q? (gold: 1)" in per_question.markdown(section)
