"""Packing a round's (question, program) pairs into device batches whose shared schedules stay short.

A batch runs one schedule, the merged supersequence of its rows' programs (`polar_jax.programs.merge_programs`),
and every row pays for every step. Programs one or two edits from the full program differ mainly in where
they loop back: a skip-only program is a subsequence of `0..D-1` and rides along with the full program for
free, while two programs that repeat different blocks need both loops in the merged schedule. So pairs are
grouped by program (the same program across questions costs nothing extra), distinct programs are ordered by
their loop-back points so that neighbours share loops, and a program joins the current batch only while the
merged schedule stays within `max_waste` of the batch's longest program.

`per_question=True` never mixes questions in a batch, so each batch (and hence every numeric detail of its
computation) depends only on that question's own search: with a deterministic device this makes a restarted
search reproduce an uninterrupted one exactly, whatever other questions shared its rounds.

Unlike programs (random programs, say) each end up alone under that bound: cheap in row-steps, but every
batch pays the fixed cost of its steps (weight reads, dispatch) for one row. With `step_cost > 0` the packed
batches are then coalesced, greedily and most profitable pair first, wherever the modelled cost
`padded(merged steps) x (step_cost + rows)` falls: `step_cost` is a step's fixed cost in units of one row's
step. At 0 (the default) no merge can pay (a merged schedule is never shorter than its longest part), so the
plan is the packing alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from polar_jax.programs.schedule import bucket_length, merge_programs


def loop_signature(program: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """The (from, to) layer pairs where the program steps back or repeats (`to <= from`), in order."""
  return tuple((a, b) for a, b in zip(program, program[1:]) if b <= a)


def _pack(programs: list[tuple[int, ...]], rows: dict[tuple[int, ...], list[int]], max_batch: int,
          max_waste: float) -> list[list[int]]:
  batches: list[list[int]] = []
  current: list[int] = []
  merged: tuple[int, ...] = ()
  longest = 0
  for program in sorted(programs, key=lambda p: (loop_signature(p), -len(p), p)):
    todo = list(rows[program])
    while todo:
      if current and len(current) < max_batch:
        candidate = merge_programs([merged, program])
        if len(candidate) <= (1.0 + max_waste) * max(longest, len(program)):
          take = todo[:max_batch - len(current)]
          current += take
          todo = todo[len(take):]
          merged, longest = candidate, max(longest, len(program))
          continue
      if current:
        batches.append(current)
      take = todo[:max_batch]
      todo = todo[len(take):]
      current, merged, longest = list(take), tuple(program), len(program)
  if current:
    batches.append(current)
  return batches


def _fits(programs: list[tuple[int, ...]], max_waste: float) -> bool:
  return len(merge_programs(programs)) <= (1.0 + max_waste) * max(len(p) for p in programs)


def _split_until_fit(batch: list[int], program_of: dict[int, tuple[int, ...]], max_waste: float) -> list[list[int]]:
  """Checks the batch against the schedule the executor will build (merging all its programs at once, which
  can come out longer than the incremental estimate) and halves it, keeping programs together, until it fits."""
  distinct = list(dict.fromkeys(program_of[i] for i in batch))
  if len(distinct) == 1 or _fits(distinct, max_waste):
    return [batch]
  first = set(distinct[:len(distinct) // 2])
  left = [i for i in batch if program_of[i] in first]
  right = [i for i in batch if program_of[i] not in first]
  return _split_until_fit(left, program_of, max_waste) + _split_until_fit(right, program_of, max_waste)


def _lcs_lengths(a: Sequence[int], others: Sequence[Sequence[int]]) -> np.ndarray:
  """Longest-common-subsequence length of `a` with each of `others`, all at once: int32 [len(others)]."""
  width = max(len(o) for o in others)
  rows = np.full((len(others), width), -1, np.int64)  # [N, W], padded with an id no layer has
  for k, o in enumerate(others):
    rows[k, :len(o)] = o
  table = np.zeros((len(others), width + 1), np.int32)  # [N, W + 1]: LCS(a[:i], others[k][:j])
  for x in a:
    table[:, 1:] = np.maximum.accumulate(np.maximum(table[:, 1:], table[:, :-1] + (rows == x)), axis=1)
  return table[:, -1]


def _coalesce(batches: list[list[int]], program_of: dict[int, tuple[int, ...]], max_batch: int,
              step_cost: float, quantum: int) -> list[list[int]]:
  """Merges batches, best modelled saving first, while one pays (see the module docstring).

  A pair's merged length is estimated from the LCS of the two schedules; a chosen pair is then checked with
  the schedule the executor will build (`merge_programs` of all its programs) and dropped if that does not pay.
  """
  def cost(steps: int, rows: int) -> float:
    return bucket_length(steps, quantum) * (step_cost + rows)

  rows = [list(b) for b in batches]
  steps = [merge_programs([program_of[i] for i in b]) for b in batches]
  alive = np.ones(len(rows), bool)
  gain = np.full((len(rows), len(rows)), -np.inf)  # gain[i, j], i < j: modelled saving of merging i and j

  def estimate(i: int) -> None:
    others = [j for j in range(len(rows)) if j != i and alive[j] and len(rows[i]) + len(rows[j]) <= max_batch]
    gain[i, :] = gain[:, i] = -np.inf
    if not others:
      return
    lcs = _lcs_lengths(steps[i], [steps[j] for j in others])
    for j, common in zip(others, lcs.tolist()):
      merged = cost(len(steps[i]) + len(steps[j]) - common, len(rows[i]) + len(rows[j]))
      gain[min(i, j), max(i, j)] = cost(len(steps[i]), len(rows[i])) + cost(len(steps[j]), len(rows[j])) - merged

  for i in range(len(rows)):
    estimate(i)
  while True:
    i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
    if gain[i, j] <= 0:
      break
    merged = merge_programs([program_of[k] for k in rows[i] + rows[j]])
    if cost(len(merged), len(rows[i]) + len(rows[j])) >= cost(len(steps[i]), len(rows[i])) + cost(
        len(steps[j]), len(rows[j])):
      gain[i, j] = -np.inf  # The executor's schedule comes out longer than the estimate: this merge does not pay.
      continue
    rows[i], steps[i] = sorted(rows[i] + rows[j]), merged
    alive[j] = False
    gain[j, :] = gain[:, j] = -np.inf
    estimate(i)
  return [rows[i] for i in range(len(rows)) if alive[i]]


def plan_batches(pairs: Sequence[tuple[int, Sequence[int]]], max_batch: int, *, max_waste: float = 0.25,
                 per_question: bool = False, step_cost: float = 0.0, quantum: int = 1) -> list[list[int]]:
  """Splits pairs into batches (lists of indexes into `pairs`), each at most `max_batch` rows.

  Args:
    pairs: (question index, program ids).
    max_batch: rows per batch.
    max_waste: a program joins a batch only while the merged schedule is at most (1 + max_waste) times the
      longest program in it (identical programs always share).
    per_question: never put two questions in one batch (see the module docstring).
    step_cost: a schedule step's fixed cost in row-steps; above 0, packed batches are coalesced where the
      modelled cost falls (see the module docstring). 0 keeps the packing as it is.
    quantum: schedules are modelled padded to a multiple of this (the executor's `schedule_quantum`).

  Every pair lands in exactly one batch; the plan is a deterministic function of `pairs`.
  """
  if max_batch < 1:
    raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
  if max_waste < 0:
    raise ValueError(f"max_waste must be >= 0, got {max_waste}.")
  if step_cost < 0 or quantum < 1:
    raise ValueError(f"step_cost must be >= 0 and quantum >= 1, got step_cost={step_cost}, quantum={quantum}.")
  groups: dict[object, dict[tuple[int, ...], list[int]]] = {}
  program_of: dict[int, tuple[int, ...]] = {}
  for i, (question, program) in enumerate(pairs):
    key = question if per_question else None
    program_of[i] = tuple(int(x) for x in program)
    groups.setdefault(key, {}).setdefault(program_of[i], []).append(i)
  batches = []
  for key in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
    rows = groups[key]
    packed = [b for batch in _pack(list(rows), rows, max_batch, max_waste)
              for b in _split_until_fit(batch, program_of, max_waste)]
    batches += _coalesce(packed, program_of, max_batch, step_cost, quantum) if step_cost > 0 else packed
  return batches
