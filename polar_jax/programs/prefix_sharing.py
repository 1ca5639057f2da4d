"""Planning shared program prefixes: which (question, program) rows run which steps in which device pass.

A schedule computes every step for every row of its batch (an inactive row is masked, not skipped), so rows
share work only if the rows that do not need a step are absent from the pass that runs it. For one scoring
call (rows = distinct (question, program) pairs; a question is one token sequence) the plan is:

- **Trunk.** Per question, the *heavy path* of its programs' trie: from the empty prefix, repeatedly the next
  layer that most of the question's programs continue with (ties: the smaller id), down to a leaf. Row r
  *diverges* at d_r = its common prefix length with its question's trunk: the state after its first d_r steps
  is the trunk's. For MCTS children (single edits of one parent) the trunk is the parent and d_r the edit's
  position.
- **Groups.** Rows are split by divergence into at most `max_groups` contiguous ranges [a_g, a_{g+1}) of d.
  Group g starts from every row's trunk state after a_g steps and runs the rows' suffixes P_r[a_g:] as one
  merged schedule (rows of all questions together; an empty suffix is a row with no active step).
- **Trunk stages.** Stage k advances the trunk from a_{k-1} to a_k steps (merged over questions), only for
  the questions that some later group needs; its output is group k's starting state.

Cost model, in executed (row, step) pairs (what a pass costs: padded rows x real merged steps):
  cost = sum_k rows(stage k) x (a_k - a_{k-1}) + sum_g rows(g) x merged_len(suffixes from a_g),
where rows(.) is the padded batch (`rows_bucket`, per `max_batch` chunk). Unshared, the same rows cost
rows(B) x merged_len(all programs). The boundaries a_g are chosen by dynamic programming over the distinct
divergence points, with merged_len estimated as max_r LCS(P_r, trunk) - a_g + the sum, over the group's
distinct programs, of their steps outside the trunk (exact for single edits of one trunk: each repeat adds a
step, a skip none). The plan always has the unshared layout (one group from step 0) as a candidate; the
boundaries are data on the device (trip counts), so they never add compiles.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Sequence

from polar_jax.programs.schedule import merge_programs

Ids = tuple[int, ...]


def rows_bucket(n: int) -> int:
  """Padded rows for a pass of n rows: the next of 1, 2, 3, 4, 6, 8, 12, 16, ... (at most a third padding)."""
  if n <= 0:
    return 0
  p = 1 << max(0, (n - 1).bit_length())  # Next power of two.
  return 3 * p // 4 if p >= 4 and n <= 3 * p // 4 else p


@dataclasses.dataclass(frozen=True)
class Stage:
  """One device pass: row i runs `programs[i]` (all rows as one merged schedule).

  Attributes:
    questions: each row's question (its token sequence).
    programs: the layer ids each row runs in this pass (may be empty: the row only passes its state on).
    source: where the rows' hidden states come from: k >= 0 the output of trunk stage k; -1 (trunk stage 0
      only) the token embedding.
    source_rows: each row's row in the source (for source -1: its question).
    rows: for a group, each row's index into the planned input rows; for a trunk stage, ().
    offset: the step of the rows' whole programs at which this pass starts (a trunk stage: where the trunk
      stood; a group: its start a_g).
    owners: each row's whole program, of which `programs[i]` is the slice from `offset` (a trunk row: its
      question's trunk, itself one of the question's programs). A shared context's keys / values at step j
      depend only on the owner's first j + 1 steps (`completions.py`).
  """
  questions: tuple[int, ...]
  programs: tuple[Ids, ...]
  source: int
  source_rows: tuple[int, ...]
  rows: tuple[int, ...] = ()
  offset: int = 0
  owners: tuple[Ids, ...] = ()


@dataclasses.dataclass(frozen=True)
class SharingPlan:
  """Trunk stages (stage 0: the embedding; stage k reads stage k-1) and group passes; every input row is in
  exactly one group. Trunk stages run padded to all questions' rows, so they share one shape per length."""
  trunk: tuple[Stage, ...]
  groups: tuple[Stage, ...]
  starts: tuple[int, ...]  # a_g: the step each group (before chunking) starts at
  estimated_cost: int | None = None  # the cost model's executed (row, step) pairs (sharing plans)


def heavy_path(programs: Sequence[Ids]) -> Ids:
  """The trie path that at each step follows the next layer most programs continue with (ties: smaller id)."""
  path: list[int] = []
  live = list(programs)
  while True:
    nxt = collections.Counter(p[len(path)] for p in live if len(p) > len(path))
    if not nxt:
      return tuple(path)
    layer = min(nxt, key=lambda x: (-nxt[x], x))
    path.append(layer)
    live = [p for p in live if len(p) >= len(path) and p[len(path) - 1] == layer]


def common_prefix(a: Ids, b: Ids) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


@functools.lru_cache(maxsize=4096)
def _outside(program: Ids, trunk: Ids) -> int:
  """Steps of `program` outside its longest common subsequence with `trunk` (its extra merged steps)."""
  if not trunk:
    return len(program)
  return len(merge_programs([program, trunk])) - len(trunk)


