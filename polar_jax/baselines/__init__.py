"""Baselines and the shared evaluation data model (see `polar_jax.evaluate` for the protocol).

- outcomes: `Candidate`, `QuestionOutcome`, `MethodRun` (what every method produces; saved as JSON),
  `run_ranked` (rank-1 programs timed alone, then the rest);
- metrics: `compute_metrics`, `method_rows`, `pass_at_k`, `vote_at_k`, `voted`, `answer_key`, `layer_usage`;
- full_depth: `full_depth_greedy`, `full_depth_sampling`;
- shortgpt: `block_influence`, `removed_layers`, `shortgpt_program`, `matched_removal`, `run_shortgpt`;
- random_programs: `random_program`, `random_programs_like`, `run_random_programs`;
- search_oracle: `oracle_run`, `in_space`, `ORACLE_SPACES` (search ablations, oracles);
- router: the DR.LLM-style per-layer router (`train_or_load_router`, `run_router`), imported on demand.
"""

from polar_jax.baselines.full_depth import full_depth_greedy
from polar_jax.baselines.full_depth import full_depth_sampling
from polar_jax.baselines.metrics import answer_key
from polar_jax.baselines.metrics import layer_usage
from polar_jax.baselines.metrics import method_rows
from polar_jax.baselines.metrics import compute_metrics
from polar_jax.baselines.metrics import pass_at_k
from polar_jax.baselines.metrics import vote_at_k
from polar_jax.baselines.metrics import voted
from polar_jax.baselines.outcomes import Candidate
from polar_jax.baselines.outcomes import MethodRun
from polar_jax.baselines.outcomes import QuestionOutcome
from polar_jax.baselines.outcomes import run_ranked
from polar_jax.baselines.random_programs import random_program
from polar_jax.baselines.random_programs import random_programs_like
from polar_jax.baselines.random_programs import run_random_programs
from polar_jax.baselines.search_oracle import ORACLE_SPACES
from polar_jax.baselines.search_oracle import in_space
from polar_jax.baselines.search_oracle import oracle_run
from polar_jax.baselines.shortgpt import block_influence
from polar_jax.baselines.shortgpt import matched_removal
from polar_jax.baselines.shortgpt import removed_layers
from polar_jax.baselines.shortgpt import run_shortgpt
from polar_jax.baselines.shortgpt import shortgpt_program
