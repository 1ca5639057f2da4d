"""Executor benchmark: skipped-layer savings, program machinery cost, mixed-program batches, compiles.

  python benchmarks/executor.py --out executor.json      (--quick: a smoke test, few repeats)

The variants of each comparison run interleaved (A B C ..., then ... C B A) for --repeats rounds after a warm-up
call each, all in one process, so that a change of machine load hits them alike. Every time is reported as its
min and its median over the rounds, every ratio as the ratio of mins and of medians, next to its ideal from the
model's bytes and FLOPs; `loadavg_before` / `loadavg_after` say how quiet the machine was.

Decode is timed in the executor's own generation loop (`Executor`'s jitted `generate_core`: the KV cache in a
`lax.while_loop` carry, greedy, no stop): a call generating 1 + k tokens minus a call generating 1 (the prefill
and the first token), over k (--decode-tokens).

Keys (milliseconds; the plain key is the median, `_min` / `_median` are both):
  prefill_ms_full / _half: one `executor_core.prefill` of the prompt under the full program / a 15-step one.
  decode_ms_full / _half: per generated token at --batch rows (decode_ms_per_row_b1 = decode_ms_full at batch 1).
  decode_ms_static: per token of the same model generating at full depth with no program machinery (a plain
    `lax.scan` over the stacked layers with a per-layer cache, greedy), timed the same way.
  decode_ms_per_row_b8_mixed: per token per row of 8 different single-edit programs in one batch
    (schedule_len_b8_mixed merged steps).
  prefill_half_over_full, decode_half_over_full, machinery_overhead (decode full / static),
    b8_mixed_over_b1_per_row: the ratio of medians, plus `_min`, `_median` and the ideals `_ideal_bytes` (bytes
    read: the weights of the steps run, the output matrix, the KV cache), `_ideal_flops` and `_ideal`, the bound
    that applies: FLOPs for the prefill, bytes for decode at batch 1, 1 for the machinery; for batch 8 neither
    (8 rows are neither bandwidth- nor FLOP-bound on a CPU), so its `_ideal` is `_ideal_machine`: the model's
    weight matmuls alone (no attention, no weight gather) timed here at 8 rows and at 1 (`matmul_ms_*`),
    scaled to the steps each side runs.
  compiles_for_20_programs, generate_tokens_per_s_b1.
`--model` takes any `load_model` argument; `--random-llama-3b` times a Llama-3.2-3B-shaped model with random
bf16 weights instead (for an accelerator).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import emit, interleaved_ms, machine
from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.models.registry import Model
from polar_jax.programs import Executor, Program, StopRule, executor_core
from polar_jax.programs.schedule import bucket_length

QUESTION = ("A baker made 24 muffins in the morning and 18 more in the afternoon. She sold 29 of them. "
            "How many muffins does she have left? Answer with a number.")


def static_decode(params, cfg, token, position, column, key_valid, cache_k, cache_v):
  """Full-depth decode with no program machinery: scan over stacked layers with a [L, ...] cache."""
  x = transformer.embed(params, cfg, token[:, None])
  rope = transformer.rope_tables(cfg, position[:, None])

  def body(x, xs):
    lp, kc, vc = xs
    x, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, column, key_valid[:, None, :])
    return x, (kc, vc)

  x, (cache_k, cache_v) = jax.lax.scan(body, x, (params["layers"], cache_k, cache_v))
  return transformer.logits(params, cfg, transformer.final_norm(params, cfg, x))[:, 0], cache_k, cache_v


def static_generate(params, tokens, mask, max_new, *, cfg: ModelConfig, new_cap: int):
  """Greedy generation at full depth with no program machinery: a scan prefill, then `static_decode` in a
  while loop. tokens, mask: [B, S] left-padded. Returns the tokens [B, new_cap]."""
  b, s = tokens.shape
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(mask))
  key_mask = jnp.pad(transformer.causal_key_mask(mask), ((0, 0), (0, 0), (0, new_cap)))
  cache = jnp.zeros((cfg.num_layers, b, s + new_cap, cfg.num_kv_heads, cfg.head_dim), x.dtype)

  def layer_body(x, xs):
    lp, kc, vc = xs
    x, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, 0, key_mask)
    return x, (kc, vc)

  x, (cache_k, cache_v) = jax.lax.scan(layer_body, x, (params["layers"], cache, cache))
  logits = transformer.logits(params, cfg, transformer.final_norm(params, cfg, x[:, -1:]))[:, 0]
  tok = jnp.argmax(logits, -1).astype(jnp.int32)
  out = jnp.zeros((b, new_cap), jnp.int32).at[:, 0].set(tok)
  key_valid = jnp.pad(mask.astype(bool), ((0, 0), (0, new_cap)))
  next_pos = jnp.sum(mask, 1).astype(jnp.int32)

  def body(carry):
    i, tok, out, cache_k, cache_v, key_valid = carry
    column = s + i - 1
    key_valid = key_valid.at[:, column].set(True)
    logits, cache_k, cache_v = static_decode(params, cfg, tok, next_pos + i - 1, column, key_valid, cache_k,
                                             cache_v)
    tok = jnp.argmax(logits, -1).astype(jnp.int32)
    return i + 1, tok, out.at[:, i].set(tok), cache_k, cache_v, key_valid

  carry = (jnp.int32(1), tok, out, cache_k, cache_v, key_valid)
  return jax.lax.while_loop(lambda c: c[0] < max_new, body, carry)[2]


def single_edit_variants(depth: int) -> list[Program]:
  """8 distinct one-edit programs (skip or repeat a block), like the children of a search's root."""
  full = list(range(depth))
  edits = []
  for start, k in ((4, 1), (10, 2), (20, 1), (25, 3)):  # skips
    edits.append(full[:start] + full[start + k:])
  for start, k in ((6, 1), (14, 2), (18, 1), (27, 2)):  # repeats
    edits.append(full[:start + k] + full[start:start + k] + full[start + k:])
  return [Program(e, depth) for e in edits]


