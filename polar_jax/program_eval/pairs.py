"""The (question, program) pairs to run, from any of the forms `run_programs` accepts, checked."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from polar_jax import data
from polar_jax.records import is_int
from polar_jax.programs import Program, ProgramError


def as_program(p: Any, depth: int, where: str) -> Program:
  """`p` (a Program or layer ids) as a Program for a `depth`-layer model; errors name `where`."""
  if isinstance(p, Program):
    if p.depth != depth:
      raise ProgramError(f"{where}: program {p.compact()} is for a {p.depth}-layer model, but this model has "
                         f"{depth} layers.")
    return p
  try:
    return Program(p, depth)
  except ProgramError as e:
    raise ProgramError(f"{where}: {e}") from None


def _is_id_list(x: Any) -> bool:
  if isinstance(x, np.ndarray):
    return x.ndim == 1 and x.dtype.kind in "iu"
  return isinstance(x, (list, tuple)) and len(x) > 0 and all(is_int(i) for i in x)


def _is_pair(x: Any) -> bool:
  return (isinstance(x, (list, tuple)) and len(x) == 2 and is_int(x[0])
          and isinstance(x[1], (Program, list, tuple, np.ndarray)))


def normalize_pairs(examples: Sequence[data.Example], programs: Any, depth: int) -> list[tuple[int, Program]]:
  """(example index, Program) pairs from one program for all, one per example, or explicit pairs."""
  if not examples:
    raise ValueError("No examples given: pass a non-empty list of polar_jax.data.Example (load_split(...)).")
  if isinstance(programs, Program) or _is_id_list(programs):
    program = as_program(programs, depth, "the program")
    return [(i, program) for i in range(len(examples))]
  programs = list(programs)
  if programs and all(_is_pair(x) for x in programs):
    pairs = []
    for j, (i, p) in enumerate(programs):
      if not 0 <= int(i) < len(examples):
        raise ValueError(f"Pair {j} refers to example {int(i)}, but only {len(examples)} examples were given.")
      pairs.append((int(i), as_program(p, depth, f"pair {j} (question {examples[int(i)].id})")))
    return pairs
  if len(programs) != len(examples):
    raise ValueError(f"Got {len(programs)} programs for {len(examples)} examples: pass one program per example, "
                     "a single program for all, or (example index, program) pairs.")
  return [(i, as_program(p, depth, f"program {i} (question {examples[i].id})")) for i, p in enumerate(programs)]
