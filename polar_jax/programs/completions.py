"""Completion scoring: one prefill per (sequence, program) row, greedy predictions and log-probs of a completion.

`Executor.score_completions(sequences, programs, completion_starts)` runs each row's program over its whole
token sequence once (no generation) and returns, per row with completion c = seq[s:] of
m tokens: `argmax` [m + 1], the greedy next token at positions s-1 .. len-1, and `logprobs` [m], the
log-softmax (float32) of each completion token. Only the last M = bucket(max m + 1) positions of each
(left-padded, so aligned) row reach the LM head, inside the jitted pass (M per pass: the max over its own
rows): no [B, S, V] logits leave the device.

Shared prefixes (`share_prefixes=True`, the default). Rows with the same token sequence (one question) whose
programs agree on their first k steps have the same hidden states after those steps. One pass runs each
question's trunk (the heavy path of its programs' trie) and keeps the states rows branch from; each row then
starts from the trunk's state at its own divergence and runs only the rest of its program, in passes cut by
`prefix_sharing.plan_sharing`'s cost model. Identical (sequence, program) rows are scored once. For the
search's single edits of one parent the rest is a suffix of the parent, so a pass costs its rows x its longest
suffix: the executed work is the distinct (sequence, program prefix) nodes plus the passes' padding.
`CompletionScores.executed_row_steps` counts what ran (padded rows x real schedule steps, per pass).

Shared contexts (`context_lengths`): see `ContextCache`. A pass reads its rows' context keys / values through
`gather_context` (the entries it needs, [B, T, P, K, hd]), so its compiled shape does not depend on how many
slots the bank has grown to; `Executor.generate(context_lengths=...)` reads the same bank. Rows of every
context of one padded length form one part of a call (one bank; each row has its own context length), so the
datasets' contexts, and a few-shot candidate's own one, share passes.

Prompt states (`keep_prompts=True`). The passes then also return their rows' own keys / values at every step,
and the result's `keep_prompts(rows)` keeps, for rows that continued a context, the keys / values of their
prompt's own tokens but the last under their program (`PromptState`: trunk steps from the trunk pass, the rest
from the row's group). The one-pass reward keeps them for the pairs it leaves to generation, so that
`Executor.generate` prefills one token per row instead of the question (`program_eval.one_pass`).

Compiles. One core function (`_pass_core`) serves the trunk pass and the groups; it is traced once per shape
bucket: padded rows (`prefix_sharing.rows_bucket`), prompt length (`Executor.prompt_bucket`),
schedule length (`PASS_STEPS_QUANTUM`), kept states (a power of two) and M (a multiple of 4). Branch
points and programs are data. Traces count in `Executor.compiles`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import TYPE_CHECKING, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.programs import executor_core, prefix_sharing
from polar_jax.programs.program import Program, ProgramError
from polar_jax.programs.schedule import bucket_length, make_schedule, next_pow2

if TYPE_CHECKING:
  from polar_jax.programs.executor import Executor

COMPLETION_QUANTUM = 4
CONTEXT_ROWS = 4  # programs per context pass (a fixed shape; 4 rather than 8: fewer padding rows and idle steps,
# `docs/design.md`)
PASS_STEPS_QUANTUM = 32  # a pass's schedule arrays are padded to a multiple of this (at most 2 x depth)


@dataclasses.dataclass(frozen=True)
class CompletionScores:
  """Per-row results of `Executor.score_completions`.

  Attributes:
    argmax: per row, int32 [m_i + 1]: the greedy prediction at positions start_i - 1 .. len_i - 1 (one for
      each completion token, then the one after the last).
    logprobs: per row, float32 [m_i]: log p(completion token j | everything before it) under the row's program.
    layers_executed: [B] layer executions per row: program length x 1 pass (what the row alone would cost).
    executed_row_steps: (row, step) pairs the passes executed, padding rows included (sum of padded rows x
      real schedule steps): the cost the sharing reduces.
    needed_row_steps: the same count without batch padding rows.
    passes: device passes (trunk stages + groups).
    keep_prompts: with `score(..., keep_prompts=True)`, keep_prompts(rows) keeps those rows' `PromptState`s
      (rows that continued a context) in the scorer for their generation; returns how many it kept.
  """
  argmax: list[np.ndarray]
  logprobs: list[np.ndarray]
  layers_executed: np.ndarray
  executed_row_steps: int
  needed_row_steps: int
  passes: int
  keep_prompts: Callable[[Sequence[int]], int] | None = None


@dataclasses.dataclass(frozen=True)
class PromptState:
  """A prompt's own keys / values under one program, kept from a scoring pass for its generation.

  A row that continues a shared context runs its prompt's own tokens (after the context) in the scoring pass
  (`CompletionScorer.score` with `keep_prompts`): under causal attention their keys and values are exactly what
  generation's prefill would compute (up to float rounding), so a generated row that finds its state here
  prefills only its prompt's last token (`Executor.generate`). k, v: [L, W, K, hd], program step x columns,
  right-aligned: the last `length` columns are the prompt's tokens [context, context + length), the others
  padding. `context`: the context length they continue (its keys / values come from the `ContextCache`)."""
  k: jax.Array
  v: jax.Array
  context: int
  length: int

  @property
  def nbytes(self) -> int:
    return self.k.nbytes + self.v.nbytes


def take_prompt_states(trunk_k, trunk_v, k, v, from_trunk, at_trunk, at_own, cols):
  """Rows' prompt states out of a group pass's own keys / values (k, v [T, B, S, K, hd]) and the trunk pass's
  (trunk_k, trunk_v [T0, Q, S, K, hd]): row r's program step j is the trunk's at (schedule step, question)
  at_trunk[r, j] where from_trunk[r, j], else the group's at at_own[r, j] (step, row); cols [R, W] the pass
  columns of each output column. Returns (k, v) [R, L, W, K, hd]."""
  def take(trunk, own):
    t = trunk[at_trunk[..., 0, None], at_trunk[..., 1, None], cols[:, None, :]]
    o = own[at_own[..., 0, None], at_own[..., 1, None], cols[:, None, :]]
    return jnp.where(from_trunk[:, :, None, None, None], t, o)
  return take(trunk_k, k), take(trunk_v, v)


def gather_rows(x_src, tokens_src, mask_src, rows_x, rows_q):
  """A pass's inputs (x [B, S, D] or None, tokens and mask [B, S]): row b's starting state x_src[rows_x[b]]
  ([R, S, D]; None: the pass starts from the token embedding) and its sequence tokens_src[rows_q[b]] ([Q, S],
  left-padded). A separate (cheap) compile per shape keeps the pass's own shapes independent of how many
  sequences a call holds and how many trunk states it keeps."""
  return None if x_src is None else x_src[rows_x], tokens_src[rows_q], mask_src[rows_q]


def _pass_core(params, ctx_k, ctx_v, ctx_len, x0, tokens, mask, steps, active, length, keep_at, *,
               cfg: ModelConfig, head: int, keep: int, counter: list, own_kv: bool = False):
  """Runs a merged schedule on B rows: the trunk pass (keep > 0) or one group (head = M).

  tokens, mask: [B, S] the rows' left-padded sequences; x0: [B, S, D] their starting hidden states (None: the
  token embedding; `gather_rows` gathers both). With a shared context
  (ctx_k, ctx_v [B, T, P, K, hd]: its keys / values under each row's program at the program step the row runs
  at schedule step t, `gather_context`; ctx_len [B]: each row's context length, P >= ctx_len columns, the rest
  padding; rows may continue different contexts; None: no context), row b's tokens continue its context at
  positions ctx_len[b] + 0, 1, ...; at step t a row attends to those context keys and to its own. Returns,
  with keep > 0, the states kept [keep, B, S, D]: slot 0 the input, slot keep_at[t] the state after schedule
  step t (the last slot takes the steps nobody keeps); with head = M, the argmax [B, M] int32 at the last M
  positions and the log-probs [B, M - 1] of each next token; else x. With own_kv, returns (that, k, v): the
  rows' own keys / values at every schedule step, [T, B, S, K, hd] (`PromptState`).
  """
  counter[0] += 1  # Runs at trace time only: counts compiles.
  x = transformer.embed(params, cfg, tokens) if x0 is None else x0
  b, s = tokens.shape
  own = jnp.zeros((b, s, cfg.num_kv_heads, cfg.head_dim), transformer.dtype_of(cfg))
  if ctx_k is None:
    rope = transformer.rope_tables(cfg, transformer.positions_from_mask(mask))
    key_mask, start = transformer.causal_key_mask(mask), 0
  else:
    p = ctx_k.shape[2]
    rope = transformer.rope_tables(cfg, ctx_len[:, None] + transformer.positions_from_mask(mask))
    ctx_valid = jnp.broadcast_to((jnp.arange(p)[None] < ctx_len[:, None])[:, None], (b, s, p))
    key_mask, start = jnp.concatenate([ctx_valid, transformer.causal_key_mask(mask)], axis=2), p

  def body(t, carry):
    x, kept, ks, vs = carry
    lp = transformer.layer_slice(params["layers"], steps[t])
    if ctx_k is None:
      kc = vc = own  # every column is the step's own keys / values, written before attending
    else:
      kc = jnp.concatenate([jax.lax.dynamic_index_in_dim(ctx_k, t, 1, keepdims=False), own], axis=1)
      vc = jnp.concatenate([jax.lax.dynamic_index_in_dim(ctx_v, t, 1, keepdims=False), own], axis=1)
    x_new, kc, vc = transformer.layer(lp, cfg, x, rope, kc, vc, start, key_mask)
    x = jnp.where(active[:, t, None, None], x_new, x)
    if keep:
      kept = jax.lax.dynamic_update_index_in_dim(kept, x, keep_at[t], 0)
    if own_kv:
      ks = jax.lax.dynamic_update_index_in_dim(ks, kc[:, start:], t, 0)
      vs = jax.lax.dynamic_update_index_in_dim(vs, vc[:, start:], t, 0)
    return x, kept, ks, vs

  kept = jnp.zeros((keep,) + x.shape, x.dtype).at[0].set(x) if keep else jnp.zeros((), x.dtype)
  kv = jnp.zeros((steps.shape[0],) + own.shape, own.dtype) if own_kv else jnp.zeros((), own.dtype)
  x, kept, ks, vs = jax.lax.fori_loop(0, length, body, (x, kept, kv, kv))
  out = kept if keep else _head(params, cfg, x, tokens, head)
  return (out, ks, vs) if own_kv else out


def gather_context(bank_k, bank_v, rows_e, step_of):
  """The bank entries a pass reads: (k, v) [B, T, P, K, hd], row b's program (bank slot rows_e[b]) at its
  program step step_of[b, t]. A separate (cheap) compile per bank shape keeps the passes' shapes independent
  of how many slots the bank has grown to."""
  return bank_k[rows_e[:, None], step_of], bank_v[rows_e[:, None], step_of]


def _head(params, cfg: ModelConfig, x, tokens, head: int):
  """x itself (head=0), or the argmax [B, M] and next-token log-probs [B, M-1] at the last M=head positions."""
  if not head:
    return x
  logits = transformer.logits(params, cfg, transformer.final_norm(params, cfg, x[:, -head:]))  # [B, M, V] f32
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  targets = tokens[:, tokens.shape[1] - head + 1:]
  logprobs = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.argmax(logits, axis=-1).astype(jnp.int32), logprobs


def _context_trunk_core(params, tokens, valid, *, cfg: ModelConfig, counter: list):
  """One context (tokens [P], right-padded; valid [P]) under the full program, keeping what a program that
  starts like it needs: the hidden states before each step xs [L + 1, P, D] (xs[0]: the embedding) and the
  keys / values of each step k, v [L, P, K, hd]."""
  counter[0] += 1  # Runs at trace time only: counts compiles.
  p = tokens.shape[0]
  x = transformer.embed(params, cfg, tokens[None])
  rope = transformer.rope_tables(cfg, jnp.arange(p)[None])
  key_mask = transformer.causal_key_mask(valid[None])
  empty = jnp.zeros((1, p, cfg.num_kv_heads, cfg.head_dim), transformer.dtype_of(cfg))

  def body(x, layer):
    y, k, v = transformer.layer(transformer.layer_slice(params["layers"], layer), cfg, x, rope, empty, empty, 0,
                                key_mask)
    return y, (x[0], k[0], v[0])

  last, (xs, k, v) = jax.lax.scan(body, x, jnp.arange(cfg.num_layers))
  return jnp.concatenate([xs, last], axis=0), k, v


def _context_suffix_core(params, xs, start, tokens, valid, steps, active, length, *, cfg: ModelConfig,
                         counter: list):
  """Keys and values of one context (tokens [P], right-padded; valid [P]) under the G programs of a merged
  schedule (active [G, T]) whose first start[g] steps are the full program's: row g begins from the trunk's
  hidden state before step start[g] (xs [L + 1, P, D], `_context_trunk_core`) and runs only the rest of its
  program. Returns (k, v) [T, G, P, K, hd]: row g's keys / values at every schedule step (only the steps it is
  active at are its own)."""
  counter[0] += 1  # Runs at trace time only: counts compiles.
  g, p = active.shape[0], tokens.shape[0]
  x = xs[start]  # [G, P, D]
  rope = transformer.rope_tables(cfg, jnp.broadcast_to(jnp.arange(p)[None], (g, p)))
  key_mask = transformer.causal_key_mask(jnp.broadcast_to(valid[None], (g, p)))
  cache = jnp.zeros((steps.shape[0], g, p, cfg.num_kv_heads, cfg.head_dim), transformer.dtype_of(cfg))
  _, k, v = executor_core.run_steps(params, cfg, steps, active, length, x, rope, key_mask, cache, cache, 0)
  return k, v


def _store(bank_k, bank_v, k, v, trunk_k, trunk_v, index, start, slots):
  """Writes rows g of a context pass (k, v [T, G, P, K, hd]) into bank slots `slots[g]` (out of range: not
  written): slot row j holds the row's keys / values at its program's step j: the trunk's (trunk_k, trunk_v
  [L0, P, K, hd], the full program) for j < start[g], else the pass's at schedule step index[g, j]."""
  rows = jnp.arange(index.shape[0])[:, None]
  steps = jnp.arange(index.shape[1])
  shared = (steps[None] < start[:, None])[..., None, None, None]  # [G, L, 1, 1, 1]
  at = jnp.minimum(steps, trunk_k.shape[0] - 1)
  new_k = jnp.where(shared, trunk_k[at][None], k[index, rows])  # [G, L, P, K, hd]
  new_v = jnp.where(shared, trunk_v[at][None], v[index, rows])
  return bank_k.at[slots].set(new_k, mode="drop"), bank_v.at[slots].set(new_v, mode="drop")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _grow(x, slots: int, length: int):
  """x [n, l, ...] zero-padded to [slots, length, ...] in one compiled pad: one new buffer, written once. Done
  eagerly (zeros, then an update), a growth wrote two buffers of the new size; a bank nears `max_bytes` (4 GiB
  by default) early in a search, and its growths were 12-14% of an 8-question search shard's time (two runs,
  `benchmarks/search_profile.py`; ~5% since). One compile per (old shape, new shape), not counted in
  `Executor.compiles`."""
  return jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, slots - x.shape[0], 0), (0, length - x.shape[1], 0)] +
                     [(0, 0, 0)] * (x.ndim - 2))


