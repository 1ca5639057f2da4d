"""The CoLa search tree over programs of layers: edits, UCB, selection with virtual loss, backup.

The protocol (CoLa, arXiv 2507.07996, Algorithm 1; PoLar appendix B), as implemented here:

- A node holds a program. The root holds the full program `0..D-1`. The children of a node are the distinct
  programs one *edit* away: skip a contiguous block of k entries, or repeat a contiguous block of k entries
  r more times (the r copies inserted right after the block), k, r in 1..4, keeping min_len <= length <=
  max_len (defaults 1 and 2D). With `space="predictor"` only children that `polar_jax.programs.parse`
  accepts are kept (skip / keep / repeat-once segments of <= 4 layers), so everything found can be trained on.
- One *simulation* is one pass of selection -> expansion -> evaluation -> backup:
  * Selection starts at the root. A node that was never visited is the leaf (only the root, on the first
    simulation). A visited node is *expanded* the first time selection reaches it: its children are
    generated and put in a random order. If it has unvisited children, the next one in that order is the
    leaf ("unvisited children first, in random order"). Otherwise, with probability `random_prob`, selection
    moves to a uniformly random *unexplored* child (visited but never expanded), if there is one; else to
    the child maximizing UCB(pi) = R(pi)/v(pi) + c * sqrt(ln V / v(pi)) - lambda * |pi| / D, where V is the
    number of simulations of this question so far (the root's visit count), ties going to the earlier
    child in the random order. Selection continues from the chosen child. A node whose program admits no
    edit at all is a leaf too (it is evaluated again, which the memo makes free).
  * Evaluation runs the leaf's program on the question; reward 1 if the answer is correct, else 0. The memo
    (owned by the driver, `mcts.py`) runs each distinct program at most once per question: a leaf whose
    program was already scored (reached through another edit order) reuses that reward. Such a memo hit is
    still a simulation: it counts towards `num_simulations` and is backed up like any other.
  * Backup adds the reward to R and 1 to v of every node on the path from the leaf to the root.
- Virtual loss, for batched rounds: `select` adds the visit to the whole path at once (a pending leaf counts
  as visited with reward 0) and `backup` adds only the reward when it arrives. With one leaf per round this
  is exactly sequential MCTS; with several, later selections of a round see earlier ones as visited losses.

The simulation 1 leaf is always the root, so its reward is the full-depth correctness (`initial_score`).

Consequence worth knowing: with D = 30 the root has 570 children (228 in the predictor space), so under
"unvisited children first" 200 simulations evaluate the root and 199 of its children: programs one edit from
the full one, and lambda / c never come into play. Deeper programs appear only when the branching factor is
below the budget (small D, small `max_len`). `SearchConfig.widening` (off by default, not in the papers) is
progressive widening: a node visited v times offers only its first ceil(C * v^alpha) children, which lets the
search follow UCB below the root.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from polar_jax.records import DRIVER_KEYS

SPACES = ("cola", "predictor")
# "cola": the protocol of this module. "polar_release": the authors' released MCTS (`search/release.py`).
PROTOCOLS = ("cola", "polar_release")

# The release's per-model program length bounds (run_mcts.py, MODEL_DEPTH_PRESETS): model -> (depth, min, max).
# It matches a model by substring of its name and refuses models it does not list.
RELEASE_MODEL_LENGTHS = {
    "Qwen2.5-3B": (36, 24, 44),
    "Qwen2.5-1.5B": (28, 16, 32),
    "Llama-3.2-3B": (28, 16, 32),
    "Qwen1.5-MoE-A2.7B": (24, 16, 28),
    "Qwen3-8B": (36, 24, 44),
    "Qwen3-30B-A3B": (48, 36, 54),
}
# The table depends on the depth alone (models of one depth share bounds), so it is used by depth.
RELEASE_LENGTHS = {depth: (lo, hi) for depth, lo, hi in RELEASE_MODEL_LENGTHS.values()}


def release_length_bounds(depth: int) -> tuple[int, int]:
  """(min, max) program length of the release for a `depth`-layer model.

  Depths the release lists (24, 28, 36, 48) get its values. Other depths (not in the release, which refuses
  such models) get the offsets from depth of the nearest listed depth, the smaller one on a tie, with min >= 1:
  e.g. SmolLM2's 30 layers -> 28's offsets (-12, +4) -> (18, 34). This extension is ours.
  """
  if depth in RELEASE_LENGTHS:
    return RELEASE_LENGTHS[depth]
  nearest = min(RELEASE_LENGTHS, key=lambda d: (abs(d - depth), d))
  lo, hi = RELEASE_LENGTHS[nearest]
  return max(1, depth + lo - nearest), depth + hi - nearest


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Parameters of the per-question search. Defaults are the papers' (c is DR.LLM's, the papers omit it).

  Attributes:
    num_simulations: simulations per question (the root's final visit count).
    length_penalty: lambda in UCB, applied to |pi| / D.
    exploration: c in UCB.
    random_prob: probability of moving to a random unexplored child instead of the UCB choice.
    max_block: largest block size k of one skip / repeat edit.
    max_repeats: largest extra copy count r of one repeat edit.
    max_len: longest program allowed; None means 2 * depth (cola) or the release's bound (polar_release,
      `release_length_bounds`).
    min_len: shortest program allowed; None means 1 (cola) or the release's bound (polar_release).
    space: "cola" (every edit) or "predictor" (only programs the predictor's segment form can spell).
    leaves_per_round: leaves selected per question before scoring (virtual loss); 1 is sequential MCTS.
      Part of the search's identity: a different value gives a different (equally valid) search.
    seed: base seed; each question's generator derives from (seed, question id).
    widening: 0 (the papers' protocol) or C > 0 for progressive widening, an extension: a node visited v
      times offers only its first ceil(C * v ** widening_exponent) children (in its random order), so
      the search can go deeper than one edit when the branching factor exceeds the budget.
    widening_exponent: alpha of progressive widening.
    protocol: "cola" (this module) or "polar_release" (the authors' released MCTS, `search/release.py`; it
      reads num_simulations, length_penalty, exploration, random_prob, max_block, min_len / max_len,
      leaves_per_round and seed, and ignores max_repeats; see that module for the release's values).
  """
  num_simulations: int = 200
  length_penalty: float = 5.0
  exploration: float = 1.8
  random_prob: float = 0.1
  max_block: int = 4
  max_repeats: int = 4
  max_len: int | None = None
  space: str = "cola"
  leaves_per_round: int = 8
  seed: int = 0
  widening: float = 0.0
  widening_exponent: float = 0.5
  min_len: int | None = None
  protocol: str = "cola"

  def __post_init__(self):
    for name in ("num_simulations", "max_block", "max_repeats", "leaves_per_round"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"SearchConfig.{name} must be a positive integer, got {value!r}.")
    for name in ("max_len", "min_len"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"SearchConfig.{name} must be None (the protocol's default) or a positive integer, got "
                         f"{value!r}.")
    if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
      raise ValueError(f"SearchConfig.min_len ({self.min_len}) exceeds max_len ({self.max_len}).")
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"SearchConfig.protocol must be one of {PROTOCOLS}, got {self.protocol!r}.")
    if self.protocol == "polar_release" and (self.space != "cola" or self.widening):
      raise ValueError("SearchConfig.protocol='polar_release' has its own edits: it takes space='cola' and "
                       f"widening=0, got space={self.space!r}, widening={self.widening!r}.")
    if self.space not in SPACES:
      raise ValueError(f"SearchConfig.space must be one of {SPACES}, got {self.space!r}.")
    if not 0.0 <= self.random_prob <= 1.0:
      raise ValueError(f"SearchConfig.random_prob must lie in [0, 1], got {self.random_prob!r}.")
    if self.exploration < 0 or self.length_penalty < 0:
      raise ValueError(f"SearchConfig.exploration and length_penalty must be >= 0, got {self.exploration!r} and "
                       f"{self.length_penalty!r}.")
    if self.widening < 0 or not 0.0 < self.widening_exponent <= 1.0:
      raise ValueError(f"SearchConfig.widening must be >= 0 and widening_exponent in (0, 1], got "
                       f"{self.widening!r} and {self.widening_exponent!r}.")
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
      raise ValueError(f"SearchConfig.seed must be a non-negative integer, got {self.seed!r}.")

  def length_bounds(self, depth: int) -> tuple[int, int]:
    """(min, max) program length: min_len / max_len where set, else the protocol's default."""
    lo, hi = (1, 2 * depth) if self.protocol == "cola" else release_length_bounds(depth)
    return (lo if self.min_len is None else self.min_len), (hi if self.max_len is None else self.max_len)

  def resolved_max_len(self, depth: int) -> int:
    return self.length_bounds(depth)[1]

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> SearchConfig:
    """The inverse of `to_json`; fields missing from older records (min_len, protocol) take their defaults.

    A search record's config also holds how the driver batched (`records.DRIVER_KEYS`); those are not the
    tree's and are left out, so `SearchConfig.from_json(record.config)` works.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    obj = {k: v for k, v in obj.items() if k not in DRIVER_KEYS}
    unknown = sorted(set(obj) - names)
    if unknown:
      raise ValueError(f"Unknown SearchConfig fields {unknown}; known: {sorted(names)}.")
    return cls(**obj)


# Edits and children.

Edit = tuple[int, int, int]  # (position, block size k, extra copies r); r == 0 means "skip the block".


def apply_edit(program: Sequence[int], edit: Edit) -> tuple[int, ...]:
  """The program after one edit: skip entries [pos, pos+k) (r == 0) or insert r copies of them after them."""
  pos, k, r = edit
  ids = tuple(program)
  if r == 0:
    return ids[:pos] + ids[pos + k:]
  return ids[:pos + k] + ids[pos:pos + k] * r + ids[pos + k:]


def child_edits(program: Sequence[int], depth: int, *, max_block: int = 4, max_repeats: int = 4,
                max_len: int | None = None, space: str = "cola", min_len: int = 1) -> list[Edit]:
  """One edit per distinct child program, in generation order (skips by k, pos; then repeats by k, r, pos).

  Children differ from the parent (an edit always changes the length), stay within min_len..max_len, and in
  `space="predictor"` are all parseable into the predictor's segment form.
  """
  if space not in SPACES:
    raise ValueError(f"space must be one of {SPACES}, got {space!r}.")
  ids = tuple(program)
  n = len(ids)
  limit = 2 * depth if max_len is None else max_len
  candidates: list[Edit] = []
  for k in range(1, max_block + 1):
    if n - k >= max(1, min_len):
      candidates.extend((pos, k, 0) for pos in range(n - k + 1))
  for k in range(1, min(max_block, n) + 1):
    for r in range(1, max_repeats + 1):
      if min_len <= n + k * r <= limit:
        candidates.extend((pos, k, r) for pos in range(n - k + 1))
  seen: set[tuple[int, ...]] = set()
  out: list[Edit] = []
  for edit in candidates:
    child = apply_edit(ids, edit)
    if child in seen:
      continue
    seen.add(child)
    if space == "predictor" and (edit[2] > 1 or not spellable(child, depth, max_block)):
      continue  # r >= 2 runs a layer 3+ times, which no repeat-once segmentation spells.
    out.append(edit)
  return out


def spellable(ids: Sequence[int], depth: int, max_block: int = 4) -> bool:
  """Whether the predictor's segment form can spell `ids`: `polar_jax.programs.parse(ids, depth) is not None`.

  The same feasibility recursion as `parse` without its tie-breaking, ~10x faster; the search calls it for
  every candidate child. (tests/test_search_tree.py checks it against `parse`.)
  """
  counts = [0] * depth
  for x in ids:
    counts[x] += 1
    if counts[x] > 2:
      return False
  prefix = [0] * (depth + 1)
  for c in range(depth):
    prefix[c + 1] = prefix[c] + counts[c]
  ok = [False] * (depth + 1)
  ok[depth] = True
  for c in range(depth - 1, -1, -1):
    start = prefix[c]
    for size in range(1, min(max_block, depth - c) + 1):
      if not ok[c + size]:
        continue
      length = prefix[c + size] - start
      if length == 0:
        ok[c] = True
      elif length == size:
        ok[c] = all(ids[start + j] == c + j for j in range(size))
      elif length == 2 * size:
        ok[c] = all(ids[start + j] == c + j and ids[start + size + j] == c + j for j in range(size))
      if ok[c]:
        break
  return ok[0]


def children(program: Sequence[int], depth: int, **kwargs) -> list[tuple[int, ...]]:
  """The distinct child programs of `program` (see `child_edits` for the options)."""
  return [apply_edit(program, e) for e in child_edits(program, depth, **kwargs)]


# UCB.


def ucb(reward_sum, visits, length, total: int, depth: int, exploration: float, length_penalty: float):
  """UCB(pi) = R/v + c * sqrt(ln V / v) - lambda * |pi| / D; elementwise over arrays (v >= 1 required)."""
  reward_sum = np.asarray(reward_sum, np.float64)
  visits = np.asarray(visits, np.float64)
  length = np.asarray(length, np.float64)
  if np.any(visits < 1):
    raise ValueError("UCB is defined for visited nodes only (v >= 1); unvisited children are chosen first.")
  if total < 1:
    raise ValueError(f"UCB needs at least one simulation so far, got V={total}.")
  return (reward_sum / visits + exploration * np.sqrt(np.log(total) / visits)
          - length_penalty * length / depth)


class SearchTree:
  """The mutable tree of one question's search; node 0 is the root (the full program).

  Nodes live in flat lists indexed by node id. A node's children are generated when it is expanded, as a
  shuffled list of edits; a child node is created only when selection first visits it, so unvisited
  children cost 3 small ints each.
  """

  def __init__(self, depth: int, config: SearchConfig, rng: np.random.Generator):
    self.depth = int(depth)
    self.config = config
    self.rng = rng
    self.min_len, self.max_len = config.length_bounds(self.depth)
    self.programs: list[tuple[int, ...]] = [tuple(range(self.depth))]
    self.parent: list[int] = [-1]
    self.visits: list[int] = [0]
    self.reward: list[float] = [0.0]
    self.edits: list[list[Edit] | None] = [None]  # None: not expanded. Shuffled order.
    self.kids: list[list[int]] = [[]]  # Created children, in the shuffled order.

  @property
  def total(self) -> int:
    """V: simulations so far, pending ones included (the root's visit count)."""
    return self.visits[0]

  @property
  def simulations(self) -> int:
    """Simulations selected so far (what the driver counts towards `num_simulations`): V."""
    return self.visits[0]

  def _new_node(self, program: tuple[int, ...], parent: int) -> int:
    self.programs.append(program)
    self.parent.append(parent)
    self.visits.append(0)
    self.reward.append(0.0)
    self.edits.append(None)
    self.kids.append([])
    return len(self.programs) - 1

  def expand(self, node: int) -> None:
    """Generates the node's children (as edits) in a random order."""
    cfg = self.config
    edits = child_edits(self.programs[node], self.depth, max_block=cfg.max_block, max_repeats=cfg.max_repeats,
                        max_len=self.max_len, space=cfg.space, min_len=self.min_len)
    order = self.rng.permutation(len(edits))
    self.edits[node] = [edits[j] for j in order]

  def ucb_of_kids(self, node: int) -> np.ndarray:
    kids = self.kids[node]
    cfg = self.config
    return ucb([self.reward[c] for c in kids], [self.visits[c] for c in kids],
               [len(self.programs[c]) for c in kids], self.total, self.depth, cfg.exploration, cfg.length_penalty)

  def select(self) -> list[int]:
    """Walks from the root to a leaf (module docstring) and adds one visit along the path (virtual loss).

    Returns the path as node ids, root first; the leaf's program is `self.programs[path[-1]]`.
    """
    node = 0
    path = [0]
    while self.visits[node] > 0:
      if self.edits[node] is None:
        self.expand(node)
      edits, kids = self.edits[node], self.kids[node]
      if not edits:
        break  # No edit is allowed: a terminal program.
      offered = len(edits)
      if self.config.widening > 0:
        offered = min(offered, math.ceil(self.config.widening * self.visits[node] ** self.config.widening_exponent))
      if len(kids) < offered:  # Unvisited children first, in the shuffled order.
        child = self._new_node(apply_edit(self.programs[node], edits[len(kids)]), node)
        kids.append(child)
        path.append(child)
        break
      child = None
      if self.rng.random() < self.config.random_prob:
        frontier = [c for c in kids if self.edits[c] is None]
        if frontier:
          child = frontier[int(self.rng.integers(len(frontier)))]
      if child is None:
        child = kids[int(np.argmax(self.ucb_of_kids(node)))]
      node = child
      path.append(node)
    for n in path:
      self.visits[n] += 1
    return path

  def backup(self, path: Sequence[int], reward: float) -> None:
    """Adds the leaf's reward to every node on the path (visits were added by `select`)."""
    for n in path:
      self.reward[n] += reward

  def program_visits(self) -> dict[tuple[int, ...], int]:
    """v(pi) per distinct program, summed over the nodes that hold it (transpositions)."""
    out: dict[tuple[int, ...], int] = {}
    for program, v in zip(self.programs, self.visits):
      if v:
        out[program] = out.get(program, 0) + v
    return out
