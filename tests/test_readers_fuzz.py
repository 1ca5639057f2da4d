"""Property tests of the three readers of search output: the records reader, the release importer, the supervision
reader. Random truncation, random bytes and a value of any JSON type in any field: each input either loads
faithfully (nothing dropped) or raises the project's own error naming the file, the line and the field; never a
KeyError / TypeError traceback."""

import json
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polar_jax.errors import UserError
from polar_jax.predictor.supervision import SupervisionError, load_supervision
from polar_jax.search import FunctionScorer, SearchConfig, search, to_polar
from polar_jax.search.interchange import InterchangeError, import_polar
from polar_jax.search.records import CorruptRecordsError, dumps_record, read_records

DEPTH = 4
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON_SCALARS = st.none() | st.booleans() | st.integers(-3, 10 ** 20) | st.floats(allow_nan=False) | st.text(max_size=5)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


def _records():
  examples = [{"id": f"q{i}", "question": f"What is {i}?", "answer": str(i), "level": i} for i in range(3)]
  return search(examples, FunctionScorer(lambda i, ids: float(i not in ids), DEPTH),
                SearchConfig(num_simulations=6, seed=1))


RECORDS = _records()
FOREIGN = [  # The release's merged layout and RE-PoLar's (with a question, for the supervision reader).
    {"query_id": "dart-1", "question": "q?", "gt_ans": "4", "initial_score": 0.0,
     "final_valid_transitions": [[0, 1, 1, 2, 3], {"path": [0, 1, 3]}], "final_invalid_transitions": [[0, 1, 2, 3]],
     "sample_info": {"question": "q?", "ground_truth": "4"}},
    {"question": "r?", "gt_ans": 7, "initial_transition_metric": 1.0, "final_valid_transitions": [[0, 1, 2, 3]],
     "sample_info": {"query_id": "math-2", "domain": "Algebra", "math_level": 3},
     "search_trajectory": [{"path": [0, 1, 2, 3], "parent_path": None, "reward": 1.0},
                           {"path": [0, 2, 3], "parent_path": [0, 1, 2, 3], "reward": 0.0}]},
]


def _paths(obj, prefix=()):
  """Every (path) to a value inside obj: keys and list positions."""
  out = [prefix] if prefix else []
  if isinstance(obj, dict):
    for k, v in obj.items():
      out += _paths(v, prefix + (k,))
  elif isinstance(obj, list):
    for i, v in enumerate(obj):
      out += _paths(v, prefix + (i,))
  return out


def _set(obj, path, value):
  obj = json.loads(json.dumps(obj))
  node = obj
  for step in path[:-1]:
    node = node[step]
  if value is _DELETE:
    del node[path[-1]]
  else:
    node[path[-1]] = value
  return obj


_DELETE = object()


def _field_name(path):
  """The last key of a path: what the message must name."""
  return next(str(p) for p in reversed(path) if isinstance(p, str))


def _tmp(name, data: bytes) -> pathlib.Path:
  path = pathlib.Path(tempfile.mkdtemp()) / name
  path.write_bytes(data)
  return path


def _one_line(e):
  assert isinstance(e, UserError)
  return str(e)


# The records reader ---------------------------------------------------------------------------------------------

RECORDS_TEXT = "".join(dumps_record(r) + "\n" for r in RECORDS).encode()


@FAST
@given(st.integers(0, len(RECORDS_TEXT)))
def test_records_reader_on_a_truncated_file(cut):
  path = _tmp("s.jsonl", RECORDS_TEXT[:cut])
  complete = RECORDS_TEXT[:cut].count(b"\n")
  try:
    got = read_records(path)
  except CorruptRecordsError as e:
    assert str(path) in str(e) and f"line {complete + 1}: incomplete last line" in str(e)
    assert [n for n, _ in e.problems] == [complete + 1]
    return
  assert got == RECORDS[:complete]  # A cut at a line end: the complete lines, all of them.


@FAST
@given(st.binary(max_size=200))
def test_records_reader_on_random_bytes(data):
  path = _tmp("s.jsonl", data)
  try:
    assert read_records(path) == []  # Only blank lines can load.
  except CorruptRecordsError as e:
    assert str(path) in _one_line(e) and all(f"line {n}:" in str(e) for n, _ in e.problems[:10])


RECORD_OBJ = RECORDS[0].to_json()
RECORD_FIELDS = _paths(RECORD_OBJ)


