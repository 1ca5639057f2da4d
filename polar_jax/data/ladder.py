"""The arithmetic ladder: a controlled synthetic benchmark of elementary arithmetic in five difficulty levels.

Why: the embedded SmolLM2-135M-Instruct is at the floor on every real math benchmark (0-4% on GSM8K, SVAMP,
ASDiv, MAWPS; chance on MathQA and MMLU-STEM), so search and predictor need a task where a tiny model has real
but imperfect accuracy. This is a CONTROLLED SYNTHETIC BENCHMARK; label it so wherever it is reported.

Levels (`arith_level1` .. `arith_level5`):
  1. one-digit addition            a + b,          a, b in 1..9          (81 problems)
  2. two-digit addition/subtraction a + b or a - b, a, b in 10..99, a - b >= 0
  3. one-digit multiplication      a * b,          a, b in 1..9          (81 problems)
  4. three-digit addition          a + b,          a, b in 100..999
  5. two-step expressions          (a op b) op c,  ops in + - *, a, b, c in 2..20 (a multiplier in 2..9),
                                   every intermediate result >= 0
Each problem is phrased with one of ten templates that mix words and symbols ("What is 7 plus 5?", "Compute
23 - 8.", "Subtract 8 from 23.", "Start with 4, add 9, then multiply by 3. What is the result?").

Splits: problems (operator and ordered operands, not texts) are disjoint across train / validation / test, so no
question and no re-phrasing of a question is shared. Levels 2, 4, 5 have large spaces: 1,250 / 250 / 500 distinct
problems, each with one seeded phrasing. Levels 1 and 3 have only 81 problems: they are divided 51 / 10 / 20
(proportional to 1,250 / 250 / 500), and each problem appears in all ten phrasings: 510 / 100 / 200 questions.
Everything is deterministic from the seed through SHA-256 (no Python or NumPy random streams, which may change
between versions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from typing import Callable, Iterator

from polar_jax.data.example import Example, assert_disjoint
from polar_jax.data.splits import ASSIGNMENT_ORDER, SPLIT_SIZES

DESCRIPTION = ("Arithmetic ladder (controlled synthetic benchmark): generated elementary arithmetic questions in "
               "five difficulty levels, words and symbols mixed; deterministic from a seed.")
SYMBOL = {"+": "+", "-": "-", "*": "*"}
WORD = {"+": "plus", "-": "minus", "*": "times"}
SUBJECT = {"+": "addition", "-": "subtraction", "*": "multiplication"}
STEP = {"+": "add", "-": "subtract", "*": "multiply by"}
NUM_PHRASINGS = 10

Problem = tuple  # ("+", a, b) for one operation; ("+", "*", a, b, c) for two steps.


def _one_step_text(problem: Problem, phrasing: int) -> str:
  op, a, b = problem
  s, w = SYMBOL[op], WORD[op]
  noun = {"+": f"What is the sum of {a} and {b}?", "-": f"What is the difference between {a} and {b}?",
          "*": f"What is the product of {a} and {b}?"}[op]
  verb = {"+": f"Add {a} and {b}.", "-": f"Subtract {b} from {a}.", "*": f"Multiply {a} by {b}."}[op]
  return [f"What is {a} {w} {b}?", f"What is {a} {s} {b}?", f"Compute {a} {s} {b}.", f"Calculate {a} {w} {b}.",
          f"{a} {s} {b} = ?", f"How much is {a} {w} {b}?", f"Find the value of {a} {s} {b}.",
          f"Evaluate: {a} {s} {b}", noun, verb][phrasing]


def _two_step_text(problem: Problem, phrasing: int) -> str:
  op1, op2, a, b, c = problem
  first = f"{a} {SYMBOL[op1]} {b}"
  expr = f"({first}) {SYMBOL[op2]} {c}" if op2 == "*" and op1 != "*" else f"{first} {SYMBOL[op2]} {c}"
  first_words = {"+": f"add {a} and {b}", "-": f"subtract {b} from {a}", "*": f"multiply {a} by {b}"}[op1]
  return [f"What is {expr}?", f"Compute {expr}.", f"{expr} = ?", f"Evaluate: {expr}", f"Calculate {expr}.",
          f"Start with {a}, {STEP[op1]} {b}, then {STEP[op2]} {c}. What is the result?",
          f"Take {a}, {STEP[op1]} {b}, and then {STEP[op2]} {c}. What number do you get?",
          f"First {first_words}, then {STEP[op2]} {c}. What is the answer?",
          f"If you {first_words} and then {STEP[op2]} {c}, what do you get?",
          f"What is {a} {WORD[op1]} {b}, then {WORD[op2]} {c}?"][phrasing]


def _apply(op: str, x: int, y: int) -> int:
  return x + y if op == "+" else x - y if op == "-" else x * y


def _answer(problem: Problem) -> int:
  if len(problem) == 3:
    return _apply(*problem)
  op1, op2, a, b, c = problem
  return _apply(op2, _apply(op1, a, b), c)


@dataclasses.dataclass(frozen=True)
class LadderLevel:
  """One rung: a name, a problem sampler (from a uniform-int source) or a full enumeration, and phrasing."""
  level: int
  name: str
  sample: Callable[[Callable[[int, int], int]], Problem | None]  # randint(lo, hi) -> problem (None: reject)
  enumerate_all: Callable[[], list[Problem]] | None = None  # Small spaces are enumerated exhaustively.

  def text(self, problem: Problem, phrasing: int) -> str:
    return _one_step_text(problem, phrasing) if len(problem) == 3 else _two_step_text(problem, phrasing)


def _two_digit(randint):
  op = "+" if randint(0, 1) == 0 else "-"
  a, b = randint(10, 99), randint(10, 99)
  return (op, a, b) if op == "+" or a >= b else None


def _two_step(randint):
  ops = "+-*"
  op1, op2 = ops[randint(0, 2)], ops[randint(0, 2)]
  a = randint(2, 20)
  b = randint(2, 9) if op1 == "*" else randint(2, 20)
  c = randint(2, 9) if op2 == "*" else randint(2, 20)
  if _apply(op1, a, b) < 0 or _answer((op1, op2, a, b, c)) < 0:
    return None
  return (op1, op2, a, b, c)


def _all_pairs(op: str, lo: int, hi: int) -> Callable[[], list[Problem]]:
  return lambda: [(op, a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]


LEVELS: dict[int, LadderLevel] = {spec.level: spec for spec in [
    LadderLevel(1, "one-digit addition", lambda r: ("+", r(1, 9), r(1, 9)), _all_pairs("+", 1, 9)),
    LadderLevel(2, "two-digit addition and subtraction", _two_digit),
    LadderLevel(3, "one-digit multiplication", lambda r: ("*", r(1, 9), r(1, 9)), _all_pairs("*", 1, 9)),
    LadderLevel(4, "three-digit addition", lambda r: ("+", r(100, 999), r(100, 999))),
    LadderLevel(5, "two-step expressions", _two_step),
]}


def _hash_int(*parts) -> int:
  return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _sampled_problems(spec: LadderLevel, seed: int) -> Iterator[Problem]:
  """An endless stream of distinct problems, each draw seeded by (seed, level, draw index)."""
  seen = set()
  for draw in itertools.count():
    calls = itertools.count()
    problem = spec.sample(lambda lo, hi: lo + _hash_int("ladder", seed, spec.level, draw, next(calls)) % (hi - lo + 1))
    if problem is not None and problem not in seen:
      seen.add(problem)
      yield problem


def ladder_splits(level: int, seed: int = 0) -> dict[str, list[Example]]:
  """{"train", "validation", "test"} Examples of one ladder level (see the module docstring)."""
  if level not in LEVELS:
    raise ValueError(f"Arithmetic ladder level must be one of {sorted(LEVELS)}, got {level!r}.")
  spec = LEVELS[level]
  total = sum(SPLIT_SIZES.values())
  if spec.enumerate_all is not None:
    problems = sorted(spec.enumerate_all(), key=lambda p: _hash_int("order", seed, level, p))
    counts = {s: round(len(problems) * SPLIT_SIZES[s] / total) for s in ("test", "validation")}
    counts["train"] = len(problems) - counts["test"] - counts["validation"]
    phrasings = lambda p: range(NUM_PHRASINGS)  # noqa: E731
  else:
    problems = list(itertools.islice(_sampled_problems(spec, seed), total))
    counts = dict(SPLIT_SIZES)
    phrasings = lambda p: [_hash_int("phrasing", seed, level, p) % NUM_PHRASINGS]  # noqa: E731
  splits, start = {}, 0
  for split in ASSIGNMENT_ORDER:
    chosen = problems[start:start + counts[split]]
    start += counts[split]
    rows = sorted(((p, k) for p in chosen for k in phrasings(p)), key=lambda row: _hash_int("row", seed, level, *row))
    rows = rows[:SPLIT_SIZES[split]]
    subject = lambda p: "two_step" if len(p) == 5 else SUBJECT[p[0]]  # noqa: E731
    splits[split] = [Example(id=f"arith_level{level}/{split}/{i}", question=spec.text(p, k), answer=str(_answer(p)),
                             level=level, subject=subject(p)) for i, (p, k) in enumerate(rows)]
  assert_disjoint(splits)
  return {split: splits[split] for split in SPLIT_SIZES}
