"""The predictor's training loss, computed exactly as the release's `polar/train.py` does.

Per example (one question, one valid program):
  boundary loss = mean over layers 1..D-1 of BCE-with-logits(boundary logit, target boundary);
  op loss       = mean over segment starts of cross-entropy(op logits, op label) (labels IGNORE_INDEX
                  elsewhere; an example with no starts would divide by 1, but every program has one at 0);
  loss_i        = boundary loss + op loss.
Batch weights, in the release's order: optional length preference w = exp(-beta * len) / mean(w); times the
example weight (full-depth down-weighting, per-question normalisation, from `targets.py`); renormalised to
mean 1 over the batch (w / (mean(w) + 1e-8)). The batch loss is mean(w * loss_i).

Batches have a fixed shape, so a short last batch is padded with rows whose `valid` is False: every mean
above is taken over valid rows only, which reproduces the release's smaller last batch exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from polar_jax.programs import IGNORE_INDEX


def _masked_mean(x, valid):  # x, valid: [B] -> scalar
  return jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def per_example_loss(boundary_logits, op_logits, boundaries, op_labels):
  """boundary_logits [B, D], op_logits [B, D, 3], boundaries [B, D] {0,1}, op_labels [B, D] -> loss_i [B]."""
  logits = boundary_logits[:, 1:].astype(jnp.float32)  # [B, D-1]
  targets = boundaries[:, 1:].astype(jnp.float32)
  # Numerically stable BCE with logits: max(x, 0) - x*y + log(1 + exp(-|x|)).
  bce = jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  boundary_loss = jnp.mean(bce, axis=1)  # [B]
  has_label = op_labels != IGNORE_INDEX  # [B, D]
  logp = jax.nn.log_softmax(op_logits.astype(jnp.float32), axis=-1)  # [B, D, 3]
  picked = jnp.take_along_axis(logp, jnp.where(has_label, op_labels, 0)[..., None], axis=-1)[..., 0]  # [B, D]
  op_sum = jnp.sum(jnp.where(has_label, -picked, 0.0), axis=1)
  op_loss = op_sum / jnp.maximum(jnp.sum(has_label, axis=1), 1).astype(jnp.float32)  # [B]
  return boundary_loss + op_loss, boundary_loss, op_loss


def polar_loss(boundary_logits, op_logits, batch, *, length_beta: float = 0.0):
  """The weighted batch loss and its parts.

  batch: dict with boundaries [B, D], op_labels [B, D], weight [B], length [B], valid [B] (bool).
  Returns (loss scalar, metrics dict of scalars).
  """
  valid = batch["valid"]
  loss_i, boundary_i, op_i = per_example_loss(boundary_logits, op_logits, batch["boundaries"], batch["op_labels"])
  w = jnp.ones_like(loss_i)
  if length_beta:
    w = jnp.exp(-length_beta * batch["length"].astype(jnp.float32))
    w = w / (_masked_mean(w, valid) + 1e-8)
  w = w * batch["weight"].astype(jnp.float32)
  w = w / (_masked_mean(w, valid) + 1e-8)
  loss = _masked_mean(w * loss_i, valid)
  metrics = {"loss": loss, "boundary_loss": _masked_mean(boundary_i, valid), "op_loss": _masked_mean(op_i, valid)}
  return loss, metrics