@FAST
@given(st.sampled_from(RECORD_FIELDS), JSON_VALUES | st.just(_DELETE))
def test_records_reader_on_any_value_in_any_field(field, value):
  bad = _set(RECORD_OBJ, field, value)
  path = _tmp("s.jsonl", (dumps_record(RECORDS[1]) + "\n" + json.dumps(bad) + "\n").encode())
  try:
    got = read_records(path)
  except CorruptRecordsError as e:
    (line, reason), = e.problems  # The good line is not among them.
    assert line == 2 and str(path) in str(e) and "line 2:" in str(e)
    assert _field_name(field) in reason or (field[0] == "depth" and "program" in reason), reason
    return
  if field[0] in ("valid", "invalid") and len(field) == 3 and value is _DELETE and field[2] in ("visits", "answer"):
    bad = _set(bad, field, None)  # An entry's visits / answer are optional: absent reads as null (extra keys
    # such as `simulation` are kept verbatim, so an absent one stays absent).
  assert [r.to_json() for r in got] == [RECORDS[1].to_json(), bad]  # Loaded as written, nothing dropped.


def test_records_reader_bad_inputs_one_by_one(tmp_path):
  """The messages of the bad inputs listed in the issue's note."""
  good = dumps_record(RECORDS[0])
  cases = {
      "cut": good[:40],
      "bytes": "\udcff",
      "long number": "1" * 5000,
      "deep": "[" * 100000,
      "answer": json.dumps({**RECORD_OBJ, "initial_answer": 3}),
      "no depth": json.dumps({k: v for k, v in RECORD_OBJ.items() if k != "depth"}),
  }
  reasons = {}
  for name, line in cases.items():
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(line.encode("utf-8", "surrogateescape") + (b"" if name == "cut" else b"\n"))
    with pytest.raises(CorruptRecordsError) as info:
      read_records(path)
    reasons[name] = info.value.problems[0][1]
  assert reasons["cut"].startswith("incomplete last line")
  assert reasons["bytes"] == "not UTF-8 text (byte 0 of the line)"
  assert reasons["long number"].startswith("not valid JSON (Exceeds the limit")
  assert reasons["deep"].startswith("not valid JSON (maximum recursion depth")
  assert reasons["answer"] == "'initial_answer' must be a string or null, got int"
  assert reasons["no depth"] == "missing keys ['depth']"


# The release importer -------------------------------------------------------------------------------------------

RELEASE_SAMPLES = to_polar(RECORDS[:2])["samples"] + FOREIGN


def _release_text(samples) -> bytes:
  """One sample per line after a header line: sample n starts on line n + 2."""
  return ('{"samples": [\n' + ",\n".join(json.dumps(s) for s in samples) + "\n]}\n").encode()


RELEASE_TEXT = _release_text(RELEASE_SAMPLES)
RELEASE_RECORDS = import_polar(_tmp("m.json", RELEASE_TEXT), depth=DEPTH)


def test_the_release_fixture_loads():
  assert [r.id for r in RELEASE_RECORDS] == ["q0", "q1", "dart-1", "math-2"]
  assert RELEASE_RECORDS[:2] == RECORDS[:2]


@FAST
@given(st.integers(0, len(RELEASE_TEXT)))
def test_release_importer_on_a_truncated_file(cut):
  path = _tmp("m.json", RELEASE_TEXT[:cut])
  try:
    got = import_polar(path, depth=DEPTH)
  except InterchangeError as e:
    assert str(path) in _one_line(e) and ", line " in str(e) and "\n" not in str(e)
    return
  assert got == RELEASE_RECORDS  # Only the trailing newline can go.


@FAST
@given(st.binary(max_size=200))
def test_release_importer_on_random_bytes(data):
  path = _tmp("m.json", data)
  try:
    got = import_polar(path, depth=DEPTH)
  except InterchangeError as e:
    assert str(path) in _one_line(e) and "\n" not in str(e)
    return
  assert isinstance(got, list)  # e.g. "[]" or "{}": a file of no samples


RELEASE_FIELDS = [(n, f) for n, s in enumerate(RELEASE_SAMPLES) for f in _paths(s)]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(RELEASE_FIELDS), JSON_VALUES | st.just(_DELETE))
def test_release_importer_on_any_value_in_any_field(where, value):
  number, field = where
  samples = list(RELEASE_SAMPLES)
  samples[number] = _set(samples[number], field, value)
  path = _tmp("m.json", _release_text(samples))
  try:
    got = import_polar(path, depth=DEPTH)
  except InterchangeError as e:
    message = _one_line(e)
    assert message.startswith(f"{path}, line {number + 2} (sample {number}): ") and "\n" not in message, message
    assert _field_name(field) in message or "depth" in message or " id " in message, message
    return
  assert len(got) == len(samples)  # Nothing dropped.
  assert [r.id for i, r in enumerate(got) if i != number] == [r.id for i, r in enumerate(RELEASE_RECORDS)
                                                              if i != number]


