"""The primitives every decoder family is built from: norms, RoPE, grouped-query attention, the cache write, the
gated MLP. Pure functions over arrays; the families (`llama.py`, `gemma3.py`) compose them into layers and
`transformer.py` runs the layers. This module imports no other model module.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from polar_jax.models.config import ModelConfig

Params = dict[str, Any]

MASK_VALUE = -1e30  # Finite, so fully masked rows (left padding) give a uniform softmax, never NaN.


def dtype_of(cfg: ModelConfig):
  return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def shape_fn(dtype) -> Callable[..., jax.ShapeDtypeStruct]:
  """`sd(*shape)`: a ShapeDtypeStruct of this dtype (for the families' param shape tables)."""
  return lambda *shape: jax.ShapeDtypeStruct(shape, dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, *, unit_offset: bool = False) -> jax.Array:
  """RMSNorm computed in float32, cast back to x's dtype: x / rms(x) * w, or * (1 + w) with unit_offset (Gemma)."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  scale = weight.astype(jnp.float32)
  if unit_offset:
    scale = 1.0 + scale
  return (x32 * scale).astype(x.dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, S, N, hd] by the tables [B, S, hd/2] (the HF 'rotate half' convention)."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def project_qkv(lp: Params, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Normed hidden states [B, S, D] -> q [B, S, H, hd], k, v [B, S, K, hd] (no bias, no norm, no RoPE)."""
  q = jnp.einsum("bsd,dhk->bshk", h, lp["q"])
  k = jnp.einsum("bsd,dhk->bshk", h, lp["k"])
  v = jnp.einsum("bsd,dhk->bshk", h, lp["v"])
  return q, k, v


def write_cache(k_cache: jax.Array, v_cache: jax.Array, k: jax.Array, v: jax.Array, write_index: jax.Array | int
                ) -> tuple[jax.Array, jax.Array]:
  """This call's keys / values [B, S, K, hd] written into the [B, T, K, hd] buffers at columns [write_index, +S)."""
  k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), write_index, axis=1)
  v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), write_index, axis=1)
  return k_cache, v_cache


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
  scores = jnp.where(key_mask[:, None, None, :, :], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgst,btkd->bskgd", probs, v)
  return out.reshape(b, s, h, hd)


def output_projection(lp: Params, attn: jax.Array) -> jax.Array:
  """Attention output [B, S, H, hd] -> [B, S, D] (no bias)."""
  return jnp.einsum("bshk,hkd->bsd", attn, lp["o"])


def gated_mlp(lp: Params, h: jax.Array, activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """down(activation(gate(h)) * up(h)): SwiGLU with silu, GeGLU with gelu. [B, S, D] -> [B, S, D]."""
  gate = jnp.einsum("bsd,df->bsf", h, lp["gate"])
  up = jnp.einsum("bsd,df->bsf", h, lp["up"])
  return jnp.einsum("bsf,fd->bsd", activation(gate) * up, lp["down"])
