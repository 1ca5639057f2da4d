"""TFDS builders (array_record, no TensorFlow) and `load_split`'s cache, limits, local data and errors."""

import json
import sys

import pytest
import tensorflow_datasets as tfds

from polar_jax.data import catalog, ladder, loading, sources, tfds_builders


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def test_builder_round_trip_through_data_source_without_tensorflow(data_dir):
  builder = tfds_builders.make_builder("mawps_addsub", data_dir=data_dir)
  builder.download_and_prepare()
  assert list((data_dir / "polar_math" / "mawps_addsub" / tfds_builders.VERSION.split()[0]).glob("*.array_record-*"))
  source = tfds.data_source("polar_math/mawps_addsub", data_dir=str(data_dir))
  assert set(source) == {"test"} and len(source["test"]) == 395
  examples = [tfds_builders.decode_record(source["test"][i]) for i in range(len(source["test"]))]
  assert examples == sources.read_source("mawps_addsub", "test")  # Same content, same order.
  assert "tensorflow" not in sys.modules


def test_load_split_limit_is_a_nested_seeded_sample(data_dir):
  full = loading.load_split("arith_level1", "test", data_dir=data_dir)
  assert full == ladder.ladder_splits(1)["test"]
  small = loading.load_split("arith_level1", "test", limit=5, data_dir=data_dir)
  large = loading.load_split("arith_level1", "test", limit=50, data_dir=data_dir)
  assert len(small) == 5 and large[:5] == small
  assert loading.load_split("arith_level1", "test", limit=5, data_dir=data_dir) == small
  assert loading.load_split("arith_level1", "test", limit=5000, data_dir=data_dir) == full  # Whole split.
  other = loading.load_split("arith_level1", "test", limit=5, seed=1, data_dir=data_dir)
  assert other != small
  assert set(e.question for e in other) <= set(e.question for e in ladder.ladder_splits(1, seed=1)["test"])
  assert (data_dir / "polar_arith_ladder" / "level1_seed1").is_dir()
  with pytest.raises(ValueError, match="limit must be a positive int"):
    loading.load_split("arith_level1", "test", limit=0, data_dir=data_dir)


def test_load_split_reads_the_cache_without_preparing_again(data_dir, monkeypatch):
  loading.load_split("mawps_singleop", "test", data_dir=data_dir)
  monkeypatch.setattr(catalog, "read_split", lambda *a, **k: pytest.fail("prepared again"))
  assert len(loading.load_split("mawps_singleop", "test", data_dir=data_dir)) == 562


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_own_jsonl_through_the_same_builder(tmp_path, data_dir):
  own = tmp_path / "own"
  own.mkdir()
  _write_jsonl(own / "train.jsonl", [{"question": f"What is {i} + 1?", "answer": i + 1} for i in range(4)])
  _write_jsonl(own / "test.jsonl", [{"question": "Which is prime?", "options": ["4", "7"], "answer": "B"}])
  assert catalog.available_splits("jsonl", own) == ("train", "test")
  train = loading.load_split("jsonl", "train", manual_dir=own, data_dir=data_dir / "own")
  assert [e.answer for e in train] == ["1", "2", "3", "4"] and train[0].id == "jsonl/train/0"
  test = loading.load_split("jsonl", "test", manual_dir=own, data_dir=data_dir / "own")
  assert test[0].choices == ("4", "7") and test[0].answer == "B"
  with pytest.raises(ValueError, match=r"no split 'validation'; valid splits: \['train', 'test'\]"):
    loading.load_split("jsonl", "validation", manual_dir=own)
  with pytest.raises(ValueError, match="needs manual_dir|pass manual_dir"):
    loading.load_split("jsonl", "train")


