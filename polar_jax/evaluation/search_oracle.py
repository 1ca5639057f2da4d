"""Search ablations: the oracle over the programs the search found valid, in the joint space and restricted to
skip-only or repeat-only programs (the CoLa / PoLar "Skip vs Loop vs Skip&Loop" comparison).

These rows use the ground truth (a program is valid because its answer was right), so they are ORACLES: a
question counts when at least one valid program of the space was found for it. They are computed from the
search records of the questions that were searched (the training / validation splits in the pipeline; the
label names the splits found in the record ids), not from the test questions, and run nothing new.

Spaces, by `polar_jax.programs.kinds.program_kind` (one definition for the whole project):
- skip_only: the full program and skip-only programs (layers removed, nothing repeated);
- repeat_only: the full program and repeat-only programs (blocks repeated in place, nothing skipped);
- joint: any valid program, including the "other" kind (reorders, partial repeats: outside the skip/repeat
  space, so they count only here).
The full program belongs to both restricted spaces. The executed layers of a question are those of its
shortest valid program in the space, or of the full program when the space has none (the fallback a user
of such an oracle would run).
"""

from __future__ import annotations

import collections
from typing import Sequence

from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome
from polar_jax.programs.kinds import ProgramKind, program_kind
from polar_jax.records import SearchRecord

ORACLE_SPACES = ("joint", "skip_only", "repeat_only")
_KINDS = {"skip_only": {ProgramKind.FULL, ProgramKind.SKIP_ONLY},
          "repeat_only": {ProgramKind.FULL, ProgramKind.REPEAT_ONLY}}


def in_space(program: Sequence[int], depth: int, space: str) -> bool:
  """Whether `program` belongs to the oracle space `space` (module docstring)."""
  if space not in ORACLE_SPACES:
    raise ValueError(f"Unknown search space {space!r}; use one of {ORACLE_SPACES}.")
  return space == "joint" or program_kind(program, depth) in _KINDS[space]


def record_splits(records: Sequence[SearchRecord]) -> list[str]:
  """The splits named in the record ids (`<dataset>/<split>/<n>`), e.g. ["train", "validation"]."""
  found = collections.Counter()
  for rec in records:
    parts = rec.id.split("/")
    found[parts[1] if len(parts) >= 3 else "unknown"] += 1
  return sorted(found)


def oracle_run(records: Sequence[SearchRecord], space: str, *, test_set: str,
               split_label: str | None = None) -> MethodRun:
  """The oracle over `space` on the searched questions (see the module docstring)."""
  if not records:
    raise ValueError("The search ablations need search records (one per searched question); got none.")
  splits = split_label or "+".join(record_splits(records))
  outcomes = []
  for rec in records:
    depth = rec.depth
    full = tuple(range(depth))
    valid = [p for p in rec.valid_programs if in_space(p, depth, space)]
    answers = {e.program: e.answer for e in rec.valid}
    if valid:
      best = min(valid, key=lambda p: (len(p), p))
      candidate = Candidate(program=best, answer=answers.get(best), correct=True, source="search")
    else:
      # Nothing valid in this space (not even the full program, which is in every space): run the full program.
      candidate = Candidate(program=full, answer=rec.initial_answer, correct=False, source="search")
    level = rec.level
    outcomes.append(QuestionOutcome(rec.id, int(level) if isinstance(level, int) else 0, (candidate,)))
  names = {"joint": "skip & repeat", "skip_only": "skip-only", "repeat_only": "repeat-only"}
  # The search's cost per question, as programs run and layer executions: its records' `seconds` overlap
  # (questions are searched concurrently), so no per-question wall time is reported.
  return MethodRun(method=f"search_oracle_{space}",
                   label=f"Search oracle, {names[space]} valid programs ({splits} split, ORACLE)", kind="oracle",
                   test_set=test_set, outcomes=tuple(outcomes),
                   info={"space": space, "splits": splits,
                         "simulations_mean": _mean([r.simulations for r in records]),
                         "evaluations_mean": _mean([r.evaluations for r in records]),
                         "search_layers_mean": _mean([r.layers for r in records])})


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None
