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

V2_SPLIT_SIZES = {"train": 1250, "validation": 500, "test": 500}
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


def _v1_text(problem: Problem, phrasing: int) -> str:
  return _one_step_text(problem, phrasing) if len(problem) == 3 else _two_step_text(problem, phrasing)


def _v1_subject(problem: Problem) -> str:
  return "two_step" if len(problem) == 5 else SUBJECT[problem[0]]


@dataclasses.dataclass(frozen=True)
class LadderLevel:
  """One rung: a name, a problem sampler (from a uniform-int source) or a full enumeration, and phrasing.

  `text(problem, phrasing)`, `answer(problem)` and `subject(problem)` default to the v1 arithmetic forms.
  `space` is the number of distinct problems the sampler can produce (it must exceed the 2,000 drawn).
  """
  level: int
  name: str
  sample: Callable[[Callable[[int, int], int]], Problem | None]  # randint(lo, hi) -> problem (None: reject)
  enumerate_all: Callable[[], list[Problem]] | None = None  # Small spaces are enumerated exhaustively.
  text: Callable[[Problem, int], str] = _v1_text
  answer: Callable[[Problem], int] = _answer
  subject: Callable[[Problem], str] = _v1_subject
  space: int | None = None
  version: int = 1

  @property
  def split_sizes(self) -> dict[str, int]:
    """v1: the MATH protocol's 1,250 / 250 / 500; v2: 1,250 / 500 / 500 (validation large enough to measure)."""
    return dict(SPLIT_SIZES) if self.version == 1 else V2_SPLIT_SIZES


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


# ----- Ladder v2: levels with large problem spaces (>= 2,000 distinct problems each, one phrasing per problem).

def _two_plus_one(randint):
  """A two-digit number plus or minus a one-digit number; addition in either order."""
  kind, a, b = randint(0, 2), randint(10, 99), randint(1, 9)
  return ("+", a, b) if kind == 0 else ("+", b, a) if kind == 1 else ("-", a, b)


def _three_addends(randint):
  return ("sum3", randint(1, 14), randint(1, 14), randint(1, 14))


def _three_text(problem: Problem, phrasing: int) -> str:
  _, a, b, c = problem
  return [f"What is {a} + {b} + {c}?", f"What is {a} plus {b} plus {c}?", f"Compute {a} + {b} + {c}.",
          f"{a} + {b} + {c} = ?", f"Add {a}, {b} and {c}.", f"What is the sum of {a}, {b} and {c}?",
          f"Calculate {a} plus {b} plus {c}.", f"Find the value of {a} + {b} + {c}.", f"Evaluate: {a} + {b} + {c}",
          f"How much is {a} plus {b} plus {c}?"][phrasing]


NAMES = ("Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe", "Jack", "Ella", "Noah", "Ruby",
         "Omar", "Ivy", "Liam", "Nora", "Eli", "Ava")
OBJECTS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "balloons", "cards", "shells")


def _word_problem(randint):
  """One step: someone has a things and gains (+) or loses (-) b of them. Name, object and template are the
  phrasing (seeded per problem); the problem is the operator and operands."""
  if randint(0, 1) == 0:
    return ("+", randint(1, 60), randint(1, 30))
  a, b = randint(2, 60), randint(1, 30)
  return ("-", a, b) if b < a else None


