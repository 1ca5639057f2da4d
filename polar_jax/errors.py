"""The project's user-error base class (light: standard library only).

An error a user causes with their input (a config value, a file, a program, a model path) derives from
`UserError`; entry points print such an error as one line and exit with status 2, anything else is a bug and
keeps its traceback. Each layer defines its own subclasses (`ProgramError`, `DataFormatError`, ...) next to the
code that raises them, also deriving from the built-in class callers already catch (usually ValueError).
"""

from __future__ import annotations


class UserError(Exception):
  """Something wrong with the input, with a message that says how to fix it."""


class ConfigError(UserError, ValueError):
  """A config value or config argument is invalid."""


class DiskFullError(UserError, OSError):
  """The disk filled up: what was written before still loads; free space and rerun to resume."""


def is_disk_full(error: BaseException) -> bool:
  """An error (or one it wraps, e.g. orbax's / tensorstore's) that says the disk is full (ENOSPC)."""
  import errno  # pylint: disable=import-outside-toplevel
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


# Built-in errors that are the user's when they reach an entry point: a path that does not exist.
USER_BUILTINS: tuple[type[BaseException], ...] = (FileNotFoundError,)


def user_errors() -> tuple[type[BaseException], ...]:
  """What an entry point reports as one line (no traceback)."""
  return (UserError,) + USER_BUILTINS
