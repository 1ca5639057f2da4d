"""Dataclasses of options <-> ml_collections ConfigDicts, strictly; big_vision-style config arguments.

Light (standard library and ml_collections). `polar_jax.options` defines the stages' options and re-exports
these helpers: `to_config_dict`, `from_mapping`, `coerce`, `parse_arg`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

import ml_collections

from polar_jax.errors import ConfigError


# --- ConfigDict <-> dataclasses -------------------------------------------------------------------------------


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _optional_base(tp) -> type | None:
  """`int | None` -> int (the type of a field whose default is None), else None."""
  args = [a for a in typing.get_args(tp) if a is not type(None)]
  if type(None) in typing.get_args(tp) and len(args) == 1 and isinstance(args[0], type):
    return args[0]
  return None


def to_config_dict(options: Any) -> ml_collections.ConfigDict:
  """A dataclass of options -> a ConfigDict with the same fields (nested dataclasses become sub-dicts)."""
  c = ml_collections.ConfigDict()
  hints = _hints(type(options))
  for f in dataclasses.fields(options):
    value = getattr(options, f.name)
    if dataclasses.is_dataclass(value):
      c[f.name] = to_config_dict(value)
    elif value is None:
      c[f.name] = ml_collections.FieldReference(None, field_type=_optional_base(hints[f.name]) or object)
    else:
      c[f.name] = value
  return c


def _did_you_mean(key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp, where: str) -> Any:
  """Checks / converts one leaf value to its annotated type."""
  base = _optional_base(tp)
  if base is not None:
    return None if value is None else _coerce(value, base, where)
  origin = typing.get_origin(tp)
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      value = (value,)
    (item,) = typing.get_args(tp)[:1]
    return tuple(_coerce(v, item, where) for v in value)
  if tp is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
    raise ConfigError(f"{where} must be {tp.__name__}, got {value!r} ({type(value).__name__}).")
  return value


def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "config"):
  """A dataclass from a (nested) mapping, strictly: unknown keys and wrong types are a ConfigError naming the key.

  Missing keys keep their defaults. A dataclass's own checks (its `__post_init__`) run and their ValueError
  becomes a ConfigError naming the section.
  """
  if values is None:
    return cls()
  if isinstance(values, ml_collections.ConfigDict):
    values = values.to_dict()
  if not isinstance(values, Mapping):
    raise ConfigError(f"{where} must be a section (a dict of fields), got {values!r}.")
  hints = _hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  kwargs = {}
  for key, value in values.items():
    if key not in names:
      raise ConfigError(f"{where}.{key} is not a known field{_did_you_mean(key, names)}; fields of {where}: "
                        f"{', '.join(names)}.")
    tp = hints[key]
    if dataclasses.is_dataclass(tp):
      kwargs[key] = from_mapping(tp, value, f"{where}.{key}")
    else:
      kwargs[key] = _coerce(value, tp, f"{where}.{key}")
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"{where}: {e}") from None


def coerce(cls, options: Any, where: str = "config"):
  """`options` as `cls`: an instance passes through; a ConfigDict / dict is read strictly."""
  if isinstance(options, cls):
    return options
  return from_mapping(cls, options, where)


# --- config-file arguments ------------------------------------------------------------------------------------


def parse_arg(arg: str | None, **defaults: Any) -> types.SimpleNamespace:
  """big_vision-style config arguments: `"quick,n_test=500"` against typed defaults.

  A bare name sets a boolean default to True; `key=value` converts `value` to the default's type (bool from
  true/false/1/0; a default of None accepts an int, else a string). Unknown names are a ConfigError listing
  the known ones.

    arg = parse_arg("quick,n_test=500", quick=False, n_test=0)   # -> namespace(quick=True, n_test=500)
  """
  out = dict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, text = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"Unknown config argument {key!r}{_did_you_mean(key, defaults)}; known: "
                        f"{', '.join(sorted(defaults))} (as `configs/x.py:name,key=value`).")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ConfigError(f"Config argument {key!r} needs a value ({key}=...).")
      out[key] = True
      continue
    text = text.strip()
    try:
      if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
          raise ValueError(text)
        out[key] = text.lower() in ("true", "1")
      elif isinstance(default, int):
        out[key] = int(text)
      elif isinstance(default, float):
        out[key] = float(text)
      elif default is None:
        out[key] = int(text) if text.lstrip("-").isdigit() else text
      else:
        out[key] = text
    except ValueError:
      raise ConfigError(f"Config argument {key}={text!r}: expected a {type(default).__name__}.") from None
  return types.SimpleNamespace(**out)