# -- ideals from the model's shapes --

def _layer_params(cfg: ModelConfig) -> float:
  """Weights of one layer (float leaves of `params["layers"]` over the layer count)."""
  leaves = jax.tree.leaves(transformer.param_shapes(cfg)["layers"])
  return sum(math.prod(x.shape) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)) / cfg.num_layers


def pass_cost(cfg: ModelConfig, steps: int, rows: int, queries: int, keys: int, head_tokens: int
              ) -> tuple[float, float]:
  """(bytes read, FLOPs) of one pass: `steps` layer steps over rows x queries tokens attending `keys` cache
  columns (every row computes every step, as the executor does), then the output matrix on head_tokens tokens.
  Bytes: each step's weights once, its KV cache rows x keys; the output matrix once when used."""
  item = jnp.dtype(transformer.dtype_of(cfg)).itemsize
  w, d, v = _layer_params(cfg), cfg.hidden_size, cfg.vocab_size
  kv_bytes = rows * keys * 2 * cfg.num_kv_heads * cfg.head_dim * item
  attn_flops = 4 * cfg.num_heads * cfg.head_dim * keys  # q.k and p.v per query
  nbytes = steps * (w * item + kv_bytes) + (v * d * item if head_tokens else 0)
  flops = steps * rows * queries * (2 * w + attn_flops) + head_tokens * 2 * v * d
  return nbytes, flops


