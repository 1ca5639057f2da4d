"""Sharded training of the PoLar predictor; a library function that a notebook or `main.py` can call.

    result = train_predictor(default_config(), workdir, train_records, MiniLMEncoder(),
                             validation=val_records)

What happens (big_vision style):
- the supervision becomes examples (`predictor.targets`), every question is encoded once by the frozen
  encoder, and a grain pipeline yields fixed-shape batches (`predictor.input_pipeline`);
- a ('data', 'model') `Mesh` spans all devices; the batch is split on 'data', the parameters and the
  optimizer state are placed by logical-axis rules (`polar_jax.sharding`; replicated by default);
- the state's shapes come from `jax.eval_shape`, its shardings from the rules; the state is created by
  `jax.jit(init, out_shardings=...)` and updated by `jax.jit(step, donate_argnums=0)`;
- optax AdamW with linear warmup and cosine decay (the release's schedule); the loss is the release's;
- orbax checkpoints every `checkpoint.every_steps` and at the end, plus the best by validation loss; a
  restarted run resumes from the latest checkpoint exactly (step, parameters, optimizer state, RNG key,
  data position), so it ends with the parameters of an uninterrupted run;
- metrics go to TensorBoard event files (`polar_jax.summaries`; off without the `tensorboard` extra) and a
  progress bar (steps/s, the latest loss and validation);
- validation (once per epoch by default, and at the end): the release's validation loss and the top-1
  match rate, the fraction of validation questions whose top-1 decoded program is one of their valid ones.

Multi-process: every process calls `train_predictor` with the same arguments after the entry point ran
`jax.distributed.initialize` (`polar_jax.sharding.initialize_distributed`; or set `config.distributed`). Each
process builds the same global batch and feeds its own rows; the mesh spans every process's devices; orbax
writes the checkpoints together; process 0 alone prints and writes TensorBoard events. Two processes give the
parameters of one process with the same mesh, bitwise (`tests/test_multiprocess.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from polar_jax import options as options_lib
from polar_jax import sharding
from polar_jax.options import OptimizerOptions, TrainOptions
from polar_jax.predictor import checkpoint as ckpt
from polar_jax.predictor import input_pipeline
from polar_jax.predictor.decode import decode_programs
from polar_jax.predictor.encoder import QuestionEncoder, QuestionFeatures, precompute_features
from polar_jax.predictor.loss import polar_loss
from polar_jax.predictor.model import PolarPredictor, PredictorConfig, init_params, param_logical_axes
from polar_jax.predictor.predict import batched_logits
from polar_jax.predictor.supervision import Supervision, SupervisionRecord
from polar_jax.predictor.targets import ExampleTable, TargetReport, build_examples
from polar_jax.summaries import create_writer


def default_config() -> ml_collections.ConfigDict:
  """The trainer's options (`polar_jax.options.TrainOptions`: the paper's recipe) as a ConfigDict to edit."""
  return options_lib.to_config_dict(TrainOptions())


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What a run produced. `params` are host numpy arrays of the final step."""
  params: Any
  predictor_config: PredictorConfig
  step: int
  best_step: int | None
  best_val_loss: float | None
  history: tuple[dict, ...]  # one dict of validation metrics per evaluation
  train_report: TargetReport
  validation_report: TargetReport | None
  workdir: str


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """The jitted functions and shardings of one training configuration on one mesh."""
  model: PolarPredictor
  mesh: jax.sharding.Mesh
  schedule: Callable
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings
  batch_sharding: jax.sharding.NamedSharding
  init: Callable  # rng key -> state
  step: Callable  # (state, batch) -> (state, metrics); donates state
  eval_loss: Callable  # (params, batch) -> metrics
  apply: Callable  # (params, features, mask) -> (boundary logits, op logits)


def make_lr_schedule(train: OptimizerOptions, total_steps: int) -> Callable:
  """The release's LambdaLR: linear warmup from 0, then cosine (or linear) decay to 0 at `total_steps`."""
  lr = train.learning_rate
  warmup = min(max(0, train.warmup_steps), max(0, total_steps - 1))
  if train.lr_schedule == "none":
    return optax.constant_schedule(lr)
  if train.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1), 0.0)
  if train.lr_schedule == "linear":
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup))], [warmup])
  raise ValueError(f"lr_schedule must be 'cosine', 'linear' or 'none', got {train.lr_schedule!r}.")


