"""What kind of program a path of layer ids is: the full program, skip-only, repeat-only, skip+repeat, or other.

The skip/repeat space is the set of paths obtained from the full program 0..D-1 by non-overlapping block
edits: a path is in it when it is a concatenation of blocks, block j being a contiguous ascending range of
layers [a_j..b_j] written c_j >= 1 times in a row, each block starting after the previous one ends
(a_{j+1} > b_j). Layers between blocks (and before the first, after the last) are skipped.

- full: the identity path 0..D-1;
- skip-only: every c_j = 1 and some layer missing;
- repeat-only: some c_j > 1 and no layer missing;
- skip+repeat: some c_j > 1 and some layer missing;
- other: not so decomposable: a reorder such as [0, 2, 1, 3], a partial repeat such as (0, 1, 2, 1, 3)
  (only overlapping edits produce it), a layer revisited out of order.

The blocks are disjoint ranges, so in a decomposable path a layer's number of occurrences is its block's c:
"some c > 1" is "some layer occurs twice", "some layer missing" is "not every layer occurs", whatever
decomposition is chosen. Whether a decomposition exists is not always found by a greedy scan: (0, 1, 1, 2)
is [0][1]x2[2] although the longest ascending run at position 0 is 0 1, and (0, 1, 0, 1, 2) is [0..1]x2[2]
although [0] would be the shortest choice. `program_kind` decides it exactly with a dynamic program over
positions: a block ends where the previous one ended, so the state is just the position.
"""

from __future__ import annotations

import enum
from typing import Sequence


class ProgramKind(str, enum.Enum):
  """A program's kind; the value is the name used in JSON outputs (e.g. a summary's `valid_program_kinds`)."""
  FULL = "full"
  SKIP_ONLY = "skip_only"
  REPEAT_ONLY = "repeat_only"
  SKIP_AND_REPEAT = "skip_and_repeat"
  OTHER = "other"


def is_block_edit(ids: Sequence[int]) -> bool:
  """Whether `ids` is a concatenation of repeated ascending blocks, each after the last (module docstring)."""
  n = len(ids)
  reachable = [False] * (n + 1)  # reachable[i]: ids[:i] is a concatenation of whole blocks.
  reachable[0] = True
  for start in range(n):
    if not reachable[start] or (start > 0 and ids[start] <= ids[start - 1]):
      continue  # The block at `start` must begin after the previous block's last layer, ids[start - 1].
    size = 0
    while start + size < n and ids[start + size] == ids[start] + size:  # Block [ids[start] .. ids[start] + size].
      size += 1
      end = start + size
      reachable[end] = True  # Written once; now as many more times as the path repeats it.
      while ids[end:end + size] == ids[start:start + size]:
        end += size
        reachable[end] = True
  return reachable[n]


def program_kind(ids: Sequence[int], depth: int) -> ProgramKind:
  """The kind of the path `ids` of a `depth`-layer model (see the module docstring).

  Raises:
    ValueError: `ids` is empty or holds an id outside 0..depth-1 (not a path of this model).
  """
  ids = [int(i) for i in ids]
  if not ids:
    raise ValueError("An empty path is not a program.")
  if any(not 0 <= i < depth for i in ids):
    raise ValueError(f"Path {ids} has layer ids outside 0..{depth - 1}.")
  if not is_block_edit(ids):
    return ProgramKind.OTHER
  repeated = len(set(ids)) < len(ids)
  skipped = len(set(ids)) < depth
  if repeated:
    return ProgramKind.SKIP_AND_REPEAT if skipped else ProgramKind.REPEAT_ONLY
  return ProgramKind.SKIP_ONLY if skipped else ProgramKind.FULL
