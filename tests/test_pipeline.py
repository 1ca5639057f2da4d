"""The end-to-end pipeline: configs, the quick run (killed during the search, then resumed), bad input, launch."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from polar_jax import pipeline

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
VARIANTS = {"default.py": ["", "quick", "paper_prompt", "quick,paper_prompt"]}
PAPER_VARIANTS = ["", "tpu", "gpu", "runlocal"]


def load_config(path: pathlib.Path, arg: str = ""):
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main_command(*args):
  return [sys.executable, "-m", "polar_jax.main", *args]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_load_and_validate(path):
  for arg in VARIANTS.get(path.name, PAPER_VARIANTS):
    config = load_config(path, arg)
    pipeline.validate_config(config)
    json.dumps(pipeline.config_identity(config))
  with pytest.raises(pipeline.ConfigError, match="Unknown config argument"):
    load_config(path, "no_such_variant")


@pytest.mark.parametrize("name", ["llama3_2_3b", "qwen2_5_3b", "qwen3_8b"])
def test_paper_setup_traces_at_full_size_without_weights(name):
  """The paper's model and predictor, abstractly: the model's params and forward, the predictor's params."""
  from polar_jax.models import presets, transformer
  from polar_jax.predictor import PolarPredictor, PredictorConfig
  config = load_config(ROOT / "configs" / f"{name}.py")
  cfg = presets.paper_config(config.model.name, dtype=config.model.dtype)
  shapes = jax.eval_shape(lambda key: transformer.init_params(cfg, key), jax.random.key(0))
  assert transformer.count_params(shapes) > 3e9
  logits = jax.eval_shape(lambda p, t: transformer.forward(p, cfg, t), shapes, jax.ShapeDtypeStruct((2, 64), jnp.int32))
  assert logits.shape == (2, 64, cfg.vocab_size)
  predictor_cfg = PredictorConfig(depth=cfg.num_layers, **config.predictor.predictor)
  feats = jax.ShapeDtypeStruct((2, 16, 1024), jnp.float32)
  variables = jax.eval_shape(lambda k, f, m: PolarPredictor(predictor_cfg).init(k, f, m), jax.random.key(0), feats,
                             jax.ShapeDtypeStruct((2, 16), jnp.bool_))
  n = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert 2.0e6 < n < 2.3e6  # the paper's ~2.11M with its 1024-wide encoder (depends on the depth)


def _records(path: pathlib.Path) -> list[str]:
  return path.read_text().splitlines() if path.exists() else []


