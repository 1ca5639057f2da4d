"""The authors' released MCTS as a protocol preset: `SearchConfig(protocol="polar_release")`.

Reimplemented, nothing copied, from a reading of the release (tianyi-lab/PoLar at c86d76e,
`mcts_discovery/run_mcts.py`: `generate_mcts_candidates`, `mcts_search`, `MODEL_DEPTH_PRESETS`). Per question:

- The full program `0..D-1` is scored first; that is not a simulation (the root's visits count simulations
  only). Then `num_simulations` simulations (the release: 100).
- Edits (`release_children`), for each position i in order: skip entry i; at the root only, skip the 2-, 3-,
  4-entry blocks starting at i; repeat entry i once (the copy next to it) if no layer then appears more than
  twice; at the root only, repeat the 2-, 3-, 4-entry block starting at i once. A child is kept if its
  length lies in [min_len, max_len] and its program was never generated before anywhere in this question's
  tree (one set for the whole tree: a program has at most one node).
- Selection: from the root, while the node has children: among its children not *fully explored*, with
  probability 0.1 a uniformly random one, else the one with the highest stored UCB (the first in
  generation order on ties; children never backed up have UCB -inf). It stops at a node without children,
  or one whose children are all fully explored.
- Expansion: a node that is not fully explored gets its children, and a uniformly random one of them (in
  program order) is the leaf; a node that gets none is marked fully explored and is itself the leaf.
- Evaluation: a leaf never scored is scored (reward 1 / 0). A leaf already scored is not scored again, and
  the simulation backs up the *last reward scored in this question* (the release's `score` variable), not
  the leaf's own reward.
- Backup, leaf to root: visits += 1, reward sum += reward, and the node's UCB is recomputed as
  R/v - lambda * |pi| / D + sqrt(2 ln(N + 1) / v), N the root's visits before this simulation (after it,
  for the root itself), lambda = 5. UCB is stored: a node's value changes only when a simulation passes
  through it. A node all of whose children are fully explored becomes fully explored.
- Output: every scored program (the full one included); valid when its reward is 1.0.

SearchConfig fields under this protocol: length_penalty (lambda, release 5), exploration (c in
c / sqrt(2) * sqrt(2 ln(N+1) / v); the release is c = sqrt(2), computed bit for bit as theirs),
random_prob (release 0.1), max_block (largest root block, release 4), min_len / max_len (None: the
release's bounds for the depth, `tree.release_length_bounds`), num_simulations (release 100), seed (release
42), leaves_per_round. max_repeats is not used (a repeat adds one copy); space must be "cola", widening 0.
None of these is set by choosing the protocol: set them (configs/default.py:protocol=polar_release does).

What differs from the release (the rest is meant to be identical):
1. Batching. With leaves_per_round > 1 (an extension) a round's selections see earlier ones through virtual
   loss: visits, UCB (reward 0) and fully-explored marks are applied at selection, the reward at backup; a
   simulation that scores nothing backs up the last reward received so far (0 before the full program's).
   leaves_per_round=1 reproduces the release's sequence exactly (given the same rewards).
2. RNG. Python's `random.Random(seed)`, the same seed for every question (the release calls
   `random.seed(42)` at the start of each question's search), with the same draws in the same order, so
   seed=42 gives the release's choices. If the release's answer checker (dart_math, not read here) drew from
   the global `random` between draws, the release would not follow its own seed; we cannot reproduce that.
3. Length bounds. The release's table is per model and refuses other models; here it is by depth (its models
   of one depth share bounds), and unlisted depths get the offsets of the nearest listed depth (ours).
4. Rewards are ours: the configured task's prompt, chat template, stop rules and answer check through
   `program_eval`, with correct KV caching of looped layers. The release prompts with the raw boxed text
   (our "paper" template) without a chat template, generates 50 new tokens greedily, takes the text after
   the last "Answer:" of prompt + completion, requires "oxed{" in it and checks it with dart_math; its
   cache is keyed by layer index (wrong for loops, docs/design.md).
5. Records are ours: valid when reward > `records.VALID_THRESHOLD` (same as == 1.0 for 0/1 rewards), sorted
   by (length, program), with visits and answers. The release's `final_valid_transitions` /
   `final_invalid_transitions` (score == 1.0 / == 0.0) are sorted by score, then length, ties in
   breadth-first tree order; its trajectories and similarity-to-valid fields are not written by our search
   (`search.interchange` keeps RE-PoLar's `search_trajectory` visit log when it imports a file). Its shards are
   contiguous [start, end) ranges of the question list and its merge concatenates them in start order
   (each sample carries `query_id`; nothing is keyed or deduplicated there); ours are strided and keyed by id
   (`search.interchange` converts).
"""

