"""ShortGPT (Men et al., 2025): remove the layers whose output is most similar to their input.

Block Influence of layer i: BI_i = 1 - E_{x,t}[cos(h_i[t], h_{i+1}[t])], the mean over every real (non-padding)
token t of every calibration prompt x of the cosine similarity between the hidden state entering layer i and
the one leaving it, in the ordinary full-depth forward pass. The n layers with the lowest BI are removed;
the rest run once each, in order: one static program for every question.

`block_influence` runs the full-depth prefill over the calibration prompts (left-padded batches, one
compiled function per padded shape) and accumulates the per-layer cosine sums on device.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.evaluation.outcomes import MethodRun, run_ranked
from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.programs import Program, bucket_length


@functools.partial(jax.jit, static_argnames=("cfg",))
def _cosine_sums(params, tokens, mask, *, cfg: ModelConfig):
  """tokens, mask: [B, S] (left-padded). Returns (per-layer sum of cos(in, out) over real tokens [L], count)."""
  b, s = tokens.shape
  x = transformer.embed(params, cfg, tokens)  # [B, S, D]
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(mask))
  key_mask = transformer.causal_key_mask(mask)  # [B, S, S]
  fresh = jnp.zeros((b, s, cfg.num_kv_heads, cfg.head_dim), x.dtype)
  valid = mask.astype(jnp.float32)  # [B, S]

  def body(i, carry):
    x, sums = carry
    lp = transformer.layer_slice(params["layers"], i)
    y, _, _ = transformer.layer(lp, cfg, x, rope, fresh, fresh, 0, key_mask)
    xf, yf = x.astype(jnp.float32), y.astype(jnp.float32)
    dot = jnp.sum(xf * yf, axis=-1)
    norms = jnp.linalg.norm(xf, axis=-1) * jnp.linalg.norm(yf, axis=-1)
    cos = dot / jnp.maximum(norms, 1e-12)  # [B, S]
    return y, sums.at[i].set(jnp.sum(cos * valid))

  _, sums = jax.lax.fori_loop(0, cfg.num_layers, body, (x, jnp.zeros((cfg.num_layers,), jnp.float32)))
  return sums, jnp.sum(valid)


def block_influence(model, prompts: Sequence[str] | Sequence[Sequence[int]], *, batch_size: int = 8,
                    length_quantum: int = 16) -> np.ndarray:
  """BI [L] of every layer over the calibration prompts (strings are tokenized without special tokens)."""
  if not prompts:
    raise ValueError("block_influence needs at least one calibration prompt (e.g. rendered training questions).")
  tokenizer = model.tokenizer
  ids = [tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
  if any(not x for x in ids):
    raise ValueError("A calibration prompt is empty after tokenization.")
  cfg = model.config
  total = np.zeros(cfg.num_layers, np.float64)
  count = 0.0
  order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # Similar lengths together: less padding.
  for lo in range(0, len(order), batch_size):
    chunk = [ids[i] for i in order[lo:lo + batch_size]]
    s = bucket_length(max(len(x) for x in chunk), length_quantum)
    tokens = np.full((batch_size, s), tokenizer.pad_id, np.int32)
    mask = np.zeros((batch_size, s), np.int32)
    for r, x in enumerate(chunk):
      tokens[r, s - len(x):] = x
      mask[r, s - len(x):] = 1
    # Padding rows stay fully masked: their attention is uniform (finite mask value) and they are not counted.
    sums, n = _cosine_sums(model.params, jnp.asarray(tokens), jnp.asarray(mask), cfg=cfg)
    sums = np.asarray(sums, np.float64)
    total += sums
    count += float(n)
  return 1.0 - total / count


def removed_layers(influence: Sequence[float], n: int) -> tuple[int, ...]:
  """The n layers with the lowest Block Influence (ties: the lower layer id first), sorted."""
  influence = np.asarray(influence, np.float64)
  if not 0 <= n < influence.size:
    raise ValueError(f"ShortGPT can remove 0..{influence.size - 1} of {influence.size} layers, got n={n}.")
  order = np.lexsort((np.arange(influence.size), influence))
  return tuple(sorted(int(i) for i in order[:n]))


def shortgpt_program(influence: Sequence[float], n: int) -> Program:
  """The full program without the n least influential layers."""
  depth = len(influence)
  gone = set(removed_layers(influence, n))
  return Program([i for i in range(depth) if i not in gone], depth)


def matched_removal(depth: int, mean_layers: float) -> int:
  """The n whose program length D - n is closest to a method's mean executed layers per token (0..D-1)."""
  return int(min(max(round(depth - mean_layers), 0), depth - 1))


def run_shortgpt(model, examples: Sequence[Any], task, influence: Sequence[float], n: int, *, test_set: str,
                 max_batch: int = 32, progress: bool = False, executor=None) -> MethodRun:
  """Every question under the ShortGPT program with n layers removed (greedy)."""
  program = shortgpt_program(influence, n)
  return run_ranked(model, examples, [[program]] * len(examples), task, method=f"shortgpt_n{n}",
                    label=f"ShortGPT, {n} layer{'s' if n != 1 else ''} removed", test_set=test_set, max_batch=max_batch,
                    progress=progress, executor=executor,
                    info={"n": n, "removed": list(removed_layers(influence, n)),
                          "block_influence": [round(float(v), 6) for v in influence]})
