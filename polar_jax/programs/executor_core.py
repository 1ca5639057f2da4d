"""The executor's compiled core: pure functions for prefill, KV-cached decode and the generation loop.

A batch runs one `Schedule`: a shared layer id per step `steps[T]` and a per-row activity mask `active[B, T]`.
Every pass over the model is `run_steps`: a `fori_loop` whose trip count is the schedule's real length (a
traced scalar: padded steps are never executed and never branch) and whose step gathers one layer's weights,
so a batch of different programs still reads the weights once per step, and updates only the active rows.
Programs are data, so one compiled function serves every program of a shape bucket. Prefill, the shared-prefix
prefill and decode are that one loop over different hidden states, masks and cache columns.

The KV cache has one slot per schedule *step* (`[T, B, C, K, hd]`), not per layer id: a layer that runs twice
keeps both of its key/value sets, so cached generation equals uncached recomputation.

Nothing here knows about tokenizers or bucketing: `executor.py` prepares the arrays and jits these functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.programs import stop_rules


def run_steps(params, cfg: ModelConfig, steps, active, length, x, rope, key_mask, cache_k, cache_v, start):
  """Runs the schedule's real steps on hidden states x [B, S, D]; the loop every pass shares.

  Step t runs layer `steps[t]` on the rows `active[:, t]` (the others keep their x). Its key / value buffer is
  columns [0, W) of cache slot t, W = key_mask.shape[2] (caches [T, B, C, K, hd], C >= W); x's keys / values
  are written at columns [start, start + S) of it, x attends through key_mask [B, S, W], and those S columns
  go back into slot t. Returns (x, cache_k, cache_v).
  """
  width, new = key_mask.shape[2], x.shape[1]

  def body(t, carry):
    x, cache_k, cache_v = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    kc = jax.lax.dynamic_index_in_dim(cache_k, t, 0, keepdims=False)[:, :width]
    vc = jax.lax.dynamic_index_in_dim(cache_v, t, 0, keepdims=False)[:, :width]
    x_new, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, start, key_mask)
    x = jnp.where(active[:, t, None, None], x_new, x)
    k_new = jax.lax.dynamic_slice_in_dim(kc, start, new, axis=1)
    v_new = jax.lax.dynamic_slice_in_dim(vc, start, new, axis=1)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k_new[None], (t, 0, start, 0, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v_new[None], (t, 0, start, 0, 0))
    return x, cache_k, cache_v

  return jax.lax.fori_loop(0, length, body, (x, cache_k, cache_v))


def _empty_cache(cfg: ModelConfig, t_pad: int, rows: int, columns: int) -> jax.Array:
  return jnp.zeros((t_pad, rows, columns, cfg.num_kv_heads, cfg.head_dim), transformer.dtype_of(cfg))


def prefill(params, cfg: ModelConfig, steps, active, length, tokens, attn_mask, cache_len: int):
  """Prefill under a schedule.

  steps: [T] int32; active: [B, T] bool; length: scalar int32 (real steps); tokens, attn_mask: [B, S]
  (left-padded). Returns (hidden [B, S, D] after the final norm, cache_k, cache_v [T, B, cache_len, K, hd]).
  """
  b = tokens.shape[0]
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(attn_mask))
  key_mask = transformer.causal_key_mask(attn_mask)  # [B, S, S]
  cache = _empty_cache(cfg, steps.shape[0], b, cache_len)
  x, cache_k, cache_v = run_steps(params, cfg, steps, active, length, x, rope, key_mask, cache, cache, 0)
  return transformer.final_norm(params, cfg, x), cache_k, cache_v


def prefill_shared(params, cfg: ModelConfig, steps, active, length, prefix, group_active, row_group, tokens,
                   attn_mask, cache_len: int):
  """Prefill of prompts that all start with the same P tokens: the prefix runs once per distinct program.

  Under one program the prefix's keys and values do not depend on what follows it (causal attention), so a
  batch whose rows share a chat template (every search or evaluation batch) computes them once per program
  group instead of once per row.

  prefix: [P] int32 shared tokens; group_active: [G, T] the activity of each group's program; row_group: [B]
  each row's group; tokens, attn_mask: [B, S2] the rest of each prompt, left-padded. Cache columns: [0, P)
  the prefix, [P, P + S2) the rest, then generated tokens. Returns (hidden [B, S2, D] after the final norm,
  cache_k, cache_v [T, B, cache_len, K, hd]).
  """
  g, p = group_active.shape[0], prefix.shape[0]
  b, s2 = tokens.shape
  t_pad = steps.shape[0]

  # The prefix, once per group: its keys / values at every step.
  xp = transformer.embed(params, cfg, jnp.broadcast_to(prefix[None], (g, p)))
  rope_p = transformer.rope_tables(cfg, jnp.broadcast_to(jnp.arange(p)[None], (g, p)))
  mask_p = transformer.causal_key_mask(jnp.ones((g, p), jnp.int32))
  zeros_p = _empty_cache(cfg, t_pad, g, p)
  _, pk, pv = run_steps(params, cfg, steps, group_active, length, xp, rope_p, mask_p, zeros_p, zeros_p, 0)

  # The rest of every row, attending to its group's prefix.
  cache = _empty_cache(cfg, t_pad, b, cache_len)
  cache_k, cache_v = cache.at[:, :, :p].set(pk[:, row_group]), cache.at[:, :, :p].set(pv[:, row_group])
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, p + transformer.positions_from_mask(attn_mask))
  key_mask = jnp.concatenate([jnp.ones((b, s2, p), bool), transformer.causal_key_mask(attn_mask)], axis=2)
  x, cache_k, cache_v = run_steps(params, cfg, steps, active, length, x, rope, key_mask, cache_k, cache_v, p)
  return transformer.final_norm(params, cfg, x), cache_k, cache_v


def prefill_context(params, cfg: ModelConfig, steps, active, length, ctx_k, ctx_v, ctx_valid, tokens, attn_mask,
                    cache_len: int):
  """Prefill of prompts that continue shared contexts whose keys / values are already computed (the completion
  scorer's `ContextCache` bank, and a prompt's own first tokens where the scorer kept them,
  `completions.PromptState`): only the rest of each prompt runs.

  ctx_k, ctx_v: [B, T, P, K, hd] each row's context under the row's program at the program step the row runs at
  schedule step t (`completions.gather_context`); ctx_valid [B, P]: its real columns (rows may continue different
  contexts; the others are padding, masked); tokens, attn_mask: [B, S2] the rest of each prompt, left-padded, at
  positions n + 0, 1, ..., n = the row's real context columns (their keys carry positions 0 .. n - 1).
  Cache columns: [0, P) the context, [P, P + S2) the rest, then generated tokens.
  Returns (hidden [B, S2, D] after the final norm, cache_k, cache_v [T, B, cache_len, K, hd]).
  """
  b, s2 = tokens.shape
  p = ctx_k.shape[2]
  cache = _empty_cache(cfg, steps.shape[0], b, cache_len)
  cache_k = cache.at[:, :, :p].set(jnp.swapaxes(ctx_k, 0, 1))  # [T, B, P, K, hd]
  cache_v = cache.at[:, :, :p].set(jnp.swapaxes(ctx_v, 0, 1))
  x = transformer.embed(params, cfg, tokens)
  ctx_len = jnp.sum(ctx_valid, axis=1, dtype=jnp.int32)
  rope = transformer.rope_tables(cfg, ctx_len[:, None] + transformer.positions_from_mask(attn_mask))
  key_mask = jnp.concatenate([jnp.broadcast_to(ctx_valid[:, None], (b, s2, p)),
                              transformer.causal_key_mask(attn_mask)], axis=2)
  x, cache_k, cache_v = run_steps(params, cfg, steps, active, length, x, rope, key_mask, cache_k, cache_v, p)
  return transformer.final_norm(params, cfg, x), cache_k, cache_v


def decode_step(params, cfg: ModelConfig, steps, active, length, token, position, column, key_valid,
                cache_k, cache_v):
  """One decode step for all rows.

  token, position: [B] int32; column: scalar cache column to write; key_valid: [B, C] columns each row may
  attend (column included). Returns (logits [B, V], cache_k, cache_v).
  """
  x = transformer.embed(params, cfg, token[:, None])  # [B, 1, D]
  rope = transformer.rope_tables(cfg, position[:, None])
  key_mask = key_valid[:, None, :]  # [B, 1, C]
  x, cache_k, cache_v = run_steps(params, cfg, steps, active, length, x, rope, key_mask, cache_k, cache_v, column)
  logits = transformer.logits(params, cfg, transformer.final_norm(params, cfg, x))[:, 0]
  return logits, cache_k, cache_v


def _select(logits, keys, step, temperature):
  """Greedy when temperature == 0, else a sample at that temperature. logits: [B, V] -> [B] int32.

  Row r's sample at decode step `step` draws from `fold_in(keys[r], step)`: a row's tokens depend on its own key
  and logits only, never on which other rows share its batch.
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
  sampled = jax.vmap(jax.random.categorical)(step_keys, logits / safe_t).astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)


