"""The PoLar predictor: question token features -> per-layer segment boundaries and skip/keep/repeat ops.

Architecture (the release's `polar/model.py`, rewritten in Flax linen):

  features [B, S, F] --Linear--> [B, S, d]
  D learned layer queries [D, d] --cross-attention (heads, dropout on attention weights, padding masked,
      no residual, no norm)--> [B, D, d]
  N post-norm transformer blocks over the layer axis (torch `TransformerEncoderLayer` defaults: ReLU MLP
      of width 4d, dropout 0.1, LayerNorm eps 1e-5, no final norm) -> [B, D, d]
  boundary head Linear(d, 1) -> [B, D];  op head Linear(d, 3) -> [B, D, 3]

With d=256, 4 heads, 2 blocks, D=28 and the paper's 1024-dim encoder this has 2,113,284 trainable
parameters (the paper's "~2.11M"); `count_params` checks it without allocating.

Every parameter is annotated with logical axis names ('features', 'embed', 'heads', 'mlp', 'layers',
'vocab' for the op classes); `polar_jax.sharding` maps them to mesh axes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_OPS = 3  # skip / keep / repeat-once, as in polar_jax.programs (OP_SKIP, OP_KEEP, OP_REPEAT)


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
  """Shape of the predictor. `depth` is the base model's number of layers D."""
  depth: int
  d_model: int = 256
  num_heads: int = 4
  num_blocks: int = 2
  dropout: float = 0.1
  mlp_ratio: int = 4

  def __post_init__(self):
    if self.depth < 2:
      raise ValueError(f"depth must be >= 2 (a boundary needs two layers), got {self.depth}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}.")


def _dense(features: int, axes: tuple[str | None, str | None], name: str) -> nn.Dense:
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-5, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


class Attention(nn.Module):
  """torch.nn.MultiheadAttention semantics: q/k/v/out projections with bias, dropout on attention weights."""
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, queries, keys, key_mask, *, deterministic: bool):
    # queries: [B, Q, d], keys: [B, K, d], key_mask: [B, K] bool (True = attend) -> [B, Q, d]
    d = queries.shape[-1]
    hd = d // self.num_heads
    heads = lambda t: t.reshape(t.shape[:2] + (self.num_heads, hd))  # [B, T, H, hd]
    q = heads(_dense(d, ("embed", "heads"), "query")(queries))
    k = heads(_dense(d, ("embed", "heads"), "key")(keys))
    v = heads(_dense(d, ("embed", "heads"), "value")(keys))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(hd))  # [B, H, Q, K]
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout)(weights, deterministic=deterministic)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(queries.shape[:2] + (d,))  # [B, Q, d]
    return _dense(d, ("heads", "embed"), "out")(ctx)


class LayerBlock(nn.Module):
  """Post-norm transformer encoder block over the layer axis (torch TransformerEncoderLayer defaults)."""
  num_heads: int
  mlp_dim: int
  dropout: float

  @nn.compact
  def __call__(self, x, *, deterministic: bool):  # x: [B, D, d] -> [B, D, d]
    drop = lambda t: nn.Dropout(self.dropout)(t, deterministic=deterministic)
    attn = Attention(self.num_heads, self.dropout, name="self_attention")(x, x, None, deterministic=deterministic)
    x = _layer_norm("attention_norm")(x + drop(attn))
    h = drop(nn.relu(_dense(self.mlp_dim, ("embed", "mlp"), "mlp_in")(x)))
    return _layer_norm("mlp_norm")(x + drop(_dense(x.shape[-1], ("mlp", "embed"), "mlp_out")(h)))


class PolarPredictor(nn.Module):
  """(features [B, S, F], mask [B, S]) -> (boundary logits [B, D], op logits [B, D, 3])."""
  config: PredictorConfig

  @nn.compact
  def __call__(self, features, mask, *, deterministic: bool = True):
    cfg = self.config
    tokens = _dense(cfg.d_model, ("features", "embed"), "token_proj")(features)  # [B, S, d]
    # torch nn.Embedding initialises N(0, 1).
    queries = self.param("layer_queries",
                         nn.with_logical_partitioning(nn.initializers.normal(1.0), ("layers", "embed")),
                         (cfg.depth, cfg.d_model))  # [D, d]
    queries = jnp.broadcast_to(queries.astype(tokens.dtype), (features.shape[0],) + queries.shape)  # [B, D, d]
    x = Attention(cfg.num_heads, cfg.dropout, name="cross_attention")(
        queries, tokens, mask, deterministic=deterministic)  # [B, D, d]
    for i in range(cfg.num_blocks):
      x = LayerBlock(cfg.num_heads, cfg.mlp_ratio * cfg.d_model, cfg.dropout, name=f"block_{i}")(
          x, deterministic=deterministic)
    boundary_logits = _dense(1, ("embed", None), "boundary_head")(x)[..., 0]  # [B, D]
    op_logits = _dense(NUM_OPS, ("embed", None), "op_head")(x)  # [B, D, 3]
    return boundary_logits, op_logits


def init_variables(config: PredictorConfig, feature_dim: int, rng, *, seq_len: int = 8):
  """Boxed variables (each leaf a `nn.LogicallyPartitioned`); use `nn.unbox` for plain arrays."""
  model = PolarPredictor(config)
  # jit: one compile instead of dispatching every initializer op by op (slow on CPU).
  return jax.jit(model.init)(rng, jnp.zeros((1, seq_len, feature_dim), jnp.float32), jnp.ones((1, seq_len), bool))


def init_params(config: PredictorConfig, feature_dim: int, rng) -> dict:
  """Plain (unboxed) parameters."""
  return nn.unbox(init_variables(config, feature_dim, rng))["params"]


def param_logical_axes(config: PredictorConfig, feature_dim: int) -> dict:
  """The logical axis names of every parameter (a PartitionSpec per leaf), computed without allocating."""
  boxed = jax.eval_shape(lambda: init_variables(config, feature_dim, jax.random.PRNGKey(0)))
  return nn.get_partition_spec(boxed)["params"]


def count_params(config: PredictorConfig, feature_dim: int) -> int:
  """Number of trainable parameters, computed with `jax.eval_shape` (nothing allocated)."""
  shapes = jax.eval_shape(lambda: init_params(config, feature_dim, jax.random.PRNGKey(0)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))
