"""Executor benchmark: program machinery cost, skipped-layer savings, mixed-program batches, compiles.

  python benchmarks/executor.py --out executor.json

Prints and writes one JSON object (medians over --repeats timed runs after warm-up, all in one process).
Keys: prefill_ms_full / prefill_ms_half (a 15-step program), decode_ms_full / decode_ms_half (per token,
batch 1), decode_ms_static (the same model decoding at full depth with no program machinery: a plain
`lax.scan` over the stacked layers and a per-layer cache), compiles_for_20_programs, decode_ms_per_row_b1,
decode_ms_per_row_b8_mixed (8 different single-edit variants of the full program in one batch, per row per
token), schedule_len_b8_mixed. `--model` takes any `load_model` argument; `--random-llama-3b` times a
Llama-3.2-3B-shaped model with random bf16 weights instead (for an accelerator).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import emit, machine, median_ms
from polar_jax.models import transformer
from polar_jax.models.registry import Model
from polar_jax.programs import Executor, Program, StopRule, executor_core

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


def single_edit_variants(depth: int) -> list[Program]:
  """8 distinct one-edit programs (skip or repeat a block), like the children of a search's root."""
  full = list(range(depth))
  edits = []
  for start, k in ((4, 1), (10, 2), (20, 1), (25, 3)):  # skips
    edits.append(full[:start] + full[start + k:])
  for start, k in ((6, 1), (14, 2), (18, 1), (27, 2)):  # repeats
    edits.append(full[:start + k] + full[start:start + k] + full[start + k:])
  return [Program(e, depth) for e in edits]


def run(model: Model, repeats: int, new_tokens: int, batch: int = 1, prompt_len: int | None = None) -> dict:
  cfg, params = model.config, model.params
  depth = cfg.num_layers
  ex = Executor(model)
  if prompt_len is None:
    prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}])
    ids = model.tokenizer.encode(prompt)
  else:
    ids = list(np.random.default_rng(0).integers(10, cfg.vocab_size - 10, prompt_len))
  full = Program.full(depth)
  half = Program(list(range(0, depth, 2)) if depth % 2 == 0 else list(range(depth // 2)), depth)
  if depth == 30:
    half = Program(list(range(15)), depth)  # A 15-step program, as the issue states.

  prefill_fn = jax.jit(executor_core.prefill, static_argnums=(1, 7))
  decode_fn = jax.jit(executor_core.decode_step, static_argnums=(1,))
  static_fn = jax.jit(static_decode, static_argnums=(1,))
  cache_len = 0

  def setup(programs, rows):
    nonlocal cache_len
    sched = ex.schedule(programs)
    tokens, mask, active, _ = ex._batch_arrays([ids] * rows, sched, rows)
    cache_len = tokens.shape[1] + 32
    return (jnp.asarray(sched.ids), jnp.asarray(active), jnp.int32(sched.length), jnp.asarray(tokens),
            jnp.asarray(mask), sched)

  def time_prefill(programs, rows):
    steps, active, length, tokens, mask, _ = setup(programs, rows)
    return median_ms(lambda: jax.block_until_ready(
        prefill_fn(params, cfg, steps, active, length, tokens, mask, cache_len)), repeats)

  def decode_state(programs, rows):
    steps, active, length, tokens, mask, sched = setup(programs, rows)
    _, ck, cv = prefill_fn(params, cfg, steps, active, length, tokens, mask, cache_len)
    s = tokens.shape[1]
    key_valid = jnp.concatenate([mask.astype(bool), jnp.ones((rows, cache_len - s), bool)], 1)
    tok = jnp.full((rows,), 17, jnp.int32)
    pos = jnp.sum(mask, 1).astype(jnp.int32)
    return steps, active, length, tok, pos, jnp.int32(s), key_valid, ck, cv, sched

  def time_decode(programs, rows):
    steps, active, length, tok, pos, col, kv, ck, cv, sched = decode_state(programs, rows)
    ms = median_ms(lambda: jax.block_until_ready(
        decode_fn(params, cfg, steps, active, length, tok, pos, col, kv, ck, cv)), repeats)
    return ms, sched.length

  def time_static(rows):
    _, _, _, tok, pos, col, kv, ck, cv, _ = decode_state([full] * rows, rows)
    ck, cv = ck[:depth], cv[:depth]
    return median_ms(lambda: jax.block_until_ready(static_fn(params, cfg, tok, pos, col, kv, ck, cv)), repeats)

  out = {
      "model": model.name, "dtype": cfg.dtype, "layers": depth, "prompt_tokens": len(ids), "batch": batch,
      "repeats": repeats,
  }
  out["prefill_ms_full"] = time_prefill([full] * batch, batch)
  out["prefill_ms_half"] = time_prefill([half] * batch, batch)
  out["half_program_steps"] = len(half)
  out["decode_ms_full"], _ = time_decode([full] * batch, batch)
  out["decode_ms_half"], _ = time_decode([half] * batch, batch)
  out["decode_ms_static"] = time_static(batch)
  out["prefill_half_over_full"] = out["prefill_ms_half"] / out["prefill_ms_full"]
  out["decode_half_over_full"] = out["decode_ms_half"] / out["decode_ms_full"]
  out["machinery_overhead"] = out["decode_ms_full"] / out["decode_ms_static"]
  if batch == 1:
    variants = single_edit_variants(depth)
    b8_ms, b8_len = time_decode(variants, 8)
    out["decode_ms_per_row_b1"] = out["decode_ms_full"]
    out["decode_ms_per_row_b8_mixed"] = b8_ms / 8
    out["schedule_len_b8_mixed"] = b8_len
    out["b8_mixed_over_b1_per_row"] = out["decode_ms_per_row_b8_mixed"] / out["decode_ms_per_row_b1"]
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
  return out


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
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--new-tokens", type=int, default=32)
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  if args.random_llama_3b:
    model = random_llama_3b()
  else:
    from polar_jax.models import load_model
    model = load_model(args.model)
  results = [run(model, args.repeats, args.new_tokens, b, args.prompt_len) for b in args.batch]
  result = results[0] if len(results) == 1 else {"runs": results}
  result["machine"] = machine()
  emit(result, args.out)


if __name__ == "__main__":
  main()