def test_quick_pipeline_killed_during_search_then_resumed(tmp_path):
  workdir = tmp_path / "run"
  args = ["--config=configs/default.py:quick", f"--workdir={workdir}", "--config.search.max_active=2"]
  records_path = workdir / "search" / "records.jsonl"
  first = subprocess.Popen(main_command(*args, "--config.stages=convert,search"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and first.poll() is None and not _records(records_path):
    time.sleep(0.5)
  first.kill()
  first.wait()
  before = _records(records_path)
  assert before, "the search wrote nothing before the kill"
  total = 8 + 4  # quick: 8 train + 4 validation questions are searched
  assert len(before) < total, "the kill came too late to test resuming"

  done = subprocess.run(main_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  after = _records(records_path)
  assert after[:len(before)] == before  # finished questions were not redone or rewritten
  ids = [json.loads(line)["id"] for line in after]
  assert len(ids) == len(set(ids)) == total
  assert json.loads((workdir / "search" / "done.json").read_text())["skipped_existing"] == len(before)
  results = json.loads((workdir / "results.json").read_text())
  assert results
  table = (workdir / "results.md").read_text()
  for method in ("Full depth, greedy", "PoLar", "ShortGPT", "Random programs", "Search oracle"):
    assert method in table
  for plot in ("tradeoff.png", "layer_usage.png"):
    assert (workdir / "evaluate" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (workdir / "search" / "layer_usage.png").exists()
  assert "| method |" in done.stdout  # the final table is printed
  # TensorBoard: the search's curve goes on from where the killed run stopped; every method's pass@1.
  from tensorboard.backend.event_processing import event_accumulator
  search = event_accumulator.EventAccumulator(str(workdir / "search" / "tensorboard"))
  search.Reload()
  steps = [e.step for e in search.Scalars("search/questions_with_valid_program")]
  assert steps == list(range(len(before) + 1, total + 1))
  assert search.Scalars("search/evaluations_per_s")[-1].value > 0
  evaluate = event_accumulator.EventAccumulator(str(workdir / "evaluate" / "tensorboard"))
  evaluate.Reload()
  full = next(r for r in results["rows"] if r["method"] == "full_depth_greedy" and r["level"] == "all")
  [point] = evaluate.Scalars(f"evaluate_{full['test_set']}/pass_at_1/full_depth_greedy")
  assert point.value == pytest.approx(full["pass@1"])
  assert event_accumulator.EventAccumulator(str(workdir / "predictor" / "tensorboard")).Reload().Scalars(
      "train/loss")


def test_workdir_of_another_config_is_refused(tmp_path):
  config = load_config(ROOT / "configs" / "default.py", "quick")
  pipeline.prepare_workdir(config, tmp_path)
  (tmp_path / "search").mkdir()
  (tmp_path / "search" / "records.jsonl").write_text("{}\n")
  config.search.num_simulations = 99
  with pytest.raises(pipeline.WorkdirMismatchError, match=r"search.num_simulations: 8 there, 99 now"):
    pipeline.prepare_workdir(config, tmp_path)
  config.stages = "convert"  # volatile fields do not matter
  config.overwrite = True
  pipeline.prepare_workdir(config, tmp_path)
  assert not (tmp_path / "search").exists()
  assert json.loads((tmp_path / "config.json").read_text())["search"]["num_simulations"] == 99


def test_unknown_config_field_is_an_error(tmp_path):
  res = subprocess.run(main_command("--config=configs/default.py:quick", f"--workdir={tmp_path}",
                                    "--config.search.num_simulation=3"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert res.returncode != 0
  assert "num_simulation" in res.stderr


def test_bad_values_fail_before_the_model_loads(tmp_path):
  res = subprocess.run(main_command("--config=configs/default.py:quick", f"--workdir={tmp_path}",
                                    "--config.data.datasets=arith_level99"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert res.returncode == 2
  assert "unknown dataset(s) ['arith_level99']" in res.stderr
  assert "Traceback" not in res.stderr


def test_model_path_without_weights(tmp_path):
  from polar_jax.models.presets import PAPER_MODELS
  snapshot = tmp_path / "snapshot"
  snapshot.mkdir()
  (snapshot / "config.json").write_text(json.dumps(PAPER_MODELS["Qwen3-8B"]))
  res = subprocess.run(main_command("--config=configs/qwen3_8b.py:runlocal", f"--config.model.path={snapshot}",
                                    f"--workdir={tmp_path / 'run'}"), cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 2
  assert f"No weights in {snapshot}" in res.stderr
  assert "Traceback" not in res.stderr


def test_sweep_dry_run_and_local_runner(tmp_path):
  sys.path.insert(0, str(ROOT))
  from launch import local, sweeps
  points = sweeps.get_sweep("length_penalty")
  assert [p.overrides for p in points][0] == (("search.length_penalty", 0.0),)
  assert local.run_points(points, str(tmp_path), 1, dry_run=True) == {p.name: 0 for p in points}
  with pytest.raises(KeyError, match="model_root"):
    sweeps.get_sweep("paper_models")
  dry = subprocess.run([sys.executable, "-m", "launch.xm_launch", "--sweep=paper_models", "--param=model_root=/ckpt",
                        "--dry_run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert dry.returncode == 0 and "--config.model.path=/ckpt/Qwen3-8B" in dry.stdout
  missing = subprocess.run([sys.executable, "-m", "launch.local", "--sweep=paper_models", "--dry_run"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
  assert missing.returncode != 0 and "--param model_root=" in missing.stderr and "Traceback" not in missing.stderr
  codes = local.run_points(sweeps.get_sweep("quick_smoke"), str(tmp_path), parallel=2, dry_run=False)
  assert codes == {"smoke_stages-convert_seed-0": 0, "smoke_stages-convert_seed-1": 0}
  for name in codes:
    assert json.loads((tmp_path / name / "convert" / "done.json").read_text())["depth"] == 30
    assert (tmp_path / name / "log.txt").read_text().startswith(f"# {name}, started ")