def build_training(predictor_config: PredictorConfig, feature_dim: int, train: OptimizerOptions,
                   total_steps: int, mesh: jax.sharding.Mesh, rules: sharding.ShardingRules) -> TrainSetup:
  """Model, optimizer, shardings and jitted init / step / eval functions for one mesh.

  Cached per (shapes, train config, mesh, rules): a resumed run or a notebook re-run in the same process
  reuses the compiled functions instead of compiling them again.
  """
  return _build_training(predictor_config, int(feature_dim), options_lib.coerce(OptimizerOptions, train, "train"),
                         int(total_steps), mesh, rules)


@functools.lru_cache(maxsize=8)
def _build_training(predictor_config: PredictorConfig, feature_dim: int, train: OptimizerOptions, total_steps: int,
                    mesh: jax.sharding.Mesh, rules: sharding.ShardingRules) -> TrainSetup:
  model = PolarPredictor(predictor_config)
  schedule = make_lr_schedule(train, total_steps)
  tx = optax.adamw(schedule, b1=0.9, b2=0.999, eps=train.adam_eps, weight_decay=train.weight_decay)
  if train.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), tx)

  def init(rng):
    params = init_params(predictor_config, feature_dim, rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "rng": rng}

  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  param_sh = sharding.param_shardings(param_logical_axes(predictor_config, feature_dim), abstract["params"],
                                      mesh, rules)
  repl = sharding.replicated(mesh)
  state_sh = {"step": repl, "params": param_sh, "rng": repl,
              "opt_state": optax.tree_map_params(tx, lambda _, s: s, abstract["opt_state"], param_sh,
                                                 transform_non_params=lambda _: repl)}
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
  batch_sh = sharding.batch_sharding(mesh)

  def forward(params, batch, rng=None):
    deterministic = rng is None
    return model.apply({"params": params}, batch["features"], batch["mask"], deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng})

  def step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])

    def loss_fn(params):
      b, o = forward(params, batch, rng)
      return polar_loss(b, o, batch, length_beta=train.length_beta)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    metrics = dict(metrics, grad_norm=optax.global_norm(grads), learning_rate=schedule(state["step"]))
    new_state = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
                 "opt_state": opt_state, "rng": state["rng"]}
    return new_state, metrics

  def eval_loss(params, batch):
    b, o = forward(params, batch)
    return polar_loss(b, o, batch, length_beta=train.length_beta)[1]

  return TrainSetup(
      model=model, mesh=mesh, schedule=schedule, state_shardings=state_sh, abstract_state=abstract,
      batch_sharding=batch_sh,
      init=jax.jit(init, out_shardings=state_sh),
      step=jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl), donate_argnums=0),
      eval_loss=jax.jit(eval_loss, in_shardings=(param_sh, batch_sh), out_shardings=repl),
      # Logits replicated: every process reads the whole batch's (its rows alone would not decode the batch).
      apply=jax.jit(lambda p, f, m: model.apply({"params": p}, f, m), in_shardings=(param_sh, batch_sh, batch_sh),
                    out_shardings=repl))


def to_device(batch: dict, sharding_: jax.sharding.NamedSharding) -> dict:
  """This process's rows of a batch -> global arrays sharded on 'data'."""
  return {k: jax.make_array_from_process_local_data(sharding_, np.asarray(v)) for k, v in batch.items()}


def _records(supervision) -> tuple[SupervisionRecord, ...]:
  return tuple(supervision.records if isinstance(supervision, Supervision) else supervision)


def _depth(records: Sequence[SupervisionRecord]) -> int:
  depths = sorted({r.depth for r in records})
  if len(depths) != 1:
    raise ValueError(f"The supervision mixes model depths {depths}; train one predictor per model.")
  return depths[0]


def _validate(setup: TrainSetup, params, table: ExampleTable, features: QuestionFeatures,
              records: Sequence[SupervisionRecord], config) -> dict:
  """The release's validation loss (mean of batch losses) and the top-1 match rate on `records`."""
  bs = config.eval.batch_size
  pid, count = jax.process_index(), jax.process_count()
  losses = [float(setup.eval_loss(params, to_device(b, setup.batch_sharding))["loss"])
            for b in input_pipeline.evaluation_batches(table, features, bs, process_index=pid, process_count=count)]
  apply = lambda p, f, m: setup.apply(p, *(jax.make_array_from_process_local_data(setup.batch_sharding, x)
                                          for x in _local_rows((f, m), pid, count)))
  b, o = batched_logits(apply, params, features.features, features.mask, bs)
  decoded = decode_programs(b, o, config.decode)
  scored = [(d.top1 is not None and d.top1.ids in set(r.valid)) for d, r in zip(decoded, records) if r.valid]
  return {"val_loss": float(np.mean(losses)) if losses else float("nan"),
          "val_top1_match": float(np.mean(scored)) if scored else float("nan")}


