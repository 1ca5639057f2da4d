"""`RunRecord`: what one (question, program) run produced, with its JSON form."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


def is_int(x: Any) -> bool:
  """A Python or NumPy integer, not a bool."""
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """One (question, program) run.

  Attributes:
    id: the question's `Example.id`.
    program: the layer ids that ran.
    text: the generated continuation (after the prompt and assistant prefix); for log-likelihood scoring, the
      chosen option's text.
    answer: the extracted answer (an option letter for log-likelihood scoring), or None.
    correct: whether `answer` matches the gold answer.
    layers: layer executions spent (program length x passes: prefill + decode steps, or one prefill per option).
    generated_tokens: tokens generated (the stop token included); 0 for log-likelihood scoring.
    seconds: this row's share of its batch's wall time.
    answer_format: "boxed", "last_number" or "choice_loglik".
  """
  id: str
  program: tuple[int, ...]
  text: str
  answer: str | None
  correct: bool
  layers: int
  generated_tokens: int
  seconds: float
  answer_format: str

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["program"] = list(self.program)
    return out

  @classmethod
  def from_json(cls, obj: Any) -> RunRecord:
    """Reads `to_json`'s dict back; raises ValueError naming what is missing or mistyped."""
    if not isinstance(obj, Mapping):
      raise ValueError(f"a run record must be a JSON object, got {type(obj).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in obj]
    unknown = sorted(set(obj) - set(names))
    if missing or unknown:
      raise ValueError(f"run record has missing keys {missing} / unknown keys {unknown}")
    checks = {"id": isinstance(obj["id"], str), "text": isinstance(obj["text"], str),
              "answer": obj["answer"] is None or isinstance(obj["answer"], str),
              "correct": isinstance(obj["correct"], bool), "answer_format": isinstance(obj["answer_format"], str),
              "program": isinstance(obj["program"], list) and all(is_int(x) for x in obj["program"]),
              "layers": is_int(obj["layers"]), "generated_tokens": is_int(obj["generated_tokens"]),
              "seconds": isinstance(obj["seconds"], (int, float)) and not isinstance(obj["seconds"], bool)}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
      raise ValueError(f"run record fields {bad} have the wrong type")
    return cls(**{**obj, "program": tuple(obj["program"]), "seconds": float(obj["seconds"])})
