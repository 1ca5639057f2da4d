"""Completion scoring: one prefill per (sequence, program) row, greedy predictions and log-probs of a completion.

`Executor.score_completions(sequences, programs, completion_starts)` runs each row's program over its whole
token sequence once (no generation, no KV cache kept) and returns, per row with completion c = seq[s:] of
m tokens: `argmax` [m + 1], the greedy next token at positions s-1 .. len-1, and `logprobs` [m], the
log-softmax (float32) of each completion token. Only the last M = bucket(max m + 1) positions of each
(left-padded, so aligned) row reach the LM head, inside the jitted pass: no [B, S, V] logits leave the device.

Shared prefixes (`share_prefixes=True`, the default). Rows with the same token sequence (one question) whose
programs agree on their first k steps have the same hidden states after those steps, so those steps run once
per question, and each row runs only the rest of its program: `prefix_sharing.plan_sharing` builds the plan
(a per-question trunk advanced in a few stages, then a few groups of rows by where they leave the trunk)
and its cost model. Identical (sequence, program) rows are scored once. Cost follows the distinct
(sequence, program-prefix) work: for Q questions x C single-edit children of a D-step program with G groups,
about Q x D + Q x C x D x (G + 1) / 2G executed (row, step) pairs, against Q x C x merged_len(all programs)
unshared. `CompletionScores.executed_row_steps` counts what ran (padded rows x real schedule steps, per pass).

Compiles. One core function (`_score_core`) serves trunk stages and groups; it is traced once per shape
bucket: padded rows (`prefix_sharing.rows_bucket`), source rows, prompt length (`Executor.prompt_bucket`),
schedule length (`Executor.schedule`'s bucket) and M (a multiple of 4). Group boundaries and programs are data.
Traces count in `Executor.compiles`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.programs import executor_core, prefix_sharing
from polar_jax.programs.program import Program, ProgramError
from polar_jax.programs.schedule import bucket_length

if TYPE_CHECKING:
  from polar_jax.programs.executor import Executor

COMPLETION_QUANTUM = 4


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
  """
  argmax: list[np.ndarray]
  logprobs: list[np.ndarray]
  layers_executed: np.ndarray
  executed_row_steps: int
  needed_row_steps: int
  passes: int


def _score_core(params, x_src, tokens_src, mask_src, rows_x, rows_q, steps, active, length, *, cfg: ModelConfig,
                head: int, counter: list):
  """Runs a schedule on gathered rows: the pass of one trunk stage (head=0) or one group (head=M).

  tokens_src, mask_src: [Q, S] left-padded sequences; rows_q: [B] each row's sequence; x_src: [R, S, D] the
  source hidden states (None: the token embedding), rows_x: [B] each row's source row. Returns x [B, S, D],
  or with head=M (argmax [B, M] int32 at the last M positions, logprobs [B, M-1] of each next token).
  """
  counter[0] += 1  # Runs at trace time only: counts compiles.
  tokens, mask = tokens_src[rows_q], mask_src[rows_q]
  x = transformer.embed(params, cfg, tokens) if x_src is None else x_src[rows_x]
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(mask))
  key_mask = transformer.causal_key_mask(mask)
  # A one-slot scratch cache: each step writes all S columns of slot 0 (run_steps' slot index is clamped)
  # before attending, so no key / value outlives its step; a prefill needs no cache afterwards.
  scratch = jnp.zeros((1,) + x.shape[:2] + (cfg.num_kv_heads, cfg.head_dim), x.dtype)
  x, _, _ = executor_core.run_steps(params, cfg, steps, active, length, x, rope, key_mask, scratch, scratch, 0)
  if not head:
    return x
  logits = transformer.logits(params, cfg, transformer.final_norm(params, cfg, x[:, -head:]))  # [B, M, V] f32
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  targets = tokens[:, tokens.shape[1] - head + 1:]
  logprobs = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.argmax(logits, axis=-1).astype(jnp.int32), logprobs