def test_release_importer_bad_inputs_one_by_one(tmp_path):
  def message(text, depth=DEPTH):
    path = tmp_path / "m.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InterchangeError) as info:
      import_polar(path, depth=depth)
    return str(info.value).replace(str(path), "m.json")

  good = FOREIGN[0]
  assert message(RELEASE_TEXT[:100]).startswith("m.json, line 2, column ")
  assert message(b"\xff\xfe") == "m.json, line 1: not UTF-8 text (byte 0); is this a merged_mcts_samples.json?"
  assert message("5") == ("m.json: expected the release's layout: {\"samples\": [sample, ...]}, a list of samples or "
                          "an object of samples keyed by id, got an integer.")
  assert message(json.dumps([good, 3])) == "m.json, line 1 (sample 1): a sample must be a JSON object, got an integer."
  assert message(json.dumps({"q17": dict(good, question=5)}, indent=1)) == (
      "m.json, line 2 (sample 'q17'): field question: the question must be a string, got an integer.")
  assert message(json.dumps([dict(good, final_valid_transitions=[[0, 1.5]])])) == (
      "m.json, line 1 (sample 0): field final_valid_transitions[0][1]: a layer id must be an integer, got a number.")
  assert message(json.dumps([dict(good, initial_score="1")])) == (
      "m.json, line 1 (sample 0): field initial_score: the full program's score must be a finite number, got '1'.")
  assert message(json.dumps([dict(good, query_id=[1])])) == (
      "m.json, line 1 (sample 0): field query_id: a question id must be a string or an integer, got a list.")
  own = dict(to_polar(RECORDS[:1])["samples"][0])
  own["polar_jax"] = dict(own["polar_jax"], invalid=[])
  assert message(json.dumps([own])) == (
      "m.json, line 1 (sample 0): field polar_jax.invalid: has 0 entries for the 6 paths of final_invalid_transitions.")
  assert message(json.dumps([good])[:-1] + "," + "1" * 5000 + "]").startswith(
      "m.json: not valid JSON (Exceeds the limit (4300 digits)")


# The supervision reader -----------------------------------------------------------------------------------------

SUPERVISION_TEXT = RECORDS_TEXT


@FAST
@given(st.integers(0, len(SUPERVISION_TEXT)))
def test_supervision_reader_on_a_truncated_file(cut):
  path = _tmp("s.jsonl", SUPERVISION_TEXT[:cut])
  lines = [line for line in SUPERVISION_TEXT[:cut].split(b"\n") if line.strip()]
  try:
    got = load_supervision(path, depth=DEPTH, empty_valid="keep")
  except SupervisionError as e:
    message = _one_line(e)
    assert str(path) in message and (f"line {len(lines)}: malformed JSON" in message or "no usable records" in message)
    return
  assert [r.id for r in got.records] == [r.id for r in RECORDS[:len(lines)]]


@FAST
@given(st.binary(max_size=200), st.sampled_from(["s.jsonl", "m.json"]))
def test_supervision_reader_on_random_bytes(data, name):
  path = _tmp(name, data)
  with pytest.raises(SupervisionError) as info:
    load_supervision(path, depth=DEPTH, empty_valid="keep")
  assert str(path) in _one_line(info.value) and "\n" not in str(info.value)


@FAST
@given(st.sampled_from(RECORD_FIELDS), JSON_VALUES | st.just(_DELETE))
def test_supervision_reader_on_any_value_in_any_field_of_a_line(field, value):
  bad = _set(RECORD_OBJ, field, value)
  path = _tmp("s.jsonl", (dumps_record(RECORDS[1]) + "\n" + json.dumps(bad) + "\n").encode())
  try:
    got = load_supervision(path, empty_valid="keep")
  except SupervisionError as e:
    message = _one_line(e)
    assert message.startswith(f"{path}, line 2") and "\n" not in message, message
    assert _field_name(field) in message or "depth" in message, message
    return
  assert [r.id for r in got.records] == [RECORDS[1].id, str(bad.get("id", "line-2"))]


SUPERVISED_SAMPLES = to_polar(RECORDS[:2])["samples"] + FOREIGN
SUPERVISION_FIELDS = [(n, f) for n, s in enumerate(SUPERVISED_SAMPLES) for f in _paths(s)
                      if f[0] != "polar_jax"]  # The supervision reader reads the release's fields only.


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SUPERVISION_FIELDS), JSON_VALUES | st.just(_DELETE))
def test_supervision_reader_on_any_value_in_any_field_of_a_sample(where, value):
  number, field = where
  samples = list(SUPERVISED_SAMPLES)
  samples[number] = _set(samples[number], field, value)
  path = _tmp("m.json", _release_text(samples))
  try:
    got = load_supervision(path, depth=DEPTH, empty_valid="keep")
  except SupervisionError as e:
    message = _one_line(e)
    assert message.startswith(f"{path}, line {number + 2} (sample {number}): ") and "\n" not in message, message
    assert _field_name(field) in message or "depth" in message or "question" in message, message
    return
  assert len(got.records) == len(samples)  # Nothing dropped.


def test_supervision_ids_match_the_importer():
  path = _tmp("m.json", _release_text(SUPERVISED_SAMPLES))
  got = load_supervision(path, depth=DEPTH, empty_valid="keep")
  assert [r.id for r in got.records] == [r.id for r in RELEASE_RECORDS]
