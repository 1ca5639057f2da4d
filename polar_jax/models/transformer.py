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
`layers` (integer, from the config, see `layer_data`), gathered per step like the weights.

What a family does its own way (embedding, RoPE tables, the layer, the layer's params, norm convention) is one
`Family` entry of `FAMILIES`, looked up by the static `model_type` (`family(cfg)`): the family modules
(`llama.py` for Llama / Qwen / Qwen2-MoE, `gemma3.py`) build their layers from the shared primitives of
`layers.py`, and this module runs them. The primitives are re-exported here (`rms_norm`, `apply_rope`,
`attention`, `dtype_of`, and Llama's `attention_block`, `rope_inverse_frequencies`).

`layer` runs one decoder layer given that layer's slice of `layers`. It reads and writes a key/value cache
buffer handed in by the caller, so the same function serves an uncached forward (the buffer is this call's own
keys), prefill and one-token decode. This module knows nothing about programs: the executor decides which
layer runs at which step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import gemma3, llama, moe
from polar_jax.models.config import ModelConfig
from polar_jax.models.layers import Params, shape_fn
from polar_jax.models.layers import apply_rope, attention, dtype_of, rms_norm  # noqa: F401 (re-exported)
from polar_jax.models.llama import attention_block, rope_inverse_frequencies  # noqa: F401 (re-exported)


@dataclasses.dataclass(frozen=True)
class Family:
  """What a model family does its own way; everything else in this module is shared.

  Attributes:
    embed: (params, cfg, tokens [B, S]) -> hidden states [B, S, D].
    rope_tables: (cfg, positions [B, S]) -> the (cos, sin) tables every layer of the family reads.
    layer: one decoder layer, the contract of `layer`.
    layer_shapes: (cfg, dtype) -> the ShapeDtypeStructs of `params["layers"]` (its data arrays included).
    layer_data: cfg -> the integer per-layer data arrays of `params["layers"]` (see `layer_data`).
    unit_offset_norms: norms scale by (1 + w) (Gemma), so their identity weight is 0, not 1.
    hf_norms: (HF name, name in `params["layers"]`) of each per-layer norm, in checkpoint order (`convert.py`).
  """
  embed: Callable[[Params, ModelConfig, jax.Array], jax.Array]
  rope_tables: Callable[[ModelConfig, jax.Array], tuple[jax.Array, jax.Array]]
  layer: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  layer_shapes: Callable[[ModelConfig, Any], dict[str, jax.ShapeDtypeStruct]]
  layer_data: Callable[[ModelConfig], dict[str, np.ndarray]]
  unit_offset_norms: bool = False
  hf_norms: tuple[tuple[str, str], ...] = (("input_layernorm.weight", "attn_norm"),
                                           ("post_attention_layernorm.weight", "mlp_norm"))


_LLAMA = Family(embed=llama.embed, rope_tables=llama.rope_tables, layer=llama.layer,
                layer_shapes=llama.layer_shapes, layer_data=llama.no_layer_data)
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
    "qwen2_moe": dataclasses.replace(_LLAMA, layer=llama.moe_layer, layer_shapes=llama.moe_layer_shapes,
                                     layer_data=moe.layer_data),
    "gemma3_text": Family(
        embed=gemma3.embed, rope_tables=gemma3.rope_tables, layer=gemma3.layer, layer_shapes=gemma3.layer_shapes,
        layer_data=gemma3.layer_data, unit_offset_norms=True,
        hf_norms=(("input_layernorm.weight", "attn_norm"), ("post_attention_layernorm.weight", "post_attn_norm"),
                  ("pre_feedforward_layernorm.weight", "mlp_norm"),
                  ("post_feedforward_layernorm.weight", "post_mlp_norm"))),
}


def family(cfg: ModelConfig) -> Family:
  """The config's family (every supported model_type has one)."""
  return FAMILIES[cfg.model_type]


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin tables [B, S, hd/2] (float32) for integer positions [B, S] (Gemma 3: [2, B, S, hd/2])."""
  return family(cfg).rope_tables(cfg, positions)


def embed(params: Params, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
  """Token ids [B, S] -> hidden states [B, S, D]."""
  return family(cfg).embed(params, cfg, tokens)


def final_norm(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
  return rms_norm(x, params["final_norm"], cfg.rms_norm_eps, unit_offset=family(cfg).unit_offset_norms)


def logits(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """Final-normed hidden states [B, S, D] -> float32 logits [B, S, V] (soft-capped when configured)."""
  if cfg.tie_word_embeddings:
    out = jnp.einsum("bsd,vd->bsv", x, params["embed"], preferred_element_type=jnp.float32)
  else:
    out = jnp.einsum("bsd,dv->bsv", x, params["lm_head"], preferred_element_type=jnp.float32)
  if cfg.final_logit_softcapping:
    out = jnp.tanh(out / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
  return out


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
  return family(cfg).layer(lp, cfg, x, rope, k_cache, v_cache, write_index, key_mask)


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
  return family(cfg).layer_data(cfg)


def param_shapes(cfg: ModelConfig) -> Params:
  """The params pytree as jax.ShapeDtypeStruct leaves (no allocation)."""
  d, dt = cfg.hidden_size, dtype_of(cfg)
  sd = shape_fn(dt)
  params = {"embed": sd(cfg.vocab_size, d), "final_norm": sd(d), "layers": family(cfg).layer_shapes(cfg, dt)}
  if not cfg.tie_word_embeddings:
    params["lm_head"] = sd(d, cfg.vocab_size)
  return params


def init_params(cfg: ModelConfig, key: jax.Array | int, scale: float = 0.02) -> Params:
  """Random weights with the real layout (norms at the identity, per-layer data from the config): for benchmarks,
  tests and shape checks.

  `key` is a JAX PRNG key (traceable: works under `jax.jit` / `jax.eval_shape`), or an int seed, which draws the
  weights with numpy on the host: no compile at all, the fast path for tiny test models.
  """
  shapes = param_shapes(cfg)
  data = layer_data(cfg)
  unit_offset = family(cfg).unit_offset_norms
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
    elif "norm" in name:  # The identity norm: w = 1, or 0 where norms scale by (1 + w).
      out.append(jnp.full(sds.shape, 0.0 if unit_offset else 1.0, sds.dtype))
    else:
      out.append(jnp.asarray(scale * normal(k, sds.shape)).astype(sds.dtype))
  return jax.tree.unflatten(treedef, out)


def count_params(tree: Params) -> int:
  """Number of trainable scalars in a params (or shapes) pytree (the integer per-layer data not counted)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)))

