"""Planning shared program prefixes: which (question, program) rows run which steps in which device pass.

A schedule computes every step for every row of its batch (an inactive row is masked, not skipped), so rows
share work only if the rows that do not need a step are absent from the pass that runs it. For one scoring
call (rows = distinct (question, program) pairs; a question is one token sequence) the plan is:

- **Trunk.** Per question, the *heavy path* T_q of its programs' trie: from the empty prefix, repeatedly the
  next layer that most of the question's programs continue with (ties: the smaller id), down to a leaf (itself
  one of the question's programs). One pass runs every question's trunk (one merged schedule) and keeps the
  hidden state after each step that some row branches at.
- **Branches.** Row r leaves its question's trunk after d_r = common_prefix(P_r, T_q) steps: its state there
  is the trunk's, so it runs only its suffix S_r = P_r[d_r:], whose length is the row's share of the floor
  (the distinct (question, program prefix) nodes). For a single edit of the trunk (the search's children of
  one parent) S_r is itself a suffix of T_q: a skip of the block [k, k + m) runs T_q[k + m:] from d = k, a
  repeat of it runs T_q[k:] from d = k + m. Suffixes of one sequence merge into the longest of them, so a pass
  of such rows costs its rows x their longest suffix, and merging adds no step.
- **Groups.** Rests of different questions merge just as well when they end alike: edits late in programs
  that differ early (the search's deeper nodes: each question its own trunk) leave rests that are suffixes of
  one common tail (the full program's, there). The *tail* is the heavy path of the reversed rests; rows whose
  rest is a suffix of it come first, longest first, whatever their trunk; the others follow sorted by (trunk,
  subsequence of it or not, rest length descending). This order is cut into passes of at most `max_batch`
  rows by dynamic programming over the cost model below.

Cost model, in executed (row, step) pairs (what a pass costs: padded rows x real merged steps), plus
`pass_cost` per pass (a pass's fixed cost: launch, gathers, the LM head):
  trunk: bucket(Q) x merged_len(trunks up to their deepest branch);
  group: bucket(n) x (its longest aligned rest + the steps outside the reference of each of its distinct
  rows that are not aligned), where the reference is the tail when the group's first row is aligned to it,
  else that row's trunk (exact for suffixes of one reference).
`plan_unshared` is the plain layout: every row its whole program from the embedding.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Sequence

from polar_jax.programs.schedule import merge_programs, next_pow2

Ids = tuple[int, ...]

PASS_COST = 32  # (row, step) pairs a pass costs beyond its rows' steps (a measured order of magnitude)


def rows_bucket(n: int) -> int:
  """Padded rows for a pass of n rows: the next of 1, 2, 3, 4, 6, 8, 12, 16, ... (at most a third padding)."""
  if n <= 0:
    return 0
  p = next_pow2(n)
  return 3 * p // 4 if p >= 4 and n <= 3 * p // 4 else p


@dataclasses.dataclass(frozen=True)
class Stage:
  """One device pass: row i runs `programs[i]` (all rows as one merged schedule).

  Attributes:
    questions: each row's question (its token sequence).
    programs: the layer ids each row runs in this pass (may be empty: the row only passes its state on).
    branch: per row, the steps of its whole program run before this pass: its starting state is its
      question's trunk state after that many steps (0: the token embedding). The trunk pass: all 0.
    owners: each row's whole program, of which `programs[i]` is the slice from `branch[i]` (a trunk row: its
      question's trunk). A shared context's keys / values at step j depend only on the owner's first j + 1
      steps (`completions.py`).
    rows: for a group, each row's index into the planned input rows; for the trunk, ().
  """
  questions: tuple[int, ...]
  programs: tuple[Ids, ...]
  branch: tuple[int, ...]
  owners: tuple[Ids, ...]
  rows: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class SharingPlan:
  """The trunk pass (row q: question q) and the group passes; every input row is in exactly one group."""
  trunk: Stage
  groups: tuple[Stage, ...]
  estimated_cost: int  # the cost model's executed (row, step) pairs, pass costs excluded

  def kept(self) -> dict[int, list[int]]:
    """Per question, the trunk depths (steps run) whose states some group starts from."""
    out: dict[int, set[int]] = collections.defaultdict(set)
    for g in self.groups:
      for q, d in zip(g.questions, g.branch):
        out[q].add(d)
    return {q: sorted(ds) for q, ds in out.items()}


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
  if not program:
    return 0
  if not trunk:
    return len(program)
  return len(merge_programs([program, trunk])) - len(trunk)


def _trunk_stage(questions: Sequence[int], trunks: dict[int, Ids], depth_of: dict[int, int]) -> Stage:
  n_q = max(questions) + 1
  return Stage(questions=tuple(range(n_q)), programs=tuple(trunks.get(q, ())[:depth_of.get(q, 0)] for q in range(n_q)),
               branch=(0,) * n_q, owners=tuple(trunks.get(q, ()) for q in range(n_q)))


def plan_sharing(questions: Sequence[int], programs: Sequence[Sequence[int]], *, max_batch: int = 64,
                 bucket: Callable[[int], int] = rows_bucket, pass_cost: int = PASS_COST) -> SharingPlan:
  """Plans distinct (question, program) rows (see the module docstring); questions are ints 0..Q-1."""
  progs = [tuple(int(x) for x in p) for p in programs]
  if not progs:
    raise ValueError("plan_sharing needs at least one row.")
  by_q: dict[int, list[Ids]] = collections.defaultdict(list)
  for q, p in zip(questions, progs):
    by_q[q].append(p)
  trunks = {q: heavy_path(ps) for q, ps in by_q.items()}
  div = [common_prefix(p, trunks[q]) for q, p in zip(questions, progs)]
  suffix = [p[d:] for p, d in zip(progs, div)]
  own_extra = [_outside(s, trunks[q]) for q, s in zip(questions, suffix)]
  # The tail most rests end with (the heavy path of the reversed rests): rests that are suffixes of it merge
  # into the longest of them whatever their question's trunk, so they are planned together, longest first.
  tail = heavy_path([x[::-1] for x in suffix])[::-1]
  aligned = [len(x) <= len(tail) and tail[len(tail) - len(x):] == x for x in suffix]
  order = sorted(range(len(progs)), key=lambda r: (not aligned[r], () if aligned[r] else trunks[questions[r]],
                                                   own_extra[r] > 0, -len(suffix[r]), questions[r], suffix[r]))
  n = len(order)

  def extra(r: int, first: int) -> int:
    """Steps row r adds to a pass that starts with row `first` (aligned to the tail or to its trunk)."""
    if aligned[first]:
      return 0 if aligned[r] else _outside(suffix[r], tail)
    trunk = trunks[questions[first]]
    return own_extra[r] if trunks[questions[r]] == trunk else _outside(suffix[r], trunk)

  # best[i]: least cost of the rows order[i:]; cut[i]: where the pass starting at i ends.
  best, cut = [0] * (n + 1), [n] * (n + 1)
  for i in range(n - 1, -1, -1):
    first = order[i]
    longest = extras = 0
    seen: set[Ids] = set()
    best[i] = -1
    for j in range(i, min(n, i + max_batch)):
      r = order[j]
      e = extra(r, first)
      longest = max(longest, len(suffix[r]) - e)
      if e and suffix[r] not in seen:
        seen.add(suffix[r])
        extras += e
      cost = bucket(j - i + 1) * (longest + extras) + pass_cost + best[j + 1]
      if best[i] < 0 or cost < best[i]:
        best[i], cut[i] = cost, j + 1

  depth_of: dict[int, int] = {}
  for q, d in zip(questions, div):
    depth_of[q] = max(depth_of.get(q, 0), d)
  trunk = _trunk_stage(questions, trunks, depth_of)
  groups, i = [], 0
  while i < n:
    chunk = tuple(order[i:cut[i]])
    groups.append(Stage(questions=tuple(questions[r] for r in chunk), programs=tuple(suffix[r] for r in chunk),
                        branch=tuple(div[r] for r in chunk), owners=tuple(progs[r] for r in chunk), rows=chunk))
    i = cut[i]
  trunk_cost = bucket(len(trunk.programs)) * (len(merge_programs([p for p in trunk.programs if p]))
                                               if any(trunk.programs) else 0)
  return SharingPlan(trunk=trunk, groups=tuple(groups), estimated_cost=int(best[0] - pass_cost * len(groups)
                                                                           + trunk_cost))


def plan_unshared(questions: Sequence[int], programs: Sequence[Sequence[int]], *, max_batch: int = 64,
                  bucket: Callable[[int], int] = rows_bucket) -> SharingPlan:
  """The plain layout: the embedding, then the rows in order, `max_batch` per pass, each its whole program."""
  progs = [tuple(int(x) for x in p) for p in programs]
  groups = []
  for c in range(0, len(progs), max_batch):
    chunk = tuple(range(c, min(c + max_batch, len(progs))))
    groups.append(Stage(questions=tuple(questions[r] for r in chunk), programs=tuple(progs[r] for r in chunk),
                        branch=(0,) * len(chunk), owners=tuple(progs[r] for r in chunk), rows=chunk))
  cost = sum(bucket(len(g.programs)) * len(merge_programs(g.programs)) for g in groups if any(g.programs))
  return SharingPlan(trunk=_trunk_stage(questions, {}, {}), groups=tuple(groups), estimated_cost=cost)
