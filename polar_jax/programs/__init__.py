"""Programs of layers: validation and text / JSON forms, the predictor's segment form, batch schedules."""

from polar_jax.programs.program import Program
from polar_jax.programs.program import ProgramError
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
from polar_jax.programs.executor import Executor
from polar_jax.programs.executor import GenerationResult
from polar_jax.programs.executor import StopRule
from polar_jax.programs.executor import executor_for
from polar_jax.programs.executor import generate
