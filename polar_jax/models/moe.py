"""Qwen2-MoE's sparse MLP (Qwen1.5-MoE-A2.7B): a top-k router over E experts plus a gated shared expert.

For each token h: router probabilities p = softmax(h @ router) over E experts (float32); the top k experts run
the SwiGLU expert MLP and their outputs are summed with weights p_top (renormalized to sum 1 when
`norm_topk_prob`); a shared SwiGLU expert runs on every token and is added, scaled by
sigmoid(h @ shared_expert_gate).

Params (in `params["layers"]`, stacked on a leading layer axis like every other weight, so a program step
gathers one whole MoE layer, which is one program unit as in the paper):

  router            [L, D, E]
  expert_gate, expert_up [L, E, D, Fe]     expert_down [L, E, Fe, D]
  shared_gate, shared_up [L, D, Fs]        shared_down [L, Fs, D]
  shared_expert_gate [L, D]
  moe_sparse        [L] int32              (only when the config has dense layers)

Dense layers (`mlp_only_layers`, `decoder_sparse_step`). The executor gathers one layer's weights per step by
a traced index, so every layer must have the same pytree structure. A dense layer's MLP is a SwiGLU MLP, the
same function as the shared expert, so it is stored in the shared-expert slot (zero-padded to the wider of
the two widths when they differ: padded columns contribute silu(0) * 0 = 0 exactly), its routed experts,
router and shared gate are zeros, and the per-layer flag `moe_sparse` = 0 makes the layer skip the routed
experts (a `lax.cond`, so no expert FLOPs run) and open the shared gate fully. The alternative, both a dense
MLP and the experts on every layer, would add a dense MLP to all sparse layers; this way only dense layers
carry padding, and a model without dense layers (the published Qwen1.5-MoE-A2.7B) carries none and does not
even have the flag (a static branch on the config).

Routed compute follows the selected experts. `impl="grouped"` sorts the N*k (token, expert) assignments by
expert and runs the experts as grouped matmuls (`jax.lax.ragged_dot`): TPU lowers it to a grouped matmul;
note that JAX's generic (CPU) lowering expands it densely, E/k times the routed FLOPs. `impl="gathered"`
gathers the selected experts' weights per assignment and is exact-cost on every backend; `auto` uses it when
N*k <= E (decode steps: a handful of tokens, so the gathered weights are fewer than all experts) and
`grouped` otherwise. `impl="dense"` runs every expert on every token and masks the combination: the
reference the other two are tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import layers
from polar_jax.models.config import ModelConfig

IMPLS = ("auto", "grouped", "gathered", "dense")


def shared_width(cfg: ModelConfig) -> int:
  """Width of the shared-expert slot: also holds the dense layers' MLPs, zero-padded (see module docstring)."""
  if cfg.dense_layers:
    return max(cfg.shared_expert_intermediate_size, cfg.intermediate_size)
  return cfg.shared_expert_intermediate_size


def layer_data(cfg: ModelConfig) -> dict[str, np.ndarray]:
  """Per-layer data arrays of `params["layers"]`: the sparse flag, only when some layer is dense."""
  if not cfg.dense_layers:
    return {}
  flags = np.ones(cfg.num_layers, np.int32)
  flags[list(cfg.dense_layers)] = 0
  return {"moe_sparse": flags}


