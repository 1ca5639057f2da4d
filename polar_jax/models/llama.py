"""The Llama / Qwen family (`llama`, `qwen2`, `qwen3`, `qwen2_moe`): its RoPE, embedding, layer and param shapes.

A pre-norm layer: x + attn(norm(x)), then + mlp(norm(.)). Attention may carry q/k/v biases (Qwen2), an o
bias (Llama with attention_bias) and a per-head q/k RMSNorm before RoPE (Qwen3), all static config fields.
The MLP is SwiGLU (`layer`), or Qwen2-MoE's routed experts plus shared expert (`moe_layer`, see `moe.py`).
The weight layout is the one `transformer.py` documents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import layers, moe
from polar_jax.models.config import ModelConfig
from polar_jax.models.layers import Params


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
  """cos, sin tables [B, S, hd/2] (float32) for integer positions [B, S]."""
  inv = jnp.asarray(rope_inverse_frequencies(cfg), jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv  # [B, S, hd/2]
  return jnp.cos(angles), jnp.sin(angles)


def embed(params: Params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
  """Token ids [B, S] -> hidden states [B, S, D]."""
  return jnp.take(params["embed"], tokens, axis=0).astype(layers.dtype_of(cfg))


def attention_block(lp: Params, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array],
                    k_cache: jax.Array, v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The attention half of a layer, residual included: x + attn(norm(x)). Arguments as `transformer.layer`."""
  cos, sin = rope
  h = layers.rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
  q, k, v = layers.project_qkv(lp, h)
  if cfg.qkv_bias:
    q, k, v = q + lp["q_bias"], k + lp["k_bias"], v + lp["v_bias"]
  if cfg.qk_norm:
    q = layers.rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
    k = layers.rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
  q, k = layers.apply_rope(q, cos, sin), layers.apply_rope(k, cos, sin)
  k_cache, v_cache = layers.write_cache(k_cache, v_cache, k, v, write_index)
  out = layers.output_projection(lp, layers.attention(q, k_cache, v_cache, key_mask, cfg))
  if cfg.o_bias:
    out = out + lp["o_bias"]
  return x + out, k_cache, v_cache


def _layer(mlp, lp: Params, cfg: ModelConfig, x, rope, k_cache, v_cache, write_index, key_mask):
  x, k_cache, v_cache = attention_block(lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)
  return x + mlp(lp, cfg, layers.rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)), k_cache, v_cache


def _swiglu(lp: Params, cfg: ModelConfig, h: jax.Array) -> jax.Array:
  return layers.gated_mlp(lp, h, jax.nn.silu)


def layer(lp: Params, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array], k_cache: jax.Array,
          v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One Llama / Qwen layer with a SwiGLU MLP; the contract of `transformer.layer`."""
  return _layer(_swiglu, lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)


def moe_layer(lp: Params, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array], k_cache: jax.Array,
              v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One Qwen2-MoE layer (the MLP is `moe.mlp`); the contract of `transformer.layer`."""
  return _layer(moe.mlp, lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)


def no_layer_data(cfg: ModelConfig) -> dict[str, np.ndarray]:
  """A dense Llama / Qwen model has no per-layer data arrays."""
  return {}


def _attention_shapes(cfg: ModelConfig, dtype) -> dict[str, jax.ShapeDtypeStruct]:
  L, d = cfg.num_layers, cfg.hidden_size
  h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  sd = layers.shape_fn(dtype)
  shapes = {
      "attn_norm": sd(L, d), "mlp_norm": sd(L, d),
      "q": sd(L, d, h, hd), "k": sd(L, d, kv, hd), "v": sd(L, d, kv, hd), "o": sd(L, h, hd, d),
  }
  if cfg.qkv_bias:
    shapes.update(q_bias=sd(L, h, hd), k_bias=sd(L, kv, hd), v_bias=sd(L, kv, hd))
  if cfg.o_bias:
    shapes["o_bias"] = sd(L, d)
  if cfg.qk_norm:
    shapes.update(q_norm=sd(L, hd), k_norm=sd(L, hd))
  return shapes


def layer_shapes(cfg: ModelConfig, dtype) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of `params["layers"]` with a SwiGLU MLP."""
  L, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
  sd = layers.shape_fn(dtype)
  return {**_attention_shapes(cfg, dtype), "gate": sd(L, d, f), "up": sd(L, d, f), "down": sd(L, f, d)}


def moe_layer_shapes(cfg: ModelConfig, dtype) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of `params["layers"]` with Qwen2-MoE's MLP (its per-layer data included)."""
  return {**_attention_shapes(cfg, dtype), **moe.mlp_shapes(cfg, dtype)}
