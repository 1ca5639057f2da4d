"""Random programs: PoLar's program space and lengths, without the predictor's choice.

For each question, a random program in the predictor's segment space (contiguous segments of <= 4 layers,
each skipped, kept or repeated once) with exactly the length of PoLar's top-1 program for that question, so
the two methods have the same length distribution and execute the same layers on average; any accuracy
difference is the predictor's choice. Sampling: a random segmentation (each cut with probability 1/2, forced
cuts every 4 layers), then ops drawn uniformly among the assignments that spell the target length (counted
exactly by dynamic programming); a segmentation with no such assignment is redrawn. Seeded per question
(seed, question id), so the baseline is the same on every run and independent of question order.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from polar_jax.evaluation.outcomes import MethodRun, run_ranked
from polar_jax.programs import MAX_BLOCK, OP_KEEP, OP_REPEAT, OP_SKIP, Program, render_ops, spans_from_boundaries
from polar_jax.search import question_rng

_FACTOR = {OP_SKIP: 0, OP_KEEP: 1, OP_REPEAT: 2}


def _ops_for_length(sizes: Sequence[int], length: int, rng: np.random.Generator) -> list[int] | None:
  """Ops (one per segment) spelling exactly `length` layers, uniform among all such assignments; None if none."""
  n = len(sizes)
  # ways[j][l]: assignments of segments j.. that spell exactly l more layers (Python ints: exact counts).
  ways = [[0] * (length + 1) for _ in range(n + 1)]
  ways[n][0] = 1
  for j in range(n - 1, -1, -1):
    for left in range(length + 1):
      ways[j][left] = sum(ways[j + 1][left - f * sizes[j]] for f in _FACTOR.values() if f * sizes[j] <= left)
  if ways[0][length] == 0:
    return None
  ops, left = [], length
  for j in range(n):
    options = [(op, ways[j + 1][left - f * sizes[j]]) for op, f in _FACTOR.items() if f * sizes[j] <= left]
    weights = np.array([float(w) for _, w in options])
    op = options[int(rng.choice(len(options), p=weights / weights.sum()))][0]
    ops.append(op)
    left -= _FACTOR[op] * sizes[j]
  return ops


def random_program(depth: int, length: int, rng: np.random.Generator, *, max_block: int = MAX_BLOCK,
                   max_tries: int = 100) -> Program:
  """A random program of exactly `length` layers (1..2*depth) in the predictor's segment space."""
  if not 1 <= length <= 2 * depth:
    raise ValueError(f"A program of a {depth}-layer model has 1..{2 * depth} layers; asked for {length}.")
  for _ in range(max_tries):
    cuts = rng.integers(0, 2, size=depth)
    spans = spans_from_boundaries(cuts, max_block)
    ops = _ops_for_length([size for _, size in spans], length, rng)
    if ops is not None:
      return Program(render_ops(depth, spans, ops), depth)
  raise RuntimeError(f"No segmentation of {depth} layers spelled length {length} in {max_tries} draws.")


def random_programs_like(examples: Sequence[Any], lengths: Sequence[int | None], depth: int, seed: int = 0
                         ) -> list[Program | None]:
  """One random program per question with the given length (e.g. PoLar's top-1 length for that question);
  None where the length is None (PoLar had no program for that question: neither does this baseline)."""
  if len(lengths) != len(examples):
    raise ValueError(f"Got {len(lengths)} target lengths for {len(examples)} questions.")
  return [None if n is None else random_program(depth, int(n), question_rng(seed, str(ex.id)))
          for ex, n in zip(examples, lengths)]


def run_random_programs(model, examples: Sequence[Any], task, lengths: Sequence[int | None], *, test_set: str,
                        seed: int = 0, matched_to: str = "polar", max_batch: int = 32, progress: bool = False,
                        executor=None) -> MethodRun:
  """Every question under a random program of the matched length (greedy)."""
  depth = model.config.num_layers
  programs = random_programs_like(examples, lengths, depth, seed)
  return run_ranked(model, examples, [[p] if p is not None else [] for p in programs], task, method="random_programs",
                    label=f"Random programs (lengths of {matched_to}, seed {seed})", test_set=test_set,
                    max_batch=max_batch, progress=progress, executor=executor,
                    info={"seed": seed, "matched_to": matched_to})
