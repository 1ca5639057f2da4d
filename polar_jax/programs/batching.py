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
"""

from __future__ import annotations

from typing import Sequence

from polar_jax.programs.schedule import merge_programs


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


def plan_batches(pairs: Sequence[tuple[int, Sequence[int]]], max_batch: int, *, max_waste: float = 0.25,
                 per_question: bool = False) -> list[list[int]]:
  """Splits pairs into batches (lists of indexes into `pairs`), each at most `max_batch` rows.

  Args:
    pairs: (question index, program ids).
    max_batch: rows per batch.
    max_waste: a program joins a batch only while the merged schedule is at most (1 + max_waste) times the
      longest program in it (identical programs always share).
    per_question: never put two questions in one batch (see the module docstring).

  Every pair lands in exactly one batch; the plan is a deterministic function of `pairs`.
  """
  if max_batch < 1:
    raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
  if max_waste < 0:
    raise ValueError(f"max_waste must be >= 0, got {max_waste}.")
  groups: dict[object, dict[tuple[int, ...], list[int]]] = {}
  program_of: dict[int, tuple[int, ...]] = {}
  for i, (question, program) in enumerate(pairs):
    key = question if per_question else None
    program_of[i] = tuple(int(x) for x in program)
    groups.setdefault(key, {}).setdefault(program_of[i], []).append(i)
  batches = []
  for key in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
    rows = groups[key]
    for batch in _pack(list(rows), rows, max_batch, max_waste):
      batches += _split_until_fit(batch, program_of, max_waste)
  return batches
