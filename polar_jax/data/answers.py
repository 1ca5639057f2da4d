"""Answer extraction and checking: the reward signal of search and the metric of evaluation.

Two answer formats, recorded with every result:

- `"boxed"` (the paper's rule): the answer is the content of the LAST `\\boxed{...}` (balanced braces; also
  `\\fbox{...}` and `\\boxed 5`). A generation without a box is wrong. When the prompt's assistant prefix already
  opened the box (`The answer is \\boxed{`), pass `assistant_prefix` to `score_generation`: prefix + generation is
  what is parsed, so the continuation `42}.` yields `42`. A box still open at the end of the text is closed by
  the end of the text (generation may stop at the token limit right after the answer; the release does the same).
- `"last_number"`: the last number in free-form text (`... so she has 1,250 apples.` -> `1,250`), for small
  models that do not box. (For multiple choice it can only match numeric option texts; use "boxed", where a
  boxed letter is accepted, or score the options by log-likelihood.)

`is_correct(predicted, gold)` decides in this order: multiple-choice letters (and option texts) when `choices`
are given; equal normalized strings; plain numbers compared exactly in pure Python (commas, fractions vs
decimals, `\\frac`/`\\dfrac`, units, percentages, rounded golds); word answers by string only; everything else
by math-verify in a worker process with a hard timeout (`verifier.py`), so that no input can hang a run.
Measured cost per check (2-core CPU): the numeric fast path ~60 us; math-verify in the worker ~1 ms median,
~9 ms p90 once warm; starting the worker (importing math_verify) ~0.8 s, once per process and after a timeout.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

from polar_jax.data import answer_normalize as norm
from polar_jax.data import verifier as verifier_lib
from polar_jax.data.example import CHOICE_LETTERS, Example

ANSWER_FORMATS = ("boxed", "last_number")
DEFAULT_TIMEOUT_S = 5.0

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?![\d.]))?|(?<![\w.])-?\.\d+")
_CHOICE = re.compile(r"^(?:\(?\s*([A-Ja-j])\s*\)|([A-Ja-j]))(?:\s*[.:)]\s*.*|\s.*)?$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Box:
  """One `\\boxed` occurrence: `content` between the braces; `end` = index after the closing brace (or len)."""
  start: int
  end: int
  content: str
  closed: bool


def find_boxes(text: str) -> list[Box]:
  """All `\\boxed{...}`, `\\fbox{...}` and `\\boxed 5` occurrences, in order. Escaped braces `\\{ \\}` are content."""
  boxes = []
  for match in _BOX_COMMAND.finditer(text):
    if boxes and match.start() < boxes[-1].end:
      continue  # A box nested inside the previous box's content.
    i = match.end()
    while i < len(text) and text[i] == " ":
      i += 1
    if i < len(text) and text[i] == "{":
      depth, j = 1, i + 1
      while j < len(text) and depth:
        if text[j] == "\\":
          j += 2
          continue
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
      closed = depth == 0
      content = text[i + 1:j - 1] if closed else text[i + 1:]
      boxes.append(Box(match.start(), j if closed else len(text), content, closed))
    elif i > match.end():  # `\boxed 5`: one token, up to whitespace or `$`.
      token = re.match(r"[^\s$]+", text[i:])
      if token:
        boxes.append(Box(match.start(), i + token.end(), token.group(0).rstrip(".,;"), True))
  return boxes


def last_boxed(text: str) -> str | None:
  """The content of the last box, stripped; None if there is no (non-empty) box."""
  boxes = find_boxes(text)
  if not boxes:
    return None
  content = boxes[-1].content.strip()
  return content or None


def last_number(text: str) -> str | None:
  """The last number in free text (`1,250`, `-3`, `0.5`, `3/4`), or None."""
  matches = _NUMBER.findall(text)
  return re.sub(r"\s+", "", matches[-1]) if matches else None


def extract_answer(text: str, answer_format: str) -> str | None:
  """The answer in `text` under `answer_format` (one of ANSWER_FORMATS), or None when there is none."""
  if answer_format == "boxed":
    return last_boxed(text)
  if answer_format == "last_number":
    return last_number(text)
  raise ValueError(f"Unknown answer format {answer_format!r}; use one of {list(ANSWER_FORMATS)}.")


def choice_letter(predicted: str, num_choices: int) -> str | None:
  """`C`, `(c)`, `C)`, `C. 12`, `\\text{(C)}` -> `"C"` when C is one of the first `num_choices` letters."""
  text = norm.unwrap_text(norm.strip_latex_noise(predicted)).strip()
  match = _CHOICE.match(text)
  if not match:
    return None
  letter = (match.group(1) or match.group(2)).upper()
  return letter if letter in CHOICE_LETTERS[:num_choices] else None


def is_correct(predicted: str | None, gold: str, *, choices: Sequence[str] = (),
               timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """Whether the extracted answer `predicted` equals the normalized `gold` answer (see the module docstring).

  Args:
    predicted: an extracted answer (`extract_answer`), or None (no answer: always wrong).
    gold: `Example.answer`.
    choices: `Example.choices`; when non-empty, `gold` is a letter and `predicted` may be a letter or the text
      of the correct option.
    timeout_s: wall-clock limit for the symbolic check; a check that runs out counts as wrong.
  """
  if predicted is None or not predicted.strip():
    return False
  return _is_correct_cached(predicted.strip(), gold.strip(), tuple(choices), float(timeout_s))


@functools.lru_cache(maxsize=1 << 16)
def _is_correct_cached(predicted: str, gold: str, choices: tuple[str, ...], timeout_s: float) -> bool:
  if choices:
    if gold not in CHOICE_LETTERS[:len(choices)]:
      raise ValueError(f"Multiple-choice gold must be a letter among {list(CHOICE_LETTERS[:len(choices)])}, "
                       f"got {gold!r}.")
    letter = choice_letter(predicted, len(choices))
    if letter is not None:
      return letter == gold
    return _values_equal(predicted, choices[CHOICE_LETTERS.index(gold)], timeout_s)
  return _values_equal(predicted, gold, timeout_s)


def _values_equal(predicted: str, gold: str, timeout_s: float) -> bool:
  if norm.normalize_text(predicted) == norm.normalize_text(gold):
    return True
  gold_number = norm.parse_number(gold)
  pred_number = norm.parse_number(predicted)
  if gold_number is not None and pred_number is not None:
    return norm.numbers_equal(pred_number, gold_number)
  if norm.is_text_answer(gold) or norm.is_text_answer(predicted):
    return False
  return verifier_lib.default_verifier().check(gold, predicted, timeout_s)


def score_generation(text: str, example: Example, answer_format: str, *, assistant_prefix: str = "",
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[str | None, bool]:
  """Extracts the answer from `assistant_prefix + text` and checks it: returns (extracted, correct)."""
  extracted = extract_answer(assistant_prefix + text, answer_format)
  return extracted, is_correct(extracted, example.answer, choices=example.choices, timeout_s=timeout_s)