def _chunked(n: int, max_batch: int, bucket: Callable[[int], int]) -> int:
  return (n // max_batch) * max_batch + bucket(n % max_batch)


def _embedding(questions: Sequence[int]) -> Stage:
  """Trunk stage 0: every question's token embedding (no step)."""
  n_q = max(questions) + 1
  return Stage(questions=tuple(range(n_q)), programs=((),) * n_q, source=-1, source_rows=tuple(range(n_q)))


def plan_sharing(questions: Sequence[int], programs: Sequence[Sequence[int]], *, max_groups: int = 4,
                 max_batch: int = 64, bucket: Callable[[int], int] = rows_bucket) -> SharingPlan:
  """Plans distinct (question, program) rows (see the module docstring); questions are ints 0..Q-1."""
  if max_groups < 1:
    raise ValueError(f"max_groups must be >= 1, got {max_groups}.")
  progs = [tuple(int(x) for x in p) for p in programs]
  by_q: dict[int, list[Ids]] = collections.defaultdict(list)
  for q, p in zip(questions, progs):
    by_q[q].append(p)
  trunks = {q: heavy_path(ps) for q, ps in by_q.items()}
  div = [common_prefix(p, trunks[q]) for q, p in zip(questions, progs)]
  values = sorted(set(div))
  k = len(values)
  at = {v: i for i, v in enumerate(values)}
  rows_at: list[list[int]] = [[] for _ in values]
  for r, d in enumerate(div):
    rows_at[at[d]].append(r)

  @functools.lru_cache(maxsize=None)
  def group_cost(i: int, j: int) -> int:
    rows = [r for rs in rows_at[i:j] for r in rs]
    extra = {progs[r]: _outside(progs[r], trunks[questions[r]]) for r in rows}
    length = max(len(progs[r]) - extra[progs[r]] for r in rows) - values[i] + sum(extra.values())
    return _chunked(len(rows), max_batch, bucket) * length

  def stage_cost(i: int, prev: int) -> int:  # Trunk stages are padded to all questions (one shape).
    return bucket(len(by_q)) * (values[i] - prev)

  @functools.lru_cache(maxsize=None)
  def best(i: int, g: int) -> tuple[int, tuple[int, ...]]:
    """Least cost of covering values[i:] with at most g groups, the first starting at values[i]."""
    options = [(group_cost(i, k), ())]
    if g > 1:
      for j in range(i + 1, k):
        rest, cuts = best(j, g - 1)
        options.append((group_cost(i, j) + stage_cost(j, values[i]) + rest, (j,) + cuts))
    return min(options)

  cost, cuts = best(0, max_groups)
  cost += stage_cost(0, 0)
  best.cache_clear()
  group_cost.cache_clear()
  firsts = (0,) + cuts
  starts = tuple(values[i] for i in firsts)

  # Trunk stages: stage 0 embeds every question; then one per nonzero start, for the questions that some
  # group from there on needs.
  trunk = [_embedding(questions)]
  state = {(q, 0): (0, q) for q in by_q}  # (question, step) -> (stage, row) holding that state
  prev = 0
  for i in firsts:
    if values[i] == 0:
      continue
    qs = tuple(sorted({questions[r] for rs in rows_at[i:] for r in rs}))
    trunk.append(Stage(questions=qs, programs=tuple(trunks[q][prev:values[i]] for q in qs), source=len(trunk) - 1,
                       source_rows=tuple(state[q, prev][1] for q in qs), offset=prev,
                       owners=tuple(trunks[q] for q in qs)))
    state.update({(q, values[i]): (len(trunk) - 1, n) for n, q in enumerate(qs)})
    prev = values[i]

  groups: list[Stage] = []
  for i, j in zip(firsts, cuts + (k,)):
    a = values[i]
    rows = [r for rs in rows_at[i:j] for r in rs]
    for c in range(0, len(rows), max_batch):
      chunk = tuple(rows[c:c + max_batch])
      groups.append(Stage(
          questions=tuple(questions[r] for r in chunk), programs=tuple(progs[r][a:] for r in chunk),
          source=state[questions[chunk[0]], a][0], source_rows=tuple(state[questions[r], a][1] for r in chunk),
          rows=chunk, offset=a, owners=tuple(progs[r] for r in chunk)))
  return SharingPlan(trunk=tuple(trunk), groups=tuple(groups), starts=starts, estimated_cost=int(cost))


def plan_unshared(questions: Sequence[int], programs: Sequence[Sequence[int]], *, max_batch: int = 64
                  ) -> SharingPlan:
  """The plain layout: the embedding, then the rows in order, `max_batch` per pass, each its whole program."""
  groups = []
  for c in range(0, len(programs), max_batch):
    chunk = tuple(range(c, min(c + max_batch, len(programs))))
    progs = tuple(tuple(int(x) for x in programs[r]) for r in chunk)
    groups.append(Stage(questions=tuple(questions[r] for r in chunk), programs=progs, source=0,
                        source_rows=tuple(questions[r] for r in chunk), rows=chunk, owners=progs))
  return SharingPlan(trunk=(_embedding(questions),), groups=tuple(groups), starts=(0,))
