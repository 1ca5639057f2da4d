"""The scorer interface between the search and whatever runs programs, and a scorer for plain functions.

The search core never touches a model: it hands a scorer batches of (question index, program) pairs and
gets back one `ScoredProgram` per pair. `scoring.py` implements it with the LLM executor; tests and
notebooks use `FunctionScorer` over a pure-Python reward.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from polar_jax.programs import Program


@dataclasses.dataclass(frozen=True)
class ScoredProgram:
  """The outcome of running one program on one question.

  Attributes:
    reward: 1.0 when the verified answer is correct, else 0.0 (any float is accepted by the search).
    answer: the extracted answer (None when nothing could be extracted), kept in the search records.
    layers: layer executions spent, for cost accounting (e.g. program length x generated tokens).
    gold_logprob: the gold completion's log-probability under the program, when the scorer computed it.
    decided_by: how the reward was decided ("generate", "one_pass", ...), when the scorer says.
  """
  reward: float
  answer: str | None = None
  layers: int = 0
  gold_logprob: float | None = None
  decided_by: str | None = None


@runtime_checkable
class Scorer(Protocol):
  """Evaluates (question index, program) pairs; indexes refer to the examples given to `run_search`.

  `depth` is the model's layer count (the full program's length). `score` must be deterministic per pair:
  the memo and the restart guarantee (a restarted run reproduces the uninterrupted one) rely on it. A scorer
  that packs pairs into device batches also has `max_batch` and `per_question` attributes (`TaskScorer`);
  each record's config says their values (`scorer_batching`), since batch shapes can change float results.
  """
  depth: int

  def score(self, pairs: Sequence[tuple[int, Program]]) -> list[ScoredProgram]:
    ...


def scorer_batching(scorer: Scorer) -> dict[str, Any]:
  """{"max_batch", "per_question"} of a scorer; None for a scorer without them (it does not batch)."""
  return {"max_batch": getattr(scorer, "max_batch", None), "per_question": getattr(scorer, "per_question", None)}


class FunctionScorer:
  """A scorer over `fn(question_index, ids) -> float | ScoredProgram`, counting its calls.

  Attributes:
    depth: the model depth the programs are built for.
    calls: number of `score` calls; pairs: number of pairs scored in total.
  """

  def __init__(self, fn: Callable[[int, tuple[int, ...]], float | ScoredProgram], depth: int):
    self.fn = fn
    self.depth = int(depth)
    self.calls = 0
    self.pairs = 0

  def score(self, pairs: Sequence[tuple[int, Program]]) -> list[ScoredProgram]:
    self.calls += 1
    self.pairs += len(pairs)
    out = []
    for index, program in pairs:
      value = self.fn(index, tuple(program.ids))
      if not isinstance(value, ScoredProgram):
        value = ScoredProgram(reward=float(value), answer=None, layers=len(program))
      out.append(value)
    return out
