"""The program executor: prefill, KV-cached decode and generation under per-row layer programs.

A batch runs one `Schedule`: a shared layer id per step `ids[T]` and a per-row activity mask `active[B, T]`.
Each step gathers one layer's weights (so a batch of different programs still reads the weights once per
step) and updates only the active rows. The step loop is a `fori_loop` whose trip count is the schedule's real
length, a traced scalar: padded steps are never executed and never branch, and programs are data, so one
compiled function serves every program of a shape bucket.

The KV cache has one slot per schedule *step* — `[T, B, S, K, hd]` — not per layer id: a layer that runs
twice keeps both of its key/value sets, so cached generation equals uncached recomputation (the reference
PyTorch release keys its cache by layer id and gets repeated layers wrong).

Shapes are bucketed (batch, prompt length, new tokens, schedule length) so that new programs never trigger
new compiles; `Executor.compiles` counts the traces.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.models.registry import Model
from polar_jax.programs.program import Program, ProgramError
from polar_jax.programs.schedule import Schedule, bucket_length, make_schedule

# --- stop rules ----------------------------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class _TokenTables:
  """Per-token facts [V] for the on-device stop rules."""
  net_braces: np.ndarray  # int32: count('{') - count('}') in the token's text.
  min_prefix: np.ndarray  # int32: the lowest running brace balance inside the token (<= 0).
  has_newline: np.ndarray  # bool
  number_next: np.ndarray  # int32 [V, 4]: the number scanner's state after the token, per state before it.


def _token_tables(tokenizer) -> _TokenTables:
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
  return _TokenTables(net, low, newline, number_next)


# --- results -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GenerationResult:
  """Per-row outputs of `generate`.

  Attributes:
    tokens: generated ids per row (the stop token included when one was emitted).
    texts: decoded generations (special tokens removed).
    num_generated: [B] generated tokens per row.
    layers_executed: [B] layer executions spent per row: program length x (1 prefill pass + decode passes).
    stopped: [B] whether the row met its stop rule (False: it hit max_new_tokens).
    schedule_length: real steps of the shared schedule.
  """
  tokens: list[list[int]]
  texts: list[str]
  num_generated: np.ndarray
  layers_executed: np.ndarray
  stopped: np.ndarray
  schedule_length: int


# --- the compiled core ---------------------------------------------------------------------------------------


def prefill(params, cfg: ModelConfig, steps, active, length, tokens, attn_mask, cache_len: int):
  """Prefill under a schedule.

  steps: [T] int32; active: [B, T] bool; length: scalar int32 (real steps); tokens, attn_mask: [B, S]
  (left-padded). Returns (hidden [B, S, D] after the final norm, cache_k, cache_v [T, B, cache_len, K, hd]).
  """
  b, s = tokens.shape
  t_pad = steps.shape[0]
  dt = transformer.dtype_of(cfg)
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(attn_mask))
  key_mask = transformer.causal_key_mask(attn_mask)  # [B, S, S]
  cache_shape = (t_pad, b, cache_len, cfg.num_kv_heads, cfg.head_dim)
  cache_k = jnp.zeros(cache_shape, dt)
  cache_v = jnp.zeros(cache_shape, dt)
  fresh = jnp.zeros((b, s, cfg.num_kv_heads, cfg.head_dim), dt)

  def body(t, carry):
    x, cache_k, cache_v = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    x_new, k, v = transformer.layer(lp, cfg, x, rope, fresh, fresh, 0, key_mask)
    x = jnp.where(active[:, t, None, None], x_new, x)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k[None], (t, 0, 0, 0, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v[None], (t, 0, 0, 0, 0))
    return x, cache_k, cache_v

  x, cache_k, cache_v = jax.lax.fori_loop(0, length, body, (x, cache_k, cache_v))
  return transformer.final_norm(params, cfg, x), cache_k, cache_v


def prefill_shared(params, cfg: ModelConfig, steps, active, length, prefix, group_active, row_group, tokens,
                   attn_mask, cache_len: int):
  """Prefill of prompts that all start with the same P tokens: the prefix runs once per distinct program.

  Under one program the prefix's keys and values do not depend on what follows it (causal attention), so a
  batch whose rows share a chat template (every search or evaluation batch) computes them once per program
  group instead of once per row.

  prefix: [P] int32 shared tokens; group_active: [G, T] the activity of each group's program; row_group: [B]
  each row's group; tokens, attn_mask: [B, S2] the rest of each prompt, left-padded. Cache columns: [0, P)
  the prefix, [P, P + S2) the rest, then generated tokens. Returns (hidden [B, S2, D] after the final norm,
  cache_k, cache_v [T, B, cache_len, K, hd]).
  """
  g, p = group_active.shape[0], prefix.shape[0]
  b, s2 = tokens.shape
  t_pad = steps.shape[0]
  dt = transformer.dtype_of(cfg)
  kv_shape = (cfg.num_kv_heads, cfg.head_dim)

  # The prefix, once per group: its keys / values at every step.
  xp = transformer.embed(params, cfg, jnp.broadcast_to(prefix[None], (g, p)))
  rope_p = transformer.rope_tables(cfg, jnp.broadcast_to(jnp.arange(p)[None], (g, p)))
  mask_p = transformer.causal_key_mask(jnp.ones((g, p), jnp.int32))
  fresh_p = jnp.zeros((g, p, *kv_shape), dt)

  def prefix_body(t, carry):
    xp, pk, pv = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    x_new, k, v = transformer.layer(lp, cfg, xp, rope_p, fresh_p, fresh_p, 0, mask_p)
    xp = jnp.where(group_active[:, t, None, None], x_new, xp)
    pk = jax.lax.dynamic_update_slice(pk, k[None], (t, 0, 0, 0, 0))
    pv = jax.lax.dynamic_update_slice(pv, v[None], (t, 0, 0, 0, 0))
    return xp, pk, pv

  zeros_p = jnp.zeros((t_pad, g, p, *kv_shape), dt)
  _, pk, pv = jax.lax.fori_loop(0, length, prefix_body, (xp, zeros_p, zeros_p))

  # The rest of every row, attending to its group's prefix.
  cache_shape = (t_pad, b, cache_len, *kv_shape)
  cache_k = jnp.zeros(cache_shape, dt).at[:, :, :p].set(pk[:, row_group])
  cache_v = jnp.zeros(cache_shape, dt).at[:, :, :p].set(pv[:, row_group])
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, p + transformer.positions_from_mask(attn_mask))
  key_mask = jnp.concatenate([jnp.ones((b, s2, p), bool), transformer.causal_key_mask(attn_mask)], axis=2)

  def body(t, carry):
    x, cache_k, cache_v = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    kc = jax.lax.dynamic_index_in_dim(cache_k, t, 0, keepdims=False)[:, :p + s2]
    vc = jax.lax.dynamic_index_in_dim(cache_v, t, 0, keepdims=False)[:, :p + s2]
    x_new, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, p, key_mask)
    x = jnp.where(active[:, t, None, None], x_new, x)
    cache_k = jax.lax.dynamic_update_slice(cache_k, kc[None, :, p:], (t, 0, p, 0, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, vc[None, :, p:], (t, 0, p, 0, 0))
    return x, cache_k, cache_v

  x, cache_k, cache_v = jax.lax.fori_loop(0, length, body, (x, cache_k, cache_v))
  return transformer.final_norm(params, cfg, x), cache_k, cache_v


def decode_step(params, cfg: ModelConfig, steps, active, length, token, position, column, key_valid,
                cache_k, cache_v):
  """One decode step for all rows.

  token, position: [B] int32; column: scalar cache column to write; key_valid: [B, C] columns each row may
  attend (column included). Returns (logits [B, V], cache_k, cache_v).
  """
  x = transformer.embed(params, cfg, token[:, None])  # [B, 1, D]
  rope = transformer.rope_tables(cfg, position[:, None])
  key_mask = key_valid[:, None, :]  # [B, 1, C]

  def body(t, carry):
    x, cache_k, cache_v = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    kc, vc = cache_k[t], cache_v[t]
    x_new, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, column, key_mask)
    x = jnp.where(active[:, t, None, None], x_new, x)
    k_col = jax.lax.dynamic_slice_in_dim(kc, column, 1, axis=1)
    v_col = jax.lax.dynamic_slice_in_dim(vc, column, 1, axis=1)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k_col[None], (t, 0, column, 0, 0))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v_col[None], (t, 0, column, 0, 0))
    return x, cache_k, cache_v

  x, cache_k, cache_v = jax.lax.fori_loop(0, length, body, (x, cache_k, cache_v))
  logits = transformer.logits(params, cfg, transformer.final_norm(params, cfg, x))[:, 0]
  return logits, cache_k, cache_v


def _select(logits, key, temperature):
  """Greedy when temperature == 0, else a sample at that temperature. logits: [B, V] -> [B] int32."""
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  sampled = jax.random.categorical(key, logits / safe_t, axis=-1).astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)


def _generate_core(params, steps, active, length, prompt, row_valid, max_new, temperature, key, stop,
                   *, cfg: ModelConfig, new_cap: int, counter: list):
  """Prefill + decode loop.

  `prompt` holds `tokens`, `attn_mask` [B, S] (left-padded) and, when the rows share a prefix, `prefix` [P],
  `group_active` [G, T] and `row_group` [B] (see `prefill_shared`). `stop` holds the stop rule as arrays (see
  `Executor._stop_arrays`).
  """
  counter[0] += 1  # Runs at trace time only: counts compiles.
  tokens, attn_mask = prompt["tokens"], prompt["attn_mask"]
  b = tokens.shape[0]
  if "prefix" in prompt:
    p = prompt["prefix"].shape[0]
    s = p + tokens.shape[1]
    h, cache_k, cache_v = prefill_shared(params, cfg, steps, active, length, prompt["prefix"],
                                         prompt["group_active"], prompt["row_group"], tokens, attn_mask,
                                         s + new_cap)
    prompt_valid = jnp.concatenate([jnp.ones((b, p), bool), attn_mask.astype(bool)], axis=1)
  else:
    s = tokens.shape[1]
    h, cache_k, cache_v = prefill(params, cfg, steps, active, length, tokens, attn_mask, s + new_cap)
    prompt_valid = attn_mask.astype(bool)
  logits = transformer.logits(params, cfg, h[:, -1:])[:, 0]  # [B, V]
  key_valid = jnp.concatenate([prompt_valid, jnp.zeros((b, new_cap), bool)], axis=1)
  next_pos = jnp.sum(prompt_valid, axis=1).astype(jnp.int32)  # [B]

  def emit(i, logits, key, scan, done, out, n_gen):
    """Picks the next token of every row, records it for live rows, and updates the stop state."""
    depth, number = scan
    key, sub = jax.random.split(key)
    tok = _select(logits, sub, temperature)
    live = ~done
    out = out.at[:, i].set(jnp.where(live, tok, 0))
    n_gen = n_gen + live.astype(jnp.int32)
    number = stop["number_next"][tok, number]
    ends = jnp.isin(tok, stop["ids"])
    ends |= stop["use_braces"] & (depth + stop["min_prefix"][tok] <= 0)
    ends |= stop["use_newline"] & stop["has_newline"][tok]
    ends |= stop["use_number"] & (number == _NUMBER_DONE)
    depth = depth + stop["net_braces"][tok]
    return tok, key, (depth, number), done | (live & ends), out, n_gen

  out = jnp.zeros((b, new_cap), jnp.int32)
  n_gen = jnp.zeros((b,), jnp.int32)
  scan = (jnp.full((b,), stop["brace_depth"], jnp.int32), jnp.full((b,), _NO_DIGIT, jnp.int32))
  tok, key, scan, stopped, out, n_gen = emit(0, logits, key, scan, ~row_valid, out, n_gen)
  stopped = stopped & row_valid

  def cond(carry):
    i, _, _, _, stopped, *_ = carry
    return (i < max_new) & ~jnp.all(stopped | ~row_valid)

  def body(carry):
    i, tok, key, scan, stopped, out, n_gen, cache_k, cache_v, key_valid = carry
    column = s + i - 1
    key_valid = key_valid.at[:, column].set(True)
    position = next_pos + i - 1
    logits, cache_k, cache_v = decode_step(params, cfg, steps, active, length, tok, position, column,
                                           key_valid, cache_k, cache_v)
    tok, key, scan, stopped, out, n_gen = emit(i, logits, key, scan, stopped | ~row_valid, out, n_gen)
    return i + 1, tok, key, scan, stopped & row_valid, out, n_gen, cache_k, cache_v, key_valid

  carry = (jnp.int32(1), tok, key, scan, stopped, out, n_gen, cache_k, cache_v, key_valid)
  _, _, _, _, stopped, out, n_gen, _, _, _ = jax.lax.while_loop(cond, body, carry)
  return out, n_gen, stopped


def _prefill_logits_core(params, steps, active, length, tokens, attn_mask, *, cfg: ModelConfig, counter: list):
  counter[0] += 1
  h, _, _ = prefill(params, cfg, steps, active, length, tokens, attn_mask, tokens.shape[1])
  return transformer.logits(params, cfg, h)  # [B, S, V]


# --- the host-side executor ----------------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


class Executor:
  """Runs programs on one model: bucketing, schedules, the compiled prefill / decode, text in and out.

  Args:
    model: a loaded `Model`.
    prompt_quantum: prompt lengths are padded (on the left) to a multiple of this (coarser for long prompts).
    new_token_quantum: the generation buffer is a multiple of this.
    schedule_quantum: schedules are padded to a multiple of this (capped at the model's 2L program limit
      when that is larger than the schedule).
    max_batch: batches are padded to a power of two up to this; larger batches are split.
    share_prefix: compute a prefix that all prompts of a batch share (the chat template's system turn) once per
      distinct program instead of once per row (`prefill_shared`); the results are the same.
    min_shared_prefix: shorter shared prefixes are not worth a separate pass.
  """

  def __init__(self, model: Model, *, prompt_quantum: int = 8, new_token_quantum: int = 16,
               schedule_quantum: int = 16, max_batch: int = 64, share_prefix: bool = True,
               min_shared_prefix: int = 16):
    self.model = model
    self.share_prefix = share_prefix
    self.min_shared_prefix = min_shared_prefix
    self.cfg = model.config
    self.prompt_quantum = prompt_quantum
    self.new_token_quantum = new_token_quantum
    self.schedule_quantum = schedule_quantum
    self.max_batch = max_batch
    self._counter = [0]
    self._tables = None
    self._generate = jax.jit(functools.partial(_generate_core, cfg=self.cfg, counter=self._counter),
                             static_argnames=("new_cap",))
    self._prefill_logits = jax.jit(functools.partial(_prefill_logits_core, cfg=self.cfg, counter=self._counter))

  @property
  def compiles(self) -> int:
    """How many times the compiled functions were traced (each trace is one compile)."""
    return self._counter[0]

  @property
  def depth(self) -> int:
    return self.cfg.num_layers

  # -- inputs --

  def _tokenize(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    tok = self.model.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    out = []
    for i, p in enumerate(prompts):
      ids = tok.encode(p) if isinstance(p, str) else [int(t) for t in p]
      if isinstance(p, str) and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids  # Raw prompts get the BOS the model was trained with (a chat template has its own).
      if not ids:
        raise ValueError(f"Prompt {i} is empty after tokenization.")
      out.append(ids)
    return out

  def _programs(self, programs, batch: int) -> list[Program]:
    if isinstance(programs, Program) or (programs and isinstance(programs[0], (int, np.integer))):
      programs = [programs] * batch
    if len(programs) != batch:
      raise ProgramError(f"Got {len(programs)} programs for {batch} prompts; pass one program per prompt "
                         "or a single program for all.")
    out = []
    for p in programs:
      if not isinstance(p, Program):
        p = Program(p, self.depth)
      elif p.depth != self.depth:
        raise ProgramError(f"Program {p.compact()} is for a {p.depth}-layer model, but this model has "
                           f"{self.depth} layers.")
      out.append(p)
    return out

  def schedule(self, programs: Sequence[Program]) -> Schedule:
    """The shared schedule of a batch, padded to the schedule bucket."""
    sched = make_schedule(programs, quantum=1)
    padded = bucket_length(sched.length, self.schedule_quantum, max(sched.length, 2 * self.depth))
    return make_schedule(programs, padded_length=padded)

  def _shared_prefix_length(self, ids: list[list[int]]) -> int:
    """Tokens every prompt starts with (rounded down to prompt_quantum, each row keeping >= 1 more), or 0."""
    if len(ids) < 2 or self.cfg.layer_types:  # Sliding windows count cache columns: keep columns contiguous.
      return 0
    first, n = ids[0], min(len(x) for x in ids) - 1
    p = 0
    while p < n and all(x[p] == first[p] for x in ids):
      p += 1
    p -= p % self.prompt_quantum
    return p if p >= self.min_shared_prefix else 0

  def prompt_bucket(self, n: int) -> int:
    """Padded prompt length: a multiple of prompt_quantum, coarser for long prompts (at most ~25% padding),
    so that prompts of many lengths share few compiled shapes."""
    quantum = max(self.prompt_quantum, 1 << max(0, n.bit_length() - 3))
    return -(-n // quantum) * quantum

  def _prompt_arrays(self, ids: list[list[int]], sched: Schedule, progs: Sequence[Program], batch_pad: int):
    """The prompt inputs of `_generate_core`: plain left-padded tokens, or a shared prefix plus the rest."""
    p = self._shared_prefix_length(ids) if self.share_prefix else 0
    tokens, mask, active, row_valid = self._batch_arrays([x[p:] for x in ids], sched, batch_pad)
    prompt = {"tokens": jnp.asarray(tokens), "attn_mask": jnp.asarray(mask)}
    if p:
      groups: dict[Program, int] = {}
      row_group = np.zeros(batch_pad, np.int32)
      for r, program in enumerate(progs):
        row_group[r] = groups.setdefault(program, len(groups))
      first_row = {g: progs.index(program) for program, g in groups.items()}
      group_active = np.zeros((_next_pow2(len(groups)), active.shape[1]), bool)
      for g, r in first_row.items():
        group_active[g] = active[r]
      prompt.update(prefix=jnp.asarray(np.asarray(ids[0][:p], np.int32)), group_active=jnp.asarray(group_active),
                    row_group=jnp.asarray(row_group))
    return prompt, active, row_valid

  def _batch_arrays(self, ids: list[list[int]], sched: Schedule, batch_pad: int):
    n = len(ids)
    s = self.prompt_bucket(max(len(x) for x in ids))
    pad_id = self.model.tokenizer.pad_id
    tokens = np.full((batch_pad, s), pad_id, np.int32)
    mask = np.zeros((batch_pad, s), np.int32)
    for r, x in enumerate(ids):
      tokens[r, s - len(x):] = x
      mask[r, s - len(x):] = 1
    tokens[n:, -1] = pad_id  # Padding rows hold one token so that nothing attends to an empty row.
    mask[n:, -1] = 1
    active = np.zeros((batch_pad, sched.padded_length), bool)
    active[:n] = sched.active
    row_valid = np.arange(batch_pad) < n
    return tokens, mask, active, row_valid

  # -- public API --

  def generate(self, prompts, programs, max_new_tokens: int, *, stop: StopRule | None = None,
               temperature: float = 0.0, seed: int = 0) -> GenerationResult:
    """Generates for each prompt under its program.

    Args:
      prompts: strings (tokenized without adding special tokens: render chat templates first) or id lists.
      programs: one Program (or id list) per prompt, or a single one for all.
      max_new_tokens: generation budget per row.
      stop: when rows stop (default: the tokenizer's EOS / end-of-turn ids).
      temperature: 0 for greedy; > 0 samples.
      seed: sampling seed.
    """
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    ids = self._tokenize(prompts)
    progs = self._programs(programs, len(ids))
    results = []
    for start in range(0, len(ids), self.max_batch):
      chunk = slice(start, start + self.max_batch)
      results.append(self._generate_batch(ids[chunk], progs[chunk], max_new_tokens, stop or StopRule(),
                                          temperature, seed + start))
    if len(results) == 1:
      return results[0]
    return GenerationResult(
        tokens=[t for r in results for t in r.tokens], texts=[t for r in results for t in r.texts],
        num_generated=np.concatenate([r.num_generated for r in results]),
        layers_executed=np.concatenate([r.layers_executed for r in results]),
        stopped=np.concatenate([r.stopped for r in results]),
        schedule_length=max(r.schedule_length for r in results))

  def _stop_arrays(self, stop: StopRule) -> dict:
    """The stop rule as device arrays; the per-token tables are built once per executor."""
    if self._tables is None:
      t = _token_tables(self.model.tokenizer)
      self._tables = {"net_braces": jnp.asarray(t.net_braces), "min_prefix": jnp.asarray(t.min_prefix),
                      "has_newline": jnp.asarray(t.has_newline), "number_next": jnp.asarray(t.number_next)}
    stop_ids = stop.stop_ids if stop.stop_ids is not None else self.model.tokenizer.stop_ids
    return dict(self._tables, ids=jnp.asarray(np.array(stop_ids or [-1], np.int32)),
                brace_depth=jnp.int32(stop.close_brace_depth or 0),
                use_braces=jnp.bool_(stop.close_brace_depth is not None),
                use_newline=jnp.bool_(stop.stop_at_newline), use_number=jnp.bool_(stop.stop_after_number))

  def _generate_batch(self, ids, progs, max_new_tokens, stop: StopRule, temperature, seed):
    sched = self.schedule(progs)
    batch_pad = min(_next_pow2(len(ids)), max(self.max_batch, len(ids)))
    prompt, active, row_valid = self._prompt_arrays(ids, sched, progs, batch_pad)
    new_cap = bucket_length(max_new_tokens, self.new_token_quantum)
    out, n_gen, stopped = self._generate(
        self.model.params, jnp.asarray(sched.ids), jnp.asarray(active), jnp.int32(sched.length), prompt,
        jnp.asarray(row_valid), jnp.int32(max_new_tokens), jnp.float32(temperature), jax.random.key(seed),
        self._stop_arrays(stop), new_cap=new_cap)
    out, n_gen, stopped = np.asarray(out), np.asarray(n_gen), np.asarray(stopped)
    n = len(ids)
    tokens_out = [out[r, :n_gen[r]].tolist() for r in range(n)]
    texts = [self.model.tokenizer.decode(t) for t in tokens_out]
    lengths = np.array([len(p) for p in progs], np.int64)
    return GenerationResult(tokens=tokens_out, texts=texts, num_generated=n_gen[:n].astype(np.int64),
                            layers_executed=lengths * np.maximum(n_gen[:n], 1),
                            stopped=stopped[:n], schedule_length=sched.length)

  def prefill_logits(self, prompts, programs) -> list[np.ndarray]:
    """Full-sequence logits under each row's program: a list of [len_i, V] float32 arrays (one prefill)."""
    ids = self._tokenize(prompts)
    progs = self._programs(programs, len(ids))
    out = []
    for start in range(0, len(ids), self.max_batch):
      chunk_ids, chunk_progs = ids[start:start + self.max_batch], progs[start:start + self.max_batch]
      sched = self.schedule(chunk_progs)
      batch_pad = min(_next_pow2(len(chunk_ids)), max(self.max_batch, len(chunk_ids)))
      tokens, mask, active, _ = self._batch_arrays(chunk_ids, sched, batch_pad)
      logits = np.asarray(self._prefill_logits(self.model.params, jnp.asarray(sched.ids), jnp.asarray(active),
                                               jnp.int32(sched.length), jnp.asarray(tokens), jnp.asarray(mask)))
      s = tokens.shape[1]
      out += [logits[r, s - len(x):] for r, x in enumerate(chunk_ids)]
    return out


_EXECUTORS: "weakref.WeakKeyDictionary[Model, Executor]" = weakref.WeakKeyDictionary()


def executor_for(model: Model) -> Executor:
  """The shared Executor of a model (so compiled functions are reused across calls)."""
  ex = _EXECUTORS.get(model)
  if ex is None:
    ex = _EXECUTORS[model] = Executor(model)
  return ex


def generate(model: Model, prompts, programs, max_new_tokens: int, *, stop: StopRule | None = None,
             temperature: float = 0.0, seed: int = 0) -> GenerationResult:
  """`Executor.generate` on the model's shared executor."""
  return executor_for(model).generate(prompts, programs, max_new_tokens, stop=stop, temperature=temperature,
                                      seed=seed)