def mlp_shapes(cfg: ModelConfig, dtype) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of the MLP part of `params["layers"]` for a qwen2_moe config."""
  L, d, e = cfg.num_layers, cfg.hidden_size, cfg.num_experts
  fe, fs = cfg.moe_intermediate_size, shared_width(cfg)
  sd = layers.shape_fn(dtype)
  shapes = {
      "router": sd(L, d, e),
      "expert_gate": sd(L, e, d, fe), "expert_up": sd(L, e, d, fe), "expert_down": sd(L, e, fe, d),
      "shared_gate": sd(L, d, fs), "shared_up": sd(L, d, fs), "shared_down": sd(L, fs, d),
      "shared_expert_gate": sd(L, d),
  }
  for name, value in layer_data(cfg).items():
    shapes[name] = jax.ShapeDtypeStruct(value.shape, value.dtype)
  return shapes


def route(h: jax.Array, router: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """Top-k routing as transformers' Qwen2MoE router does it.

  h: [N, D]; router: [D, E]. Returns (weights [N, k] in h's dtype, experts [N, k] int32), experts ordered by
  decreasing probability.
  """
  logits = jnp.einsum("nd,de->ne", h, router)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  top, experts = jax.lax.top_k(probs, cfg.num_experts_per_tok)
  if cfg.norm_topk_prob:
    top = top / jnp.sum(top, axis=-1, keepdims=True)
  return top.astype(h.dtype), experts.astype(jnp.int32)


def _swiglu(x, gate, up, down, spec_in: str, spec_out: str):
  g = jnp.einsum(spec_in, x, gate)
  u = jnp.einsum(spec_in, x, up)
  return jnp.einsum(spec_out, jax.nn.silu(g) * u, down)


def routed_dense(lp, h, weights, experts, cfg: ModelConfig) -> jax.Array:
  """Reference: every expert on every token, combined with the (mostly zero) routing matrix. [N, D]."""
  n = h.shape[0]
  combine = jnp.zeros((n, cfg.num_experts), h.dtype).at[jnp.arange(n)[:, None], experts].set(weights)  # [N, E]
  g = jnp.einsum("nd,edf->nef", h, lp["expert_gate"])
  u = jnp.einsum("nd,edf->nef", h, lp["expert_up"])
  y = jnp.einsum("nef,efd->ned", jax.nn.silu(g) * u, lp["expert_down"])  # [N, E, D]
  return jnp.einsum("ne,ned->nd", combine, y)


def routed_gathered(lp, h, weights, experts, cfg: ModelConfig) -> jax.Array:
  """The selected experts' weights gathered per assignment: N*k expert MLPs, exact cost. [N, D]."""
  gate = jnp.take(lp["expert_gate"], experts, axis=0)  # [N, k, D, Fe]
  up = jnp.take(lp["expert_up"], experts, axis=0)
  down = jnp.take(lp["expert_down"], experts, axis=0)  # [N, k, Fe, D]
  y = _swiglu(h, gate, up, down, "nd,nkdf->nkf", "nkf,nkfd->nkd")  # [N, k, D]
  return jnp.einsum("nk,nkd->nd", weights, y)


def routed_grouped(lp, h, weights, experts, cfg: ModelConfig) -> jax.Array:
  """Assignments sorted by expert, experts run as grouped matmuls (`lax.ragged_dot`). [N, D]."""
  n, k = experts.shape
  flat = experts.reshape(-1)  # [N*k]
  order = jnp.argsort(flat, stable=True)  # Sorted position -> assignment.
  xs = jnp.take(h, order // k, axis=0)  # [N*k, D]
  sizes = jnp.bincount(flat, length=cfg.num_experts).astype(jnp.int32)  # [E]
  g = jax.lax.ragged_dot(xs, lp["expert_gate"], sizes)  # [N*k, Fe]
  u = jax.lax.ragged_dot(xs, lp["expert_up"], sizes)
  ys = jax.lax.ragged_dot(jax.nn.silu(g) * u, lp["expert_down"], sizes)  # [N*k, D]
  y = jnp.take(ys, jnp.argsort(order), axis=0).reshape(n, k, -1)  # Back to assignment order: [N, k, D].
  return jnp.einsum("nk,nkd->nd", weights, y)


_ROUTED = {"dense": routed_dense, "gathered": routed_gathered, "grouped": routed_grouped}


def mlp(lp, cfg: ModelConfig, h: jax.Array, impl: str = "auto") -> jax.Array:
  """The MoE block of one layer: normed hidden states h [B, S, D] -> [B, S, D] (added to the residual)."""
  if impl not in IMPLS:
    raise ValueError(f"MoE impl must be one of {IMPLS}, got {impl!r}.")
  b, s, d = h.shape
  h2 = h.reshape(b * s, d)
  if impl == "auto":
    impl = "gathered" if b * s * cfg.num_experts_per_tok <= cfg.num_experts else "grouped"
  routed_fn = _ROUTED[impl]

  def routed(h2):
    weights, experts = route(h2, lp["router"], cfg)
    return routed_fn(lp, h2, weights, experts, cfg)

  shared = _swiglu(h2, lp["shared_gate"], lp["shared_up"], lp["shared_down"], "nd,df->nf", "nf,fd->nd")
  gate = jax.nn.sigmoid(jnp.einsum("nd,d->n", h2, lp["shared_expert_gate"]))[:, None]
  if cfg.dense_layers:  # Static: only mixed models pay for the flag (see the module docstring).
    sparse = lp["moe_sparse"] != 0
    out = jax.lax.cond(sparse, routed, jnp.zeros_like, h2)
    gate = jnp.where(sparse, gate, 1.0)
  else:
    out = routed(h2)
  return (out + gate.astype(h.dtype) * shared).reshape(b, s, d)
