"""A DR.LLM-style per-layer router (Heakl et al., 2025), trained on the same search supervision as PoLar.

Before each layer i, a small MLP router reads the hidden state entering that layer and picks one of skip /
execute / repeat-once (layer i runs 0, 1 or 2 times). Its input is the windowed mean of the hidden state over
the prompt's real tokens: the tokens are cut into `windows` contiguous windows, each window is averaged, the
window means are averaged (every part of the prompt weighs the same however long it is), and the result is
RMS-normalized so that one scale fits every depth. One router per layer: Linear(D -> hidden) -> GELU ->
Linear(hidden -> 3).

Decisions are made on the prompt (a routing pass over the prefill) and give one program per question, which
is then generated with like every other program (KV cache, greedy); the routing pass is timed as overhead.
An all-skip routing falls back to the full program (counted).

Supervision: the valid programs of the search records that are expressible per layer (non-decreasing ids,
each layer at most twice: block repeats such as 4 5 4 5 are not), up to `max_programs` per question (shortest
first), each question weighing the same. Teacher forcing: the hidden states are those along the target
program. Loss: cross-entropy per layer with inverse-frequency class weights (most decisions are "execute").
Trained here with optax AdamW on full batches of the cached features; the predictor's trainer is specific to
the PoLar network, so it is not reused. Weights are saved as safetensors with a JSON description and loaded
again on the next run with the same settings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from polar_jax import options as options_lib
from polar_jax.options import RouterOptions
from polar_jax.evaluation.outcomes import MethodRun, run_ranked
from polar_jax.models import transformer
from polar_jax.program_eval import prompt_ids
from polar_jax.models.config import ModelConfig
from polar_jax.programs import Program, bucket_length
from polar_jax.records import SearchRecord
from polar_jax.workdir import write_json_atomic

SKIP, EXECUTE, REPEAT = 0, 1, 2


def default_router_config() -> ml_collections.ConfigDict:
  """The router's options (`polar_jax.options.RouterOptions`, fields documented there) as a ConfigDict."""
  return options_lib.to_config_dict(RouterOptions())


def per_layer_counts(program: Sequence[int], depth: int) -> np.ndarray | None:
  """[depth] run counts (0/1/2) when `program` is expressible per layer, else None."""
  counts = np.zeros(depth, np.int32)
  for a, b in zip(program, program[1:]):
    if b < a:
      return None
  for i in program:
    counts[i] += 1
  return counts if counts.max() <= 2 else None


def counts_to_program(counts: Sequence[int], depth: int) -> Program | None:
  ids = [i for i in range(depth) for _ in range(int(counts[i]))]
  return Program(ids, depth) if ids else None


def pooling_weights(lengths: Sequence[int], seq_len: int, windows: int) -> np.ndarray:
  """[B, S] weights of left-padded rows: each of `windows` windows of real tokens gets weight 1 / windows."""
  out = np.zeros((len(lengths), seq_len), np.float32)
  for r, n in enumerate(lengths):
    w = min(windows, n)
    which = (np.arange(n) * w) // n  # window of each real token
    sizes = np.bincount(which, minlength=w)
    out[r, seq_len - n:] = 1.0 / (w * sizes[which])
  return out


def _mlp(rp, i, f):
  h = jax.nn.gelu(f @ rp["w1"][i] + rp["b1"][i])
  return h @ rp["w2"][i] + rp["b2"][i]  # [B, 3]


@functools.partial(jax.jit, static_argnames=("cfg", "use_router"))
def _route(params, rp, tokens, mask, weights, forced, *, cfg: ModelConfig, use_router: bool):
  """Runs the layers with per-row decisions (the router's, or `forced` [B, L]); returns (features [B, L, D],
  decisions [B, L])."""
  b, s = tokens.shape
  x = transformer.embed(params, cfg, tokens)  # [B, S, D]
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(mask))
  key_mask = transformer.causal_key_mask(mask)
  fresh = jnp.zeros((b, s, cfg.num_kv_heads, cfg.head_dim), x.dtype)
  feats = jnp.zeros((b, cfg.num_layers, cfg.hidden_size), jnp.float32)
  decisions = jnp.zeros((b, cfg.num_layers), jnp.int32)

  def body(i, carry):
    x, feats, decisions = carry
    pooled = jnp.einsum("bs,bsd->bd", weights, x.astype(jnp.float32))
    pooled = pooled * jax.lax.rsqrt(jnp.mean(pooled ** 2, axis=-1, keepdims=True) + 1e-6)
    choice = jnp.argmax(_mlp(rp, i, pooled), axis=-1).astype(jnp.int32) if use_router else forced[:, i]
    lp = transformer.layer_slice(params["layers"], i)
    once, _, _ = transformer.layer(lp, cfg, x, rope, fresh, fresh, 0, key_mask)
    twice = jax.lax.cond(jnp.any(choice == REPEAT),
                         lambda y: transformer.layer(lp, cfg, y, rope, fresh, fresh, 0, key_mask)[0],
                         lambda y: y, once)
    pick = choice[:, None, None]
    x = jnp.where(pick == SKIP, x, jnp.where(pick == EXECUTE, once, twice))
    return x, feats.at[:, i].set(pooled), decisions.at[:, i].set(choice)

  _, feats, decisions = jax.lax.fori_loop(0, cfg.num_layers, body, (x, feats, decisions))
  return feats, decisions


