"""Schedules: one shared sequence of layer steps that runs a whole batch of per-row programs.

The executor reads one layer's weights per step for all rows (a per-row weight gather costs as much as
running the rows one by one), so a batch of different programs is merged on the host into a short common
supersequence `ids[T]` plus a per-row activity mask `active[B, T]`: row b runs step t only when
`active[b, t]`, and its active steps, read in order, spell exactly its program. A batch of one program is
that program with every step active. Steps past `length` are padding (id 0, inactive) that the executor
never runs; `T` is bucketed (a multiple of `quantum`) so that few distinct shapes are compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from polar_jax.programs.program import Program, ProgramError


def next_pow2(n: int) -> int:
  """The smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(0, int(n) - 1).bit_length()


def bucket_length(n: int, quantum: int = 8, max_len: int | None = None) -> int:
  """The padded length for `n` steps: the next multiple of `quantum`, capped by `max_len`, never below n."""
  if n < 0 or quantum < 1:
    raise ValueError(f"bucket_length needs n >= 0 and quantum >= 1, got n={n}, quantum={quantum}.")
  padded = -(-n // quantum) * quantum
  if max_len is not None:
    padded = min(padded, max_len)
  return max(padded, n)


def _is_subsequence(small: Sequence[int], big: Sequence[int]) -> bool:
  it = iter(big)
  return all(any(x == y for y in it) for x in small)


def _shortest_common_supersequence(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
  """An exact shortest common supersequence of two sequences, from the LCS table (deterministic)."""
  n, m = len(a), len(b)
  row_b = np.asarray(b, np.int64)  # [m]
  table = np.zeros((n + 1, m + 1), np.int32)  # table[i, j] = LCS(a[:i], b[:j])
  for i in range(1, n + 1):
    prev = table[i - 1]
    # LCS(i, j) = max over k <= j of max(LCS(i-1, k), LCS(i-1, k-1) + [a_i == b_k]): a running maximum.
    step = np.maximum(prev[1:], prev[:-1] + (row_b == a[i - 1]))
    table[i, 1:] = np.maximum.accumulate(step)
  lcs = table.tolist()
  out = []
  i, j = n, m
  while i > 0 and j > 0:
    if a[i - 1] == b[j - 1]:
      out.append(a[i - 1])
      i, j = i - 1, j - 1
    elif lcs[i - 1][j] > lcs[i][j - 1] or (lcs[i - 1][j] == lcs[i][j - 1] and a[i - 1] > b[j - 1]):
      # Both choices are optimal on a tie; putting the larger id last keeps ascending runs together.
      out.append(a[i - 1])
      i -= 1
    else:
      out.append(b[j - 1])
      j -= 1
  out.extend(reversed(a[:i]))
  out.extend(reversed(b[:j]))
  return tuple(reversed(out))


def merge_programs(programs: Sequence[Sequence[int]]) -> tuple[int, ...]:
  """A short common supersequence of all programs (deterministic, not always the shortest).

  Distinct programs are folded in longest first (ties by their ids), each with an exact two-sequence
  shortest common supersequence against the merge so far; a program already contained costs nothing.
  """
  distinct = sorted({tuple(int(x) for x in p) for p in programs}, key=lambda p: (-len(p), p))
  if not distinct:
    raise ProgramError("merge_programs needs at least one program.")
  merged = distinct[0]
  for program in distinct[1:]:
    if not _is_subsequence(program, merged):
      merged = _shortest_common_supersequence(program, merged)
  return merged


def _embed(program: tuple[int, ...], steps: Sequence[int]) -> np.ndarray:
  """The leftmost embedding of `program` into `steps` as a mask [T]."""
  mask = np.zeros(len(steps), bool)
  pos = 0
  for t, layer in enumerate(steps):
    if pos < len(program) and layer == program[pos]:
      mask[t] = True
      pos += 1
  if pos != len(program):
    raise AssertionError(f"Program {program} is not a subsequence of the merged schedule {tuple(steps)}.")
  return mask


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """A shared step sequence for a batch of programs; arrays are read-only."""
  ids: np.ndarray  # [T] int32 layer id per step (0 past length)
  active: np.ndarray  # [B, T] bool, row b executes step t (False past length)
  length: int  # real number of steps <= T
  programs: tuple[Program, ...]

  @property
  def batch_size(self) -> int:
    return int(self.active.shape[0])

  @property
  def padded_length(self) -> int:
    return int(self.ids.shape[0])

  @property
  def depth(self) -> int:
    return self.programs[0].depth

  def row_steps(self) -> np.ndarray:
    """Active steps per row, equal to each row's program length. Returns int32 [B]."""
    return self.active.sum(axis=1, dtype=np.int32)

  @property
  def utilization(self) -> float:
    """Fraction of the executed row-steps (B * length) that some row needs."""
    return float(self.row_steps().sum()) / float(self.batch_size * self.length)

  def padded(self, padded_length: int) -> "Schedule":
    """The same schedule padded (or cut back) to T = padded_length steps, without merging the programs again."""
    if padded_length < self.length:
      raise ProgramError(f"padded_length={padded_length} is shorter than the schedule ({self.length} steps).")
    return _padded(self.ids[:self.length], self.active[:, :self.length], self.programs, padded_length)


def _padded(steps: Sequence[int], active: np.ndarray, programs: tuple[Program, ...], padded_length: int
            ) -> Schedule:
  """The Schedule of real steps [length] and activity [B, length], padded to padded_length (>= length)."""
  length = len(steps)
  ids = np.zeros(padded_length, np.int32)  # [T]
  ids[:length] = steps
  padded_active = np.zeros((len(programs), padded_length), bool)  # [B, T]
  padded_active[:, :length] = active
  ids.setflags(write=False)
  padded_active.setflags(write=False)
  return Schedule(ids=ids, active=padded_active, length=length, programs=programs)


def make_schedule(programs: Sequence[Program], *, quantum: int = 8,
                  padded_length: int | None = None) -> Schedule:
  """Merges a batch of programs into one schedule (see the module docstring).

  Args:
    programs: one Program per batch row, all for the same model depth.
    quantum: the padded length is the next multiple of this (when padded_length is None).
    padded_length: an explicit padded length T; must be at least the merged length.
  """
  programs = tuple(programs)
  if not programs:
    raise ProgramError("make_schedule needs at least one program.")
  for row, program in enumerate(programs):
    if not isinstance(program, Program):
      raise ProgramError(f"Row {row} is a {type(program).__name__}, not a Program; wrap it as Program(ids, depth).")
  depths = sorted({p.depth for p in programs})
  if len(depths) > 1:
    first_other = next(row for row, p in enumerate(programs) if p.depth != programs[0].depth)
    raise ProgramError(
        f"All programs of a schedule must be for one model depth; got depths {depths} (row 0 has "
        f"{programs[0].depth}, row {first_other} has {programs[first_other].depth}).")
  distinct = {p.ids for p in programs}
  steps = programs[0].ids if len(distinct) == 1 else merge_programs([p.ids for p in programs])
  masks = {ids: _embed(ids, steps) for ids in distinct}
  active = np.stack([masks[p.ids] for p in programs])  # [B, length]
  used = active.any(axis=0)
  if not used.all():  # A step no row's leftmost embedding uses: drop it.
    steps = tuple(s for s, u in zip(steps, used) if u)
    active = active[:, used]
  length = len(steps)
  if padded_length is None:
    padded_length = bucket_length(length, quantum)
  elif padded_length < length:
    raise ProgramError(
        f"padded_length={padded_length} is shorter than the merged schedule ({length} steps for "
        f"{len(distinct)} distinct programs); pass padded_length >= {length}, or None to bucket it.")
  return _padded(steps, active, programs, padded_length)
