"""The one record schema every math dataset is read into.

Every source (GSM8K, MATH, SVAMP, ..., the arithmetic ladder, a user's own jsonl) becomes a list of `Example`s,
so prompts, answer checking, search and evaluation never look at a source's own field names.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from typing import Any, Mapping, Sequence

CHOICE_LETTERS = "ABCDEFGHIJ"


@dataclasses.dataclass(frozen=True)
class Example:
  """One question with its normalized gold answer.

  Attributes:
    id: unique within a dataset, stable across runs (`<source>/<split>/<line index>` for the shipped files).
    question: the question text as shown to the model (multiple-choice options are NOT included here; prompts
      add them from `choices`).
    answer: the normalized gold answer: a plain number string (`"1000"`, `"0.5"`, `"-3"`), a LaTeX
      expression for MATH (`"\\frac{1}{2}"`), a short text (ASDiv `"Yes"`), or an option letter (`"C"`) for
      multiple choice.
    level: difficulty 1-5 where the source has one (MATH, the arithmetic ladder), else 0.
    subject: the source's topic or problem type (`"Algebra"`, `"high_school_physics"`), else "".
    choices: option texts for multiple choice, in letter order (A, B, ...); empty otherwise.
    group: the problem this question phrases, where one problem has several phrasings (the arithmetic ladder's
      `arith_level1:+,3,4`); "" means the question is its own problem. Statistics resample groups.
  """
  id: str
  question: str
  answer: str
  level: int = 0
  subject: str = ""
  choices: tuple[str, ...] = ()
  group: str = ""

  def __post_init__(self):
    if not isinstance(self.id, str) or not self.id:
      raise ValueError(f"Example id must be a non-empty string, got {self.id!r}.")
    if not isinstance(self.question, str) or not self.question.strip():
      raise ValueError(f"Example {self.id!r} has an empty question.")
    if not isinstance(self.answer, str) or not self.answer.strip():
      raise ValueError(f"Example {self.id!r} has an empty answer (question: {self.question[:80]!r}).")
    if not isinstance(self.level, int) or self.level < 0:
      raise ValueError(f"Example {self.id!r} has level {self.level!r}; use an int >= 0 (0 = no level).")
    if not isinstance(self.choices, tuple):  # Lists from callers are accepted and frozen.
      object.__setattr__(self, "choices", tuple(self.choices))
    if len(self.choices) > len(CHOICE_LETTERS):
      raise ValueError(f"Example {self.id!r} has {len(self.choices)} choices; at most {len(CHOICE_LETTERS)}.")
    if self.choices and self.answer not in CHOICE_LETTERS[:len(self.choices)]:
      raise ValueError(
          f"Example {self.id!r} is multiple choice with {len(self.choices)} options, so its answer must be one of "
          f"{list(CHOICE_LETTERS[:len(self.choices)])}, got {self.answer!r}.")

  @property
  def is_multiple_choice(self) -> bool:
    return bool(self.choices)

  def to_dict(self) -> dict[str, Any]:
    out = {"id": self.id, "question": self.question, "answer": self.answer, "level": self.level,
           "subject": self.subject, "choices": list(self.choices)}
    if self.group:
      out["group"] = self.group
    return out

  def to_json(self) -> str:
    """One JSON object on one line (the jsonl form)."""
    return json.dumps(self.to_dict(), ensure_ascii=False)

  @classmethod
  def from_dict(cls, record: Mapping[str, Any]) -> Example:
    unknown = set(record) - {"id", "question", "answer", "level", "subject", "choices", "group"}
    if unknown:
      raise ValueError(f"Unknown Example fields {sorted(unknown)}; expected id, question, answer, level, subject, "
                       "choices, group.")
    return cls(id=record["id"], question=record["question"], answer=record["answer"],
               level=int(record.get("level", 0)), subject=record.get("subject", "") or "",
               choices=tuple(record.get("choices", ()) or ()), group=record.get("group", "") or "")

  @classmethod
  def from_json(cls, line: str) -> Example:
    return cls.from_dict(json.loads(line))


def normalize_question(text: str) -> str:
  """The key under which two question texts count as the same question (for deduplication across splits).

  Unicode NFKC, lower case, all whitespace runs collapsed: formatting differences do not make a new question.
  """
  text = unicodedata.normalize("NFKC", text).lower()
  return re.sub(r"\s+", " ", text).strip()


def assert_disjoint(splits: Mapping[str, Sequence[Example]]) -> None:
  """Raises ValueError if any normalized question text occurs twice within or across the given splits."""
  seen: dict[str, str] = {}
  for split, examples in splits.items():
    for ex in examples:
      key = normalize_question(ex.question)
      if key in seen:
        raise ValueError(f"Question {ex.question[:80]!r} occurs in split {seen[key]!r} and again in {split!r} "
                         f"(id {ex.id!r}); splits must not share question text.")
      seen[key] = split
