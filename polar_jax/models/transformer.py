"""The decoder as pure functions over a params pytree whose per-layer weights are stacked on axis 0.

Params layout (`L` layers, `D` hidden, `H` / `K` query / key-value heads, `hd` head dim, `F` MLP width):

  embed            [V, D]
  lm_head          [D, V]         (absent when embeddings are tied)
  final_norm       [D]
  layers/attn_norm [L, D]          layers/mlp_norm [L, D]
  layers/q         [L, D, H, hd]   layers/q_bias   [L, H, hd]   (qkv_bias)
  layers/k, v      [L, D, K, hd]   layers/k_bias, v_bias [L, K, hd]
  layers/o         [L, H, hd, D]   layers/o_bias   [L, D]       (o_bias)
  layers/q_norm, k_norm [L, hd]                                  (qk_norm)
  layers/gate, up  [L, D, F]       layers/down     [L, F, D]

Qwen2-MoE replaces gate / up / down with the expert and shared-expert weights of `moe.py`; Gemma 3 has its
own layer, norms and per-layer window / RoPE data (`gemma3.py`). Both may add per-layer *data* arrays to
`layers` (integer, from the config, see `layer_data`), gathered per step like the weights. Which family runs
is decided on static config fields, so the Llama / Qwen path traces exactly as before.

`layer` runs one decoder layer given that layer's slice of `layers`. It reads and writes a key/value cache
buffer handed in by the caller, so the same function serves an uncached forward (the buffer is this call's own
keys), prefill and one-token decode. This module knows nothing about programs: the executor decides which
layer runs at which step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import moe
from polar_jax.models.config import ModelConfig

Params = dict[str, Any]

_MASK_VALUE = -1e30  # Finite, so fully masked rows (left padding) give a uniform softmax, never NaN.


def dtype_of(cfg: ModelConfig):
  return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """RMSNorm computed in float32, cast back to x's dtype."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def rope_inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies [hd/2] (float64 on the host), with Llama 3 scaling when configured."""
  hd = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
  s = cfg.rope_scaling
  if s is None:
    return inv
  low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * np.pi / inv
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
  mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
  return np.where(mid, (1 - smooth) * inv / s.factor + smooth * inv, scaled)


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin tables [B, S, hd/2] (float32) for integer positions [B, S] (Gemma 3: [2, B, S, hd/2])."""
  if cfg.is_gemma:
    return _gemma3().rope_tables(cfg, positions)
  inv = jnp.asarray(rope_inverse_frequencies(cfg), jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv  # [B, S, hd/2]
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, S, N, hd] by the tables [B, S, hd/2] (the HF 'rotate half' convention)."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def embed(params: Params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
  """Token ids [B, S] -> hidden states [B, S, D]."""
  if cfg.is_gemma:
    return _gemma3().embed(params, cfg, tokens)
  return jnp.take(params["embed"], tokens, axis=0).astype(dtype_of(cfg))


def final_norm(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
  if cfg.is_gemma:
    return _gemma3().rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
  return rms_norm(x, params["final_norm"], cfg.rms_norm_eps)


def logits(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """Final-normed hidden states [B, S, D] -> float32 logits [B, S, V] (soft-capped when configured)."""
  if cfg.tie_word_embeddings:
    out = jnp.einsum("bsd,vd->bsv", x, params["embed"], preferred_element_type=jnp.float32)
  else:
    out = jnp.einsum("bsd,dv->bsv", x, params["lm_head"], preferred_element_type=jnp.float32)
  if cfg.final_logit_softcapping:
    out = jnp.tanh(out / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
  return out


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, cfg: ModelConfig, *,
              scale: float | None = None) -> jax.Array:
  """Grouped-query attention.

  q: [B, S, H, hd]; k, v: [B, T, K, hd]; key_mask: [B, S, T] (True = query s may attend key t).
  scale: score scale (default hd ** -0.5).
  Returns [B, S, H, hd].
  """
  b, s, h, hd = q.shape
  qg = q.reshape(b, s, cfg.num_kv_heads, cfg.num_groups, hd)
  scores = jnp.einsum("bskgd,btkd->bkgst", qg, k, preferred_element_type=jnp.float32)
  scores = scores * (hd ** -0.5 if scale is None else scale)
  scores = jnp.where(key_mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgst,btkd->bskgd", probs, v)
  return out.reshape(b, s, h, hd)


def layer(lp: Params, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array],
          k_cache: jax.Array, v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One decoder layer.

  Args:
    lp: this layer's weights (the `layers` subtree indexed at one layer).
    x: hidden states [B, S, D].
    rope: (cos, sin) tables [B, S, hd/2] for the S positions of x (as `rope_tables` returns them).
    k_cache, v_cache: [B, T, K, hd] buffers; this call's keys / values are written at columns
      [write_index, write_index + S) before attending.
    write_index: scalar column where x's first position goes.
    key_mask: [B, S, T] which cache columns each query may attend.

  Returns:
    (x_out [B, S, D], k_cache, v_cache) with the buffers updated.
  """
  if cfg.is_gemma:
    return _gemma3().layer(lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)
  x, k_cache, v_cache = attention_block(lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)
  h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
  if cfg.is_moe:
    return x + moe.mlp(lp, cfg, h), k_cache, v_cache
  gate = jnp.einsum("bsd,df->bsf", h, lp["gate"])
  up = jnp.einsum("bsd,df->bsf", h, lp["up"])
  x = x + jnp.einsum("bsf,fd->bsd", jax.nn.silu(gate) * up, lp["down"])
  return x, k_cache, v_cache


