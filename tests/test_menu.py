"""The program menu: the matrix files, the test-row guard, ranking, the lab's baselines, and the stage on
SmolLM2 (its matrix equals run_programs on the same pairs; an interrupted build resumes to the same matrix)."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from polar_jax.menu import build, lab
from polar_jax.menu.matrix import MenuFileError, MenuMatrix, MenuQuestion, empty_arrays
from polar_jax.menu.matrix import TestRowsError as GuardError  # not a test class
from polar_jax.records import ProgramEntry, SearchRecord

DEPTH = 6
FULL = tuple(range(DEPTH))


def synthetic(correct: np.ndarray, splits, programs=None) -> MenuMatrix:
  n, p = correct.shape
  programs = programs or [FULL] + [tuple(i for i in FULL if i != j) for j in range(p - 1)]
  questions = [MenuQuestion(f"d/{s}/{i}", s, "d", 1, f"g{i}", f"q{i}", "1") for i, s in enumerate(splits)]
  arrays = empty_arrays(n, p)
  arrays["correct"] = correct.astype(bool)
  arrays["layers"] = np.tile([len(x) * 2 for x in programs], (n, 1)).astype(np.int32)
  return MenuMatrix(programs, DEPTH, questions, arrays, {"note": "synthetic"})


def test_guard_keeps_test_outcomes_from_fitting_code():
  m = synthetic(np.eye(6, 3, dtype=bool), ["train"] * 2 + ["validation"] * 2 + ["test"] * 2)
  assert len(m.fit_view("train")) == 2 and len(m.fit_view("validation")) == 2
  with pytest.raises(GuardError, match="not for fitting"):
    m.fit_view("test")
  questions = m.questions("test")
  assert [q.id for q in questions] == ["d/test/4", "d/test/5"]
  assert not any(hasattr(q, "correct") for q in questions)  # questions carry no outcome
  with pytest.raises(ValueError):
    m.fit_view("train").correct[0, 0] = True  # views are read-only


def test_save_load_round_trip_without_pickle(tmp_path):
  rng = np.random.default_rng(0)
  m = synthetic(rng.random((10, 4)) < 0.5, ["train"] * 4 + ["validation"] * 2 + ["test"] * 4)
  m.save(tmp_path)
  with np.load(tmp_path / "matrix.npz", allow_pickle=False) as npz:
    assert set(npz.files) == {"correct", "answer", "answer_known", "gold_logprob", "answer_logprob", "layers",
                          "generated_tokens"}
  back = MenuMatrix.load(tmp_path)
  assert back.programs == m.programs and back.info == m.info
  assert np.array_equal(back.fit_view("train").correct, m.fit_view("train").correct)
  assert back.questions("test") == m.questions("test")
  (tmp_path / "matrix.npz").unlink()
  with pytest.raises(MenuFileError, match="missing"):
    MenuMatrix.load(tmp_path)


def test_best_fixed_program_menu_oracle_and_full_depth():
  # Train accuracy: programs 2 and 3 both 3/4 and equally long (DEPTH - 1), so the tie goes to index 2.
  train = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0], [1, 0, 0, 1]], bool)
  val = np.array([[1, 1, 1, 1]], bool)
  test = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], bool)
  m = synthetic(np.concatenate([train, val, test]), ["train"] * 4 + ["validation"] + ["test"] * 5)
  table = lab.lab_table(m, seed=0, n_boot=500)
  assert table["n_test"] == 5 and table["n_programs"] == 4
  full, fixed, oracle = (table["methods"][k] for k in ("full_depth", "best_fixed_program", "menu_oracle"))
  assert full["pass1"] == pytest.approx(2 / 5) and full["diff_vs_full"] == 0 and full["deployable"]
  assert fixed["pass1"] == pytest.approx(3 / 5)  # program 2 (3/4 on train; 3 has 3/4 too, 2 ranks first)
  assert fixed["layers_per_token"] == DEPTH - 1 and fixed["wins"] == 2 and fixed["losses"] == 1
  assert oracle["pass1"] == pytest.approx(4 / 5) and not oracle["deployable"]
  for row in table["methods"].values():
    assert set(row) >= {"pass1", "ci95", "diff_vs_full", "diff_ci95", "mcnemar_p", "layers_per_token", "deployable"}
  cov = lab.coverage_curve(m)
  assert [c["coverage"] for c in cov["curve"]] == [pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.8),
                                                   pytest.approx(0.8)]


def test_best_fixed_ties_prefer_the_shorter_program():
  programs = [FULL, FULL[:5], FULL[:4]]
  correct = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 0]], bool)
  m = synthetic(correct, ["train", "train", "test"], programs)
  assert lab.best_fixed_index(m.fit_view("train")) == 2


def test_rank_programs_counts_training_questions_only():
  def rec(qid, valid):
    return SearchRecord(id=qid, question="q", depth=DEPTH, valid=tuple(ProgramEntry(p) for p in valid))
  a, b, c = FULL[:5], FULL[1:], FULL + (5,)
  records = [rec("d/train/0", [FULL, a, b]), rec("d/train/1", [a, c]), rec("d/train/2", [a, b]),
             rec("d/validation/0", [c, c])]  # validation is never counted
  programs, counts = build.rank_programs(records, DEPTH, {"d/train/0", "d/train/1", "d/train/2"}, top_k=2)
  assert programs == [FULL, a, b] and counts == [1, 3, 2]
  programs, _ = build.rank_programs(records, DEPTH, {"d/train/0", "d/train/1", "d/train/2"}, top_k=10)
  assert programs == [FULL, a, b, c]


def test_finished_chunks_ignore_a_write_torn_by_a_kill(tmp_path):
  """A kill -9 while a chunk is written leaves `<index>.npz.tmp.npz`, maybe torn: it is not a finished chunk,
  and counting the finished ones (the stage's progress bar) does not trip over it."""
  from polar_jax.menu.matrix import write_npz_atomic
  arrays = {**empty_arrays(2, 3), build.ANSWERS_FLAG: np.array(True)}
  (tmp_path / build.CHUNKS).mkdir()
  write_npz_atomic(build.chunk_path(tmp_path, 0), arrays)
  write_npz_atomic(build.chunk_path(tmp_path, 1), {**arrays, build.ANSWERS_FLAG: np.array(False)})
  whole = build.chunk_path(tmp_path, 0).read_bytes()
  (tmp_path / build.CHUNKS / "00002.npz.tmp.npz").write_bytes(whole[:len(whole) // 2])  # torn
  assert build.finished_chunks(tmp_path) == 1  # chunk 1 lacks full answers
  assert build.finished_chunks(tmp_path, answers=False) == 2
  (tmp_path / build.CHUNKS / "00002.npz.tmp.npz").write_bytes(whole)  # killed between the write and the rename
  assert build.finished_chunks(tmp_path, answers=False) == 2


def test_lab_command_json_and_bad_path(tmp_path):
  rng = np.random.default_rng(1)
  synthetic(rng.random((12, 3)) < 0.5, ["train"] * 4 + ["validation"] * 2 + ["test"] * 6).save(tmp_path / "m")
  out = tmp_path / "lab.json"
  res = subprocess.run([sys.executable, "-m", "polar_jax.lab", f"--matrix={tmp_path / 'm'}", f"--out={out}",
                        "--n_boot=200"], capture_output=True, text=True, check=False)
  assert res.returncode == 2 and "features/minilm.npz is missing" in res.stderr  # the selectors need features
  res = subprocess.run([sys.executable, "-m", "polar_jax.lab", f"--matrix={tmp_path / 'm'}", f"--out={out}",
                        "--n_boot=200", "--features="], capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr
  table = json.loads(out.read_text())
  assert table["n_test"] == 6 and {"full_depth", "best_fixed_program", "menu_oracle"} <= set(table["methods"])
  res = subprocess.run([sys.executable, "-m", "polar_jax.lab", f"--matrix={tmp_path / 'm'}", "--features=minlm"],
                       capture_output=True, text=True, check=False)
  assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "minilm" in res.stderr
  res = subprocess.run([sys.executable, "-m", "polar_jax.lab", f"--matrix={tmp_path / 'none'}"],
                       capture_output=True, text=True, check=False)
  assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "missing" in res.stderr


@pytest.fixture(scope="module")
def smollm2():
  from polar_jax.models import load_model
  return load_model("smollm2-135m-instruct")


def test_stage_matrix_equals_run_programs_and_resumes(smollm2, tmp_path):
  """The menu builder's cells equal run_programs on the same pairs; a build stopped after its first chunk
  resumes (finished chunks are not redone) to the same matrix."""
  from polar_jax import data
  from polar_jax.program_eval import TaskConfig, run_programs
  from polar_jax.programs import Program

  parts = [("train", "arith_level11", data.load_split("arith_level11", "train", limit=4)),
           ("validation", "arith_level11", data.load_split("arith_level11", "validation", limit=2)),
           ("test", "arith_level13", data.load_split("arith_level13", "test", limit=4))]
  questions, examples = build.menu_questions(parts)
  full = tuple(range(30))
  programs = [full, full[:20] + full[22:], full[:12] + full[12:16] + full[12:]]
  task = TaskConfig.from_preset("raw_qa_3shot", max_new_tokens=8, few_shot_split="auto", reward="teacher_forced")

  class Stop(Exception):
    pass

  def stop_after_first(i, n, seconds):
    if i == 1:
      raise Stop
  with pytest.raises(Stop):
    build.build_menu(smollm2, task, questions, examples, programs, tmp_path, chunk_questions=4,
                     on_chunk=stop_after_first)
  assert sorted(p.name for p in (tmp_path / "chunks").glob("*.npz")) == ["00000.npz"]
  done = []
  matrix = build.build_menu(smollm2, task, questions, examples, programs, tmp_path, chunk_questions=4,
                            on_chunk=lambda i, n, s: done.append(i))
  assert done == [2, 3]  # chunk 1 was kept
  assert MenuMatrix.load(tmp_path).programs == matrix.programs
  pairs = [(i, Program(p, 30)) for i in range(len(examples)) for p in programs]
  records = run_programs(smollm2, examples, pairs, task)
  got = np.concatenate([matrix.fit_view("train").correct, matrix.fit_view("validation").correct,
                        lab.scoring_view(matrix).correct])
  assert got.reshape(-1).tolist() == [r.correct for r in records]
  logprob = np.concatenate([matrix.fit_view(s).gold_logprob for s in ("train", "validation")] +
                           [lab.scoring_view(matrix).gold_logprob]).reshape(-1)
  expected = [np.nan if r.gold_logprob is None else r.gold_logprob for r in records]
  np.testing.assert_allclose(logprob, np.asarray(expected, np.float32), atol=1e-4, equal_nan=True)  # batch shapes differ
  with pytest.raises(MenuFileError, match="different menu plan"):
    build.build_menu(smollm2, task, questions, examples, programs[:2], tmp_path, chunk_questions=4)

  # Every cell's reply is known: the answers and confidences equal plain generation's.
  generated = run_programs(smollm2, examples, pairs, dataclasses.replace(task, reward="generate"))
  views = [matrix.answers_view(s) for s in ("train", "validation", "test")]
  cells = np.concatenate([np.stack([v.run(j)["answer"] for j in range(3)], axis=1) for v in views]).reshape(-1)
  conf = np.concatenate([np.stack([v.run(j)["logprob"] for j in range(3)], axis=1) for v in views]).reshape(-1)
  assert cells.tolist() == [(r.answer or "")[:24] for r in generated]
  np.testing.assert_allclose(conf, [r.answer_logprob for r in generated], atol=2e-3)

  # A menu built without answers is completed in place to the same matrix as a fresh build with answers.
  other = tmp_path / "without_answers"
  build.build_menu(smollm2, task, questions, examples, programs, other, chunk_questions=4, answers=False)
  partial = MenuMatrix.load(other)
  assert not all(partial.answers_view(s).run(j)["known"].all() for s in ("train", "test") for j in range(3))
  completed = build.build_menu(smollm2, task, questions, examples, programs, other, chunk_questions=4)
  for s in ("train", "validation", "test"):
    a, b = completed.answers_view(s), matrix.answers_view(s)
    for j in range(3):
      x, y = a.run(j), b.run(j)
      assert x["answer"].tolist() == y["answer"].tolist() and x["known"].tolist() == y["known"].tolist()
      np.testing.assert_allclose(x["logprob"], y["logprob"], atol=2e-3)


def test_reuse_copies_the_cells_an_earlier_menu_holds_and_runs_only_the_rest(smollm2, tmp_path, monkeypatch):
  """menu.reuse: a new menu that shares programs with an earlier one copies their cells (matched by question and
  program) and runs only the new column; the result equals a fresh build. Another task is refused."""
  from polar_jax import data, program_eval
  from polar_jax.program_eval import TaskConfig

  parts = [("train", "arith_level11", data.load_split("arith_level11", "train", limit=3)),
           ("test", "arith_level13", data.load_split("arith_level13", "test", limit=3))]
  questions, examples = build.menu_questions(parts)
  full = tuple(range(30))
  old_prog, new_prog = full[:20] + full[22:], full[:12] + full[12:16] + full[12:]
  task = TaskConfig.from_preset("raw_qa_3shot", max_new_tokens=8, few_shot_split="auto", reward="teacher_forced")
  config = {"model": {"name": "smollm2-135m-instruct"}, "task": {"preset": "raw_qa_3shot"},
            "menu": {"reward": "teacher_forced", "answers": True}}
  earlier = build.build_menu(smollm2, task, questions, examples, [full, old_prog], tmp_path / "a",
                             chunk_questions=4, info={"config": config})
  # The earlier menu's last question is a different one under the same id: its cells must not be lent.
  changed = list(questions)
  changed[-1] = dataclasses.replace(changed[-1], question=changed[-1].question + " (edited)")
  lent = build.reusable_cells(earlier, config, changed, [full, new_prog, old_prog])
  assert sorted(lent) == [(r, c) for r in range(len(questions) - 1) for c in (0, 2)]
  assert lent[(1, 2)] == (1, 1)

  pairs_run = []
  real = program_eval.run_programs
  monkeypatch.setattr(program_eval, "run_programs", lambda m, ex, pairs, *a, **k: (
      pairs_run.extend(tuple(p.ids) for _, p in pairs), real(m, ex, pairs, *a, **k))[1])
  reused = build.build_menu(smollm2, task, questions, examples, [full, new_prog, old_prog], tmp_path / "b",
                            chunk_questions=4, info={"config": config}, reuse=earlier)
  assert sorted(set(pairs_run)) == [new_prog] and len(pairs_run) == len(questions)
  monkeypatch.setattr(program_eval, "run_programs", real)
  fresh = build.build_menu(smollm2, task, questions, examples, [full, new_prog, old_prog], tmp_path / "c",
                           chunk_questions=4, info={"config": config})
  for split in ("train",):
    a, b = reused.fit_view(split), fresh.fit_view(split)
    assert a.correct.tolist() == b.correct.tolist() and a.answer.tolist() == b.answer.tolist()
    np.testing.assert_allclose(a.gold_logprob, b.gold_logprob, atol=1e-4, equal_nan=True)
  assert lab.scoring_view(reused).correct.tolist() == lab.scoring_view(fresh).correct.tolist()

  other = {**config, "task": {"preset": "free_prefix"}}
  with pytest.raises(MenuFileError, match="menu.reuse: the earlier menu was made with task="):
    build.reusable_cells(earlier, other, questions, [full])

  # Its question features are lent too when the earlier menu holds every question with the same text.
  from polar_jax.menu import features
  vectors = np.arange(len(questions) * 3, dtype=np.float32).reshape(-1, 3)[::-1]
  features.save_features(tmp_path / "a", "minilm", [q.id for q in questions][::-1], vectors)
  got = features.ensure_features(tmp_path / "b", reused, names=("minilm",), reuse=(tmp_path / "a", earlier))
  assert got["minilm"].ids == tuple(q.id for q in questions)
  np.testing.assert_array_equal(got["minilm"].vectors, vectors[::-1])
  assert not features._reuse_table(tmp_path / "d", "minilm", changed, tmp_path / "a", earlier)


def test_reuse_refuses_a_menu_of_another_depth():
  earlier = synthetic(np.ones((2, 2)), ["train", "test"])  # a 6-layer menu
  with pytest.raises(MenuFileError, match="6-layer model, this one has 30 layers"):
    build.reusable_cells(earlier, {}, earlier.questions("train"), [tuple(range(30))])
