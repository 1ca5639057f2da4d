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


# --- absl flag parsing: one line for a bad command line ------------------------------------------------------


def _config_flag_message(error: BaseException, argv: typing.Sequence[str]) -> str:
  """What a config override error means, in one line, with the fix."""
  import re  # pylint: disable=import-outside-toplevel
  text = " ".join(str(error.args[0] if error.args else error).replace("\\n", " ").split())
  overrides = [a for a in argv if a.startswith("--config.")]
  if isinstance(error, (AttributeError, KeyError)):
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
    key = names[0] if names else text
    close = re.search(r'Did you mean \W*([A-Za-z_][A-Za-z0-9_]*)', text)
    culprit = next((a.split("=", 1)[0] for a in overrides
                    if re.search(rf"\.{re.escape(key)}(\.|$)", a.split("=", 1)[0])), None)
    return (f"{culprit + ': ' if culprit else ''}the config has no field {key!r}"
            + (f" (did you mean {close.group(1)!r}?)" if close else "")
            + "; python -m polar_jax.main --helpfull lists every --config.* field.")
  culprit = next((a for a in overrides if "=" in a and a.split("=", 1)[1] and a.split("=", 1)[1] in text), None)
  return (f"{culprit + ': ' if culprit else ''}{text}; give the field a value of its type "
          "(python -m polar_jax.main --helpfull shows each field's default).")


def _config_load_message(flag: str, error: BaseException, argv: typing.Sequence[str]) -> str:
  given = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), "?")
  text = " ".join(str(error).split())
  if "No such file or directory" in text or isinstance(error, FileNotFoundError):
    return (f"--{flag}={given}: no such config file; give one of configs/*.py (optionally with :variant), e.g. "
            f"--{flag}=configs/default.py:quick.")
  last = text.rsplit("Error: ", 1)[-1] if "Traceback" in text else text
  if "Traceback" in text and "Error whilst parsing config file" in text:
    return f"--{flag}={given}: {last}"
  return f"--{flag}={given} does not load: {last}"


def strict_flags_parser(prog: str, config_flag: str = "config"):
  """An `app.run(main, flags_parser=...)` parser that turns a bad command line into one line on stderr and exit
  status 2: an unknown or mistyped flag, a config file that does not load (a mistyped path, a bad variant, an
  error inside it), and a config override naming a field the config does not have or giving it a wrong type."""
  import sys  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel

  def fail(message: str):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)

  def load_error(argv):
    if config_flag not in flags.FLAGS:
      return None
    value = flags.FLAGS[config_flag].value
    if type(value).__name__ == "_ErrorConfig":
      return _config_load_message(config_flag, value.__dict__.get("_error", ""), argv)
    return None

  def chain(e):
    while e is not None:
      yield e
      e = e.__cause__ or e.__context__

  def file_error(e, argv):
    """The config file's own load error somewhere in `e`'s chain, as one line (else None)."""
    for x in chain(e):
      if any(m in str(x) for m in ("Failed loading config file", "Error whilst parsing config file")):
        text = str(x).split("earlier failure to load:", 1)[-1]
        return _config_load_message(config_flag, text, argv)
    return None

  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
    except flags.Error as e:
      text = " ".join(str(e).split())
      if text.startswith("flag --config."):  # a value the field's type does not parse
        text += "; give the field a value of its type (python -m polar_jax.main --helpfull shows each field's default)."
      fail(file_error(e, argv) or load_error(argv) or (_config_flag_message(e.__cause__, argv) if isinstance(
          e.__cause__, (AttributeError, KeyError, TypeError, ValueError)) else text))
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
      fail(file_error(e, argv) or load_error(argv) or _config_flag_message(e, argv))
    message = load_error(argv)
    if message:
      fail(message)
    return rest
  return parse
