"""Programs of layers: validation and text / JSON forms, the predictor's segment form, batch schedules.

Light modules (the standard library and numpy only; no jax, tokenizers, GGUF or model code): `program`,
`segments`, `schedule`, and this package itself, whose names from those modules are imported eagerly.
The executor's names (`Executor`, `GenerationResult`, `StopRule`, `executor_for`, `generate`) are loaded on
first access (PEP 562), since `executor`, `executor_core` and `stop_rules` import jax and the model code:
`from polar_jax.programs import Program` stays light, `from polar_jax.programs import executor_for` works.
"""

import importlib
from typing import TYPE_CHECKING

from polar_jax.programs.program import Program
from polar_jax.programs.program import ProgramError
from polar_jax.programs.program import compact_text
from polar_jax.programs.program import validate_ids
from polar_jax.programs.schedule import Schedule
from polar_jax.programs.schedule import bucket_length
from polar_jax.programs.schedule import make_schedule
from polar_jax.programs.schedule import merge_programs
from polar_jax.programs.segments import IGNORE_INDEX
from polar_jax.programs.segments import MAX_BLOCK
from polar_jax.programs.segments import OP_KEEP
from polar_jax.programs.segments import OP_NAMES
from polar_jax.programs.segments import OP_REPEAT
from polar_jax.programs.segments import OP_SKIP
from polar_jax.programs.segments import Segment
from polar_jax.programs.segments import Segmentation
from polar_jax.programs.segments import parse
from polar_jax.programs.segments import render
from polar_jax.programs.segments import render_ops
from polar_jax.programs.segments import spans_from_boundaries

if TYPE_CHECKING:
  from polar_jax.programs.executor import Executor, GenerationResult, executor_for, generate
  from polar_jax.programs.stop_rules import StopRule

# Heavy names -> the module that defines them, imported on first access.
_LAZY = {
    "Executor": "polar_jax.programs.executor",
    "GenerationResult": "polar_jax.programs.executor",
    "executor_for": "polar_jax.programs.executor",
    "generate": "polar_jax.programs.executor",
    "StopRule": "polar_jax.programs.stop_rules",
}


def __getattr__(name: str):
  module = _LAZY.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # Later lookups skip this hook.
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
