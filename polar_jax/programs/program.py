"""Programs of layers: validated, hashable sequences of layer ids, and their compact text form.

A *program* says which pretrained layers run, in which order, for one input: the full program of a depth-D
model is `0, 1, ..., D-1`; a program may skip layers (`0-9 12-29`) or loop blocks (`0-11 10-29`). Programs
are plain data everywhere (search memo keys, JSON records, predictor targets, executor schedules), so this
module validates them once, on the host, with errors that name the bad entry, before anything is traced.

Compact text form (for logs, plots and hand-written configs). Items are separated by whitespace:

  item   := run | '[' run ']x' r      (r >= 1; the run is spelled r times in a row)
  run    := a | a '-' b               (a <= b; the consecutive layers a, a+1, ..., b)

The text is the concatenation of its items, so reading is unambiguous. `Program.compact()` writes runs as
long as possible, with `a-b` only when a < b, and writes a block that is immediately repeated as `[a-b]xr`
(r >= 2), splitting the run it belongs to: `0-11 10-11 12-29` is written `0-9 [10-11]x2 12-29`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from polar_jax.errors import UserError


class ProgramError(UserError, ValueError):
  """A program (or its text / JSON form) is not a valid sequence of layer ids for the model."""


def _check_count(value: Any, name: str) -> int:
  """Returns `value` as a Python int >= 1, or raises naming the argument."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ProgramError(f"{name} must be a positive integer, got {value!r}.")
  return int(value)


def validate_ids(ids: Iterable[int], depth: int, max_len: int | None = None) -> tuple[int, ...]:
  """Checks a sequence of layer ids for a `depth`-layer model and returns it as a tuple of Python ints.

  Accepts Python and numpy integers (and 1-D integer arrays); rejects bools, floats (even 1.0), strings,
  an empty sequence and one longer than `max_len` (default 2 * depth).
  """
  depth = _check_count(depth, "depth")
  max_len = 2 * depth if max_len is None else _check_count(max_len, "max_len")
  if isinstance(ids, (str, bytes, Mapping, set, frozenset)):
    raise ProgramError(
        f"A program must be a sequence of integer layer ids, got {type(ids).__name__} {ids!r}"
        " (use Program.from_compact for text and Program.from_json for JSON records).")
  if isinstance(ids, np.ndarray):
    if ids.ndim != 1:
      raise ProgramError(f"A program must be a 1-D sequence of layer ids, got an array of shape {ids.shape}.")
    if ids.dtype.kind not in "iu":
      bad = next(iter(ids.tolist()), None)
      raise ProgramError(
          f"Program entries must be integer layer ids, got an array of dtype {ids.dtype} (first entry {bad!r}).")
  try:
    seq = tuple(ids.tolist() if isinstance(ids, np.ndarray) else ids)
  except TypeError:
    raise ProgramError(f"A program must be a sequence of integer layer ids, got {type(ids).__name__}.") from None
  if not seq:
    raise ProgramError("A program must run at least one layer, got an empty sequence.")
  if len(seq) > max_len:
    raise ProgramError(
        f"Program has {len(seq)} steps, more than max_len={max_len} for a {depth}-layer model; "
        "shorten it or pass a larger max_len.")
  out = []
  for pos, x in enumerate(seq):
    if type(x) is not int:  # Fast path for plain ints; bool is a subclass of int and lands here.
      if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ProgramError(
            f"Program entry {x!r} at position {pos} is not an integer layer id ({type(x).__name__}).")
      x = int(x)
    if not 0 <= x < depth:
      raise ProgramError(
          f"Program index {x} out of range for a {depth}-layer model (program position {pos}); "
          f"layer ids run from 0 to {depth - 1}.")
    out.append(x)
  return tuple(out)


@dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)
class Program:
  """An immutable, validated program of layers for a `depth`-layer model.

  Equality and hashing use `(ids, depth)`; `max_len` only bounds validation and is not part of identity.
  """
  ids: tuple[int, ...]
  depth: int
  max_len: int

  def __init__(self, ids: Iterable[int], depth: int, max_len: int | None = None):
    depth = _check_count(depth, "depth")
    max_len = 2 * depth if max_len is None else _check_count(max_len, "max_len")
    object.__setattr__(self, "ids", validate_ids(ids, depth, max_len))
    object.__setattr__(self, "depth", depth)
    object.__setattr__(self, "max_len", max_len)

  @classmethod
  def full(cls, depth: int) -> Program:
    """The full-depth program `0, 1, ..., depth-1`."""
    return cls(range(_check_count(depth, "depth")), depth)

  # Sequence protocol and identity.

  def __len__(self) -> int:
    return len(self.ids)

  def __iter__(self) -> Iterator[int]:
    return iter(self.ids)

  def __getitem__(self, index):
    return self.ids[index]

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Program):
      return NotImplemented
    return self.depth == other.depth and self.ids == other.ids

  def __hash__(self) -> int:
    return hash((self.ids, self.depth))

  def __repr__(self) -> str:
    return f"Program({self.compact()!r}, depth={self.depth})"

  def __str__(self) -> str:
    return self.compact()

  # Statistics.

  @property
  def is_full(self) -> bool:
    """Whether this is the plain model: every layer once, in order."""
    return len(self.ids) == self.depth and self.ids == tuple(range(self.depth))

  def layer_counts(self) -> np.ndarray:
    """How many times each layer runs. Returns int32 [depth]."""
    return np.bincount(np.asarray(self.ids, np.int64), minlength=self.depth).astype(np.int32)

  @property
  def num_skipped(self) -> int:
    """Layers of the model that this program never runs."""
    return self.depth - len(set(self.ids))

  @property
  def num_repeated(self) -> int:
    """Layers that this program runs more than once."""
    return int(np.count_nonzero(self.layer_counts() > 1))

  # JSON interchange.

  def to_json(self) -> list[int]:
    """A JSON-serializable list of ints (the release's path format)."""
    return list(self.ids)

  @classmethod
  def from_json(cls, obj: Any, depth: int, max_len: int | None = None) -> Program:
    """Reads a list of ints, or a dict with the list under "path" (both appear in the release's records)."""
    if isinstance(obj, Mapping):
      if "path" not in obj:
        raise ProgramError(f"A JSON program record must be a list of ints or a dict with key 'path'; got keys "
                           f"{sorted(obj)}.")
      obj = obj["path"]
    if not isinstance(obj, (list, tuple)):
      raise ProgramError(f"A JSON program must be a list of ints, got {type(obj).__name__} {obj!r}.")
    return cls(obj, depth, max_len)

  # Compact text form (grammar in the module docstring).

  def compact(self) -> str:
    """The compact human form, e.g. `0-9 [10-11]x2 12-29`; `Program.from_compact` reads it back."""
    return compact_text(self.ids)

  @classmethod
  def from_compact(cls, text: str, depth: int, max_len: int | None = None) -> Program:
    """Reads the compact form (grammar in the module docstring)."""
    if not isinstance(text, str):
      raise ProgramError(f"Program.from_compact expects a string, got {type(text).__name__}.")
    depth = _check_count(depth, "depth")
    limit = 2 * depth if max_len is None else _check_count(max_len, "max_len")
    ids: list[int] = []
    for number, token in enumerate(text.split()):
      match = _RUN_RE.fullmatch(token) or _REPEAT_RE.fullmatch(token)
      if match is None:
        raise ProgramError(
            f"Cannot read token {token!r} (token {number} of {text!r}); expected 'a', 'a-b' or '[a-b]xr', "
            "e.g. '0-9 [10-11]x2 12-29'.")
      first = int(match["a"])
      last = first if match["b"] is None else int(match["b"])
      times = 1 if match.groupdict().get("r") is None else int(match["r"])
      if last < first:
        raise ProgramError(f"Descending range {token!r} in {text!r}; write ranges as 'a-b' with a <= b.")
      if last >= depth:
        raise ProgramError(
            f"Program index {last} out of range for a {depth}-layer model (token {token!r} of {text!r}).")
      if times < 1:
        raise ProgramError(f"Repeat count must be at least 1 in {token!r} of {text!r}.")
      if len(ids) + times * (last - first + 1) > limit:
        raise ProgramError(f"{text!r} spells more than max_len={limit} steps for a {depth}-layer model.")
      ids.extend(list(range(first, last + 1)) * times)
    return cls(ids, depth, max_len)


def compact_text(ids: Sequence[int]) -> str:
  """The compact form of layer ids as they are (no depth, no validation), e.g. for ids read from a JSON file:
  `compact_text([0, 1, 2, 1, 2, 3]) == "0 [1-2]x2 3"`; `Program(ids, depth).compact()` is the same text."""
  return " ".join(_format_item(*item) for item in _compact_items(tuple(int(i) for i in ids)))


_RUN_RE = re.compile(r"(?P<a>\d+)(?:-(?P<b>\d+))?")
_REPEAT_RE = re.compile(r"\[(?P<a>\d+)(?:-(?P<b>\d+))?\]x(?P<r>\d+)")


def _format_item(first: int, last: int, times: int) -> str:
  run = str(first) if first == last else f"{first}-{last}"
  return run if times == 1 else f"[{run}]x{times}"


def _compact_items(ids: Sequence[int]) -> list[tuple[int, int, int]]:
  """Splits ids into (first, last, times) items: maximal ascending runs, with repeated tails pulled out."""
  items = []
  n, i = len(ids), 0
  while i < n:
    j = i + 1
    while j < n and ids[j] == ids[j - 1] + 1:
      j += 1
    # ids[i:j] is a maximal run. A repeat of one of its tails ids[k:j] must restart at ids[j] (= ids[k]).
    k = None
    if j < n and ids[i] <= ids[j] <= ids[j - 1]:
      k = i + ids[j] - ids[i]
      if tuple(ids[j:j + j - k]) != tuple(ids[k:j]):
        k = None
    if k is None:
      items.append((ids[i], ids[j - 1], 1))
      i = j
      continue
    block = tuple(ids[k:j])
    times = 2
    while tuple(ids[k + times * len(block):k + (times + 1) * len(block)]) == block:
      times += 1
    if k > i:
      items.append((ids[i], ids[k - 1], 1))
    items.append((ids[k], ids[j - 1], times))
    i = k + times * len(block)
  return items