def generate_core(params, steps, active, length, prompt, row_valid, max_new, temperature, keys, stop,
                  *, cfg: ModelConfig, new_cap: int, counter: list):
  """Prefill + decode loop. Returns (tokens [B, new_cap], generated counts [B], stopped [B], logprobs
  [B, new_cap]: each emitted token's log-probability under the untempered model, 0 after a row stopped).

  `prompt` holds `tokens`, `attn_mask` [B, S] (left-padded) and, when the rows share a prefix, `prefix` [P],
  `group_active` [G, T] and `row_group` [B] (see `prefill_shared`); when they continue a context whose keys and
  values are computed, `ctx_k`, `ctx_v` and `ctx_valid` (see `prefill_context`). `keys` [B] are the rows' sampling keys
  (unused when greedy). `stop` holds the stop rule as arrays (`stop_rules.stop_arrays`). `counter[0]` counts
  traces.
  """
  counter[0] += 1  # Runs at trace time only: counts compiles.
  tokens, attn_mask = prompt["tokens"], prompt["attn_mask"]
  b = tokens.shape[0]
  if "ctx_k" in prompt:
    p = prompt["ctx_k"].shape[2]
    s = p + tokens.shape[1]
    h, cache_k, cache_v = prefill_context(
        params, cfg, steps, active, length, prompt["ctx_k"], prompt["ctx_v"], prompt["ctx_valid"], tokens,
        attn_mask, s + new_cap)
    prompt_valid = jnp.concatenate([prompt["ctx_valid"], attn_mask.astype(bool)], axis=1)
  elif "prefix" in prompt:
    p = prompt["prefix"].shape[0]
    s = p + tokens.shape[1]
    h, cache_k, cache_v = prefill_shared(params, cfg, steps, active, length, prompt["prefix"],
                                         prompt["group_active"], prompt["row_group"], tokens, attn_mask,
                                         s + new_cap)
    prompt_valid = jnp.concatenate([jnp.ones((b, p), bool), attn_mask.astype(bool)], axis=1)
  else:
    s = tokens.shape[1]
    h, cache_k, cache_v = prefill(params, cfg, steps, active, length, tokens, attn_mask, s + new_cap)
    prompt_valid = attn_mask.astype(bool)
  logits = transformer.logits(params, cfg, h[:, -1:])[:, 0]  # [B, V]
  key_valid = jnp.concatenate([prompt_valid, jnp.zeros((b, new_cap), bool)], axis=1)
  next_pos = jnp.sum(prompt_valid, axis=1).astype(jnp.int32)  # [B]

  def emit(i, logits, scan, done, out, lps, n_gen):
    """Picks the next token of every row, records it (and its log-probability) for live rows, and updates the
    stop state."""
    tok = _select(logits, keys, i, temperature)
    live = ~done
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok_lp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
    out = out.at[:, i].set(jnp.where(live, tok, 0))
    lps = lps.at[:, i].set(jnp.where(live, tok_lp, 0.0))
    n_gen = n_gen + live.astype(jnp.int32)
    ends, scan = stop_rules.advance(stop, tok, scan)
    return tok, scan, done | (live & ends), out, lps, n_gen

  out = jnp.zeros((b, new_cap), jnp.int32)
  lps = jnp.zeros((b, new_cap), jnp.float32)
  n_gen = jnp.zeros((b,), jnp.int32)
  scan = stop_rules.initial_state(stop, b)
  tok, scan, stopped, out, lps, n_gen = emit(0, logits, scan, ~row_valid, out, lps, n_gen)
  stopped = stopped & row_valid

  def cond(carry):
    i, _, _, stopped, *_ = carry
    return (i < max_new) & ~jnp.all(stopped | ~row_valid)

  def body(carry):
    i, tok, scan, stopped, out, lps, n_gen, cache_k, cache_v, key_valid = carry
    column = s + i - 1
    key_valid = key_valid.at[:, column].set(True)
    position = next_pos + i - 1
    logits, cache_k, cache_v = decode_step(params, cfg, steps, active, length, tok, position, column,
                                           key_valid, cache_k, cache_v)
    tok, scan, stopped, out, lps, n_gen = emit(i, logits, scan, stopped | ~row_valid, out, lps, n_gen)
    return i + 1, tok, scan, stopped & row_valid, out, lps, n_gen, cache_k, cache_v, key_valid

  carry = (jnp.int32(1), tok, scan, stopped, out, lps, n_gen, cache_k, cache_v, key_valid)
  _, _, _, stopped, out, lps, n_gen, _, _, _ = jax.lax.while_loop(cond, body, carry)
  return out, n_gen, stopped, lps


def prefill_logits_core(params, steps, active, length, tokens, attn_mask, *, cfg: ModelConfig, counter: list):
  """Full-sequence logits [B, S, V] under a schedule (one prefill, no generation)."""
  counter[0] += 1
  h, _, _ = prefill(params, cfg, steps, active, length, tokens, attn_mask, tokens.shape[1])
  return transformer.logits(params, cfg, h)  # [B, S, V]
