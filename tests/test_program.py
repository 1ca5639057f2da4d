"""Tests for polar_jax.programs.program: validation, identity, statistics, JSON and compact forms."""

from __future__ import annotations

import dataclasses
import json
import re

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from polar_jax.programs import Program
from polar_jax.programs import ProgramError
from polar_jax.programs import compact_text
from polar_jax.programs import validate_ids


def test_validate_ids_accepts_python_and_numpy_integers():
  assert validate_ids([0, np.int32(1), np.int64(2), np.uint8(3)], 4) == (0, 1, 2, 3)
  assert validate_ids(np.array([3, 2, 2], np.int32), 4) == (3, 2, 2)
  assert all(type(x) is int for x in validate_ids(np.arange(3), 3))


@pytest.mark.parametrize("ids, message", [
    ([0, True, 2], r"entry True at position 1 is not an integer"),
    ([0, 1.5], r"entry 1.5 at position 1 is not an integer"),
    ([1.0], r"entry 1.0 at position 0 is not an integer"),
    ([0, "1"], r"entry '1' at position 1"),
    (np.array([0.0, 1.0]), r"dtype float64"),
    (np.zeros((2, 2), np.int32), r"1-D"),
    ("012", r"got str"),
    ([], r"at least one layer"),
    ([0, -1], r"Program index -1 out of range for a 30-layer model \(program position 1\)"),
])
def test_validate_ids_rejects_bad_entries(ids, message):
  with pytest.raises(ProgramError, match=message):
    validate_ids(ids, 30)


def test_out_of_range_error_names_position_and_value():
  ids = list(range(12)) + [31]
  with pytest.raises(ProgramError, match=re.escape(
      "Program index 31 out of range for a 30-layer model (program position 12)")):
    Program(ids, 30)


def test_max_len_defaults_to_twice_depth():
  Program([0] * 6, 3)
  with pytest.raises(ProgramError, match=r"7 steps, more than max_len=6"):
    Program([0] * 7, 3)
  assert len(Program([0] * 7, 3, max_len=7)) == 7
  with pytest.raises(ProgramError, match=r"max_len=2"):
    Program([0, 1, 2], 3, max_len=2)
  with pytest.raises(ProgramError, match=r"depth must be a positive integer"):
    Program([0], 0)


def test_identity_sequence_protocol_and_immutability():
  p = Program([0, 1, 1, 3], 4)
  assert p.ids == (0, 1, 1, 3) and p.depth == 4
  assert len(p) == 4 and list(p) == [0, 1, 1, 3] and p[2] == 1 and p[1:3] == (1, 1)
  assert p == Program((0, 1, 1, 3), 4, max_len=20)
  assert hash(p) == hash(Program(np.array([0, 1, 1, 3]), 4))
  assert p != Program([0, 1, 1, 3], 5)
  assert p != (0, 1, 1, 3)
  assert len({p, Program([0, 1, 1, 3], 4), Program([0, 1, 3], 4)}) == 2
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.ids = (0,)


def test_full_and_statistics():
  full = Program.full(5)
  assert full.ids == (0, 1, 2, 3, 4) and full.is_full
  assert full.num_skipped == 0 and full.num_repeated == 0
  p = Program([0, 1, 1, 1, 4, 4], 5)
  assert not p.is_full and not Program([0, 1, 2, 3], 5).is_full
  assert p.num_skipped == 2 and p.num_repeated == 2
  np.testing.assert_array_equal(p.layer_counts(), [1, 3, 0, 0, 2])
  assert p.layer_counts().dtype == np.int32


def test_json_round_trip_and_release_records():
  p = Program([0, 1, 2, 2, 3, 4, 5], 7)
  text = json.dumps(p.to_json())
  assert Program.from_json(json.loads(text), 7) == p
  assert Program.from_json({"path": [0, 1, 2, 4, 5, 6], "score": 1.0}, 7).ids == (0, 1, 2, 4, 5, 6)
  with pytest.raises(ProgramError, match=r"key 'path'"):
    Program.from_json({"ids": [0]}, 7)
  with pytest.raises(ProgramError, match=r"list of ints"):
    Program.from_json("0-6", 7)
  with pytest.raises(ProgramError, match=r"out of range"):
    Program.from_json([0, 7], 7)


@pytest.mark.parametrize("ids, text", [
    (list(range(30)), "0-29"),
    (list(range(12)) + [10, 11] + list(range(12, 30)), "0-9 [10-11]x2 12-29"),
    (list(range(10)) + list(range(12, 30)), "0-9 12-29"),
    ([0, 1, 2, 1, 2, 1, 2, 3], "0 [1-2]x3 3"),
    ([5, 5, 5], "[5]x3"),
    ([5, 4, 3], "5 4 3"),
    ([0, 1, 2, 3, 2, 5], "0-3 2 5"),
    ([0, 1, 0, 1, 2], "[0-1]x2 2"),
])
def test_compact_examples(ids, text):
  p = Program(ids, 30)
  assert p.compact() == text
  assert str(p) == text and repr(p) == f"Program({text!r}, depth=30)"
  assert Program.from_compact(text, 30) == p
  assert compact_text(ids) == compact_text(tuple(ids)) == text  # the same text from plain ids (no depth)


def test_from_compact_accepts_any_spelling():
  assert Program.from_compact(" 0-11   10-29 ", 30) == Program.from_compact("0-9 [10-11]x2 12-29", 30)
  assert Program.from_compact("[3-3]x1 4", 5).ids == (3, 4)


@pytest.mark.parametrize("text, message", [
    ("0-9 foo", r"Cannot read token 'foo' \(token 1"),
    ("0,1", r"Cannot read token '0,1'"),
    ("0-30", r"Program index 30 out of range for a 30-layer model"),
    ("5-3", r"Descending range '5-3'"),
    ("[1-2]x0", r"Repeat count must be at least 1"),
    ("[0-29]x3", r"more than max_len=60"),
    ("", r"at least one layer"),
])
def test_from_compact_errors(text, message):
  with pytest.raises(ProgramError, match=message):
    Program.from_compact(text, 30)


_DEPTH = 12
# Programs built from runs and repeated runs, so that bracketed items are common.
_items = st.tuples(st.integers(0, _DEPTH - 1), st.integers(0, 4), st.integers(1, 3))
_structured = st.lists(_items, min_size=1, max_size=6).map(
    lambda items: [x for a, n, r in items for x in list(range(a, min(a + n, _DEPTH - 1) + 1)) * r][:2 * _DEPTH])
_uniform = st.lists(st.integers(0, _DEPTH - 1), min_size=1, max_size=2 * _DEPTH)


@settings(max_examples=150, deadline=None)
@given(st.one_of(_structured, _uniform))
def test_compact_round_trip(ids):
  p = Program(ids, _DEPTH)
  text = p.compact()
  assert re.fullmatch(r"(\[\d+(-\d+)?\]x\d+|\d+(-\d+)?)( (\[\d+(-\d+)?\]x\d+|\d+(-\d+)?))*", text)
  assert Program.from_compact(text, _DEPTH) == p
