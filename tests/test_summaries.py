"""TensorBoard summaries: tensorboardX's files read back by TensorBoard's own reader; off without tensorboardX."""

import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

import polar_jax
from polar_jax import summaries
from polar_jax.records import SearchRecord

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(polar_jax.__file__)))


def read_events(logdir) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
  """({tag: [(step, value)]}, {tag: text}) as TensorBoard loads them from `logdir`."""
  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
  acc.Reload()
  scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
  texts = {t: acc.Tensors(t)[-1].tensor_proto.string_val[0].decode() for t in acc.Tags()["tensors"]}
  return scalars, texts


def test_scalars_and_text_load_in_tensorboard(tmp_path):
  writer = summaries.create_writer(tmp_path / "tb")
  assert isinstance(writer, summaries.TensorBoardWriter)
  writer.write_hparams({"depth": 8, "learning_rate": 3e-3, "encoder": "minilm"})
  writer.write_scalars(1, {"train/loss": 2.5, "train/skipped": None})
  writer.write_scalars(2, {"train/loss": 1.25, "train/nan": float("nan")})
  writer.write_text(2, {"notes/table": "| a | b |\n|---|---|\n| 1 | 2 |"})
  writer.close()
  scalars, texts = read_events(tmp_path / "tb")
  assert scalars["train/loss"] == [(1, 2.5), (2, 1.25)]
  assert scalars["hparams/depth"] == [(0, 8.0)] and "hparams/encoder" not in scalars
  assert "train/skipped" not in scalars and "train/nan" not in scalars
  assert "| encoder | minilm |" in texts["hparams/text_summary"]
  assert texts["notes/table/text_summary"].startswith("| a | b |")


def test_tags_are_safe_names():
  assert summaries.tag("evaluate arith_level1 (ood)", "pass@1", "shortgpt_4") == \
      "evaluate_arith_level1_ood/pass_1/shortgpt_4"


def test_without_tensorboardx_the_run_goes_on_and_says_so_once(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now raises ImportError
  monkeypatch.setattr(summaries, "_OFF_SAID", False)
  writers = [summaries.create_writer(tmp_path / f"tb{i}") for i in range(3)]
  for w in writers:
    assert isinstance(w, summaries.NullWriter)
    w.write_scalars(1, {"a": 1.0})
    w.write_hparams({"depth": 8})
    w.close()
  summaries.write_evaluation(tmp_path / "eval", {"rows": []})
  err = capsys.readouterr().err
  assert err.count("TensorBoard summaries are off") == 1 and ".[tensorboard]" in err
  assert not any(tmp_path.iterdir())


def test_writer_import_does_not_load_torch():
  """tensorboardX would import torch (installed here for the parity tests); the writer keeps it out."""
  code = ("import sys, tempfile\n"
          "from polar_jax import summaries\n"
          "w = summaries.create_writer(tempfile.mkdtemp())\n"
          "assert isinstance(w, summaries.TensorBoardWriter), type(w)\n"
          "print('torch' in sys.modules)\n")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "False"  # neither imported nor left blocked (a None entry would count)


def _record(i, valid, invalid, score):
  return SearchRecord(id=str(i), question=f"q{i}", depth=4, initial_score=score, valid=valid, invalid=invalid)


def test_search_scalars_continue_after_a_resume(tmp_path):
  full, short = (0, 1, 2, 3), (0, 1, 3)
  earlier = [_record(0, (full, short), ((0, 2, 3),), 1.0)]
  scalars = summaries.SearchScalars(tmp_path, earlier)
  scalars.record(_record(1, (), ((0, 1), (1, 2, 3)), 0.0), program_runs=10, seconds=2.0)
  scalars.record(_record(2, (short,), (), 0.0), program_runs=30, seconds=4.0)
  scalars.finish({"base_accuracy": 1 / 3, "oracle_accuracy": 2 / 3})
  got, _ = read_events(tmp_path)
  approx = lambda points: [(step, pytest.approx(value)) for step, value in points]  # stored as float32
  assert got["search/questions_with_valid_program"] == approx([(2, 0.5), (3, 2 / 3)])
  assert got["search/valid_program_share"] == approx([(2, 0.4), (3, 0.5)])  # 2/5 then 3/6 programs valid
  assert got["search/evaluations_per_question"] == approx([(2, 2.5), (3, 2.0)])  # 3, 2, 1 programs scored
  assert got["search/evaluations_per_s"] == approx([(2, 5.0), (3, 7.5)])
  assert got["search/oracle_accuracy"] == approx([(3, 2 / 3)])


def test_evaluation_scalars_per_method(tmp_path):
  rows = [{"method": "full_depth_greedy", "test_set": "arith_level1", "level": "all", "kind": "deployable",
           "pass@1": 0.5, "layers_per_token": 30.0, "seconds_per_question": 0.25},
          {"method": "full_depth_greedy", "test_set": "arith_level1", "level": 1, "kind": "deployable",
           "pass@1": 0.9, "layers_per_token": 30.0, "seconds_per_question": 0.25},
          {"method": "search_oracle", "test_set": "arith_level1 (ood)", "level": "all", "kind": "oracle",
           "pass@1": None, "oracle": 0.75, "layers_per_token": None, "seconds_per_question": None}]
  summaries.write_evaluation(tmp_path, {"rows": rows}, "# Evaluation results\n")
  got, texts = read_events(tmp_path)
  assert got == {"evaluate_arith_level1/pass_at_1/full_depth_greedy": [(0, 0.5)],
                 "evaluate_arith_level1/layers_per_token/full_depth_greedy": [(0, 30.0)],
                 "evaluate_arith_level1/seconds_per_question/full_depth_greedy": [(0, 0.25)],
                 "evaluate_arith_level1_ood/pass_at_1/search_oracle": [(0, 0.75)]}
  assert texts["evaluate/results/text_summary"] == "# Evaluation results\n"
