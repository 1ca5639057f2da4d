"""The trainer: learning a known question -> program rule, exact resume, depth checks, schedule, metrics."""

import logging
import math
import pathlib
import random

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from polar_jax import train
from polar_jax.predictor import ProgramPredictor, load_predictor
from polar_jax.predictor.checkpoint import CheckpointMismatchError
from polar_jax.predictor.encoder import CachedEncoder, MiniLMEncoder, TokenEmbeddingEncoder
from polar_jax.predictor.supervision import SupervisionRecord

D = 8
APPLE = tuple(i for i in range(D) if i not in (4, 5))  # skip layers 4-5
BANANA = (0, 1, 2, 3, 2, 3, 4, 5, 6, 7)  # repeat layers 2-3


def _rule(question):
  return APPLE if "apple" in question else BANANA if "banana" in question else tuple(range(D))


def _questions(names, n, seed):
  rng = random.Random(seed)
  fruits = ["apple", "banana", "pear", "cherry", "plum", "grape"]
  out = []
  for _ in range(n):
    fruit, name = rng.choice(fruits), rng.choice(names)
    out.append(f"{name} has {rng.randint(2, 60)} {fruit}s and buys {rng.randint(1, 9)} more. "
               f"How many {fruit}s does {name} have now?")
  return out


def _records(questions, depth=D, rule=_rule):
  return [SupervisionRecord(id=str(i), question=q, gold="", initial_score=0.0, depth=depth, valid=(rule(q),))
          for i, q in enumerate(questions)]


@pytest.fixture(scope="module")
def minilm():
  return CachedEncoder(MiniLMEncoder())


@pytest.fixture(scope="module")
def synthetic_run(minilm, tmp_path_factory):
  train_q = _questions(["Alice", "Bob", "Carol", "Dan", "Eve", "Frank"], 180, seed=0)
  val_q = _questions(["Grace", "Heidi"], 40, seed=1)
  config = train.default_config()
  config.predictor.update(d_model=64, num_blocks=1, dropout=0.0)  # dropout triples XLA CPU compile time
  config.train.update(batch_size=32, num_steps=100, learning_rate=3e-3)
  config.eval.update(every_steps=50, batch_size=32)
  config.checkpoint.every_steps = 50
  config.log_every_steps = 50
  workdir = tmp_path_factory.mktemp("synthetic")
  result = train.train_predictor(config, workdir, _records(train_q), minilm, validation=_records(val_q))
  return result, workdir


def test_learns_known_rule_on_held_out_questions(synthetic_run, minilm):
  result, workdir = synthetic_run
  assert result.step == 100 and result.history[-1]["val_top1_match"] >= 0.95
  test_q = _questions(["Ivan", "Judy", "Mallory"], 60, seed=2)  # names never seen in training
  predictor = ProgramPredictor.from_checkpoint(workdir, minilm, depth=D)
  decoded = predictor.predict(test_q)
  match = np.mean([d.top1 is not None and d.top1.ids == _rule(q) for d, q in zip(decoded, test_q)])
  assert match >= 0.95
  assert {_rule(q) for q in test_q} == {APPLE, BANANA, tuple(range(D))}


def test_writes_events_and_keeps_best_checkpoint(synthetic_run):
  result, workdir = synthetic_run
  events = event_accumulator.EventAccumulator(str(pathlib.Path(workdir) / "tensorboard"))
  events.Reload()  # TensorBoard's own reader
  tags = {(e.step, tag) for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
  assert {(50, "train/loss"), (100, "train/steps_per_s"), (100, "eval/val_top1_match")} <= tags
  config, params, meta = load_predictor(workdir)  # best by validation loss
  assert meta["depth"] == D and config.d_model == 64 and result.best_step == 100
  assert meta["data_position"] == result.best_step
  np.testing.assert_array_equal(params["op_head"]["kernel"], result.params["op_head"]["kernel"])


class _Preempted(Exception):
  pass


def _tiny_setup(depth=6):
  rng = np.random.default_rng(0)
  table = rng.normal(size=(64, 12)).astype(np.float32)
  tok = type("Tok", (), {"encode": staticmethod(lambda text: [hash(w) % 64 for w in text.split()])})()
  encoder = TokenEmbeddingEncoder(table, tok)
  full = tuple(range(depth))
  rule = lambda q: full[:2] + full[3:] if "odd" in q else full + full[-1:]
  questions = [f"question {i} is {'odd' if i % 2 else 'even'}" for i in range(20)]
  config = train.default_config()
  config.predictor.update(d_model=16, num_heads=2, num_blocks=1)
  config.train.update(batch_size=8, num_steps=12, learning_rate=1e-2, warmup_steps=2)
  config.eval.update(every_steps=6, batch_size=8)
  config.checkpoint.every_steps = 5
  config.progress = False
  return config, _records(questions[:16], depth, rule), _records(questions[16:], depth, rule), encoder


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  config, records, val, encoder = _tiny_setup()
  workdir = tmp_path_factory.mktemp("straight")
  return train.train_predictor(config, workdir, records, encoder, validation=val), workdir


def test_interrupted_run_resumes_to_identical_parameters(straight_run, tmp_path):
  config, records, val, encoder = _tiny_setup()
  straight, _ = straight_run

  def preempt(step):
    if step == 8:  # the checkpoint of step 5 is written; steps 6-8 are lost
      raise _Preempted

  with pytest.raises(_Preempted):
    train.train_predictor(config, tmp_path / "resumed", records, encoder, validation=val, step_callback=preempt)
  seen = []
  resumed = train.train_predictor(config, tmp_path / "resumed", records, encoder, validation=val,
                                  step_callback=seen.append)
  assert seen[0] == 6 and resumed.step == straight.step == 12
  leaves = lambda r: jax.tree.leaves(r.params)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(straight), leaves(resumed)))
  assert resumed.history == straight.history and resumed.best_step == straight.best_step


