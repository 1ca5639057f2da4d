"""Stop rules: when a generating row stops, decided on device one token at a time.

A `StopRule` is host data. `token_tables` turns the tokenizer's vocabulary into per-token facts (brace
balance, newline, the number scanner's transitions) once per executor; `stop_arrays` joins them with one rule
into the device arrays the compiled decode loop receives; `initial_state` and `advance` are the on-device
stop logic that loop calls per generated token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class StopRule:
  """When a row stops generating, decided on device per token.

  Attributes:
    stop_ids: token ids that end the row (EOS / end of turn); the model's by default.
    close_brace_depth: if set, the row also stops once the generated text closes this many more braces than
      it opens (1 after an assistant prefix that opened `\\boxed{`: generation stops at the balancing `}`).
    stop_at_newline: the row stops at the first token containing a newline.
    stop_after_number: the row stops once a number in the generated text is complete, i.e. at the first
      character after a digit run that cannot continue it (a digit, or one `.` / `,` followed by a digit):
      with an assistant prefix such as `The answer is `, the answer is complete there.
  """
  stop_ids: tuple[int, ...] | None = None
  close_brace_depth: int | None = None
  stop_at_newline: bool = False
  stop_after_number: bool = False


# States of the per-row number scanner (`stop_after_number`), advanced one character at a time.
_NO_DIGIT, _IN_NUMBER, _AFTER_SEPARATOR, _NUMBER_DONE = 0, 1, 2, 3


def _advance_number_state(state: int, ch: str) -> int:
  if state == _NUMBER_DONE:
    return state
  if ch.isdigit():
    return _IN_NUMBER
  if state == _IN_NUMBER and ch in ".,":
    return _AFTER_SEPARATOR
  return _NO_DIGIT if state == _NO_DIGIT else _NUMBER_DONE


def token_tables(tokenizer) -> dict[str, jax.Array]:
  """Per-token facts [V] for the on-device stop rules, as device arrays:

    net_braces  int32: count('{') - count('}') in the token's text;
    min_prefix  int32: the lowest running brace balance inside the token (<= 0);
    has_newline bool;
    number_next int32 [V, 4]: the number scanner's state after the token, per state before it.
  """
  vocab = tokenizer.vocab_size
  net = np.zeros(vocab, np.int32)
  low = np.zeros(vocab, np.int32)
  newline = np.zeros(vocab, bool)
  number_next = np.zeros((vocab, 4), np.int32)
  texts = tokenizer.backend.decode_batch([[i] for i in range(vocab)], skip_special_tokens=False)
  for i, text in enumerate(texts):
    for start in range(4):
      state = start
      for ch in text:
        state = _advance_number_state(state, ch)
      number_next[i, start] = state
    bal = 0
    for ch in text:
      if ch == "{":
        bal += 1
      elif ch == "}":
        bal -= 1
        low[i] = min(low[i], bal)
    net[i] = bal
    newline[i] = "\n" in text
  return {"net_braces": jnp.asarray(net), "min_prefix": jnp.asarray(low), "has_newline": jnp.asarray(newline),
          "number_next": jnp.asarray(number_next)}


def stop_arrays(stop: StopRule, tables: dict[str, jax.Array], default_stop_ids) -> dict[str, jax.Array]:
  """One stop rule as device arrays (the tables of `token_tables` plus the rule's own switches).

  `default_stop_ids` (the tokenizer's) apply when the rule names no stop ids.
  """
  stop_ids = stop.stop_ids if stop.stop_ids is not None else default_stop_ids
  return dict(tables, ids=jnp.asarray(np.array(stop_ids or [-1], np.int32)),
              brace_depth=jnp.int32(stop.close_brace_depth or 0),
              use_braces=jnp.bool_(stop.close_brace_depth is not None),
              use_newline=jnp.bool_(stop.stop_at_newline), use_number=jnp.bool_(stop.stop_after_number))


def initial_state(stop: dict[str, jax.Array], batch: int) -> tuple[jax.Array, jax.Array]:
  """The per-row scan state before the first generated token: (brace depth [B], number scanner state [B])."""
  return jnp.full((batch,), stop["brace_depth"], jnp.int32), jnp.full((batch,), _NO_DIGIT, jnp.int32)


def advance(stop: dict[str, jax.Array], tok: jax.Array, state: tuple[jax.Array, jax.Array]
            ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Reads the generated tokens tok [B]: (ends [B], whether each row's rule is met at tok; the new state)."""
  depth, number = state
  number = stop["number_next"][tok, number]
  ends = jnp.isin(tok, stop["ids"])
  ends |= stop["use_braces"] & (depth + stop["min_prefix"][tok] <= 0)
  ends |= stop["use_newline"] & stop["has_newline"][tok]
  ends |= stop["use_number"] & (number == _NUMBER_DONE)
  depth = depth + stop["net_braces"][tok]
  return ends, (depth, number)