def _batches(ids: Sequence[Sequence[int]], batch_size: int, pad_id: int, windows: int):
  """Left-padded fixed-size batches: yields (row indices, tokens, mask, pooling weights)."""
  order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
  for lo in range(0, len(order), batch_size):
    rows = order[lo:lo + batch_size]
    s = bucket_length(max(len(ids[i]) for i in rows), 16)
    tokens = np.full((batch_size, s), pad_id, np.int32)
    mask = np.zeros((batch_size, s), np.int32)
    for r, i in enumerate(rows):
      tokens[r, s - len(ids[i]):] = ids[i]
      mask[r, s - len(ids[i]):] = 1
    weights = np.zeros((batch_size, s), np.float32)
    weights[:len(rows)] = pooling_weights([len(ids[i]) for i in rows], s, windows)
    yield rows, tokens, mask, weights


def _zero_router(cfg: ModelConfig, hidden: int) -> dict[str, jnp.ndarray]:
  L, d = cfg.num_layers, cfg.hidden_size
  return {"w1": jnp.zeros((L, d, hidden)), "b1": jnp.zeros((L, hidden)), "w2": jnp.zeros((L, hidden, 3)),
          "b2": jnp.zeros((L, 3))}


@dataclasses.dataclass(frozen=True)
class RouterModel:
  """Trained router weights (numpy, [L, ...]) and how they were trained."""
  params: Mapping[str, np.ndarray]
  windows: int
  batch_size: int
  info: Mapping[str, Any]


def route(model, router: RouterModel, ids: Sequence[Sequence[int]]) -> np.ndarray:
  """The router's decisions [N, L] (0 skip, 1 execute, 2 repeat) for prompts given as token ids."""
  cfg = model.config
  rp = {k: jnp.asarray(v) for k, v in router.params.items()}
  out = np.zeros((len(ids), cfg.num_layers), np.int32)
  dummy = jnp.zeros((router.batch_size, cfg.num_layers), jnp.int32)
  for rows, tokens, mask, weights in _batches(ids, router.batch_size, model.tokenizer.pad_id, router.windows):
    _, decisions = _route(model.params, rp, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(weights), dummy,
                          cfg=cfg, use_router=True)
    out[rows] = np.asarray(decisions)[:len(rows)]
  return out


def supervision(records: Sequence[SearchRecord], depth: int, max_programs: int
                ) -> tuple[list[int], list[np.ndarray], list[float], dict[str, int]]:
  """(record index, counts [L], weight) per training program, and counts of what was left out."""
  rows, targets, weights = [], [], []
  report = {"questions": len(records), "questions_used": 0, "programs_used": 0, "programs_not_per_layer": 0}
  for r, rec in enumerate(records):
    usable = []
    for program in sorted(rec.valid_programs, key=lambda p: (len(p), p)):
      counts = per_layer_counts(program, depth)
      if counts is None:
        report["programs_not_per_layer"] += 1
      else:
        usable.append(counts)
    usable = usable[:max_programs]
    if usable:
      report["questions_used"] += 1
      report["programs_used"] += len(usable)
    for counts in usable:
      rows.append(r)
      targets.append(counts)
      weights.append(1.0 / len(usable))
  return rows, targets, weights, report