def _bank_bytes(bank: dict) -> int:
  """A bank's device bytes (its slots)."""
  return bank["k"].nbytes + bank["v"].nbytes if "k" in bank else 0


class ContextCache:
  """Keys and values of shared contexts under programs, kept across scoring calls (least recently used out).

  A context is a token prefix that many sequences share (the few-shot turns and the question template: every
  prompt of one dataset under `raw_qa_3shot`). Under a program, a context's keys and values at the program's
  step j depend only on the context and the program's first j + 1 steps (causal attention), so they are
  computed once per (context, program) and reused by every question and every later call: the search meets the
  same programs on many questions (the embedded default's 96-simulation search ran 229 distinct programs per
  dataset 6,144 times), the menu scores a few programs on every question.

  Storage: one *bank* per padded context length P (and dtype), device arrays k, v [slots, L, P, K, hd] (L: the
  longest program so far, bucketed), holding the entries of every context of that length, written in place
  (donated buffers). So a pass gathers its rows' keys straight from one bank whichever contexts they continue:
  rows of different contexts (datasets, questions shown other shots) share passes and generation batches. Per
  context a *trunk*: the context under the full program (hidden states before each step, keys and values),
  from which an entry that starts like the full program runs only the rest. A bank grows to hold what a call
  lacks (to the next power of two slots, at least 64) while the total (banks and trunks) stays within
  `max_bytes`; then the least recently used entry of that bank that the call does not need gives up its slot.
  A call whose entries do not fit at all runs its whole sequences (same results).
  """

  def __init__(self, max_bytes: int, quantum: int = 16):
    self.max_bytes, self.quantum = int(max_bytes), quantum
    self.banks: dict[tuple, dict] = {}  # (P, K, hd, dtype name) -> bank
    self.trunks: dict[tuple[int, ...], tuple] = {}  # context -> (xs, k, v) once computed
    self._trunk_bytes: dict[tuple[int, ...], int] = {}  # context -> its trunk's bytes (counted from the start)
    self._bank_of: dict[tuple[int, ...], tuple] = {}  # context -> its bank's key
    self._lru: collections.OrderedDict = collections.OrderedDict()  # (context, program) -> slot
    self._store = jax.jit(_store, donate_argnums=(0, 1))

  @property
  def bytes(self) -> int:
    return sum(_bank_bytes(b) for b in self.banks.values()) + sum(self._trunk_bytes.values())

  def __len__(self) -> int:
    return len(self._lru)

  def _resize(self, bank: dict, slots: int, length: int) -> None:
    # The bank changes only once both new arrays exist: a growth that fails (memory, an interrupt) leaves it as it
    # was, so the entries its slots hold stay valid.
    n = bank["k"].shape[0] if "k" in bank else 0
    if n:
      k, v = _grow(bank["k"], slots, length), _grow(bank["v"], slots, length)
    else:
      shape = (slots, length) + bank["tail"]
      k, v = jnp.zeros(shape, bank["dtype"]), jnp.zeros(shape, bank["dtype"])
    bank["k"], bank["v"] = k, v
    bank["free"] += list(range(slots - 1, n - 1, -1))  # popped from the end: lowest slots first

  def slots(self, requests: dict[tuple[int, ...], Sequence[tuple[int, ...]]], tail: tuple[int, ...], dtype,
            trunk_bytes: int = 0):
    """For `requests` (context -> the programs a call reads it under; all contexts of one padded length, `tail`
    = (P, K, hd)): (bank, {(context, program): slot}, {context: [(program, slot)] to compute}), or None when the
    bank cannot hold all of them at once within max_bytes (the caller then scores without contexts).
    `trunk_bytes`: what a context's full-program trunk takes (`CompletionScorer`), counted in the budget from the
    context's first call."""
    key = tuple(tail) + (jnp.dtype(dtype).name,)
    need = list(dict.fromkeys((c, p) for c, programs in requests.items() for p in programs))
    needed = set(need)
    new = [cp for cp in need if cp not in self._lru]
    new_trunks = [c for c in requests if c not in self._trunk_bytes]
    bank = self.banks.get(key) or {"tail": tuple(tail), "dtype": dtype, "free": []}
    n, width = bank["k"].shape[:2] if "k" in bank else (0, 0)
    wide = max(width, -(-max(len(p) for _, p in need) // self.quantum) * self.quantum)
    slot_bytes = 2 * wide * int(np.prod(tail)) * jnp.dtype(dtype).itemsize
    # Everything but this bank's slots: the other banks and every trunk (this call's new ones included).
    others = self.bytes - _bank_bytes(bank) + trunk_bytes * len(new_trunks)
    most = (self.max_bytes - others) // slot_bytes  # slots this bank may have
    # Slot counts are powers of two (at least 64) unless the budget caps them, so that the gathers compiled
    # per bank shape (`gather_context`) are few.
    if not n:
      size = min(most, next_pow2(max(64, len(need))))
    elif len(bank["free"]) < len(new):  # grow (to hold what this call lacks) rather than evict, within the budget
      size = max(n, min(most, next_pow2(n + len(new) - len(bank["free"]))))
    else:
      size = n
    if size < max(n, len(need)) or (wide > width and n * slot_bytes + others > self.max_bytes):
      return None  # a bank only grows; n slots this wide would not fit
    for c in new_trunks:
      self._trunk_bytes[c] = trunk_bytes
      self._bank_of[c] = key
    if size != n or wide != width:
      self._resize(bank, size, wide)
      self.banks[key] = bank
    out = {}
    for cp in need:
      if cp in self._lru:
        self._lru.move_to_end(cp)
        out[cp] = self._lru[cp]
    missing: dict[tuple[int, ...], list] = collections.defaultdict(list)
    for cp in new:
      if not bank["free"]:  # the least recently used entry of this bank that this call does not read
        victim = next(k for k in self._lru if self._bank_of[k[0]] == key and k not in needed)
        bank["free"].append(self._lru.pop(victim))
      out[cp] = bank["free"].pop()
      self._lru[cp] = out[cp]
      missing[cp[0]].append((cp[1], out[cp]))
    return bank, out, dict(missing)

  def forget(self, context: tuple[int, ...], entries) -> None:
    """Drops (program, slot) entries whose keys / values were never written (a failed computation)."""
    bank = self.banks.get(self._bank_of.get(context))
    for program, slot in entries:
      if self._lru.pop((context, program), None) is not None and bank is not None:
        bank["free"].append(slot)

  def store(self, bank: dict, context: tuple[int, ...], k, v, index, start, slots) -> None:
    tk, tv = self.trunks[context][1:]
    bank["k"], bank["v"] = self._store(bank["k"], bank["v"], k, v, tk, tv, index, start, slots)


class CompletionScorer:
  """The host side of completion scoring for one executor (its bucketing, schedules and compile counter)."""

  def __init__(self, executor: "Executor"):
    self.ex = executor
    # Work done over this scorer's life, for FLOP accounting (benchmarks): passes, (row, step) pairs, the same
    # times the padded sequence length (token-layers; a row that continues a context attends to its P columns
    # too: `context_key_layers`), LM-head rows x positions, and the context passes' own token-layers.
    self.totals = {"calls": 0, "passes": 0, "executed_row_steps": 0, "needed_row_steps": 0,
                   "executed_token_layers": 0, "head_tokens": 0, "context_key_layers": 0,
                   "context_token_layers": 0, "context_programs": 0, "context_hits": 0, "context_trunks": 0,
                   "prompt_states_kept": 0}
    self.contexts = ContextCache(executor.context_cache_bytes)
    cfg, counter = executor.cfg, executor._counter
    self._pass = jax.jit(functools.partial(_pass_core, cfg=cfg, counter=counter),
                         static_argnames=("head", "keep", "own_kv"))
    self._gather = jax.jit(gather_context)
    self._gather_rows = jax.jit(gather_rows)
    self._context_trunk = jax.jit(functools.partial(_context_trunk_core, cfg=cfg, counter=counter))
    self._context_suffix = jax.jit(functools.partial(_context_suffix_core, cfg=cfg, counter=counter))
    self._take = jax.jit(take_prompt_states)
    # (prompt ids, program ids) -> PromptState kept for generation (`keep_prompts`), within prompt_state_bytes;
    # `Executor.generate` takes them out.
    self.prompt_states: dict[tuple[tuple[int, ...], tuple[int, ...]], PromptState] = {}

  def _stage_schedule(self, stage: prefix_sharing.Stage, rows: int):
    """(steps [T], active [rows, T], length) of a stage; rows with an empty program are never active."""
    depth = self.ex.depth
    nonempty = [i for i, p in enumerate(stage.programs) if p]
    if not nonempty:  # the smallest bucket the nonempty stages use, so no shape of its own
      t = bucket_length(1, PASS_STEPS_QUANTUM, 2 * depth)
      return np.zeros(t, np.int32), np.zeros((rows, t), bool), 0
    sched = make_schedule([Program(stage.programs[i], depth) for i in nonempty], quantum=1)
    # Coarser than generation's buckets: a pass runs only its real steps (`length`), so T sizes just the step
    # arrays and the gathered context keys, and fewer distinct T mean fewer compiles.
    sched = sched.padded(bucket_length(sched.length, PASS_STEPS_QUANTUM, max(sched.length, 2 * depth)))
    active = np.zeros((rows, sched.padded_length), bool)
    active[nonempty] = sched.active
    return sched.ids, active, sched.length

  def _run(self, stage, rows, x_src, rows_x, tokens, mask, ctx, *, head: int = 0, keep_at=None, keep: int = 0,
           own_kv: bool = False):
    """One pass of `stage` on `rows` padded rows (padding rows repeat row 0's inputs and run no step): the
    outputs of `_pass_core`, the executed (row, step) pairs, the needed ones and the schedule's active [rows, T]."""
    steps, active, length = self._stage_schedule(stage, rows)
    pad = rows - len(stage.programs)
    rows_q = np.asarray(stage.questions + (stage.questions[0],) * pad, np.int32)
    rows_x = np.asarray(list(rows_x) + [rows_x[0]] * pad, np.int32)
    if keep_at is None:
      keep_at = np.zeros(len(steps), np.int32)
    ctx_args = (None, None, None)
    if ctx is not None:
      ctx_k, ctx_v, len_of, entry_of, context_of = ctx
      rows_e = np.zeros(rows, np.int32)
      rows_e[:len(stage.owners)] = [entry_of.get((context_of[q], o), 0) for q, o in zip(stage.questions, stage.owners)]
      # The program step of row i at schedule step t: its branch plus its active steps before t.
      branch = np.zeros(rows, np.int64)
      branch[:len(stage.branch)] = stage.branch
      step_of = branch[:, None] + np.maximum(np.cumsum(active, axis=1) - 1, 0)
      step_of = np.minimum(step_of, ctx_k.shape[1] - 1).astype(np.int32)
      self.totals["context_key_layers"] += rows * length * tokens.shape[1] * ctx_k.shape[2]
      ctx_k, ctx_v = self._gather(ctx_k, ctx_v, jnp.asarray(rows_e), jnp.asarray(step_of))
      ctx_args = (ctx_k, ctx_v, jnp.asarray(len_of[rows_q], jnp.int32))
    x0, row_tokens, row_mask = self._gather_rows(x_src, tokens, mask, jnp.asarray(rows_x), jnp.asarray(rows_q))
    out = self._pass(self.ex.model.params, *ctx_args, x0, row_tokens, row_mask, jnp.asarray(steps),
                     jnp.asarray(active), jnp.int32(length), jnp.asarray(keep_at, jnp.int32), head=head, keep=keep,
                     own_kv=own_kv)
    return out, rows * length, len(stage.programs) * length, active

  def _context_entries(self, requests: dict[tuple[int, ...], list[tuple[int, ...]]]):
    """(bank k, bank v, {(context, program): slot}) for contexts of one padded length (`requests`: context ->
    the programs read under it), computing the missing entries; None when the cache cannot hold them."""
    ex, cfg = self.ex, self.ex.cfg
    p = ex.prompt_bucket(max(len(c) for c in requests))
    dtype = transformer.dtype_of(cfg)
    trunk = ((ex.depth + 1) * p * cfg.hidden_size + 2 * ex.depth * p * cfg.num_kv_heads * cfg.head_dim) \
        * jnp.dtype(dtype).itemsize
    got = self.contexts.slots(requests, (p, cfg.num_kv_heads, cfg.head_dim), dtype, trunk_bytes=trunk)
    if got is None:
      return None
    bank, slot_of, missing = got
    computing = sum(len(m) for m in missing.values())
    self.totals["context_hits"] += len(slot_of) - computing
    self.totals["context_programs"] += computing
    todo = list(missing.items())
    for i, (context, entries) in enumerate(todo):
      try:
        self._compute_entries(bank, context, p, entries)
      except BaseException:
        for later, rest in todo[i:]:  # their slots hold nothing yet: no later call may read them
          self.contexts.forget(later, rest)
        raise
    return bank["k"], bank["v"], slot_of

  def _compute_entries(self, bank: dict, context: tuple[int, ...], p: int, missing) -> None:
    """Computes the (program, slot) entries `missing` of one context in its bank (see `_context_entries`)."""
    ex = self.ex
    if not missing:
      return
    tokens = np.full(p, ex.model.tokenizer.pad_id, np.int32)
    tokens[:len(context)] = context
    valid, tokens = jnp.asarray(np.arange(p) < len(context)), jnp.asarray(tokens)
    if context not in self.contexts.trunks:
      # The context under the full program, once: a program that starts like it takes those steps' keys
      # and values from here and runs only the rest (`start`), as the search's edits of one parent do.
      self.contexts.trunks[context] = self._context_trunk(ex.model.params, tokens, valid)
      self.totals["context_token_layers"] += ex.depth * p
      self.totals["context_trunks"] += 1
    trunk_xs = self.contexts.trunks[context][0]
    full = tuple(range(ex.depth))
    # Fixed-shape passes (CONTEXT_ROWS rows, the model's longest schedule): a row's keys then never depend
    # on which programs were missing together or on what the cache held, so a resumed search computes the
    # same bits.
    t_pad = bucket_length(2 * ex.depth, ex.schedule_quantum)
    width = bank["k"].shape[1]
    todo = [(o, slot, min(prefix_sharing.common_prefix(o, full), len(o) - 1)) for o, slot in missing]
    # Longest suffixes first: a pass then holds suffixes of similar length (for edits of the full program,
    # suffixes of it, whose merged schedule is the longest of them).
    todo.sort(key=lambda row: (-(len(row[0]) - row[2]), row[0]))
    chunks, chunk = [], []
    for o, slot, a in todo:
      if chunk and (len(chunk) == CONTEXT_ROWS or
                    make_schedule([Program(x[b:], ex.depth) for x, _, b in chunk + [(o, slot, a)]],
                                  quantum=1).length > t_pad):
        chunks.append(chunk)
        chunk = []
      chunk.append((o, slot, a))
    chunks.append(chunk)
    for chunk in chunks:
      sched = make_schedule([Program(o[a:], ex.depth) for o, _, a in chunk], quantum=1)
      steps = np.zeros(t_pad, np.int32)
      steps[:sched.length] = sched.ids
      active = np.zeros((CONTEXT_ROWS, t_pad), bool)
      active[:len(chunk), :sched.length] = sched.active
      start = np.zeros(CONTEXT_ROWS, np.int32)
      start[:len(chunk)] = [a for _, _, a in chunk]
      k, v = self._context_suffix(ex.model.params, trunk_xs, jnp.asarray(start), tokens, valid,
                                  jnp.asarray(steps), jnp.asarray(active), jnp.int32(sched.length))
      index = np.zeros((CONTEXT_ROWS, width), np.int32)
      slots = np.full(CONTEXT_ROWS, bank["k"].shape[0], np.int32)  # padding rows: out of range, dropped
      for g, (o, slot, a) in enumerate(chunk):
        own = np.flatnonzero(sched.active[g])
        index[g, a:a + len(own)] = own
        slots[g] = slot
      self.contexts.store(bank, context, k, v, jnp.asarray(index), jnp.asarray(start), jnp.asarray(slots))
      self.totals["context_token_layers"] += CONTEXT_ROWS * sched.length * p

  def score(self, sequences, programs, completion_starts, *, share_prefixes: bool = True,
            context_lengths: Sequence[int] | None = None, keep_prompts: bool = False) -> CompletionScores:
    ex = self.ex
    ids = ex._tokenize(sequences)
    progs = ex._programs(programs, len(ids))
    starts = [int(s) for s in completion_starts]
    if len(starts) != len(ids):
      raise ProgramError(f"Got {len(starts)} completion starts for {len(ids)} sequences.")
    for i, (x, s) in enumerate(zip(ids, starts)):
      if not 1 <= s <= len(x):
        raise ValueError(f"completion_starts[{i}] = {s} is outside [1, {len(x)}] for a {len(x)}-token sequence.")
    # Rows that continue a shared context are scored apart from the rest, one part per padded context length
    # (one bank: rows of different contexts share its passes); the rest as one part.
    parts: dict[int, list[int]] = collections.defaultdict(list)
    context_of: list[tuple[int, ...]] = [()] * len(ids)
    if context_lengths is not None:
      if len(context_lengths) != len(ids):
        raise ValueError(f"Got {len(context_lengths)} context lengths for {len(ids)} sequences.")
      for r, (x, s, c) in enumerate(zip(ids, starts, context_lengths)):
        c = min(int(c), s - 1)  # The position before the completion stays in the row (its argmax).
        usable = c >= ex.min_shared_prefix and not ex.cfg.layer_types  # sliding windows: see `Executor`
        context_of[r] = tuple(x[:c]) if usable else ()
        parts[ex.prompt_bucket(c) if usable else 0].append(r)
    else:
      parts[0] = list(range(len(ids)))
    argmax: list = [None] * len(ids)
    logprobs: list = [None] * len(ids)
    executed = needed = passes = 0
    keepers = []  # (rows of a part, its keep function)
    for rows in parts.values():
      res = self._score_part([ids[r][len(context_of[r]):] for r in rows], [progs[r] for r in rows],
                             [starts[r] - len(context_of[r]) for r in rows], share_prefixes,
                             [context_of[r] for r in rows], keep_prompts)
      for r, am, lp in zip(rows, res[0], res[1]):
        argmax[r], logprobs[r] = am, lp
      executed, needed, passes = executed + res[2], needed + res[3], passes + res[4]
      if res[5] is not None:
        keepers.append((rows, res[5]))
    self.totals["calls"] += 1

    def keep(selected: Sequence[int]) -> int:
      chosen, kept = set(int(r) for r in selected), 0
      for rows, part_keep in keepers:
        local = [i for i, r in enumerate(rows) if r in chosen]
        if local:
          kept += part_keep(local, [(tuple(ids[rows[i]][:starts[rows[i]]]), progs[rows[i]].ids) for i in local])
      return kept

    return CompletionScores(argmax=argmax, logprobs=logprobs,
                            layers_executed=np.array([len(p) for p in progs], np.int64),
                            executed_row_steps=executed, needed_row_steps=needed, passes=passes,
                            keep_prompts=keep if keep_prompts else None)

  def _score_part(self, ids, progs, starts, share_prefixes, contexts, keep_prompts=False):
    """Scores rows whose token sequences are `ids` after their `contexts` (() for none; the contexts of one part
    have one padded length): (argmax, logprobs, executed, needed, passes, keep), keep(rows, keys) storing those
    rows' `PromptState`s under keys (None unless keep_prompts and the rows continued their contexts)."""
    ex = self.ex
    # Questions are distinct (context, sequence) pairs; with sharing, identical (question, program) rows are
    # scored once.
    q_of: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    question = [q_of.setdefault((c, tuple(x)), len(q_of)) for c, x in zip(contexts, ids)]
    if share_prefixes:
      unique: dict[tuple[int, tuple[int, ...]], int] = {}
      slot = [unique.setdefault((q, p.ids), len(unique)) for q, p in zip(question, progs)]
      keys = list(unique)
      plan = prefix_sharing.plan_sharing([q for q, _ in keys], [p for _, p in keys], max_batch=ex.max_batch)
    else:
      slot = list(range(len(ids)))
      plan = prefix_sharing.plan_unshared(question, [p.ids for p in progs], max_batch=ex.max_batch)
    kept = {q: [d for d in ds if d] for q, ds in plan.kept().items()}
    run_trunk = any(kept.values())
    context_of = [c for c, _ in q_of]
    ctx, seqs = None, [x for _, x in q_of]
    if any(context_of):
      stages = ([plan.trunk] if run_trunk else []) + list(plan.groups)
      requests: dict[tuple[int, ...], list] = collections.defaultdict(list)
      for stage in stages:
        for q, o in zip(stage.questions, stage.owners):
          if o:
            requests[context_of[q]].append(o)
      got = self._context_entries(dict(requests)) if requests else None
      if got is None:  # more programs than the cache may hold: this part runs its whole sequences
        seqs = [c + x for c, x in q_of]
        ids = [list(c) + list(x) for c, x in zip(contexts, ids)]
        starts = [st + len(c) for c, st in zip(contexts, starts)]
      else:
        # Per question (a pass's padding rows repeat a real question, `_run`): its context's length and tokens.
        ctx = (got[0], got[1], np.asarray([len(c) for c in context_of], np.int32), got[2], context_of)

    s = ex.prompt_bucket(max(len(x) for x in seqs))
    # Each group's LM head covers its own rows' longest completion (+ 1), so short completions (one digit)
    # do not pay for long ones (four digits) in passes they do not share.
    longest: dict[int, int] = collections.defaultdict(int)  # planned row -> its longest completion
    for r, (x, st) in enumerate(zip(ids, starts)):
      longest[slot[r]] = max(longest[slot[r]], len(x) - st)
    heads = [bucket_length(max(longest[r] for r in stage.rows) + 1, COMPLETION_QUANTUM, s) for stage in plan.groups]
    n_q = prefix_sharing.rows_bucket(len(seqs))
    tokens = np.full((n_q, s), ex.model.tokenizer.pad_id, np.int32)
    mask = np.zeros(tokens.shape, np.int32)
    mask[len(seqs):, -1] = 1  # Padding sequences hold one token so that nothing attends to an empty row.
    for q, x in enumerate(seqs):
      tokens[q, s - len(x):], mask[q, s - len(x):] = x, 1
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)

    # The passes also return their rows' own keys / values, at most prompt_state_bytes of them in all (an upper
    # bound: every pass at the longest schedule).
    capture = keep_prompts and ctx is not None and self._pass_kv_bytes(plan, n_q, s) <= self.ex.prompt_state_bytes
    trunk_kv = None
    executed = needed = passes = 0
    source, row_of = None, {}  # the trunk's kept states [K * n_q, S, D]; (question, depth) -> row there
    if run_trunk:
      # One pass runs every question's trunk; the state after a depth some group starts from is kept (slot 0:
      # the embedding; the last slot takes the steps nobody reads).
      steps, active, length = self._stage_schedule(plan.trunk, n_q)
      at_step = {}  # (question, depth) -> schedule step after which the question's trunk has run depth steps
      for q, ds in kept.items():
        done = np.cumsum(active[q])
        for d in ds:
          at_step[q, d] = int(np.argmax(done >= d))
      needed_steps = sorted(set(at_step.values()))
      keep = max(4, next_pow2(len(needed_steps) + 2))  # slot 0, the kept steps, the slot nobody reads
      keep_at = np.full(len(steps), keep - 1, np.int32)
      keep_at[needed_steps] = np.arange(1, len(needed_steps) + 1)
      out, e, n, _ = self._run(plan.trunk, n_q, None, plan.trunk.questions, tokens, mask, ctx, keep_at=keep_at,
                               keep=keep, own_kv=capture)
      kept_states = out[0] if capture else out
      if capture:
        trunk_kv = (out[1], out[2], active)
      source = kept_states.reshape((-1,) + kept_states.shape[2:])
      row_of = {(q, d): int(keep_at[t]) * n_q + q for (q, d), t in at_step.items()}
      executed, needed, passes = executed + e, needed + n, passes + 1
    outs, group_kv = [], []
    for stage, head in zip(plan.groups, heads):
      rows = prefix_sharing.rows_bucket(len(stage.programs))
      rows_x = [row_of.get((q, d), q) for q, d in zip(stage.questions, stage.branch)]  # depth 0: the embedding
      out, e, n, active = self._run(stage, rows, source, rows_x, tokens, mask, ctx, head=head, own_kv=capture)
      if capture:
        group_kv.append((out[1], out[2], active))
        out = out[0]
      outs.append(out)
      executed, needed, passes = executed + e, needed + n, passes + 1

    t = self.totals
    t["passes"] += passes
    t["executed_row_steps"] += executed
    t["needed_row_steps"] += needed
    t["executed_token_layers"] += executed * s
    t["head_tokens"] += sum(prefix_sharing.rows_bucket(len(g.programs)) * h for g, h in zip(plan.groups, heads))
    per_slot: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for stage, head, (am, lp) in zip(plan.groups, heads, outs):
      am, lp = np.asarray(am), np.asarray(lp)
      for i, r in enumerate(stage.rows):
        per_slot[r] = am[i], lp[i], head
    argmax, logprobs = [], []
    for r, (x, st) in enumerate(zip(ids, starts)):
      am, lp, head = per_slot[slot[r]]
      m = len(x) - st
      argmax.append(am[head - m - 1:].copy())
      logprobs.append(lp[head - 1 - m:].copy())
    keep = None
    if capture:
      where = {r: (g, b) for g, stage in enumerate(plan.groups) for b, r in enumerate(stage.rows)}
      keep = functools.partial(self._keep_prompts, plan=plan, where=where, slot=slot, trunk_kv=trunk_kv,
                               group_kv=group_kv, ids=ids, starts=starts, contexts=contexts, s=s)
    return argmax, logprobs, executed, needed, passes, keep

  def _pass_kv_bytes(self, plan, n_q: int, s: int) -> int:
    """At most how many bytes of keys / values the passes of `plan` return with own_kv (`_pass_core`)."""
    cfg = self.ex.cfg
    rows = n_q + sum(prefix_sharing.rows_bucket(len(g.programs)) for g in plan.groups)
    t = bucket_length(2 * self.ex.depth, PASS_STEPS_QUANTUM)
    return 2 * rows * t * s * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(transformer.dtype_of(cfg)).itemsize

  def _keep_prompts(self, rows, keys, *, plan, where, slot, trunk_kv, group_kv, ids, starts, contexts, s) -> int:
    """Stores `PromptState`s of a part's `rows` (indices into it) under `keys`, while they fit within the
    executor's `prompt_state_bytes`; returns how many new states it stored."""
    cfg = self.ex.cfg
    itemsize = jnp.dtype(transformer.dtype_of(cfg)).itemsize
    by_group: dict[int, list[tuple[int, int, int]]] = collections.defaultdict(list)  # g -> (i, row, row in g)
    chosen = set()
    for i, r in enumerate(rows):
      if keys[i] not in self.prompt_states and keys[i] not in chosen:
        chosen.add(keys[i])
        g, b = where[slot[r]]
        by_group[g].append((i, r, b))
    used = sum(x.nbytes for x in self.prompt_states.values())
    kept = 0
    for g, members in by_group.items():
      stage = plan.groups[g]
      k, v, active = group_kv[g]
      tk, tv, trunk_active = trunk_kv if trunk_kv is not None else (k, v, None)
      width = bucket_length(max(len(stage.owners[b]) for _, _, b in members), 16)  # program steps kept
      w = bucket_length(max(starts[r] - 1 for _, r, _ in members), 16)  # prompt columns kept
      per_row = 2 * width * max(w, 1) * cfg.num_kv_heads * cfg.head_dim * itemsize
      members = members[:max(0, (self.ex.prompt_state_bytes - used) // per_row)]
      if not members:
        continue
      n = next_pow2(len(members))
      from_trunk = np.zeros((n, width), bool)
      at_trunk = np.zeros((n, width, 2), np.int32)
      at_own = np.zeros((n, width, 2), np.int32)
      cols = np.zeros((n, w), np.int32)
      for m, (_, r, b) in enumerate(members):
        q, d = stage.questions[b], stage.branch[b]
        if d:
          at_trunk[m, :d, 0] = np.flatnonzero(trunk_active[q])[:d]
          at_trunk[m, :d, 1] = q
          from_trunk[m, :d] = True
        own = np.flatnonzero(active[b])
        at_own[m, d:d + len(own), 0] = own
        at_own[m, d:d + len(own), 1] = b
        length = starts[r] - 1  # the prompt's own tokens but its last (the row's sequence: left-padded to s)
        cols[m, w - length:] = s - len(ids[r]) + np.arange(length)
      out_k, out_v = self._take(tk, tv, k, v, jnp.asarray(from_trunk), jnp.asarray(at_trunk), jnp.asarray(at_own),
                                jnp.asarray(cols))
      for m, (i, r, _) in enumerate(members):
        state = PromptState(out_k[m], out_v[m], len(contexts[r]), starts[r] - 1)
        self.prompt_states[keys[i]] = state
        used += state.nbytes
        kept += 1
    self.totals["prompt_states_kept"] += kept
    return kept