def _ratio(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
  return a[0] / b[0], a[1] / b[1]


def matmul_probe(params, cfg: ModelConfig, repeats: int) -> dict[str, float]:
  """Min ms of the model's weight matmuls alone (per-layer weights as separate arrays: no gather, no
  attention), a chain through all layers and the output matrix apart, at 1 and at 8 rows."""
  layers = [jax.tree.map(lambda w, i=i: w[i], params["layers"]) for i in range(cfg.num_layers)]
  mats = [[w for w in jax.tree.leaves(lp) if w.ndim >= 2 and jnp.issubdtype(w.dtype, jnp.floating)]
          for lp in layers]
  d = cfg.hidden_size

  @jax.jit
  def chain(x, mats):
    for layer_mats in mats:
      for w in layer_mats:
        w2 = w.reshape(w.shape[0], -1) if w.shape[0] == d else w.reshape(-1, w.shape[-1])
        inp = jnp.tile(x, (1, -(-w2.shape[0] // d)))[:, :w2.shape[0]]
        y = jnp.dot(inp, w2, preferred_element_type=jnp.float32)
        x = x + jnp.tanh(jnp.pad(y, ((0, 0), (0, max(0, d - y.shape[1]))))[:, :d]).astype(x.dtype)
    return x

  head = jax.jit(lambda x, p: transformer.logits(p, cfg, x[:, None])[:, 0])
  out_matrix = {name: params[name] for name in ("embed", "lm_head") if name in params}
  dtype = transformer.dtype_of(cfg)
  xs = {m: jnp.full((m, d), 0.01, dtype) for m in (1, 8)}
  fns = {}
  for m, x in xs.items():
    fns[f"layers_{m}"] = lambda x=x: jax.block_until_ready(chain(x, mats))
    fns[f"head_{m}"] = lambda x=x: jax.block_until_ready(head(x, out_matrix))
  times = interleaved_ms(fns, repeats)
  return {f"matmul_ms_{name}": min(t) for name, t in times.items()}


# -- the benchmark --

def _stats(out: dict, key: str, times: list[float]) -> None:
  out[f"{key}_min"], out[f"{key}_median"] = min(times), statistics.median(times)
  out[key] = out[f"{key}_median"]


def _ratio_stats(out: dict, key: str, num: str, den: str, ideal_bytes: float, ideal_flops: float,
                 ideal: float) -> None:
  out[f"{key}_min"] = out[f"{num}_min"] / out[f"{den}_min"]
  out[f"{key}_median"] = out[f"{num}_median"] / out[f"{den}_median"]
  out[key] = out[f"{key}_median"]
  out[f"{key}_ideal_bytes"], out[f"{key}_ideal_flops"], out[f"{key}_ideal"] = ideal_bytes, ideal_flops, ideal


def run(model: Model, repeats: int, new_tokens: int, decode_tokens: int, batch: int = 1,
        prompt_len: int | None = None) -> dict:
  cfg, params = model.config, model.params
  depth = cfg.num_layers
  ex = Executor(model)
  if prompt_len is None:
    prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}])
    ids = model.tokenizer.encode(prompt)
  else:
    ids = [int(t) for t in np.random.default_rng(0).integers(10, cfg.vocab_size - 10, prompt_len)]
  full = Program.full(depth)
  half = Program(list(range(0, depth, 2)) if depth % 2 == 0 else list(range(depth // 2)), depth)
  if depth == 30:
    half = Program(list(range(15)), depth)  # A 15-step program, as the issue states.

  out = {
      "model": model.name, "dtype": cfg.dtype, "layers": depth, "prompt_tokens": len(ids), "batch": batch,
      "repeats": repeats, "decode_tokens": decode_tokens, "loadavg_before": list(os.getloadavg()),
  }

  # Prefill: one executor_core.prefill per call, full and half program interleaved.
  prefill_fn = jax.jit(executor_core.prefill, static_argnums=(1, 7))

  def prefill_call(programs):
    sched = ex.schedule(programs)
    tokens, mask, active, _ = ex._batch_arrays([ids] * batch, sched, batch)
    args = (jnp.asarray(sched.ids), jnp.asarray(active), jnp.int32(sched.length), jnp.asarray(tokens),
            jnp.asarray(mask), tokens.shape[1])
    return lambda: jax.block_until_ready(prefill_fn(params, cfg, *args))

  times = interleaved_ms({"full": prefill_call([full] * batch), "half": prefill_call([half] * batch)}, repeats)
  _stats(out, "prefill_ms_full", times["full"])
  _stats(out, "prefill_ms_half", times["half"])
  out["half_program_steps"] = len(half)

  # Decode, in the generation loop: (a 1 + k token call) - (a 1 token call), over k.
  new_cap = bucket_length(1 + decode_tokens, ex.new_token_quantum)
  stop = ex._stop_arrays(StopRule(stop_ids=()))
  static_fn = jax.jit(static_generate, static_argnames=("cfg", "new_cap"))

  def generate_calls(programs):
    rows = len(programs)
    sched = ex.schedule(programs)
    prompt, active, row_valid = ex._prompt_arrays([ids] * rows, sched, programs, ex._batch_pad(rows))
    args = (params, jnp.asarray(sched.ids), jnp.asarray(active), jnp.int32(sched.length), prompt,
            jnp.asarray(row_valid))
    keys = jax.vmap(jax.random.key)(jnp.zeros(len(row_valid), jnp.uint32))  # per-row keys (unused: greedy)
    return sched.length, [lambda n=n: jax.block_until_ready(ex._generate(
        *args, jnp.int32(n), jnp.float32(0.0), keys, stop, new_cap=new_cap))
        for n in (1, 1 + decode_tokens)]

  def static_calls(rows):
    tokens, mask, _, _ = ex._batch_arrays([ids] * rows, ex.schedule([full] * rows), rows)
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
    return [lambda n=n: jax.block_until_ready(static_fn(params, tokens, mask, jnp.int32(n), cfg=cfg,
                                                        new_cap=new_cap))
            for n in (1, 1 + decode_tokens)]

  variants = {"full": generate_calls([full] * batch)[1], "half": generate_calls([half] * batch)[1],
              "static": static_calls(batch)}
  variants_b8 = single_edit_variants(depth)
  if batch == 1:
    b8_len, variants["b8_mixed"] = generate_calls(variants_b8)
  fns = {f"{name}_{n}": call for name, calls in variants.items() for n, call in zip(("short", "long"), calls)}
  times = interleaved_ms(fns, repeats)
  for name in variants:
    short, long = times[f"{name}_short"], times[f"{name}_long"]
    per_row = 8 if name == "b8_mixed" else 1
    key = "decode_ms_per_row_b8_mixed" if name == "b8_mixed" else f"decode_ms_{name}"
    out[f"{key}_min"] = (min(long) - min(short)) / decode_tokens / per_row
    out[f"{key}_median"] = (statistics.median(long) - statistics.median(short)) / decode_tokens / per_row
    out[key] = out[f"{key}_median"]

  # Ideals. Prefill: executor_core.prefill has no output matrix; decode attends the whole cache width.
  s_pad = ex.prompt_bucket(len(ids))
  keys = s_pad + new_cap
  prefill = {n: pass_cost(cfg, n, batch, s_pad, s_pad, 0) for n in (len(half), depth)}
  decode = {n: pass_cost(cfg, n, batch, 1, keys, batch) for n in (len(half), depth)}
  probe = matmul_probe(params, cfg, repeats)
  out.update(probe)
  layers_1, head_1 = probe["matmul_ms_layers_1"], probe["matmul_ms_head_1"]
  half_machine = (len(half) / depth * layers_1 + head_1) / (layers_1 + head_1)
  prefill_ratio = _ratio(prefill[len(half)], prefill[depth])
  decode_ratio = _ratio(decode[len(half)], decode[depth])
  _ratio_stats(out, "prefill_half_over_full", "prefill_ms_half", "prefill_ms_full", *prefill_ratio,
               ideal=prefill_ratio[1])
  _ratio_stats(out, "decode_half_over_full", "decode_ms_half", "decode_ms_full", *decode_ratio,
               ideal=decode_ratio[0])
  out["decode_half_over_full_ideal_machine"] = half_machine
  _ratio_stats(out, "machinery_overhead", "decode_ms_full", "decode_ms_static", 1.0, 1.0, ideal=1.0)
  if batch == 1:
    out["schedule_len_b8_mixed"] = b8_len
    for stat in ("", "_min", "_median"):
      out[f"decode_ms_per_row_b1{stat}"] = out[f"decode_ms_full{stat}"]
    b8 = pass_cost(cfg, b8_len, 8, 1, keys, 8)
    b8_ratio = (b8[0] / 8 / decode[depth][0], b8[1] / 8 / decode[depth][1])
    machine_ideal = ((b8_len / depth * probe["matmul_ms_layers_8"] + probe["matmul_ms_head_8"]) / 8
                     / (layers_1 + head_1))
    _ratio_stats(out, "b8_mixed_over_b1_per_row", "decode_ms_per_row_b8_mixed", "decode_ms_per_row_b1",
                 *b8_ratio, ideal=machine_ideal)
    out["b8_mixed_over_b1_per_row_ideal_machine"] = machine_ideal
    # Compiles: 20 distinct programs of different lengths (17..depth steps: one schedule bucket) through the
    # public generate API.
    rng = np.random.default_rng(0)
    gen_ex = Executor(model)
    programs = set()
    while len(programs) < 20:
      n = int(rng.integers(min(17, depth), depth + 1))
      programs.add(tuple(sorted(rng.choice(depth, n, replace=False).tolist())))
    for p in sorted(programs):
      gen_ex.generate([ids], [list(p)], 2)
    out["compiles_for_20_programs"] = gen_ex.compiles
    # End-to-end generation throughput (greedy, no early stop), after a warm-up call of the same shapes.
    gen_ex.generate([ids], full, new_tokens, stop=StopRule(stop_ids=()))
    t0 = time.perf_counter()
    res = gen_ex.generate([ids], full, new_tokens, stop=StopRule(stop_ids=()))
    out["generate_tokens_per_s_b1"] = float(res.num_generated[0]) / (time.perf_counter() - t0)
  out["loadavg_after"] = list(os.getloadavg())
  return out


def summary(out: dict) -> str:
  """The ratios next to their ideals, one line each."""
  lines = [f"batch {out['batch']}, {out['repeats']} interleaved rounds, load average before "
           f"{out['loadavg_before'][0]:.2f}, after {out['loadavg_after'][0]:.2f}"]
  for key in ("prefill_half_over_full", "decode_half_over_full", "machinery_overhead", "b8_mixed_over_b1_per_row"):
    if key in out:
      lines.append(f"  {key:26s} min {out[key + '_min']:.3f}  median {out[key + '_median']:.3f}   ideal "
                   f"{out[key + '_ideal']:.3f} (bytes {out[key + '_ideal_bytes']:.3f}, "
                   f"FLOPs {out[key + '_ideal_flops']:.3f})")
  return "\n".join(lines)


def random_llama_3b() -> Model:
  from polar_jax.models.presets import paper_config
  from polar_jax.testing import tiny_tokenizer
  cfg = paper_config("Llama-3.2-3B-Instruct", dtype="bfloat16")
  params = jax.jit(lambda k: transformer.init_params(cfg, k))(jax.random.key(0))
  return Model("random-llama-3.2-3b", cfg, params, tiny_tokenizer(cfg.vocab_size), "random")


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="smollm2-135m-instruct")
  ap.add_argument("--random-llama-3b", action="store_true")
  ap.add_argument("--batch", type=int, nargs="+", default=[1])
  ap.add_argument("--prompt-len", type=int, default=None)
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--decode-tokens", type=int, default=16, help="k: decode is timed over k generated tokens")
  ap.add_argument("--new-tokens", type=int, default=32, help="tokens of the end-to-end throughput run")
  ap.add_argument("--quick", action="store_true", help="a smoke test: 2 rounds, 4 decode tokens")
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  if args.quick:
    args.repeats, args.decode_tokens, args.new_tokens = 2, 4, 4
  if args.random_llama_3b:
    model = random_llama_3b()
  else:
    from polar_jax.models import load_model
    model = load_model(args.model)
  results = [run(model, args.repeats, args.new_tokens, args.decode_tokens, b, args.prompt_len) for b in args.batch]
  for r in results:
    print(summary(r), file=sys.stderr)
  result = results[0] if len(results) == 1 else {"runs": results}
  result["machine"] = machine()
  emit(result, args.out)


if __name__ == "__main__":
  main()
