"""Programs and answers for new questions from a finished workdir: `python -m polar_jax.predict --workdir=DIR
--question="What is 7 + 5?"` (`polar_jax.predict.__main__`), or in Python `WorkdirPredictor` (see
`polar_jax.predict.choosers`). Importing this package loads no model; `WorkdirPredictor` loads it on first use.
"""

from polar_jax.predict.choosers import FULL_DEPTH
from polar_jax.predict.choosers import METHOD_DOCS
from polar_jax.predict.choosers import Prediction
from polar_jax.predict.choosers import PredictError
from polar_jax.predict.choosers import Question
from polar_jax.predict.choosers import RANKED_METHODS
from polar_jax.predict.choosers import Run
from polar_jax.predict.choosers import WorkdirPredictor
from polar_jax.predict.choosers import read_questions
