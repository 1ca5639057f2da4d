"""The end-to-end pipeline: configs, the quick run (killed during the search, then resumed), kills in the menu and
the selection methods, bad input, launch."""

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from polar_jax import pipeline
from conftest import QUICK_ARGS

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


def test_quick_pipeline_killed_during_search_then_resumed(quick_run):
  """The session's quick run (`conftest.quick_run`: killed during the search, then resumed with the same command)."""
  workdir, before, done = quick_run.workdir, quick_run.before, quick_run.done
  records_path = workdir / "search" / "records.jsonl"
  assert before, "the search wrote nothing before the kill"
  total = 8 + 4  # quick: 8 train + 4 validation questions are searched
  assert len(before) < total, "the kill came too late to test resuming"
  assert done.returncode == 0, done.stderr[-3000:]
  # A quiet console: one line for preparing the dataset, none of TFDS's download / shuffle output or orbax's
  # read-only warnings, no tracebacks.
  consoles = quick_run.first_console + done.stdout + done.stderr
  assert "[polar_jax] preparing arith_level11 (once" in consoles
  for noise in ("Downloading and preparing", "Unknown size", "Shuffling", "Generating", "read only", "read_only",
                "Traceback", "WARNING"):
    assert noise not in consoles, (noise, consoles[-3000:])
  after = _records(records_path)
  assert after[:len(before)] == before  # finished questions were not redone or rewritten
  ids = [json.loads(line)["id"] for line in after]
  assert len(ids) == len(set(ids)) == total
  marker = json.loads((workdir / "search" / "done.json").read_text())
  assert marker["skipped_existing"] == len(before)
  # The whole run's counts, the killed process's records included.
  assert marker["evaluations"] == sum(json.loads(line)["evaluations"] for line in after) > \
      marker["evaluations_this_process"]
  assert marker["seconds"] == pytest.approx(sum(json.loads(line)["seconds"] for line in after), abs=0.01)
  assert all(json.loads(line)["config"]["max_active"] == 2 for line in after)
  results = json.loads((workdir / "results.json").read_text())
  assert results
  table = (workdir / "results.md").read_text()
  for method in ("Full depth, greedy", "PoLar", "ShortGPT", "Random programs", "Search oracle",
                 "trained on the menu's dense supervision"):
    assert method in table
  for plot in ("tradeoff.png", "layer_usage.png"):
    assert (workdir / "evaluate" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (workdir / "search" / "layer_usage.png").exists()
  assert "| method |" in done.stdout  # the final table is printed
  # The console fits on one screen: a line per stage step and per method (bars of runs clear themselves), the
  # compact table, and where the full report is (not the report itself).
  # (text=True turns each bar refresh's carriage return into a line break: a bar counts once, by its name.)
  lines = done.stdout.splitlines()
  bars = {line.split(":")[0] for line in lines if "%|" in line}
  shown = [line for line in lines if line.strip() and "%|" not in line]
  assert bars == {"search", "menu chunks", "train"}, bars
  assert len(shown) + len(bars) <= 70, done.stdout
  assert "Full report" in done.stdout and "## " not in done.stdout
  assert "run_programs" not in consoles  # every bar says what it runs
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


def _snapshot(root: pathlib.Path) -> dict:
  return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(root.rglob("*"))}


