"""The model's confidence in the answer it wrote (no gold answer involved): `RunRecord.answer_logprob`.

It is the mean log-probability of the reply's tokens from the first one up to and including the token that
completes the answer (where the extracted answer last occurs in the reply): the same quantity whether the
reply was generated (the executor returns each emitted token's log-probability) or certified by one prefill
of the gold completion (its log-probabilities through the gold's last token). Tokens after the answer (a
period, the stop token) do not count. Used by confidence selection (`polar_jax.menu.select`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def answer_end_token(tokenizer, tokens: Sequence[int], answer: str | None) -> int | None:
  """The number of reply tokens up to and including the answer's last character, or None (no answer found)."""
  if not answer or not tokens:
    return None
  text = tokenizer.decode(list(tokens))
  at = text.rfind(answer)
  if at < 0:
    return None
  end = at + len(answer)
  for k in range(1, len(tokens) + 1):
    if len(tokenizer.decode(list(tokens[:k]))) >= end:
      return k
  return len(tokens)


def answer_logprob(tokenizer, tokens: Sequence[int], logprobs: Sequence[float], answer: str | None) -> float | None:
  """Mean log-probability of `tokens[:answer_end_token]` (module docstring), or None."""
  k = answer_end_token(tokenizer, tokens, answer)
  if k is None or len(logprobs) < k:
    return None
  return float(np.mean(np.asarray(logprobs[:k], np.float64)))
