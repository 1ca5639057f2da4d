"""The program executor, host side: prompts and programs in, generations (or logits) out.

`Executor` tokenizes, builds a batch's `Schedule`, buckets every shape (batch, prompt length, new tokens,
schedule length) so that new programs never trigger new compiles (`Executor.compiles` counts the traces),
and runs the jitted core of `executor_core.py` (prefill, KV-cached decode, the generation loop; see there for
the step loop and the per-step KV cache). When rows stop is a `StopRule` (`stop_rules.py`), decided on device.
`executor_for` / `generate` use one shared executor per model.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models.registry import Model
from polar_jax.programs import completions, executor_core, stop_rules
from polar_jax.programs.program import Program, ProgramError
from polar_jax.programs.schedule import Schedule, bucket_length, make_schedule, next_pow2
from polar_jax.programs.stop_rules import StopRule


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
    token_logprobs: per row, float32 [num_generated]: each generated token's log-probability under the row's
      program (untempered softmax, also when sampling): the model's own confidence in what it wrote.
  """
  tokens: list[list[int]]
  texts: list[str]
  num_generated: np.ndarray
  layers_executed: np.ndarray
  stopped: np.ndarray
  schedule_length: int
  token_logprobs: list[np.ndarray] = dataclasses.field(default_factory=list)