def train_router(config: ml_collections.ConfigDict, model, task, records: Sequence[SearchRecord]
                 ) -> RouterModel:
  """Fits the per-layer routers on the search records (see the module docstring)."""
  from polar_jax.data import Example  # pylint: disable=import-outside-toplevel
  cfg = model.config
  depth = cfg.num_layers
  start = time.perf_counter()
  rows, targets, weights, report = supervision(records, depth, int(config.max_programs))
  if not rows:
    raise ValueError(f"None of the {len(records)} search records has a valid program expressible per layer "
                     "(each layer skipped, run once or twice in order); the router has nothing to learn from.")
  examples = [Example(id=rec.id, question=rec.question,
                      answer=str(rec.gold) if str(rec.gold or "").strip() else "?") for rec in records]
  ids = prompt_ids(model, examples, task)
  feats = np.zeros((len(rows), depth, cfg.hidden_size), np.float32)
  zeros = _zero_router(cfg, int(config.hidden))
  target_array = np.stack(targets)  # [N, L]
  for sel, tokens, mask, pool in _batches([ids[r] for r in rows], int(config.batch_size), model.tokenizer.pad_id,
                                          int(config.windows)):
    forced = np.ones((int(config.batch_size), depth), np.int32)
    forced[:len(sel)] = target_array[sel]
    f, _ = _route(model.params, zeros, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(pool),
                  jnp.asarray(forced), cfg=cfg, use_router=False)
    feats[sel] = np.asarray(f)[:len(sel)]
  freq = np.bincount(target_array.reshape(-1), minlength=3).astype(np.float64)
  class_weights = np.where(freq > 0, freq.sum() / (3 * np.maximum(freq, 1)), 0.0)
  key1, key2 = jax.random.split(jax.random.key(int(config.seed)))
  d, h = cfg.hidden_size, int(config.hidden)
  rp = {"w1": jax.random.normal(key1, (depth, d, h)) * d ** -0.5, "b1": jnp.zeros((depth, h)),
        "w2": jax.random.normal(key2, (depth, h, 3)) * h ** -0.5, "b2": jnp.zeros((depth, 3))}
  x, y = jnp.asarray(feats), jnp.asarray(target_array)
  w = jnp.asarray(np.asarray(weights, np.float32))
  cw = jnp.asarray(class_weights, jnp.float32)
  opt = optax.adamw(float(config.learning_rate), weight_decay=float(config.weight_decay))

  def loss_fn(rp):
    logits = jax.vmap(lambda i, f: _mlp(rp, i, f), in_axes=(0, 1), out_axes=1)(jnp.arange(depth), x)  # [N, L, 3]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y) * cw[y]  # [N, L]
    loss = jnp.sum(ce.sum(axis=1) * w) / jnp.sum(w)
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)

  @jax.jit
  def step(rp, state):
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(rp)
    updates, state = opt.update(grads, state, rp)
    return optax.apply_updates(rp, updates), state, loss, acc

  state = opt.init(rp)
  loss = acc = None
  for _ in range(int(config.steps)):
    rp, state, loss, acc = step(rp, state)
  info = {**report, "final_loss": float(loss), "train_decision_accuracy": float(acc),
          "class_frequencies": freq.tolist(), "train_seconds": time.perf_counter() - start,
          "config": config.to_dict()}
  return RouterModel({k: np.asarray(v) for k, v in rp.items()}, int(config.windows), int(config.batch_size), info)


def save_router(router: RouterModel, out_dir: pathlib.Path) -> None:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  out_dir.mkdir(parents=True, exist_ok=True)
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in router.params.items()},
            str(out_dir / "router.safetensors"))
  write_json_atomic(out_dir / "router.json", {"windows": router.windows, "batch_size": router.batch_size,
                                              "info": router.info})  # a kill leaves no torn file


def train_or_load_router(config: ml_collections.ConfigDict, model, task, records: Sequence[SearchRecord],
                         out_dir) -> RouterModel:
  """Loads `out_dir/router.*` when it was trained with the same config, else trains and saves."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  out_dir = pathlib.Path(out_dir)
  meta_path = out_dir / "router.json"
  if meta_path.exists():
    meta = json.loads(meta_path.read_text())
    params = load_file(str(out_dir / "router.safetensors"))
    same = meta["info"].get("config") == config.to_dict() and params["w1"].shape[:2] == (
        model.config.num_layers, model.config.hidden_size)
    if same:
      return RouterModel(params, int(meta["windows"]), int(meta["batch_size"]), meta["info"])
  router = train_router(config, model, task, records)
  save_router(router, out_dir)
  return router


def run_router(model, examples: Sequence[Any], task, router: RouterModel, *, test_set: str, max_batch: int = 32,
               progress: bool = False, executor=None, warmup: bool = True) -> MethodRun:
  """Routes every question's prompt (timed as overhead), then generates under the routed programs. `warmup`
  first routes one prompt untimed (compiles)."""
  depth = model.config.num_layers
  ids = prompt_ids(model, examples, task)
  if warmup:
    route(model, router, ids[:1])
  start = time.perf_counter()
  decisions = route(model, router, ids)
  overhead = time.perf_counter() - start
  programs, fallbacks = [], 0
  for counts in decisions:
    program = counts_to_program(counts, depth)
    if program is None:
      fallbacks += 1
      program = Program.full(depth)
    programs.append([program])
  return run_ranked(model, examples, programs, task, method="router",
                    label="DR.LLM-style per-layer router (skip / execute / repeat)", test_set=test_set,
                    overhead_seconds=overhead, max_batch=max_batch, progress=progress, executor=executor,
                    info={"all_skip_fallbacks": fallbacks, "training": dict(router.info)})