from __future__ import annotations

import collections
import math
import random
from typing import TYPE_CHECKING, Sequence

from polar_jax.search.tree import Edit, apply_edit

if TYPE_CHECKING:
  from polar_jax.search.tree import SearchConfig

SQRT2 = math.sqrt(2.0)


def release_children(program: Sequence[int], *, is_root: bool, min_len: int, max_len: int, max_block: int = 4,
                     seen: set[tuple[int, ...]] | None = None) -> list[tuple[tuple[int, ...], Edit]]:
  """The release's children of `program` in its order, as (child, edit) with edit = (pos, k, r), r in {0, 1}.

  `seen` is the question's set of programs generated so far (updated here); children in it are left out.
  """
  ids = tuple(program)
  n = len(ids)
  seen = set() if seen is None else seen
  counts = collections.Counter(ids)
  most = max(counts.values(), default=0)
  blocks = range(1, (max_block if is_root else 1) + 1)
  out = []
  for i in range(n):
    for r in (0, 1):  # Skips, then repeats; each by block size.
      for k in blocks:
        if i + k > n:
          break
        if r and k == 1 and max(most, counts[ids[i]] + 1) > 2:
          continue  # A single-layer repeat may not make any layer appear more than twice.
        child = apply_edit(ids, (i, k, r))
        if child and child not in seen and min_len <= len(child) <= max_len:
          out.append((child, (i, k, r)))
          seen.add(child)
  return out


def release_ucb(reward_sum: float, visits: int, length: int, root_visits: int, depth: int,
                exploration: float = SQRT2, length_penalty: float = 5.0) -> float:
  """R/v - lambda |pi| / D + c / sqrt(2) * sqrt(2 ln(N + 1) / v), evaluated in the release's order.

  N (`root_visits`) is the root's visit count when the node is backed up: before this simulation's
  increment, except for the root itself. With c = sqrt(2) the factor c / sqrt(2) is exactly 1.0.
  """
  if visits < 1:
    raise ValueError("The release's UCB is computed for backed-up nodes only (v >= 1); others hold -inf.")
  return (reward_sum / visits - length_penalty * length / depth
          + exploration / SQRT2 * math.sqrt(2 * math.log(root_visits + 1) / visits))


class Walk(list):
  """One selection's path (node ids, root first), with what its backup needs.

  Attributes:
    initial: the full program's first scoring (not a simulation).
    evaluates: the leaf is scored by this simulation (else the backup uses the last reward scored).
    root_visits: N for the UCB of the nodes below the root (the root's visits before this simulation).
  """

  def __init__(self, nodes: Sequence[int], *, initial: bool = False, evaluates: bool = True, root_visits: int = 0):
    super().__init__(nodes)
    self.initial = initial
    self.evaluates = evaluates
    self.root_visits = root_visits