def row_seeds(seed, n: int) -> np.ndarray:
  """Per-row sampling seeds as uint32 [n]: `seed` itself when it is a sequence of n ints, else seed + r."""
  if isinstance(seed, (int, np.integer)):
    return (np.arange(n, dtype=np.int64) + int(seed)).astype(np.uint32)
  seeds = np.asarray(list(seed), dtype=np.int64)
  if seeds.shape != (n,):
    raise ValueError(f"Got {seeds.size} sampling seeds for {n} prompts; give one per prompt or a single int.")
  return seeds.astype(np.uint32)


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
      distinct program instead of once per row (`executor_core.prefill_shared`); the results are the same.
    min_shared_prefix: shorter shared prefixes are not worth a separate pass.
    context_cache_bytes: what `score_completions` may keep of shared contexts' keys and values across calls
      (`completions.ContextCache`).
    prompt_state_bytes: what `score_completions(keep_prompts=True)` may keep of prompts' own keys and values
      until `generate` uses them (`completions.PromptState`).
  """

  def __init__(self, model: Model, *, prompt_quantum: int = 8, new_token_quantum: int = 16,
               schedule_quantum: int = 16, max_batch: int = 64, share_prefix: bool = True,
               min_shared_prefix: int = 16, context_cache_bytes: int = 4 << 30, prompt_state_bytes: int = 1 << 30):
    self.model = model
    self.context_cache_bytes = context_cache_bytes
    self.prompt_state_bytes = prompt_state_bytes
    self.share_prefix = share_prefix
    self.min_shared_prefix = min_shared_prefix
    self.cfg = model.config
    self.prompt_quantum = prompt_quantum
    self.new_token_quantum = new_token_quantum
    self.schedule_quantum = schedule_quantum
    self.max_batch = max_batch
    self._counter = [0]
    # Generation work executed (padding included), for FLOP accounting (benchmarks): prefill token-layers
    # (a shared prefix once per program group), decode token-layers and LM-head rows over decode steps.
    self.generation_totals = {"prefill_token_layers": 0, "decode_token_layers": 0, "decode_head_tokens": 0,
                              "prompt_states_used": 0}
    self._tables = None
    self._scorer = None
    self._generate = jax.jit(functools.partial(executor_core.generate_core, cfg=self.cfg, counter=self._counter),
                             static_argnames=("new_cap",))
    self._prefill_logits = jax.jit(functools.partial(executor_core.prefill_logits_core, cfg=self.cfg,
                                                     counter=self._counter))

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
    sched = make_schedule(programs, quantum=1)  # Merged once; only the padding depends on its length.
    return sched.padded(bucket_length(sched.length, self.schedule_quantum, max(sched.length, 2 * self.depth)))

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
    """The prompt inputs of `executor_core.generate_core`: left-padded tokens, or a shared prefix plus the rest."""
    p = self._shared_prefix_length(ids) if self.share_prefix else 0
    tokens, mask, active, row_valid = self._batch_arrays([x[p:] for x in ids], sched, batch_pad)
    prompt = {"tokens": jnp.asarray(tokens), "attn_mask": jnp.asarray(mask)}
    if p:
      groups: dict[Program, int] = {}
      row_group = np.zeros(batch_pad, np.int32)
      for r, program in enumerate(progs):
        row_group[r] = groups.setdefault(program, len(groups))
      first_row = {g: progs.index(program) for program, g in groups.items()}
      group_active = np.zeros((next_pow2(len(groups)), active.shape[1]), bool)
      for g, r in first_row.items():
        group_active[g] = active[r]
      prompt.update(prefix=jnp.asarray(np.asarray(ids[0][:p], np.int32)), group_active=jnp.asarray(group_active),
                    row_group=jnp.asarray(row_group))
    return prompt, active, row_valid

  def _batch_pad(self, n: int) -> int:
    """Rows a batch of n is padded to: a power of two, at most max_batch (a chunk is never larger)."""
    return min(next_pow2(n), max(self.max_batch, n))

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
               temperature: float = 0.0, seed: int | Sequence[int] = 0,
               context_lengths: Sequence[int] | None = None) -> GenerationResult:
    """Generates for each prompt under its program.

    Args:
      prompts: strings (tokenized without adding special tokens: render chat templates first) or id lists.
      programs: one Program (or id list) per prompt, or a single one for all.
      max_new_tokens: generation budget per row.
      stop: when rows stop (default: the tokenizer's EOS / end-of-turn ids).
      temperature: 0 for greedy; > 0 samples.
      seed: one sampling seed per prompt, or an int: prompt r then uses `seed + r`. A row's sample depends only
        on its seed, prompt and program, not on the batch it shares (nor on `max_batch`).
      context_lengths: per prompt, how many leading tokens are a context that other prompts share (as in
        `score_completions`): rows are batched by padded context length (rows of different contexts together),
        and a context's keys / values under each program come from the completion scorer's `ContextCache`
        (computed there once, or taken as kept), so only the rest of each prompt is prefilled; where the scorer
        kept every row's `completions.PromptState` (`score_completions(keep_prompts=True)`), only each prompt's
        last token. The results are the same up to float rounding.
    """
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    ids = self._tokenize(prompts)
    progs = self._programs(programs, len(ids))
    seeds = row_seeds(seed, len(ids))
    parts: dict[int, list[int]] = {}  # padded context length (0: none) -> rows
    contexts: list[tuple[int, ...]] = [()] * len(ids)
    if context_lengths is not None:
      if len(context_lengths) != len(ids):
        raise ValueError(f"Got {len(context_lengths)} context lengths for {len(ids)} prompts.")
      for r, (x, c) in enumerate(zip(ids, context_lengths)):
        c = min(int(c), len(x) - 1)
        usable = c >= self.min_shared_prefix and not self.cfg.layer_types  # sliding windows: see __init__
        contexts[r] = tuple(x[:c]) if usable else ()
        parts.setdefault(self.prompt_bucket(c) if usable else 0, []).append(r)
    else:
      parts[0] = list(range(len(ids)))
    results, order = [], []
    for members in parts.values():
      for start in range(0, len(members), self.max_batch):
        chunk = members[start:start + self.max_batch]
        results.append(self._generate_batch([ids[r] for r in chunk], [progs[r] for r in chunk], max_new_tokens,
                                            stop or StopRule(), temperature, seeds[chunk],
                                            [contexts[r] for r in chunk]))
        order += chunk
    if len(results) == 1 and order == list(range(len(ids))):
      return results[0]
    back = np.argsort(np.asarray(order))  # row r of the input is row back[r] of the concatenated results

    def rows(field):
      flat = [x for result in results for x in getattr(result, field)]
      return [flat[i] for i in back]

    return GenerationResult(
        tokens=rows("tokens"), texts=rows("texts"),
        num_generated=np.concatenate([r.num_generated for r in results])[back],
        layers_executed=np.concatenate([r.layers_executed for r in results])[back],
        stopped=np.concatenate([r.stopped for r in results])[back],
        schedule_length=max(r.schedule_length for r in results), token_logprobs=rows("token_logprobs"))

  def _stop_arrays(self, stop: StopRule) -> dict:
    """The stop rule as device arrays; the per-token tables are built once per executor."""
    if self._tables is None:
      self._tables = stop_rules.token_tables(self.model.tokenizer)
    return stop_rules.stop_arrays(stop, self._tables, self.model.tokenizer.stop_ids)

  def _scorer_of(self) -> completions.CompletionScorer:
    if self._scorer is None:
      self._scorer = completions.CompletionScorer(self)
    return self._scorer

  def _context_prompt(self, ids, sched: Schedule, progs: Sequence[Program], batch_pad: int, contexts):
    """The prompt inputs of `executor_core.generate_core` for rows that continue `contexts` (one per row, of one
    padded length), with their keys and values from the completion scorer's bank; None when the bank cannot
    hold this batch's entries. When every row's prompt has a kept `completions.PromptState` under its program
    (what a scoring pass computed), its own tokens but the last join the context and only the last is prefilled."""
    scorer = self._scorer_of()
    requests: dict[tuple[int, ...], list] = {}
    for c, p in zip(contexts, progs):
      requests.setdefault(c, []).append(p.ids)
    # Taken out whether used or not (a pair twice in the batch: both rows read its state); a batch uses them only
    # if every row has one, else it prefills as before.
    keys = [(tuple(x), p.ids) for x, p in zip(ids, progs)]
    taken = {key: scorer.prompt_states.pop(key, None) for key in dict.fromkeys(keys)}
    states = [taken[key] for key in keys]
    if not all(st is not None and st.context == len(c) and st.length == len(x) - len(c) - 1
               for st, x, c in zip(states, ids, contexts)):
      states = None
    got = scorer._context_entries(requests)
    if got is None:
      return None
    bank_k, bank_v, slot_of = got
    tokens, mask, active, row_valid = self._batch_arrays([x[len(c):] for x, c in zip(ids, contexts)], sched,
                                                         batch_pad)
    rows_e = np.zeros(batch_pad, np.int32)
    rows_e[:len(progs)] = [slot_of[c, p.ids] for c, p in zip(contexts, progs)]
    lengths = [len(c) for c in contexts] + [len(contexts[0])] * (batch_pad - len(contexts))  # padding: row 0's
    ctx_valid = np.arange(bank_k.shape[2])[None] < np.asarray(lengths)[:, None]
    # The program step of each row at schedule step t: its active steps before t (inactive: any valid step).
    step_of = np.minimum(np.maximum(np.cumsum(active, axis=1) - 1, 0), bank_k.shape[1] - 1).astype(np.int32)
    ctx_k, ctx_v = scorer._gather(bank_k, bank_v, jnp.asarray(rows_e), jnp.asarray(step_of))
    if states is not None:
      steps, w = max(st.k.shape[0] for st in states), max(st.k.shape[1] for st in states)
      states += [states[0]] * (batch_pad - len(states))

      def pad(x):  # [L, W, K, hd] to the batch's longest program and prompt (right-aligned)
        return jnp.pad(x, ((0, steps - x.shape[0]), (w - x.shape[1], 0), (0, 0), (0, 0)))

      own_k, own_v = jnp.stack([pad(st.k) for st in states]), jnp.stack([pad(st.v) for st in states])
      own_step = np.minimum(step_of, own_k.shape[1] - 1)
      own_k, own_v = scorer._gather(own_k, own_v, jnp.arange(batch_pad, dtype=jnp.int32), jnp.asarray(own_step))
      ctx_k, ctx_v = jnp.concatenate([ctx_k, own_k], axis=2), jnp.concatenate([ctx_v, own_v], axis=2)
      own_valid = np.arange(w)[None] >= w - np.asarray([st.length for st in states])[:, None]
      ctx_valid = np.concatenate([ctx_valid, own_valid], axis=1)
      tokens, mask = tokens[:, -1:], mask[:, -1:]  # left-padded: the last column is each prompt's last token
      self.generation_totals["prompt_states_used"] += len(ids)
    prompt = {"tokens": jnp.asarray(tokens), "attn_mask": jnp.asarray(mask), "ctx_k": ctx_k, "ctx_v": ctx_v,
              "ctx_valid": jnp.asarray(ctx_valid)}
    return prompt, active, row_valid

  def _generate_batch(self, ids, progs, max_new_tokens, stop: StopRule, temperature, seeds, contexts=None):
    sched = self.schedule(progs)
    batch_pad = self._batch_pad(len(ids))
    got = self._context_prompt(ids, sched, progs, batch_pad, contexts) if contexts and contexts[0] else None
    prompt, active, row_valid = got or self._prompt_arrays(ids, sched, progs, batch_pad)
    padded_seeds = np.zeros(batch_pad, np.uint32)
    padded_seeds[:len(ids)] = seeds
    keys = jax.vmap(jax.random.key)(jnp.asarray(padded_seeds))
    new_cap = bucket_length(max_new_tokens, self.new_token_quantum)
    out, n_gen, stopped, lps = self._generate(
        self.model.params, jnp.asarray(sched.ids), jnp.asarray(active), jnp.int32(sched.length), prompt,
        jnp.asarray(row_valid), jnp.int32(max_new_tokens), jnp.float32(temperature), keys,
        self._stop_arrays(stop), new_cap=new_cap)
    out, n_gen, stopped, lps = np.asarray(out), np.asarray(n_gen), np.asarray(stopped), np.asarray(lps)
    n = len(ids)
    t, rows, steps = self.generation_totals, active.shape[0], int(n_gen.max(initial=1))
    shared = prompt["prefix"].shape[0] * prompt["group_active"].shape[0] if "prefix" in prompt else 0
    t["prefill_token_layers"] += sched.length * (shared + rows * prompt["tokens"].shape[1])
    t["decode_token_layers"] += sched.length * rows * (steps - 1)
    t["decode_head_tokens"] += rows * steps
    tokens_out = [out[r, :n_gen[r]].tolist() for r in range(n)]
    texts = [self.model.tokenizer.decode(t) for t in tokens_out]
    lengths = np.array([len(p) for p in progs], np.int64)
    return GenerationResult(tokens=tokens_out, texts=texts, num_generated=n_gen[:n].astype(np.int64),
                            layers_executed=lengths * np.maximum(n_gen[:n], 1),
                            stopped=stopped[:n], schedule_length=sched.length,
                            token_logprobs=[lps[r, :n_gen[r]].astype(np.float32) for r in range(n)])

  def prefill_logits(self, prompts, programs) -> list[np.ndarray]:
    """Full-sequence logits under each row's program: a list of [len_i, V] float32 arrays (one prefill)."""
    ids = self._tokenize(prompts)
    progs = self._programs(programs, len(ids))
    out = []
    for start in range(0, len(ids), self.max_batch):
      chunk_ids, chunk_progs = ids[start:start + self.max_batch], progs[start:start + self.max_batch]
      sched = self.schedule(chunk_progs)
      batch_pad = self._batch_pad(len(chunk_ids))
      tokens, mask, active, _ = self._batch_arrays(chunk_ids, sched, batch_pad)
      logits = np.asarray(self._prefill_logits(self.model.params, jnp.asarray(sched.ids), jnp.asarray(active),
                                               jnp.int32(sched.length), jnp.asarray(tokens), jnp.asarray(mask)))
      s = tokens.shape[1]
      out += [logits[r, s - len(x):] for r, x in enumerate(chunk_ids)]
    return out

  def score_completions(self, sequences, programs, completion_starts: Sequence[int], *,
                        share_prefixes: bool = True, context_lengths: Sequence[int] | None = None,
                        keep_prompts: bool = False) -> completions.CompletionScores:
    """Greedy predictions and log-probs of each row's completion `sequence[start:]` under its program, from
    one prefill (`completions.py`; with share_prefixes, rows of one sequence run their programs' common steps
    once and branch from there, `prefix_sharing.py`). `context_lengths[i]`: how many leading tokens of sequence i are a
    context that other sequences share (its keys / values under each program are computed once and kept,
    `completions.ContextCache`); the results are the same. keep_prompts: the result's `keep_prompts(rows)` keeps
    those rows' prompt states for `generate` (`completions.PromptState`)."""
    return self._scorer_of().score(sequences, programs, completion_starts, share_prefixes=share_prefixes,
                                   context_lengths=context_lengths, keep_prompts=keep_prompts)

  def drop_prompt_states(self) -> None:
    """Forgets every kept `completions.PromptState` (`score_completions(keep_prompts=True)`)."""
    if self._scorer is not None:
      self._scorer.prompt_states.clear()


_EXECUTORS: "weakref.WeakKeyDictionary[Model, Executor]" = weakref.WeakKeyDictionary()


def executor_for(model: Model) -> Executor:
  """The shared Executor of a model (so compiled functions are reused across calls)."""
  ex = _EXECUTORS.get(model)
  if ex is None:
    ex = _EXECUTORS[model] = Executor(model)
  return ex


def generate(model: Model, prompts, programs, max_new_tokens: int, *, stop: StopRule | None = None,
             temperature: float = 0.0, seed: int | Sequence[int] = 0) -> GenerationResult:
  """`Executor.generate` on the model's shared executor."""
  return executor_for(model).generate(prompts, programs, max_new_tokens, stop=stop, temperature=temperature,
                                      seed=seed)