def attention_block(lp: Params, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array],
                    k_cache: jax.Array, v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The attention half of a Llama / Qwen layer, residual included: x + attn(norm(x)). Arguments as `layer`."""
  cos, sin = rope
  h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
  q = jnp.einsum("bsd,dhk->bshk", h, lp["q"])
  k = jnp.einsum("bsd,dhk->bshk", h, lp["k"])
  v = jnp.einsum("bsd,dhk->bshk", h, lp["v"])
  if cfg.qkv_bias:
    q, k, v = q + lp["q_bias"], k + lp["k_bias"], v + lp["v_bias"]
  if cfg.qk_norm:
    q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
    k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
  q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
  k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), write_index, axis=1)
  v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), write_index, axis=1)
  attn = attention(q, k_cache, v_cache, key_mask, cfg)
  out = jnp.einsum("bshk,hkd->bsd", attn, lp["o"])
  if cfg.o_bias:
    out = out + lp["o_bias"]
  return x + out, k_cache, v_cache


def layer_slice(layers: Params, index: jax.Array | int) -> Params:
  """The weights of one layer from the stacked `layers` subtree (a dynamic gather when index is traced)."""
  return jax.tree.map(lambda w: jax.lax.dynamic_index_in_dim(w, index, axis=0, keepdims=False), layers)


def causal_key_mask(attention_mask: jax.Array) -> jax.Array:
  """Causal + padding mask [B, S, S] from a [B, S] token mask (True/1 = real token)."""
  valid = attention_mask.astype(bool)
  s = valid.shape[1]
  causal = jnp.tril(jnp.ones((s, s), bool))
  return causal[None] & valid[:, None, :]


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
  """Positions [B, S] that start at 0 on each row's first real token (left padding gets 0)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def hidden_states(params: Params, cfg: ModelConfig, tokens: jax.Array, attention_mask: jax.Array | None = None,
                  ) -> jax.Array:
  """Final-normed hidden states [B, S, D] of the full-depth pass (what HF's `last_hidden_state` holds); used
  to run an LLM-based question encoder such as Qwen3-Embedding."""
  if attention_mask is None:
    attention_mask = jnp.ones(tokens.shape, jnp.int32)
  b, s = tokens.shape
  x = embed(params, cfg, tokens)
  rope = rope_tables(cfg, positions_from_mask(attention_mask))
  key_mask = causal_key_mask(attention_mask)
  empty = jnp.zeros((b, s, cfg.num_kv_heads, cfg.head_dim), x.dtype)

  def body(x, lp):
    x, _, _ = layer(lp, cfg, x, rope, empty, empty, 0, key_mask)
    return x, None

  x, _ = jax.lax.scan(body, x, params["layers"])
  return final_norm(params, cfg, x)