def test_manual_copy_of_a_shipped_dataset(tmp_path):
  copy = tmp_path / "copy"
  (copy / "svamp").mkdir(parents=True)
  _write_jsonl(copy / "svamp" / "test.jsonl", [
      {"Body": "Tom has 3 apples", "Question": "How many apples?", "Answer": 3.0},
      {"Body": "Ann has 2 pears.", "Question": "How many pears?", "Answer": 2.0}])
  rows = loading.load_split("svamp", "test", manual_dir=copy, data_dir=tmp_path / "tfds")
  assert [e.question for e in rows] == ["Tom has 3 apples. How many apples?", "Ann has 2 pears. How many pears?"]
  with pytest.raises(FileNotFoundError, match="missing.*gsm8k/train.jsonl"):
    loading.load_split("gsm8k", "test", manual_dir=copy)


def test_bad_files_fail_clearly_through_tfds(tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "test.jsonl").write_text('{"question": "1+1?", "answer": 2}\n{"question": oops}\n')
  with pytest.raises(sources.DataFormatError, match=r"test.jsonl:2: not valid JSON"):
    loading.load_split("jsonl", "test", manual_dir=bad, data_dir=tmp_path / "tfds")
  (bad / "test.jsonl").write_text("\n")
  with pytest.raises(sources.DataFormatError, match="empty"):
    loading.load_split("jsonl", "test", manual_dir=bad, data_dir=tmp_path / "tfds2")


def test_unknown_names(data_dir):
  with pytest.raises(ValueError, match="Unknown dataset 'math501'. Valid names: gsm8k, math, math500"):
    loading.load_split("math501", "test", data_dir=data_dir)
  with pytest.raises(ValueError, match=r"no split 'dev'; valid splits: \['train', 'validation', 'test'\]"):
    loading.load_split("math_level2", "dev", data_dir=data_dir)
  assert tfds_builders.tfds_name("arith_level3", seed=2) == "polar_arith_ladder/level3_seed2"
  assert tfds_builders.tfds_name("gsm8k", seed=2) == "polar_math/gsm8k"  # Shipped data ignores the seed.


def test_manual_data_never_shadows_the_installed_data(tmp_path):
  copy = tmp_path / "copy"
  (copy / "svamp").mkdir(parents=True)
  _write_jsonl(copy / "svamp" / "test.jsonl", [{"Body": "A.", "Question": "B?", "Answer": 1.0}])
  shared = tmp_path / "tfds"
  assert len(loading.load_split("svamp", "test", manual_dir=copy, data_dir=shared)) == 1
  assert len(loading.load_split("svamp", "test", data_dir=shared)) == 1000
  _write_jsonl(copy / "svamp" / "test.jsonl", [{"Body": "A.", "Question": "B?", "Answer": 1.0}] * 2)
  assert len(loading.load_split("svamp", "test", manual_dir=copy, data_dir=shared)) == 2  # Edited: re-prepared.


def test_draw_few_shot_is_deterministic_and_from_train(data_dir):
  from polar_jax.data import prompts  # pylint: disable=import-outside-toplevel
  shots = prompts.draw_few_shot("arith_level1", 3, data_dir=data_dir)
  assert len(shots) == 4 and shots == prompts.draw_few_shot("arith_level1", 3, data_dir=data_dir)
  train = {e.id for e in ladder.ladder_splits(1)["train"]}
  assert all(e.id in train for e in shots)
  assert prompts.draw_few_shot("arith_level1", 0) == []


def test_preparing_a_dataset_says_one_line_and_nothing_else(tmp_path):
  """No TFDS "Downloading and preparing ... Unknown size", shuffle bars or logs: one line, once."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("from polar_jax import data\n"
          "for _ in range(2):\n"
          "  data.load_split('arith_level3', 'test', limit=2)\n")
  env = {**os.environ, "POLAR_JAX_CACHE": str(tmp_path), "PYTHONPATH": root}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
  assert lines == [f"[polar_jax] preparing arith_level3 (once, into {tmp_path}/tfds/polar_arith_ladder/level3/1.1.0)"]