def _word_text(problem: Problem, phrasing: int) -> str:
  op, a, b = problem
  key = _hash_int("word", *problem)
  name, thing = NAMES[key % len(NAMES)], OBJECTS[(key // len(NAMES)) % len(OBJECTS)]
  if op == "+":
    return [f"{name} has {a} {thing}. {name} gets {b} more. How many {thing} does {name} have now?",
            f"{name} had {a} {thing} and found {b} more. How many {thing} does {name} have?",
            f"There are {a} {thing} in a box. {name} puts in {b} more. How many {thing} are in the box now?",
            f"{name} collected {a} {thing} on Monday and {b} {thing} on Tuesday. How many {thing} in total?",
            f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have?"][phrasing % 5]
  return [f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have left?",
          f"{name} had {a} {thing} and lost {b} of them. How many {thing} are left?",
          f"There are {a} {thing} in a box. {name} takes out {b}. How many {thing} are in the box now?",
          f"{name} bought {a} {thing} and used {b}. How many {thing} remain?",
          f"{name} has {a} {thing}. {name} sells {b} of them. How many {thing} does {name} have now?"][phrasing % 5]


def _double_half(randint):
  return ("double", randint(1, 1200)) if randint(0, 1) == 0 else ("half", 2 * randint(1, 1200))


def _double_half_text(problem: Problem, phrasing: int) -> str:
  op, n = problem
  if op == "double":
    return [f"What is double {n}?", f"What is twice {n}?", f"Double {n}.", f"What is {n} doubled?",
            f"What is two times {n}?"][phrasing % 5]
  return [f"What is half of {n}?", f"Halve {n}.", f"What is {n} divided by 2?", f"What is one half of {n}?",
          f"What is {n} halved?"][phrasing % 5]


def _successor(randint):
  return ("next" if randint(0, 1) == 0 else "prev", randint(1, 2000))


def _successor_text(problem: Problem, phrasing: int) -> str:
  op, n = problem
  if op == "next":
    return [f"What number comes after {n}?", f"What is the next number after {n}?", f"What is one more than {n}?",
            f"Which number follows {n}?", f"What is {n} plus one?"][phrasing % 5]
  return [f"What number comes before {n}?", f"What is the number just before {n}?", f"What is one less than {n}?",
          f"Which number precedes {n}?", f"What is {n} minus one?"][phrasing % 5]


def _next_only(randint):
  return ("next", randint(1, 3000))


def _larger(randint):
  a, b = randint(1, 99), randint(1, 99)
  return ("max", a, b) if a != b else None


def _larger_text(problem: Problem, phrasing: int) -> str:
  _, a, b = problem
  return [f"Which is larger, {a} or {b}?", f"What is the larger of {a} and {b}?", f"Which number is bigger: {a} or {b}?",
          f"What is the maximum of {a} and {b}?", f"Of {a} and {b}, which is greater?"][phrasing % 5]


def _last_digit(randint):
  return ("last", randint(10, 9999))


def _last_digit_text(problem: Problem, phrasing: int) -> str:
  n = problem[1]
  return [f"What is the last digit of {n}?", f"What is the units digit of {n}?", f"What digit is {n} ending in?",
          f"What is the ones digit of {n}?", f"Which digit does {n} end with?"][phrasing % 5]


def _times_ten(randint):
  return ("*", randint(1, 2500), 10)


def _v2_answer(problem: Problem) -> int:
  op = problem[0]
  if op == "max":
    return max(problem[1:])
  if op == "last":
    return problem[1] % 10
  if op == "sum3":
    return sum(problem[1:])
  if op in ("double", "half"):
    return problem[1] * 2 if op == "double" else problem[1] // 2
  if op in ("next", "prev"):
    return problem[1] + (1 if op == "next" else -1)
  return _answer(problem)


_V2_SUBJECT = {"max": "comparison", "last": "digits", "sum3": "addition", "double": "doubling", "half": "halving", "next": "successor",
               "prev": "predecessor"}


def _v2_subject(problem: Problem) -> str:
  return _V2_SUBJECT.get(problem[0]) or SUBJECT[problem[0]]


LEVELS: dict[int, LadderLevel] = {spec.level: spec for spec in [
    LadderLevel(1, "one-digit addition", lambda r: ("+", r(1, 9), r(1, 9)), _all_pairs("+", 1, 9)),
    LadderLevel(2, "two-digit addition and subtraction", _two_digit),
    LadderLevel(3, "one-digit multiplication", lambda r: ("*", r(1, 9), r(1, 9)), _all_pairs("*", 1, 9)),
    LadderLevel(4, "three-digit addition", lambda r: ("+", r(100, 999), r(100, 999))),
    LadderLevel(5, "two-step expressions", _two_step),
    LadderLevel(6, "two-digit plus or minus one-digit", _two_plus_one, answer=_v2_answer, subject=_v2_subject,
                space=90 * 9 * 3, version=2),
    LadderLevel(7, "three addends up to 14", _three_addends, text=_three_text, answer=_v2_answer,
                subject=_v2_subject, space=14 ** 3, version=2),
    LadderLevel(8, "one-step word problems", _word_problem, text=_word_text, answer=_v2_answer,
                subject=_v2_subject, space=60 * 30 + sum(min(30, a - 1) for a in range(2, 61)), version=2),
    LadderLevel(9, "doubling and halving", _double_half, text=_double_half_text, answer=_v2_answer,
                subject=_v2_subject, space=2400, version=2),
    LadderLevel(10, "successor and predecessor", _successor, text=_successor_text, answer=_v2_answer,
                subject=_v2_subject, space=4000, version=2),
    LadderLevel(11, "successor", _next_only, text=_successor_text, answer=_v2_answer, subject=_v2_subject,
                space=3000, version=2),
    LadderLevel(12, "larger of two", _larger, text=_larger_text, answer=_v2_answer, subject=_v2_subject,
                space=99 * 98, version=2),
    LadderLevel(13, "last digit", _last_digit, text=_last_digit_text, answer=_v2_answer, subject=_v2_subject,
                space=9990, version=2),
    LadderLevel(14, "times ten", _times_ten, answer=_v2_answer, subject=_v2_subject, space=2500, version=2),
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


def problem_id(level: int, problem: Problem) -> str:
  """The problem's stable name, shared by all its phrasings (`Example.group`): `arith_level1:+,3,4`."""
  return f"arith_level{level}:" + ",".join(map(str, problem))


def ladder_splits(level: int, seed: int = 0) -> dict[str, list[Example]]:
  """{"train", "validation", "test"} Examples of one ladder level (see the module docstring)."""
  if level not in LEVELS:
    raise ValueError(f"Arithmetic ladder level must be one of {sorted(LEVELS)}, got {level!r}.")
  spec = LEVELS[level]
  sizes = spec.split_sizes
  total = sum(sizes.values())
  if spec.enumerate_all is not None:
    problems = sorted(spec.enumerate_all(), key=lambda p: _hash_int("order", seed, level, p))
    counts = {s: round(len(problems) * sizes[s] / total) for s in ("test", "validation")}
    counts["train"] = len(problems) - counts["test"] - counts["validation"]
    phrasings = lambda p: range(NUM_PHRASINGS)  # noqa: E731
  else:
    problems = list(itertools.islice(_sampled_problems(spec, seed), total))
    counts = dict(sizes)
    phrasings = lambda p: [_hash_int("phrasing", seed, level, p) % NUM_PHRASINGS]  # noqa: E731
  splits, start = {}, 0
  for split in ASSIGNMENT_ORDER:
    chosen = problems[start:start + counts[split]]
    start += counts[split]
    rows = sorted(((p, k) for p in chosen for k in phrasings(p)), key=lambda row: _hash_int("row", seed, level, *row))
    rows = rows[:sizes[split]]
    splits[split] = [Example(id=f"arith_level{level}/{split}/{i}", question=spec.text(p, k),
                             answer=str(spec.answer(p)), level=level, subject=spec.subject(p),
                             group=problem_id(level, p)) for i, (p, k) in enumerate(rows)]
  assert_disjoint(splits)
  return {split: splits[split] for split in SPLIT_SIZES}
