"""The predictor's segment form of a program, and the canonical parse between the two forms.

The predictor does not emit layer ids. It cuts the D layers into contiguous segments of at most MAX_BLOCK
layers and gives each segment one op: skip it, keep it (run once) or repeat it (run twice in a row). Its
training targets are two per-layer arrays, exactly as in the PoLar release:

  boundaries [D]: 1 where a segment starts at layer i > 0, else 0 (index 0 is always 0);
  op_labels  [D]: the segment's op at its first layer, IGNORE_INDEX elsewhere.

Several segmentations can spell the same program (`0-7` is kept as segments of 4+4 layers, or 2+2+4, ...), so
`parse` picks the canonical one by the release's tie-breaking: fewest segments, then fewest skips, then
most repeats, then the lexicographically largest list of sizes (larger segments earlier). The release finds
it with a DP memoized on (layer cursor, program position). Every key of that order is preserved when the
same segment is put in front of two tails, so its memoized DP returns the global optimum; here only the
positions a valid tail can start from are visited (everything before layer c runs before everything from
c on, so the position is the number of program steps with an id below c), which gives the same answer from
O(D * MAX_BLOCK) candidate segments instead of O(D * len(program) * MAX_BLOCK). `tests/test_segments.py`
checks both claims against a brute force.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from polar_jax.programs.program import Program, ProgramError, validate_ids

OP_SKIP, OP_KEEP, OP_REPEAT = 0, 1, 2
OP_NAMES = ("skip", "keep", "repeat")
IGNORE_INDEX = -100  # Label at non-start layers; the loss ignores it (the torch cross-entropy default).
MAX_BLOCK = 4  # Longest segment the predictor emits (the release's max_pack).


@dataclasses.dataclass(frozen=True)
class Segment:
  """Layers `start .. start+size-1`, run `op` (OP_SKIP: 0 times, OP_KEEP: once, OP_REPEAT: twice)."""
  start: int
  size: int
  op: int

  @property
  def stop(self) -> int:
    return self.start + self.size


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """A program in segment form: contiguous segments covering layers 0..depth-1 in order."""
  depth: int
  segments: tuple[Segment, ...]
  max_block: int = MAX_BLOCK

  def __post_init__(self):
    object.__setattr__(self, "segments", tuple(self.segments))
    cursor = 0
    for number, seg in enumerate(self.segments):
      if not isinstance(seg, Segment):
        raise ProgramError(f"Segment {number} is a {type(seg).__name__}, not a Segment.")
      if seg.start != cursor:
        raise ProgramError(
            f"Segment {number} starts at layer {seg.start} but the previous one ends at {cursor}; "
            "segments must be contiguous and in order.")
      if not 1 <= seg.size <= self.max_block:
        raise ProgramError(f"Segment {number} (start {seg.start}) has size {seg.size}; sizes run 1..{self.max_block}.")
      if seg.op not in (OP_SKIP, OP_KEEP, OP_REPEAT):
        raise ProgramError(f"Segment {number} (start {seg.start}) has op {seg.op!r}; ops are 0 (skip), 1 (keep), "
                           "2 (repeat).")
      cursor = seg.stop
    if cursor != self.depth:
      raise ProgramError(f"Segments cover layers 0..{cursor - 1} of a {self.depth}-layer model; they must cover all.")

  @property
  def num_segments(self) -> int:
    return len(self.segments)

  @property
  def spans(self) -> tuple[tuple[int, int], ...]:
    """(start, size) per segment."""
    return tuple((s.start, s.size) for s in self.segments)

  @property
  def ops(self) -> tuple[int, ...]:
    return tuple(s.op for s in self.segments)

  def boundaries(self) -> np.ndarray:
    """1 where a segment starts at layer i > 0 (the release's flip mask). Returns int32 [depth]."""
    out = np.zeros(self.depth, np.int32)
    for seg in self.segments[1:]:
      out[seg.start] = 1
    return out

  def op_labels(self) -> np.ndarray:
    """Each segment's op at its first layer, IGNORE_INDEX elsewhere. Returns int32 [depth]."""
    out = np.full(self.depth, IGNORE_INDEX, np.int32)
    for seg in self.segments:
      out[seg.start] = seg.op
    return out

  @classmethod
  def from_arrays(cls, boundaries: Sequence[int] | np.ndarray, op_labels: Sequence[int] | np.ndarray,
                  max_block: int = MAX_BLOCK) -> Segmentation:
    """The inverse of `boundaries()` / `op_labels()`. boundaries: [D] 0/1 (index 0 ignored); op_labels: [D]."""
    bounds = np.asarray(boundaries).reshape(-1)
    labels = np.asarray(op_labels).reshape(-1)
    if bounds.shape != labels.shape or bounds.size == 0:
      raise ProgramError(f"boundaries {bounds.shape} and op_labels {labels.shape} must be non-empty and of the same "
                         "length (the model depth).")
    if not np.isin(bounds, (0, 1)).all():
      raise ProgramError(f"boundaries must be 0/1, got values {sorted(set(bounds.tolist()))}.")
    starts = [0] + [int(i) for i in np.flatnonzero(bounds[1:]) + 1]
    stops = starts[1:] + [int(bounds.size)]
    is_start = np.zeros(bounds.size, bool)
    is_start[starts] = True
    if (labels[~is_start] != IGNORE_INDEX).any():
      bad = int(np.flatnonzero((labels != IGNORE_INDEX) & ~is_start)[0])
      raise ProgramError(f"op_labels[{bad}] = {int(labels[bad])} but layer {bad} starts no segment; it must be "
                         f"{IGNORE_INDEX}.")
    segments = tuple(Segment(a, b - a, int(labels[a])) for a, b in zip(starts, stops))
    return cls(int(bounds.size), segments, max_block)


def spans_from_boundaries(boundaries: Sequence[int] | np.ndarray,
                          max_block: int = MAX_BLOCK) -> tuple[tuple[int, int], ...]:
  """(start, size) segments from a 0/1 boundary mask [D], cutting every `max_block` layers within a segment.

  This is how a decoder turns thresholded boundary predictions into segments (index 0 is ignored).
  """
  bounds = np.asarray(boundaries).reshape(-1)
  starts = [0] + [int(i) for i in np.flatnonzero(bounds[1:]) + 1]
  stops = starts[1:] + [int(bounds.size)]
  spans = []
  for start, stop in zip(starts, stops):
    for cut in range(start, stop, max_block):
      spans.append((cut, min(max_block, stop - cut)))
  return tuple(spans)


def render_ops(depth: int, spans: Iterable[tuple[int, int]], ops: Iterable[int]) -> tuple[int, ...]:
  """Layer ids spelled by segments (start, size) with one op each; may be empty (all skipped).

  Cheap enough for a beam decoder's inner loop: it checks only that the spans tile 0..depth-1 and the ops
  are known. Wrap the result in `Program(ids, depth)` to validate it as a program.
  """
  out: list[int] = []
  cursor = 0
  count = 0
  for (start, size), op in zip(spans, ops, strict=True):
    if start != cursor or size < 1:
      raise ProgramError(f"Segment {count} = (start {start}, size {size}) does not continue at layer {cursor}.")
    chunk = range(start, start + size)
    if op == OP_KEEP:
      out.extend(chunk)
    elif op == OP_REPEAT:
      out.extend(chunk)
      out.extend(chunk)
    elif op != OP_SKIP:
      raise ProgramError(f"Segment {count} has op {op!r}; ops are 0 (skip), 1 (keep), 2 (repeat).")
    cursor += size
    count += 1
  if cursor != depth:
    raise ProgramError(f"Segments cover layers 0..{cursor - 1} of a {depth}-layer model; they must cover all.")
  return tuple(out)


def render(segmentation: Segmentation) -> Program:
  """The program a segmentation spells. Raises ProgramError when every segment is skipped."""
  ids = render_ops(segmentation.depth, segmentation.spans, segmentation.ops)
  if not ids:
    raise ProgramError("Every segment is skipped, so the segmentation spells an empty program.")
  return Program(ids, segmentation.depth)


def parse(program: Program | Sequence[int], depth: int | None = None,
          max_block: int = MAX_BLOCK) -> Segmentation | None:
  """The canonical segmentation of `program`, or None when no segmentation spells it.

  None covers every program outside the predictor's space: a layer run three or more times, layers out of
  order, a repeated block longer than `max_block`, and anything else no skip / keep / repeat-once
  segmentation spells. Invalid programs (ids out of range, non-integers, empty) raise ProgramError.
  """
  if isinstance(program, Program):
    if depth is not None and depth != program.depth:
      raise ProgramError(f"parse got depth={depth} for a program of a {program.depth}-layer model.")
    ids, depth = program.ids, program.depth
  else:
    if depth is None:
      raise ProgramError("parse needs depth= when the program is a plain sequence of ints.")
    ids = validate_ids(program, depth, max_len=max(1, len(program)))
  max_block = int(max_block)
  n = len(ids)
  if n > 2 * depth:
    return None
  counts = [0] * depth
  for x in ids:
    counts[x] += 1
  if max(counts) > 2:
    return None
  # prefix[c]: where the tail for layers c.. must start in the program (steps with an id below c).
  prefix = [0] * (depth + 1)
  for c in range(depth):
    prefix[c + 1] = prefix[c] + counts[c]

  # best[c]: the best tail for layers c..depth-1, as (key, segments); key orders tails, smaller is better:
  # (segments, skips, -repeats, negated sizes).
  best: list[tuple[tuple, tuple[Segment, ...]] | None] = [None] * (depth + 1)
  best[depth] = ((0, 0, 0, ()), ())
  for c in range(depth - 1, -1, -1):
    chosen = None
    for size in range(1, min(max_block, depth - c) + 1):
      tail = best[c + size]
      if tail is None:
        continue
      length = prefix[c + size] - prefix[c]
      if length == 0:
        op = OP_SKIP
      else:
        chunk = tuple(range(c, c + size))
        if length == size and ids[prefix[c]:prefix[c] + size] == chunk:
          op = OP_KEEP
        elif length == 2 * size and ids[prefix[c]:prefix[c] + 2 * size] == chunk + chunk:
          op = OP_REPEAT
        else:
          continue
      (num, skips, neg_repeats, neg_sizes), segs = tail
      key = (num + 1, skips + (op == OP_SKIP), neg_repeats - (op == OP_REPEAT), (-size,) + neg_sizes)
      if chosen is None or key < chosen[0]:
        chosen = (key, (Segment(c, size, op),) + segs)
    best[c] = chosen
  if best[0] is None:
    return None
  return Segmentation(depth, best[0][1], max_block)