def _can(*probe) -> bool:
  try:
    return subprocess.run(list(probe), capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


def _read_only(path: pathlib.Path) -> list:
  """A command prefix that runs the rest with `path` a read-only bind mount (a user and mount namespace); it
  exits 8 when the mount cannot be made and 9 when `path` is still writable."""
  script = (f'mount --bind "{path}" "{path}" && mount -o remount,bind,ro "{path}" "{path}" || exit 8; '
            f'touch "{path}/.probe" 2>/dev/null && exit 9; exec "$@"')
  return ["unshare", "-rm", "sh", "-c", script, "sh"]


def _can_mount_read_only(tmp: pathlib.Path) -> bool:
  """Whether this machine allows `_read_only` (the whole sequence, not only the namespace: some hosts allow the
  namespace and refuse the mount)."""
  probe = tmp / "mount_probe"
  probe.mkdir(exist_ok=True)
  return _can(*_read_only(probe), "true")


def test_a_finished_workdir_is_read_on_read_only_storage(quick_run, tmp_path):
  """Rerunning the finished quick workdir reads it and writes nothing. Where this machine allows a user and mount
  namespace (CI's does), the workdir is a read-only bind mount for the rerun, so a write would fail for real."""
  workdir = quick_run.workdir
  before = _snapshot(workdir)
  command = main_command(*QUICK_ARGS, f"--workdir={workdir}")
  env = {**os.environ, "POLAR_JAX_CACHE": str(workdir.parent / "cache")}  # the quick run's converted model
  read_only = _can_mount_read_only(tmp_path)
  if read_only:
    command = _read_only(workdir) + command
  res = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, (read_only, res.stderr[-3000:])
  for stage in ("search", "menu", "train", "evaluate"):
    assert f"{stage}: finished earlier, skipped" in res.stdout
  assert "| method |" in res.stdout and "Traceback" not in res.stderr
  assert _snapshot(workdir) == before  # not a byte or a modification time changed, no file added


def test_workdirs_under_read_only_or_unwritable_directories_are_one_line(tmp_path):
  """A new workdir where nothing can be written: one line naming the directory and the cause, exit 2. Root
  ignores permission bits, so as root the unwritable case drops the capabilities that let it (setpriv)."""
  cases = []
  if _can_mount_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cases.append((_read_only(ro), ro, "Read-only file system"))
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o555)
  drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
  if not drop or _can(*drop, "true"):
    cases.append((drop, locked, "Permission denied"))
  assert cases, "neither a read-only mount nor an unwritable directory could be made here"
  try:
    for wrapper, parent, cause in cases:
      res = subprocess.run(wrapper + main_command("--config=configs/default.py:quick", f"--workdir={parent / 'w'}"),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
      assert res.returncode == 2, (cause, res.stderr[-2000:])
      assert res.stderr.count("\n") == 1 and f"Cannot create the workdir {parent / 'w'}" in res.stderr, res.stderr
      assert cause in res.stderr and "choose a --workdir" in res.stderr, res.stderr
      assert not (parent / "w").exists()
  finally:
    locked.chmod(0o755)


def _fake_finished_workdir(config, root):
  """A workdir whose stages all have outputs and done markers (no model needed)."""
  pipeline.prepare_workdir(config, root)
  for d in ("convert", "search", "menu", "train", "predictor", "evaluate", "evaluate/runs/t"):
    (root / d).mkdir(parents=True, exist_ok=True)
  for stage in ("convert", "search", "menu", "train", "evaluate"):
    (root / stage / "done.json").write_text("{}")
  (root / "search" / "records.jsonl").write_text("{}\n")
  (root / "evaluate" / "runs" / "t" / "full_depth_greedy.json").write_text("{}")
  (root / "results.json").write_text("{}")


def test_a_search_change_is_refused_and_overwrite_keeps_the_earlier_stages(tmp_path):
  config = load_config(ROOT / "configs" / "default.py", "quick")
  _fake_finished_workdir(config, tmp_path)
  config.search.num_simulations = 99
  with pytest.raises(pipeline.WorkdirMismatchError,
                     match=r"search.num_simulations: 8 there, 99 now.*overwrite=True to delete the search and menu "
                           r"and train and evaluate outputs and rerun them \(keeping convert\)"):
    pipeline.prepare_workdir(config, tmp_path)
  config.stages = "convert"  # operational fields do not matter
  config.overwrite = True
  notes = []
  pipeline.prepare_workdir(config, tmp_path, notes)
  assert not (tmp_path / "search").exists() and not (tmp_path / "predictor").exists()
  assert (tmp_path / "convert" / "done.json").exists()  # the model's conversion is kept
  assert json.loads((tmp_path / "config.json").read_text())["search"]["num_simulations"] == 99
  assert [n.split(":")[0] for n in notes] == ["search", "menu", "train", "evaluate"]


def test_an_evaluation_change_reruns_only_the_evaluation(tmp_path):
  config = load_config(ROOT / "configs" / "default.py", "quick")
  _fake_finished_workdir(config, tmp_path)
  config.evaluate.sampling_seed = 7
  notes = []
  pipeline.prepare_workdir(config, tmp_path, notes)
  assert not (tmp_path / "evaluate").exists() and not (tmp_path / "results.json").exists()
  for stage in ("convert", "search", "menu", "train"):
    assert (tmp_path / stage / "done.json").exists()
  assert notes == ["evaluate: its config changed (evaluate.sampling_seed: 0 there, 7 now); its outputs were "
                   "removed and it reruns"]
  # Another method list reruns the evaluation and keeps its saved runs.
  (tmp_path / "evaluate" / "runs" / "t").mkdir(parents=True)
  (tmp_path / "evaluate" / "done.json").write_text("{}")
  (tmp_path / "evaluate" / "runs" / "t" / "full_depth_greedy.json").write_text("{}")
  config.evaluate.methods = "full_depth,polar"
  notes = []
  pipeline.prepare_workdir(config, tmp_path, notes)
  assert not (tmp_path / "evaluate" / "done.json").exists()
  assert (tmp_path / "evaluate" / "runs" / "t" / "full_depth_greedy.json").exists()
  assert len(notes) == 1 and notes[0].startswith("evaluate: evaluate.methods:") and "reuses its saved work" in notes[0]
  # A predictor change reruns training and the evaluation, not the search or the menu.
  config.predictor.train.learning_rate = 1e-3
  pipeline.prepare_workdir(config, tmp_path)
  assert not (tmp_path / "predictor").exists() and not (tmp_path / "train").exists()
  assert (tmp_path / "menu" / "done.json").exists() and (tmp_path / "search" / "records.jsonl").exists()


def test_operational_options_and_failed_starts_block_nothing(tmp_path):
  config = load_config(ROOT / "configs" / "default.py", "quick")
  _fake_finished_workdir(config, tmp_path)
  before = (tmp_path / "config.json").read_text()
  config.search.repair = True  # what the error for a half-written records line tells the user to pass
  config.evaluate.plots = False
  config.predictor.checkpoint.every_steps = 5
  notes = []
  pipeline.prepare_workdir(config, tmp_path, notes)
  assert notes == [] and (tmp_path / "config.json").read_text() == before  # nothing rewritten, nothing cleared
  assert (tmp_path / "evaluate" / "done.json").exists()
  # A start that failed before any stage wrote anything leaves a config.json that blocks nothing.
  fresh = tmp_path / "fresh"
  pipeline.prepare_workdir(config, fresh)
  config.search.num_simulations = 3
  pipeline.prepare_workdir(config, fresh)
  assert json.loads((fresh / "config.json").read_text())["search"]["num_simulations"] == 3


def test_unwritable_workdirs_are_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  config = load_config(ROOT / "configs" / "default.py", "quick")
  with pytest.raises(pipeline.WorkdirError, match=r"Cannot create the workdir .*file/run.*choose a --workdir"):
    pipeline.prepare_workdir(config, tmp_path / "file" / "run")
  res = subprocess.run(main_command("--config=configs/default.py:quick", f"--workdir={tmp_path / 'file' / 'run'}"),
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Cannot create the workdir" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--config=configs/default.py:quick", "--config.search.num_simulation=3"],
     "polar_jax: error: --config.search.num_simulation: the config has no field 'num_simulation' (did you mean "
     "'num_simulations'?); python -m polar_jax.main --helpfull lists every --config.* field."),
    (["--config=configs/default.py:quick", "--config.no_such_key=1"],
     "polar_jax: error: --config.no_such_key: the config has no field 'no_such_key'"),
    (["--config=configs/defualt.py"], "polar_jax: error: --config=configs/defualt.py: no such config file; give one "
                                      "of configs/*.py"),
    (["--config=configs/default.py:quik"], "polar_jax: error: --config=configs/default.py:quik: Unknown config "
                                           "argument 'quik' (did you mean 'quick'?)"),
    (["--config=configs/default.py:quick", "--config.search.num_simulations=many"],
     "--config.search.num_simulations=many: invalid literal for int() with base 10: 'many'; give the field a value "
     "of its type (python -m polar_jax.main --helpfull shows each field's default)."),
    (["--config=configs/default.py:quick", "--workdr=/tmp/x"], "Unknown command line flag 'workdr'"),
    (["--config=configs/qwen2_5_3b.py"], "config.model.name 'Qwen2.5-3B-Instruct' is not embedded here (embedded: "
                                         "gemma3-270m, smollm2-135m-instruct): put its weights on this machine and "
                                         "set --config.model.path=/path/to/Qwen2.5-3B-Instruct"),
], ids=["override typo", "unknown key", "config path", "variant", "type", "flag typo", "paper config"])
def test_bad_command_lines_are_one_line(tmp_path, args, message):
  res = subprocess.run(main_command(*args, f"--workdir={tmp_path / 'run'}"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert res.returncode == 2, res.stderr[-2000:]
  assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr[-2000:]
  assert not (tmp_path / "run").exists()  # nothing was written


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


# A small quick run for the kill test of the menu and the selection methods: 6 searched questions (4 train), a menu
# of 6 train + 3 validation + 4 test questions in 3 chunks, and only the selection methods in the evaluation.
KILL_OVERRIDES = {"data.num_search": 4, "data.num_validation": 2, "search.num_simulations": 4, "data.num_test": 4,
                  "menu.num_train": 6, "menu.num_validation": 3, "menu.chunk_questions": 5,
                  "evaluate.methods": "selection"}


def _kill_when(command, log_path: pathlib.Path, ready, what: str) -> None:
  """Runs the command until `ready()` holds, then SIGKILLs it; fails when the run ended by itself first (the
  kill would then test nothing) or `what` never came."""
  with log_path.open("w") as log:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 600
  while proc.poll() is None and time.time() < deadline and not ready():
    time.sleep(0.05)
  if proc.poll() is None:
    os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, (f"the run ended (rc {proc.returncode}) before {what}; nothing was "
                                              "killed", log_path.read_text()[-3000:])
  assert ready(), (f"no {what} in 600s", log_path.read_text()[-3000:])


def _files(paths) -> dict[str, tuple[bytes, int]]:
  return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def test_menu_and_selection_methods_killed_then_resumed(tmp_path):
  """kill -9 of the menu stage after its first chunk, and of the evaluation during the selection methods: each
  rerun keeps what was finished (the same bytes and mtimes) and ends where an uninterrupted run does (the menu
  built in one go in this process; the selectors fitted and scored on the menu offline, the lab, which the
  pipeline's selection methods equal: tests/test_pipeline_selection.py)."""
  import numpy as np
  from polar_jax.evaluation.outcomes import MethodRun
  from polar_jax.menu import build, features, select
  from polar_jax.menu.lab import scoring_view
  from polar_jax.menu.matrix import MenuMatrix
  from polar_jax.search import read_records

  workdir = tmp_path / "run"
  args = ["--config=configs/default.py:quick", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in KILL_OVERRIDES.items())]
  menu_dir, chunks, runs = workdir / "menu", workdir / "menu" / "chunks", workdir / "evaluate" / "runs"
  n_chunks = 3  # 13 questions in chunks of 5

  # The search, then the menu, killed once its first chunk is written.
  _kill_when(main_command(*args, "--config.stages=convert,search,menu"), tmp_path / "menu.log",
             lambda: build.chunk_path(menu_dir, 0).exists(), "the menu's first chunk")
  assert (workdir / "search" / "done.json").exists()
  written = _files(p for p in sorted(chunks.iterdir()) if build.CHUNK_NAME.fullmatch(p.name))
  assert 1 <= len(written) < n_chunks and not (menu_dir / "done.json").exists(), \
      f"the kill came too late to test resuming ({len(written)} of {n_chunks} chunks)"
  # What a kill during the next chunk's write leaves: its temporary file, torn.
  torn = chunks / f"{len(written):05d}.npz.tmp.npz"
  torn.write_bytes(next(iter(written.values()))[0][:500])

  # The menu resumes and finishes; the evaluation is killed once a selection method's run is saved.
  _kill_when(main_command(*args, "--config.stages=convert,search,menu,evaluate"), tmp_path / "evaluate.log",
             lambda: any(runs.glob("*/*.json")), "a saved selection method")
  assert (menu_dir / "done.json").exists() and not torn.exists()
  assert _files(chunks / name for name in written) == written  # the chunks written before the kill were kept
  assert sorted(p.name for p in chunks.iterdir()) == [build.chunk_path(menu_dir, c).name for c in range(n_chunks)]
  [test_dir] = runs.iterdir()
  saved = _files(sorted(test_dir.glob("*.json")))
  n_methods = 10  # vote and confidence at k = 3, 5; per feature set (minilm, llm) two selectors and the gate
  assert 1 <= len(saved) < n_methods and not (workdir / "evaluate" / "done.json").exists(), \
      f"the kill came too late to test resuming ({len(saved)} of {n_methods} selection methods saved)"

  done = subprocess.run(main_command(*args, "--config.stages=convert,search,menu,evaluate"), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert _files(test_dir / name for name in saved) == saved  # finished methods were not redone
  final = {p.name: MethodRun.load(p) for p in sorted(test_dir.glob("*.json"))}
  assert len(final) == n_methods
  assert any(j != 0 for run in final.values() for j in run.info["program_indices"])  # not all full depth
  computed = set(re.findall(r"evaluate: (\S+) on ", done.stdout))  # what the rerun ran
  assert computed == {run.method for name, run in final.items() if name not in saved}

  # The menu: equal to one built in one go here on the same questions and programs (the same chunks and batches).
  config = load_config(ROOT / "configs" / "default.py", "quick")
  for key, value in KILL_OVERRIDES.items():
    section, field = key.split(".")
    config[section][field] = value
  opts = pipeline.validate_config(config)
  model, splits = pipeline.load_model_for(opts), pipeline.load_splits(opts)
  programs, _ = build.rank_programs(read_records(workdir / "search" / "records.jsonl"), model.depth,
                                    splits.ids("search"), opts.menu.top_k)
  assert len(programs) > 1  # the selectors have a choice
  questions, examples = build.menu_questions(pipeline.menu_parts(opts, splits))
  task = dataclasses.replace(pipeline.task_config(opts), reward=opts.menu.reward)
  build.build_menu(model, task, questions, examples, programs, tmp_path / "reference",
                   chunk_questions=opts.menu.chunk_questions, max_batch=opts.menu.max_batch, answers=opts.menu.answers)
  matrix = MenuMatrix.load(menu_dir)
  assert list(matrix.programs) == [tuple(p) for p in programs]
  with np.load(menu_dir / "matrix.npz") as got, np.load(tmp_path / "reference" / "matrix.npz") as want:
    assert sorted(got.files) == sorted(want.files)
    for key in got.files:
      if key.endswith("logprob"):  # the same batches: equal here, a tolerance for BLAS paths that vary by thread
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, equal_nan=True, err_msg=key)
      else:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

  # The selection methods: each one's choices and verdicts equal the lab's on the same menu and features.
  tables = features.load_features(menu_dir, matrix)
  train, validation = matrix.fit_view("train"), matrix.fit_view("validation")
  selectors = [select.VoteSelector(k) for k in (3, 5)] + [select.ConfidenceSelector(k) for k in (3, 5)]
  for table in tables.values():
    selectors += [select.MenuSelector(table), select.MenuSelector(table, max_length=matrix.depth),
                  select.GatedFallback(select.MenuSelector(table, max_length=matrix.depth), table)]
  resumed = {run.method: run for run in final.values()}
  assert sorted(resumed) == sorted(s.name for s in selectors)
  test_questions, test = matrix.questions("test"), scoring_view(matrix)
  answers = matrix.answers_view("test")
  lab_table = json.loads((menu_dir / "lab.json").read_text())["methods"]
  rows = {r["method"]: r for r in json.loads((workdir / "results.json").read_text())["rows"] if r["level"] == "all"}
  for selector in selectors:
    selector.fit(train, validation)
    choice = selector.choose(test_questions, answers)
    run = resumed[selector.name]
    assert [o.id for o in run.outcomes] == [q.id for q in test_questions]
    assert run.info["program_indices"] == choice.tolist(), selector.name
    for i, outcome in enumerate(run.outcomes):
      [cand] = outcome.candidates
      assert cand.program == matrix.programs[choice[i]]
      assert cand.correct == bool(test.correct[i, choice[i]]), (selector.name, outcome.id)
      assert (cand.answer or "")[:24] == answers.run(int(choice[i]))["answer"][i], (selector.name, outcome.id)
    assert rows[selector.name]["pass@1"] == pytest.approx(lab_table[selector.name]["pass1"])