def forward(params: Params, cfg: ModelConfig, tokens: jax.Array, attention_mask: jax.Array | None = None,
            ) -> jax.Array:
  """The ordinary full-depth forward pass (layers 0..L-1 in order, no cache): tokens [B, S] -> logits [B, S, V].

  This is the reference every program execution is tested against.
  """
  return logits(params, cfg, hidden_states(params, cfg, tokens, attention_mask))


def layer_data(cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The integer per-layer data arrays of `params["layers"]` that follow from the config (none for Llama / Qwen).

  Conversion appends them to the converted weights; `init_params` fills them in.
  """
  if cfg.is_gemma:
    return _gemma3().layer_data(cfg)
  if cfg.is_moe:
    return moe.layer_data(cfg)
  return {}


def param_shapes(cfg: ModelConfig) -> Params:
  """The params pytree as jax.ShapeDtypeStruct leaves (no allocation)."""
  L, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
  h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  dt = dtype_of(cfg)
  sd = lambda *shape: jax.ShapeDtypeStruct(shape, dt)  # noqa: E731
  if cfg.is_gemma:
    layers = _gemma3().layer_shapes(cfg, dt)
  else:
    layers = {
        "attn_norm": sd(L, d), "mlp_norm": sd(L, d),
        "q": sd(L, d, h, hd), "k": sd(L, d, kv, hd), "v": sd(L, d, kv, hd), "o": sd(L, h, hd, d),
    }
    if cfg.is_moe:
      layers.update(moe.mlp_shapes(cfg, dt))
    else:
      layers.update(gate=sd(L, d, f), up=sd(L, d, f), down=sd(L, f, d))
    if cfg.qkv_bias:
      layers.update(q_bias=sd(L, h, hd), k_bias=sd(L, kv, hd), v_bias=sd(L, kv, hd))
    if cfg.o_bias:
      layers["o_bias"] = sd(L, d)
    if cfg.qk_norm:
      layers.update(q_norm=sd(L, hd), k_norm=sd(L, hd))
  params = {"embed": sd(cfg.vocab_size, d), "final_norm": sd(d), "layers": layers}
  if not cfg.tie_word_embeddings:
    params["lm_head"] = sd(d, cfg.vocab_size)
  return params


def init_params(cfg: ModelConfig, key: jax.Array | int, scale: float = 0.02) -> Params:
  """Random weights with the real layout (norms scale by 1, per-layer data from the config): for benchmarks,
  tests and shape checks.

  `key` is a JAX PRNG key (traceable: works under `jax.jit` / `jax.eval_shape`), or an int seed, which draws the
  weights with numpy on the host: no compile at all, the fast path for tiny test models.
  """
  shapes = param_shapes(cfg)
  data = layer_data(cfg)
  leaves, treedef = jax.tree.flatten_with_path(shapes)
  host = isinstance(key, (int, np.integer))
  if host:
    rng = np.random.default_rng(int(key))
    normal = lambda _, shape: rng.standard_normal(shape, np.float32)  # noqa: E731
    keys = [None] * len(leaves)
  else:
    normal = lambda k, shape: jax.random.normal(k, shape, jnp.float32)  # noqa: E731
    keys = jax.random.split(key, len(leaves))
  out = []
  for (path, sds), k in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if path[0].key == "layers" and path[-1].key in data:
      out.append(jnp.asarray(data[path[-1].key]))
    elif "norm" in name:  # Gemma's norms scale by (1 + w).
      out.append(jnp.full(sds.shape, 0.0 if cfg.is_gemma else 1.0, sds.dtype))
    else:
      out.append(jnp.asarray(scale * normal(k, sds.shape)).astype(sds.dtype))
  return jax.tree.unflatten(treedef, out)


def count_params(tree: Params) -> int:
  """Number of trainable scalars in a params (or shapes) pytree (the integer per-layer data not counted)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)))


def _gemma3():
  # Imported on first use: gemma3 builds on this module's primitives (attention, apply_rope).
  from polar_jax.models import gemma3
  return gemma3
