"""Decoding the predictor's outputs into ranked programs (the release's `decode_polar_to_actions`).

Per question: a segment starts at every layer i > 0 whose boundary probability sigmoid(logit) >= threshold;
a segment longer than MAX_BLOCK layers is cut every MAX_BLOCK layers from its start. The segmentation is
then fixed, and a beam search picks one op per segment: each beam is extended by the `top_k_ops` most
likely ops at the segment's first layer (log-softmax of the op logits), beams are ranked by their summed
log-probability (a stable sort, so ties keep expansion order, as in the release) and cut to `beam_size`.
Optionally the finished beams are re-ranked by `score - length_penalty * len(program)`.

The first `top_k` beams are returned as `Program`s with their scores. Beams that skip every segment spell
an empty program, which cannot run: the release spends a top-k slot on them and scores them wrong; we drop
them from the returned list (so fewer than `top_k` may come back) and count them in `num_empty`. Two beams
never spell the same program (the segmentation is shared and each segment's op is read off its layers'
counts), so no de-duplication is needed; the result is checked anyway.

Host-side numpy: the arrays are [B, D] and [B, D, 3], a few microseconds of work per question.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from polar_jax.programs import MAX_BLOCK, Program, render_ops, spans_from_boundaries


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """The release's defaults: threshold 0.5, beam 5, top-2 ops per segment, evaluate the top 5."""
  threshold: float = 0.5
  beam_size: int = 5
  top_k_ops: int = 2
  top_k: int = 5
  length_penalty: float = 0.0
  max_block: int = MAX_BLOCK

  def __post_init__(self):
    if not 1 <= self.top_k_ops <= 3:
      raise ValueError(f"top_k_ops must be 1..3 (there are 3 ops), got {self.top_k_ops}.")
    if self.beam_size < 1 or self.top_k < 1:
      raise ValueError(f"beam_size ({self.beam_size}) and top_k ({self.top_k}) must be positive.")


@dataclasses.dataclass(frozen=True)
class DecodedProgram:
  """One candidate: the program, its summed op log-probability, and the ops per segment."""
  program: Program
  score: float
  spans: tuple[tuple[int, int], ...]
  ops: tuple[int, ...]

  @property
  def length(self) -> int:
    return len(self.program)


@dataclasses.dataclass(frozen=True)
class Decoded:
  """The ranked candidates for one question (best first) and how many empty programs were dropped."""
  candidates: tuple[DecodedProgram, ...]
  num_empty: int

  @property
  def top1(self) -> Program | None:
    return self.candidates[0].program if self.candidates else None


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def segment_spans(boundary_logits: np.ndarray, threshold: float = 0.5,
                  max_block: int = MAX_BLOCK) -> tuple[tuple[int, int], ...]:
  """Boundary logits [D] -> (start, size) segments: cuts at sigmoid >= threshold, forced every max_block."""
  logits = np.asarray(boundary_logits, np.float64)
  probs = 1.0 / (1.0 + np.exp(-logits))
  return spans_from_boundaries((probs >= threshold).astype(np.int32), max_block)


def decode_one(boundary_logits: np.ndarray, op_logits: np.ndarray,
               options: DecodeOptions = DecodeOptions()) -> Decoded:
  """boundary_logits [D], op_logits [D, 3] -> ranked candidate programs for one question."""
  depth = boundary_logits.shape[0]
  if op_logits.shape != (depth, 3):
    raise ValueError(f"op_logits has shape {op_logits.shape}, expected ({depth}, 3) to match boundary logits.")
  spans = segment_spans(boundary_logits, options.threshold, options.max_block)
  op_logp = _log_softmax(np.asarray(op_logits, np.float64))  # [D, 3]
  beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
  for start, _ in spans:
    # Python's sorted is stable, so equal log-probs keep op order 0, 1, 2 (the release sorts the same way).
    ops = sorted(range(3), key=lambda o: op_logp[start, o], reverse=True)[:options.top_k_ops]
    expanded = [(seq + (o,), score + float(op_logp[start, o])) for seq, score in beams for o in ops]
    beams = sorted(expanded, key=lambda b: b[1], reverse=True)[:options.beam_size]
  rendered = [(render_ops(depth, spans, seq), seq, score) for seq, score in beams]
  if options.length_penalty:
    rendered = sorted(rendered, key=lambda r: r[2] - options.length_penalty * len(r[0]), reverse=True)
  candidates, num_empty, seen = [], 0, set()
  for ids, seq, score in rendered[:options.top_k]:
    if not ids:
      num_empty += 1
      continue
    assert ids not in seen, "two beams spelled the same program"
    seen.add(ids)
    candidates.append(DecodedProgram(Program(ids, depth), score, spans, seq))
  return Decoded(tuple(candidates), num_empty)


def decode_programs(boundary_logits, op_logits, options: DecodeOptions = DecodeOptions()) -> list[Decoded]:
  """Batched over questions: boundary_logits [B, D], op_logits [B, D, 3] -> one `Decoded` per question."""
  boundary_logits = np.asarray(boundary_logits)
  op_logits = np.asarray(op_logits)
  if boundary_logits.ndim != 2 or op_logits.shape != boundary_logits.shape + (3,):
    raise ValueError(f"Expected boundary logits [B, D] and op logits [B, D, 3], got {boundary_logits.shape} and "
                     f"{op_logits.shape}.")
  return [decode_one(b, o, options) for b, o in zip(boundary_logits, op_logits)]
