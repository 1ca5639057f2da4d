"""`python -m polar_jax.search run` reads the pipeline's config file and searches what the pipeline searches."""

import importlib.util
import json
import pathlib
import subprocess
import sys

from polar_jax import pipeline
from polar_jax.search import read_records

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Two questions (one train, one validation), two simulations each.
OVERRIDES = {"data.num_search": 1, "data.num_validation": 1, "search.num_simulations": 2}


def _search_command(*args):
  return [sys.executable, "-m", "polar_jax.search", "run", *args]


def _quick_config():
  spec = importlib.util.spec_from_file_location("config_default", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("quick")
  for key, value in OVERRIDES.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def test_run_searches_the_pipelines_questions_with_its_settings(tmp_path):
  out = tmp_path / "s.jsonl"
  res = subprocess.run(_search_command("--config=configs/default.py:quick", f"--out={out}",
                                       *(f"--config.{k}={v}" for k, v in OVERRIDES.items())),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(res.stdout.strip().splitlines()[-1])["written"] == 2
  config = _quick_config()
  records = read_records(out)
  assert [r.id for r in records] == [e.id for e in pipeline.load_splits(config).searched()]
  assert all(r.config == pipeline.search_config(config).record_config() for r in records)
  assert all(r.depth == 30 and r.simulations <= 2 for r in records)


def test_run_usage_errors():
  res = subprocess.run(_search_command("--config=configs/default.py:quick"), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert res.returncode != 0 and "Both --config and --out are required" in res.stderr
  res = subprocess.run(_search_command("--config=configs/default.py", "--out=x.jsonl", "--set=test"), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert res.returncode != 0 and "searched|train|validation" in res.stderr
