"""Gemma 3 (`gemma3_text`): the decoder layer and the pieces of the forward pass that differ from Llama.

What differs: the embedding is scaled by sqrt(hidden) (in the activation dtype, as transformers does); every
RMSNorm multiplies by (1 + w) and there are four per layer (before and after attention, before and after the
MLP); the MLP is GeGLU with tanh-approximate GELU; q and k get a per-head RMSNorm; attention scores are scaled
by query_pre_attn_scalar ** -0.5; sliding-window local layers are interleaved with
global layers and use their own RoPE base; the final logits may be soft-capped; embeddings are tied.

The window and the RoPE choice are per-layer *data*, not config: `params["layers"]` holds

  window    [L] int32   keys a layer sees, itself included (query - key < window); int32 max on global layers
  rope_kind [L] int32   0 = the global RoPE (rope_theta, with its scaling), 1 = the local one (rope_local_theta)

gathered per program step like the weights, so a program that moves a local layer next to a global one runs
through the same compiled function. `rope_tables` returns both tables stacked ([2, B, S, hd/2]); each layer
picks its own. Weights: attn_norm, post_attn_norm, mlp_norm (pre-feedforward), post_mlp_norm [L, D] (raw w,
as in the HF checkpoint); q_norm, k_norm [L, hd]; q, k, v, o, gate, up, down as in `transformer.py`.
The shared primitives (attention, RoPE rotation, the gated MLP) are `layers.py`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import layers
from polar_jax.models.config import SLIDING, ModelConfig

GLOBAL_ROPE, LOCAL_ROPE = 0, 1
NO_WINDOW = np.iinfo(np.int32).max


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """Gemma's RMSNorm: x / rms(x) * (1 + w), computed in float32, cast back to x's dtype."""
  return layers.rms_norm(x, weight, eps, unit_offset=True)


def layer_data(cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The per-layer window and RoPE choice, from the config's layer_types."""
  sliding = np.array([t == SLIDING for t in cfg.layer_types] or [False] * cfg.num_layers)
  return {"window": np.where(sliding, cfg.sliding_window, NO_WINDOW).astype(np.int32),
          "rope_kind": np.where(sliding, LOCAL_ROPE, GLOBAL_ROPE).astype(np.int32)}


def layer_shapes(cfg: ModelConfig, dtype) -> dict[str, jax.ShapeDtypeStruct]:
  L, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
  h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  sd = layers.shape_fn(dtype)
  shapes = {
      "attn_norm": sd(L, d), "post_attn_norm": sd(L, d), "mlp_norm": sd(L, d), "post_mlp_norm": sd(L, d),
      "q_norm": sd(L, hd), "k_norm": sd(L, hd),
      "q": sd(L, d, h, hd), "k": sd(L, d, kv, hd), "v": sd(L, d, kv, hd), "o": sd(L, h, hd, d),
      "gate": sd(L, d, f), "up": sd(L, d, f), "down": sd(L, f, d),
  }
  for name, value in layer_data(cfg).items():
    shapes[name] = jax.ShapeDtypeStruct(value.shape, value.dtype)
  return shapes


def embed(params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
  """Token ids [B, S] -> embeddings scaled by sqrt(hidden) (the scale rounded to the activation dtype)."""
  dt = layers.dtype_of(cfg)
  x = jnp.take(params["embed"], tokens, axis=0).astype(dt)
  return x * jnp.asarray(np.sqrt(cfg.hidden_size), dt)


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin [2, B, S, hd/2]: index GLOBAL_ROPE, then LOCAL_ROPE."""
  hd = cfg.head_dim
  exponents = np.arange(0, hd, 2, dtype=np.float64) / hd
  inv_global = 1.0 / (cfg.rope_theta ** exponents) / cfg.rope_linear_factor
  inv_local = 1.0 / (cfg.rope_local_theta ** exponents)
  inv = jnp.asarray(np.stack([inv_global, inv_local]), jnp.float32)  # [2, hd/2]
  angles = positions.astype(jnp.float32)[None, ..., None] * inv[:, None, None, :]  # [2, B, S, hd/2]
  return jnp.cos(angles), jnp.sin(angles)


def layer(lp, cfg: ModelConfig, x: jax.Array, rope: tuple[jax.Array, jax.Array], k_cache: jax.Array,
          v_cache: jax.Array, write_index: jax.Array | int, key_mask: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One Gemma 3 layer; the contract of `transformer.layer` (cache columns double as positions for the window:
  queries sit at columns [write_index, write_index + S), keys at [0, T))."""
  eps = cfg.rms_norm_eps
  cos, sin = rope[0][lp["rope_kind"]], rope[1][lp["rope_kind"]]  # [B, S, hd/2]
  q, k, v = layers.project_qkv(lp, rms_norm(x, lp["attn_norm"], eps))
  q, k = rms_norm(q, lp["q_norm"], eps), rms_norm(k, lp["k_norm"], eps)
  q, k = layers.apply_rope(q, cos, sin), layers.apply_rope(k, cos, sin)
  k_cache, v_cache = layers.write_cache(k_cache, v_cache, k, v, write_index)
  s, t = x.shape[1], k_cache.shape[1]
  distance = (write_index + jnp.arange(s))[:, None] - jnp.arange(t)[None, :]  # [S, T]
  key_mask = key_mask & (distance < lp["window"])[None]
  attn = layers.attention(q, k_cache, v_cache, key_mask, cfg, scale=cfg.query_pre_attn_scalar ** -0.5)
  x = x + rms_norm(layers.output_projection(lp, attn), lp["post_attn_norm"], eps)
  y = layers.gated_mlp(lp, rms_norm(x, lp["mlp_norm"], eps), _gelu_tanh)
  return x + rms_norm(y, lp["post_mlp_norm"], eps), k_cache, v_cache


def _gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)

