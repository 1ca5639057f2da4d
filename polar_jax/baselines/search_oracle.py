"""Search ablations: the oracle over the programs the search found valid, in the joint space and restricted to
skip-only or repeat-only programs (the CoLa / PoLar "Skip vs Loop vs Skip&Loop" comparison).

These rows use the ground truth (a program is valid because its answer was right), so they are ORACLES: a
question counts when at least one valid program of the space was found for it. They are computed from the
search records of the questions that were searched (the training / validation splits in the pipeline; the
label names the splits found in the record ids), not from the test questions, and run nothing new.

Spaces, read off a program's layer ids:
- skip-only: every layer at most once, in increasing order (layers removed, nothing repeated);
- repeat-only: every layer 0..D-1 present and the ids never go down except to loop back over a block just
  run (nothing skipped);
- joint: any valid program.
The full program belongs to both restricted spaces. The executed layers of a question are those of its
shortest valid program in the space, or of the full program when the space has none (the fallback a user
of such an oracle would run).
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from polar_jax.baselines.outcomes import Candidate, MethodRun, QuestionOutcome

SPACES = ("joint", "skip_only", "repeat_only")


def is_skip_only(program: Sequence[int]) -> bool:
  return all(b > a for a, b in zip(program, program[1:]))


def is_repeat_only(program: Sequence[int], depth: int) -> bool:
  """All layers present, and every backward jump returns to the start of a block that was just run."""
  if set(program) != set(range(depth)):
    return False
  for pos in range(1, len(program)):
    prev, cur = program[pos - 1], program[pos]
    if cur == prev + 1:
      continue
    if cur > prev + 1:  # A forward jump skips layers that are then never run in order.
      return False
    block = list(range(cur, prev + 1))  # A loop back over cur..prev: that block must have just run.
    if list(program[pos - len(block):pos]) != block:
      return False
  return True


def in_space(program: Sequence[int], depth: int, space: str) -> bool:
  if space == "joint":
    return True
  if space == "skip_only":
    return is_skip_only(program)
  if space == "repeat_only":
    return is_repeat_only(program, depth)
  raise ValueError(f"Unknown search space {space!r}; use one of {SPACES}.")


def record_splits(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """The splits named in the record ids (`<dataset>/<split>/<n>`), e.g. ["train", "validation"]."""
  found = collections.Counter()
  for rec in records:
    parts = str(rec["id"]).split("/")
    found[parts[1] if len(parts) >= 3 else "unknown"] += 1
  return sorted(found)


def oracle_run(records: Sequence[Mapping[str, Any]], space: str, *, test_set: str,
               split_label: str | None = None) -> MethodRun:
  """The oracle over `space` on the searched questions (see the module docstring)."""
  if not records:
    raise ValueError("The search ablations need search records (one per searched question); got none.")
  splits = split_label or "+".join(record_splits(records))
  outcomes = []
  for rec in records:
    depth = int(rec["depth"])
    full = tuple(range(depth))
    valid = [tuple(e["program"]) for e in rec["valid"] if in_space(e["program"], depth, space)]
    answers = {tuple(e["program"]): e.get("answer") for e in rec["valid"]}
    if valid:
      best = min(valid, key=lambda p: (len(p), p))
      candidate = Candidate(program=best, answer=answers.get(best), correct=True, source="search")
    else:
      # Nothing valid in this space (not even the full program, which is in every space): run the full program.
      candidate = Candidate(program=full, answer=rec.get("initial_answer"), correct=False, source="search")
    level = rec.get("level")
    outcomes.append(QuestionOutcome(str(rec["id"]), int(level) if isinstance(level, int) else 0, (candidate,)))
  names = {"joint": "skip & repeat", "skip_only": "skip-only", "repeat_only": "repeat-only"}
  # The search's cost per question, as programs run and layer executions: its records' `seconds` overlap
  # (questions are searched concurrently), so no per-question wall time is reported.
  return MethodRun(method=f"search_oracle_{space}",
                   label=f"Search oracle, {names[space]} valid programs ({splits} split, ORACLE)", kind="oracle",
                   test_set=test_set, outcomes=tuple(outcomes),
                   info={"space": space, "splits": splits,
                         "simulations_mean": _mean([r.get("simulations") for r in records]),
                         "evaluations_mean": _mean([r.get("evaluations") for r in records]),
                         "search_layers_mean": _mean([r.get("layers") for r in records])})


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None