class ReleaseTree:
  """One question's tree under the release's protocol (module docstring); node 0 is the full program.

  The driver's interface is the CoLa tree's: `select()` -> a path whose last node's program is to be scored,
  `backup(path, reward)`, `programs`, `program_visits()`, `simulations`.
  """

  def __init__(self, depth: int, config: SearchConfig):
    self.depth = int(depth)
    self.config = config
    self.rng = random.Random(config.seed)
    self.min_len, self.max_len = config.length_bounds(self.depth)
    root = tuple(range(self.depth))
    self.programs: list[tuple[int, ...]] = []
    self.parent: list[int] = []
    self.edit: list[Edit | None] = []
    self.children: list[list[int]] = []
    self.visits: list[int] = []
    self.reward: list[float] = []
    self.ucb: list[float] = []
    self.scored: list[bool] = []  # A scoring of the node's program was issued.
    self.fully_explored: list[bool] = []
    self.seen = {root}
    self.last_reward: float | None = None
    self._simulations = 0
    self._new_node(root, -1, None)

  @property
  def simulations(self) -> int:
    """Simulations selected so far; the full program's first scoring is not one."""
    return self._simulations

  def _new_node(self, program: tuple[int, ...], parent: int, edit: Edit | None) -> int:
    self.programs.append(program)
    self.parent.append(parent)
    self.edit.append(edit)
    self.children.append([])
    self.visits.append(0)
    self.reward.append(0.0)
    self.ucb.append(-math.inf)
    self.scored.append(False)
    self.fully_explored.append(False)
    return len(self.programs) - 1

  def expand(self, node: int) -> list[int]:
    """Adds the node's children in generation order; returns them."""
    kids = [self._new_node(child, node, edit) for child, edit in release_children(
        self.programs[node], is_root=node == 0, min_len=self.min_len, max_len=self.max_len,
        max_block=self.config.max_block, seen=self.seen)]
    self.children[node].extend(kids)
    return kids

  def _refresh(self, node: int, root_visits: int) -> None:
    cfg = self.config
    self.ucb[node] = release_ucb(self.reward[node], self.visits[node], len(self.programs[node]),
                                 self.visits[0] if node == 0 else root_visits, self.depth, cfg.exploration,
                                 cfg.length_penalty)

  def select(self) -> Walk:
    """The next selection (module docstring); its visits are added now (virtual loss), its reward later."""
    if not self.scored[0]:
      self.scored[0] = True
      return Walk([0], initial=True)
    root_visits = self.visits[0]
    self._simulations += 1
    node, path = 0, [0]
    while self.children[node]:
      open_kids = [c for c in self.children[node] if not self.fully_explored[c]]
      if not open_kids:
        break
      if self.rng.random() < self.config.random_prob:
        node = self.rng.choice(open_kids)
      else:
        node = max(open_kids, key=lambda c: self.ucb[c])  # The first maximum on ties.
      path.append(node)
    if not self.fully_explored[node]:
      self.expand(node)
      if self.children[node]:
        node = self.rng.choice(sorted(self.children[node], key=lambda c: self.programs[c]))
        path.append(node)
      else:
        self.fully_explored[node] = True
    evaluates = not self.scored[node]
    self.scored[node] = True
    for n in reversed(path):
      self.visits[n] += 1
      self._refresh(n, root_visits)
      kids = self.children[n]
      if kids and all(self.fully_explored[c] for c in kids):
        self.fully_explored[n] = True
    return Walk(path, evaluates=evaluates, root_visits=root_visits)

  def backup(self, path: Walk, reward: float) -> None:
    """Adds the reward (or, for a simulation that scored nothing, the last reward scored) along the path."""
    if path.initial:
      self.last_reward = float(reward)
      return
    if path.evaluates:
      self.last_reward = float(reward)
      value = float(reward)
    else:
      value = 0.0 if self.last_reward is None else self.last_reward
    for n in reversed(path):
      self.reward[n] += value
      self._refresh(n, path.root_visits)

  def program_visits(self) -> dict[tuple[int, ...], int]:
    """v(pi) per program (a program has one node here)."""
    return {p: v for p, v in zip(self.programs, self.visits) if v}
