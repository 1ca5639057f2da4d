"""Inference: questions -> ranked programs, with a trained predictor and its frozen encoder.

    predictor = ProgramPredictor.from_checkpoint(workdir, MiniLMEncoder(), depth=30)
    decoded = predictor.predict(["What is 7 * 8?"])  # one `Decoded` per question
    decoded[0].top1, [c.program for c in decoded[0].candidates]

The forward pass runs jitted on fixed-size batches of `batch_size` questions (the encoder buckets the
token length), so it compiles once per length bucket; decoding is host-side numpy (`decode.py`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.predictor.checkpoint import load_predictor
from polar_jax.predictor.decode import Decoded, DecodeOptions, decode_programs
from polar_jax.predictor.encoder import QuestionEncoder
from polar_jax.predictor.model import PolarPredictor, PredictorConfig


def batched_logits(apply_fn: Callable, params, features: np.ndarray, mask: np.ndarray,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Runs `apply_fn(params, features [b, S, F], mask [b, S])` over fixed-size batches (the last one padded).

  Returns (boundary logits [N, D], op logits [N, D, 3]) as numpy.
  """
  n = features.shape[0]
  out_b, out_o = [], []
  for lo in range(0, n, batch_size):
    f, m = features[lo:lo + batch_size], mask[lo:lo + batch_size]
    pad = batch_size - f.shape[0]
    if pad:
      f = np.pad(f, ((0, pad), (0, 0), (0, 0)))
      m = np.pad(m, ((0, pad), (0, 0)), constant_values=True)  # all-True rows keep softmax finite
    b, o = apply_fn(params, f, m)
    out_b.append(np.asarray(b)[:batch_size - pad])
    out_o.append(np.asarray(o)[:batch_size - pad])
  return np.concatenate(out_b), np.concatenate(out_o)


class ProgramPredictor:
  """A trained PoLar predictor with its encoder and decoding options."""

  def __init__(self, config: PredictorConfig, params, encoder: QuestionEncoder, *,
               decode: DecodeOptions = DecodeOptions(), batch_size: int = 32):
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    self.encoder = encoder
    self.decode_options = decode
    self.batch_size = batch_size
    model = PolarPredictor(config)
    self._apply = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m))

  @classmethod
  def from_checkpoint(cls, workdir, encoder: QuestionEncoder, *, which: str = "best", depth: int | None = None,
                      decode: DecodeOptions = DecodeOptions(), batch_size: int = 32) -> "ProgramPredictor":
    """Loads a training workdir's best (or latest) checkpoint; refuses another depth or encoder width."""
    config, params, _ = load_predictor(workdir, which=which, depth=depth, feature_dim=encoder.feature_dim)
    return cls(config, params, encoder, decode=decode, batch_size=batch_size)

  def logits(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (boundary logits [N, D], op logits [N, D, 3])."""
    features, mask = self.encoder.encode(list(questions))
    return batched_logits(self._apply, self.params, features, mask, self.batch_size)

  def predict(self, questions: Sequence[str]) -> list[Decoded]:
    """-> one `Decoded` (ranked candidate programs) per question."""
    b, o = self.logits(questions)
    return decode_programs(b, o, self.decode_options)
