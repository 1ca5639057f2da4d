"""Per-question inspection of a finished run (light: no jax): `python -m polar_jax.inspect --workdir=DIR
[--id=ID] [--set=NAME]` (`polar_jax.inspect.__main__`), and the per-question section of results.md.

The names are those of `polar_jax.inspect.per_question` (see its docstring).
"""

from polar_jax.inspect.per_question import COMPARED_KINDS
from polar_jax.inspect.per_question import FULL_DEPTH
from polar_jax.inspect.per_question import QUESTIONS_FILE
from polar_jax.inspect.per_question import REPORT_CAP
from polar_jax.inspect.per_question import Choice
from polar_jax.inspect.per_question import InspectError
from polar_jax.inspect.per_question import WorkdirView
from polar_jax.inspect.per_question import choices
from polar_jax.inspect.per_question import compare_with_full_depth
from polar_jax.inspect.per_question import markdown
from polar_jax.inspect.per_question import per_question_results
from polar_jax.inspect.per_question import question_markdown