class CompletionScorer:
  """The host side of completion scoring for one executor (its bucketing, schedules and compile counter)."""

  def __init__(self, executor: "Executor"):
    self.ex = executor
    # Work done over this scorer's life, for FLOP accounting (benchmarks): passes, (row, step) pairs, the same
    # times the padded sequence length (token-layers), and LM-head rows x positions.
    self.totals = {"calls": 0, "passes": 0, "executed_row_steps": 0, "needed_row_steps": 0,
                   "executed_token_layers": 0, "head_tokens": 0}
    self._core = jax.jit(functools.partial(_score_core, cfg=executor.cfg, counter=executor._counter),
                         static_argnames=("head",))

  def _stage_schedule(self, stage: prefix_sharing.Stage, rows: int):
    """(steps [T], active [rows, T], length) of a stage; rows with an empty program are never active."""
    depth = self.ex.depth
    nonempty = [i for i, p in enumerate(stage.programs) if p]
    if not nonempty:
      return np.zeros(self.ex.schedule_quantum, np.int32), np.zeros((rows, self.ex.schedule_quantum), bool), 0
    sched = self.ex.schedule([Program(stage.programs[i], depth) for i in nonempty])
    active = np.zeros((rows, sched.padded_length), bool)
    active[nonempty] = sched.active
    return sched.ids, active, sched.length

  def _run(self, stage, x_src, tokens, mask, head):
    rows = prefix_sharing.rows_bucket(len(stage.programs)) if head else tokens.shape[0]
    steps, active, length = self._stage_schedule(stage, rows)
    pad = rows - len(stage.programs)  # Padding rows repeat row 0's inputs and run no step.
    rows_x = np.asarray(stage.source_rows + (stage.source_rows[0],) * pad, np.int32)
    rows_q = np.asarray(stage.questions + (stage.questions[0],) * pad, np.int32)
    out = self._core(self.ex.model.params, x_src, tokens, mask, jnp.asarray(rows_x), jnp.asarray(rows_q),
                     jnp.asarray(steps), jnp.asarray(active), jnp.int32(length), head=head)
    return out, rows * length, len(stage.programs) * length

  def score(self, sequences, programs, completion_starts, *, share_prefixes: bool = True,
            max_groups: int = 4) -> CompletionScores:
    ex = self.ex
    ids = ex._tokenize(sequences)
    progs = ex._programs(programs, len(ids))
    starts = [int(s) for s in completion_starts]
    if len(starts) != len(ids):
      raise ProgramError(f"Got {len(starts)} completion starts for {len(ids)} sequences.")
    for i, (x, s) in enumerate(zip(ids, starts)):
      if not 1 <= s <= len(x):
        raise ValueError(f"completion_starts[{i}] = {s} is outside [1, {len(x)}] for a {len(x)}-token sequence.")
    # Questions are distinct sequences; with sharing, identical (sequence, program) rows are scored once.
    q_of: dict[tuple[int, ...], int] = {}
    question = [q_of.setdefault(tuple(x), len(q_of)) for x in ids]
    if share_prefixes:
      unique: dict[tuple[int, tuple[int, ...]], int] = {}
      slot = [unique.setdefault((q, p.ids), len(unique)) for q, p in zip(question, progs)]
      keys = list(unique)
      plan = prefix_sharing.plan_sharing([q for q, _ in keys], [p for _, p in keys], max_groups=max_groups,
                                         max_batch=ex.max_batch)
    else:
      slot = list(range(len(ids)))
      plan = prefix_sharing.plan_unshared(question, [p.ids for p in progs], max_batch=ex.max_batch)

    seqs = list(q_of)
    s = ex.prompt_bucket(max(len(x) for x in seqs))
    head = bucket_length(max(len(x) - st for x, st in zip(ids, starts)) + 1, COMPLETION_QUANTUM, s)
    tokens = np.full((prefix_sharing.rows_bucket(len(seqs)), s), ex.model.tokenizer.pad_id, np.int32)
    mask = np.zeros(tokens.shape, np.int32)
    mask[len(seqs):, -1] = 1  # Padding sequences hold one token so that nothing attends to an empty row.
    for q, x in enumerate(seqs):
      tokens[q, s - len(x):], mask[q, s - len(x):] = x, 1
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)

    executed = needed = 0
    trunk_out = []
    for stage in plan.trunk:
      x, e, n = self._run(stage, trunk_out[stage.source] if stage.source >= 0 else None, tokens, mask, 0)
      trunk_out.append(x)
      executed, needed = executed + e, needed + n
    outs = []
    for stage in plan.groups:
      out, e, n = self._run(stage, trunk_out[stage.source], tokens, mask, head)
      outs.append(out)
      executed, needed = executed + e, needed + n

    t = self.totals
    t["calls"] += 1
    t["passes"] += len(plan.trunk) + len(plan.groups)
    t["executed_row_steps"] += executed
    t["needed_row_steps"] += needed
    t["executed_token_layers"] += executed * s
    t["head_tokens"] += sum(prefix_sharing.rows_bucket(len(g.programs)) for g in plan.groups) * head
    per_slot: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for stage, (am, lp) in zip(plan.groups, outs):
      am, lp = np.asarray(am), np.asarray(lp)
      for i, r in enumerate(stage.rows):
        per_slot[r] = am[i], lp[i]
    argmax, logprobs = [], []
    for r, (x, st) in enumerate(zip(ids, starts)):
      am, lp = per_slot[slot[r]]
      m = len(x) - st
      argmax.append(am[head - m - 1:].copy())
      logprobs.append(lp[head - 1 - m:].copy())
    return CompletionScores(argmax=argmax, logprobs=logprobs,
                            layers_executed=np.array([len(p) for p in progs], np.int64),
                            executed_row_steps=executed, needed_row_steps=needed,
                            passes=len(plan.trunk) + len(plan.groups))