def test_a_full_disk_is_one_message_and_the_rerun_resumes(straight_run, tmp_path, monkeypatch):
  """Fault injection: after step 7 the disk reports no free space. The step-10 save is refused before orbax
  writes anything (one DiskFullError, no *.orbax-checkpoint-tmp left), the step-5 checkpoint still loads, and
  the rerun after "freeing space" resumes from it to the uninterrupted run's parameters."""
  import shutil
  from polar_jax.errors import DiskFullError
  from polar_jax.predictor.checkpoint import load_predictor
  config, records, val, encoder = _tiny_setup()
  straight, _ = straight_run
  real = shutil.disk_usage
  full = {"on": False}
  fake = lambda path: real(path)._replace(free=0) if full["on"] else real(path)
  monkeypatch.setattr(shutil, "disk_usage", fake)

  def fill(step):
    if step == 7:
      full["on"] = True

  with pytest.raises(DiskFullError, match=r"The disk is full: no room for the step-10 checkpoint .*Free some "
                                          r"space and rerun the same command: training resumes from step 5"):
    train.train_predictor(config, tmp_path / "run", records, encoder, validation=val, step_callback=fill)
  assert not list((tmp_path / "run").rglob("*orbax-checkpoint-tmp*"))
  _, _, meta = load_predictor(tmp_path / "run", which="latest")
  assert meta["data_position"] == 5
  full["on"] = False
  resumed = train.train_predictor(config, tmp_path / "run", records, encoder, validation=val)
  leaves = lambda r: jax.tree.leaves(r.params)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(straight), leaves(resumed)))


def test_checkpoint_of_another_depth_is_refused(straight_run):
  straight, workdir = straight_run
  config, _, _, encoder = _tiny_setup()
  _, other, _, _ = _tiny_setup(depth=5)
  with pytest.raises(CheckpointMismatchError, match="6-layer model, but this run is for a 5-layer model"):
    train.train_predictor(config, workdir, other, encoder)
  with pytest.raises(CheckpointMismatchError, match="6-layer model"):
    load_predictor(workdir, depth=5)
  cfg, params, meta = load_predictor(workdir, which="latest")
  assert cfg.depth == 6 and meta["data_position"] == 12
  np.testing.assert_array_equal(params["layer_queries"], straight.params["layer_queries"])


def test_schedule_matches_release_lambda():
  config = train.default_config().train
  config.update(learning_rate=5e-4, warmup_steps=10)
  total = 100
  schedule = train.make_lr_schedule(config, total)

  def release(step):  # warmup then cosine, as the release's LambdaLR computes it
    if step < 10:
      return step / 10
    progress = min(1.0, (step - 10) / (total - 10))
    return 0.5 * (1 + math.cos(math.pi * progress))

  for step in (0, 3, 10, 11, 55, 99, 100):
    assert float(schedule(step)) == pytest.approx(5e-4 * release(step), abs=1e-9)
  config.lr_schedule = "linear"
  assert float(train.make_lr_schedule(config, total)(55)) == pytest.approx(5e-4 * (1 - 45 / 90), abs=1e-9)


def test_sharding_rules_map_logical_axes_and_replicate_what_does_not_divide():
  from jax.sharding import PartitionSpec as P
  from polar_jax import sharding
  mesh = type("Mesh", (), {"shape": {"data": 4, "model": 2}})()
  fsdp = sharding.ShardingRules.fsdp()
  assert fsdp.spec(P("embed", "mlp"), (256, 1024), mesh) == P("data", "model")
  assert fsdp.spec(P("embed", "mlp"), (6, 1024), mesh) == P(None, "model")  # 6 rows do not split 4 ways
  assert fsdp.spec(P("heads", "mlp"), (8, 8), mesh) == P("model", None)  # one mesh axis per array
  assert fsdp.spec(P("layers", None), (28, 3), mesh) == P(None, None)
  assert sharding.ShardingRules.replicated().spec(P("embed", "mlp"), (256, 1024), mesh) == P(None, None)
  with pytest.raises(ValueError, match="Unknown sharding rules 'tp'"):
    sharding.ShardingRules.named("tp")
  assert sharding.initialize_distributed() is False  # single process: never initialises


def test_loading_a_predictor_prints_no_read_only_warnings(straight_run, caplog):
  from polar_jax.predictor.checkpoint import load_predictor
  _, workdir = straight_run
  with caplog.at_level(logging.WARNING):
    load_predictor(workdir)
  assert not [r for r in caplog.records if "read only" in r.getMessage() or "read_only" in r.getMessage()]