def _every(step: int, period: int) -> bool:
  """Whether a periodic action (period <= 0: never, only at the end) falls on `step`."""
  return period > 0 and step % period == 0


def _host(tree):
  """Host numpy copies of (possibly multi-process) global arrays: sharded ones are gathered from every process."""
  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(one, tree)


def _local_rows(arrays, pid, count):
  return tuple(x[pid * (x.shape[0] // count):(pid + 1) * (x.shape[0] // count)] for x in arrays)


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """Examples and encoded questions of one run. `train_table.question_index` points into `features`; the
  validation table's into `val_features` (one row per validation record)."""
  depth: int
  train_table: ExampleTable
  train_report: TargetReport
  features: QuestionFeatures
  val_records: tuple[SupervisionRecord, ...] = ()
  val_table: ExampleTable | None = None
  val_report: TargetReport | None = None
  val_features: QuestionFeatures | None = None


def prepare_data(config: TrainOptions, supervision, validation, encoder: QuestionEncoder
                 ) -> TrainingData:
  """Supervision -> examples (`targets.py`) and every distinct question encoded once."""
  train_records, val_records = _records(supervision), _records(validation) if validation is not None else ()
  depth = _depth(train_records + val_records)
  config = options_lib.coerce(TrainOptions, config, "predictor")
  target_options = config.targets.resolve(config.seed)
  train_table, train_report = build_examples(train_records, depth, target_options)
  val_table, val_report = build_examples(val_records, depth, target_options) if val_records else (None, None)
  if val_table is not None and not len(val_table):
    raise ValueError(f"None of the {len(val_records)} validation questions has a usable valid program, so there is "
                     "no validation loss; pass other validation records or none.")
  questions = list(dict.fromkeys(r.question for r in train_records + val_records))
  features = precompute_features(encoder, questions)
  row = {q: i for i, q in enumerate(questions)}
  train_table = dataclasses.replace(train_table, question_index=np.asarray(
      [row[train_records[i].question] for i in train_table.question_index], np.int32).reshape(-1))
  val_features = None
  if val_records:
    val_rows = np.asarray([row[r.question] for r in val_records])
    val_features = QuestionFeatures(features.features[val_rows], features.mask[val_rows], features.encoder)
  return TrainingData(depth, train_table, train_report, features, val_records, val_table, val_report, val_features)


def train_predictor(config: TrainOptions | ml_collections.ConfigDict, workdir: str | pathlib.Path,
                    supervision: Supervision | Sequence[SupervisionRecord], encoder: QuestionEncoder, *,
                    validation: Supervision | Sequence[SupervisionRecord] | None = None,
                    step_callback: Callable[[int], None] | None = None) -> TrainResult:
  """Trains (or resumes training) a predictor in `workdir`; see the module docstring.

  Args:
    config: `polar_jax.options.TrainOptions`, or its ConfigDict form (`default_config()` or a variant).
    workdir: checkpoints (`checkpoints/`, `best/`) and TensorBoard events (`tensorboard/`) go here; an
      existing checkpoint is resumed.
    supervision: training records (a `Supervision` or a sequence of `SupervisionRecord`).
    encoder: the frozen question encoder; each distinct question is encoded once.
    validation: optional validation records (e.g. from `supervision.release_splits`).
    step_callback: called with the step number after every step (after any checkpoint of that step).
  """
  config = options_lib.coerce(TrainOptions, config, "predictor")
  dist = config.distributed
  if dist.coordinator_address or dist.num_processes > 1:  # else: as the entry point set it up (or one process)
    sharding.initialize_distributed(dist.coordinator_address or None, dist.num_processes,
                                    dist.process_id if dist.process_id >= 0 else None)
  workdir = pathlib.Path(workdir).absolute()
  data = prepare_data(config, supervision, validation, encoder)
  depth, train_table, train_report, features = data.depth, data.train_table, data.train_report, data.features
  val_table, val_records, val_features = data.val_table, data.val_records, data.val_features
  predictor_config = PredictorConfig(depth=depth, **dataclasses.asdict(config.predictor))
  plan = input_pipeline.BatchPlan(len(train_table), config.train.batch_size, config.seed)
  total_steps = config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * plan.steps_per_epoch
  eval_every = config.eval.every_steps or plan.steps_per_epoch
  mesh = sharding.create_mesh(config.mesh.model_parallelism)
  setup = build_training(predictor_config, features.feature_dim, config.train, total_steps, mesh,
                         sharding.ShardingRules.named(config.mesh.rules))

  is_lead = jax.process_index() == 0
  if is_lead and config.progress:
    r = train_report
    print(f"{r.examples} training examples from {r.questions_with_examples} of {r.questions} questions "
          f"(depth {depth}; {r.questions_without_valid} without a valid program, {r.programs_not_sampled} programs "
          f"beyond max_programs, {r.programs_outside_space} outside the predictor's space); "
          f"{total_steps} steps of batch {plan.batch_size}.", flush=True)
  writer = create_writer(workdir / "tensorboard", enabled=is_lead)
  checkpoints = ckpt.Checkpoints(workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  meta = lambda step, **extra: ckpt.make_meta(predictor_config, feature_dim=features.feature_dim,
                                              encoder=features.encoder, seed=config.seed, data_position=step,
                                              total_steps=total_steps, **extra)
  history, best, bar = [], (None, None), None
  try:
    if checkpoints.latest_step() is not None:
      state, saved = checkpoints.restore_latest(setup.abstract_state, meta(0))
      start = int(saved["data_position"])
      history, best = list(saved.get("history", [])), (saved.get("best_step"), saved.get("best_val_loss"))
      if is_lead and config.progress:
        print(f"Resuming from step {start} of {total_steps} ({workdir}).", flush=True)
    else:
      state, start = setup.init(jax.random.PRNGKey(config.seed)), 0
      writer.write_hparams({"depth": depth, "examples": len(train_table), "total_steps": total_steps,
                            "batch_size": plan.batch_size, "learning_rate": config.train.learning_rate})
    batches = input_pipeline.training_batches(
        train_table, features, plan, start_step=start, stop_step=total_steps,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_threads=config.data.num_threads, prefetch=config.data.prefetch)
    tick, tick_step = time.perf_counter(), start
    # One bar: steps done of planned with their rate; the latest loss and validation beside it.
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step", file=sys.stdout, dynamic_ncols=True,
               disable=not (is_lead and config.progress))
    shown: dict[str, str] = {}
    for step in range(start + 1, total_steps + 1):
      state, metrics = setup.step(state, to_device(next(batches), setup.batch_sharding))
      bar.update(1)
      if _every(step, config.log_every_steps) or step == total_steps:
        metrics = jax.device_get(metrics)
        rate = (step - tick_step) / max(time.perf_counter() - tick, 1e-9)
        tick, tick_step = time.perf_counter(), step
        writer.write_scalars(step, {f"train/{k}": v for k, v in metrics.items()} | {"train/steps_per_s": rate})
        shown.update(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['learning_rate']:.1e}")
        bar.set_postfix(shown, refresh=False)
      if val_table is not None and (_every(step, eval_every) or step == total_steps):
        result = _validate(setup, state["params"], val_table, val_features, val_records, config)
        history.append({"step": step, **result})
        writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
        shown.update(val_loss=f"{result['val_loss']:.4f}", top1_match=f"{result['val_top1_match']:.3f}")
        bar.set_postfix(shown, refresh=False)
        if best[1] is None or result["val_loss"] < best[1]:
          best = (step, result["val_loss"])
        checkpoints.save_best(step, state, meta(step), result["val_loss"])
      if _every(step, config.checkpoint.every_steps) or step == total_steps:
        checkpoints.save(step, state, meta(step, history=list(history), best_step=best[0],
                                             best_val_loss=best[1]))  # a copy: the save may be async
      if step_callback is not None:
        step_callback(step)
    writer.flush()
    bar.close()
    bar = None
    if is_lead and config.progress and best[0] is not None:
      print(f"train: {total_steps} steps; best val_loss {best[1]:.4f} at step {best[0]}", flush=True)
  finally:
    if bar is not None:
      bar.close()
    checkpoints.close()
    writer.close()
  return TrainResult(
      params=_host(state["params"]), predictor_config=predictor_config, step=int(state["step"]),
      best_step=best[0], best_val_loss=best[1], history=tuple(history), train_report=train_report,
      validation_report=data.val_report, workdir=str(workdir))
