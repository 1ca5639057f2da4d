"""Normalizing answer strings: plain numbers (with commas, fractions, `\\frac`, percentages, units) and short text.

Used twice: once when a dataset is read (gold answers become canonical strings: `"1,000"` -> `"1000"`,
`145.0` -> `"145"`) and at every check, where a pure-Python numeric comparison decides most answers in
microseconds so that math-verify (a separate process, milliseconds) is only needed for real expressions.
"""

from __future__ import annotations

import dataclasses
import fractions
import re

_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|~")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|\\circ|°|\\degree")
_PERCENT = re.compile(r"(?:\\%|%|\s+percent)$")
_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DECIMAL = re.compile(rf"(-?)({_INT}(?:\.\d+)?|\.\d+)")
_SLASH_FRACTION = re.compile(r"(-?)(\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(r"(-?)\\[dt]?frac\s*(?:\{\s*(-?\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
# A trailing unit after a number: `\text{ cm}` (any letters), or plain words of two or more letters (`cm`,
# `square meters`, `dollars`; a single letter is a variable: `5x`), optionally squared or cubed.
_TEXT_UNIT = re.compile(r"(?<=\S)\s*\\(?:text|mbox|mathrm)\s*\{[^{}\d]*\}(?:\^\s*\{?[23]\}?)?\s*$")
_UNIT = re.compile(r"\s*[A-Za-z]{2}[A-Za-z .']*(?:\^\s*\{?[23]\}?)?$")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")


@dataclasses.dataclass(frozen=True)
class ParsedNumber:
  """An exact rational value; `decimals` = digits after the point as written (for rounded golds)."""
  value: fractions.Fraction
  decimals: int = 0
  percent: bool = False


def strip_latex_noise(text: str) -> str:
  """Removes what never changes an answer's value: `$`, `\\left`/`\\right`, LaTeX spacing, `\\displaystyle`."""
  text = text.strip()
  text = text.replace("\\$", "").replace("$", "")
  text = text.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
  text = _SPACING.sub(" ", text)
  return text.strip()


def unwrap_text(text: str) -> str:
  """`\\text{(C)}` -> `(C)`; `5\\text{ cm}` -> `5 cm` (repeatedly, innermost first)."""
  previous = None
  while previous != text:
    previous = text
    text = _TEXT_WRAPPER.sub(r"\1", text)
  return text


def parse_number(text: str) -> ParsedNumber | None:
  """Parses a plain number with optional sign, thousands commas, unit, degree sign or percent; None otherwise.

  Accepted: `1,000`, `-3`, `0.25`, `.5`, `3/4`, `\\frac{3}{4}`, `\\dfrac{-1}{2}`, `\\frac12`, `-(1/3)`, `50\\%`,
  `5 cm`, `5\\text{ cm}^2`, `90^\\circ`, `\\$18`, `x = 3`. Anything with more structure (`2\\sqrt{3}`, `(1, 2)`,
  `2\\frac{1}{2}`) returns None and is left to math-verify.
  """
  text = _TEXT_UNIT.sub("", strip_latex_noise(text))
  text = unwrap_text(text)
  text = _DEGREES.sub("", text).strip()
  text = _ASSIGNMENT.sub("", text)
  text = text.rstrip(".").strip()
  percent = False
  match = _PERCENT.search(text)
  if match:
    percent = True
    text = text[:match.start()].strip()
  number = _parse_bare(text)
  if number is None:  # Maybe a trailing unit: `12 dollars`, `5 cm^2`.
    unit = _UNIT.search(text)
    if unit and unit.start() > 0:
      number = _parse_bare(text[:unit.start()].strip())
  if number is None:
    return None
  return dataclasses.replace(number, percent=percent)


def _parse_bare(text: str) -> ParsedNumber | None:
  text = re.sub(r"^-\s+", "-", re.sub(r"\s*/\s*", "/", text))
  match = re.fullmatch(r"(-?)\((.+)\)", text)
  if match:
    inner = _parse_bare(match.group(2).strip())
    if inner is None:
      return None
    return dataclasses.replace(inner, value=-inner.value) if match.group(1) else inner
  match = _DECIMAL.fullmatch(text)
  if match:
    digits = match.group(2).replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    value = fractions.Fraction(digits)
    return ParsedNumber(-value if match.group(1) else value, decimals)
  match = _SLASH_FRACTION.fullmatch(text)
  if match:
    return _fraction(match.group(1), match.group(2), match.group(3))
  match = _LATEX_FRACTION.fullmatch(text)
  if match:
    return _fraction(match.group(1), match.group(2) or match.group(3), match.group(4) or match.group(5))
  return None


def _fraction(sign: str, numerator: str, denominator: str) -> ParsedNumber | None:
  if int(denominator) == 0:
    return None
  value = fractions.Fraction(int(numerator), int(denominator))
  return ParsedNumber(-value if sign else value)


def numbers_equal(pred: ParsedNumber, gold: ParsedNumber) -> bool:
  """Exact rational equality, with two allowances.

  - Percentages: `50\\%` matches `50` and `0.5` (either reading of the percent sign).
  - Rounded golds: a gold written with >= 3 decimals (`3.33333`, `0.6666666667`, as in MAWPS) matches a
    prediction that rounds to it at that many decimals (`10/3`), since the gold itself is a rounded value.
  """
  pred_values = {pred.value} | ({pred.value / 100} if pred.percent else set())
  gold_values = {gold.value} | ({gold.value / 100} if gold.percent else set())
  for p in pred_values:
    for g in gold_values:
      if p == g:
        return True
      if gold.decimals >= 3 and _round(p, gold.decimals) == g:
        return True
  return False


def _round(value: fractions.Fraction, decimals: int) -> fractions.Fraction:
  scale = 10 ** decimals
  return fractions.Fraction(round(value * scale), scale)


def format_number(value: float | int | str) -> str:
  """A canonical gold string for a numeric answer: `145.0` -> `"145"`, `"2,125"` -> `"2125"`, `0.5` -> `"0.5"`."""
  if isinstance(value, str):
    parsed = parse_number(value)
    if parsed is None:
      raise ValueError(f"Not a plain number: {value!r}")
    return _canonical(parsed.value)
  if isinstance(value, bool):
    raise ValueError(f"Not a number: {value!r}")
  if float(value).is_integer():
    return str(int(value))
  return repr(float(value))


def _canonical(value: fractions.Fraction) -> str:
  """Integers as integers, terminating decimals without trailing zeros (`0.50` -> `0.5`), else `p/q`."""
  if value.denominator == 1:
    return str(value.numerator)
  denominator = value.denominator
  for prime in (2, 5):
    while denominator % prime == 0:
      denominator //= prime
  if denominator != 1:
    return f"{value.numerator}/{value.denominator}"
  digits = 0
  while (value * 10 ** digits).denominator != 1:
    digits += 1
  sign = "-" if value < 0 else ""
  scaled = abs(value.numerator * 10 ** digits // value.denominator)
  whole, frac = divmod(scaled, 10 ** digits)
  return f"{sign}{whole}.{frac:0{digits}d}"


def normalize_text(text: str) -> str:
  """A loose string key for text answers (`"Yes"`, `"3:30 p.m."`, `"Mrs. Hilt"`): case, spaces and surrounding
  punctuation do not matter."""
  text = unwrap_text(strip_latex_noise(text)).lower()
  text = re.sub(r"\s+", "", text)
  return text.strip(".,;:!?\"'")


def is_text_answer(text: str) -> bool:
  """True for word answers (`"Purple"`, `"They are equal"`) that must never go to a symbolic checker: sympy
  would read `Red` as the product R*e*d and accept `Der`."""
  text = unwrap_text(strip_latex_noise(text))
  return bool(re.fullmatch(r"[A-Za-z][A-Za-z'’ .,-]*", text)) and bool(re.search(r"[A-Za-z]{3,}", text))
