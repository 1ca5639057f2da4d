"""Evaluation: the shared data model of every method's results, the metrics, every method (PoLar beside the
baselines), the protocol that runs them from one method table, and the report.

- outcomes: `Candidate`, `QuestionOutcome`, `MethodRun` (what every method produces; saved as JSON),
  `run_ranked` (rank-1 programs timed alone, then the rest);
- metrics: `compute_metrics`, `method_rows`, `pass_at_k`, `vote_at_k`, `voted`, `answer_key`, `layer_usage`;
- full_depth: `full_depth_greedy`, `full_depth_sampling`;
- shortgpt: `block_influence`, `removed_layers`, `shortgpt_program`, `matched_removal`, `run_shortgpt`;
- random_programs: `random_program`, `random_programs_like`, `run_random_programs`;
- search_oracle: `oracle_run`, `in_space`, `ORACLE_SPACES` (search ablations, oracles);
- router: the DR.LLM-style per-layer router (`train_or_load_router`, `run_router`), imported on demand.
- polar: `polar_run`, `trust_search_cache` (the release's cache-trusting comparison row);
- protocol: `run_evaluation`, `default_eval_config`, `load_test_sets`, `METHOD_TABLE`, `SEARCH_TEST_SET`;
- report: results.md and the plots.
"""

from polar_jax.evaluation.full_depth import full_depth_greedy
from polar_jax.evaluation.full_depth import full_depth_sampling
from polar_jax.evaluation.metrics import answer_key
from polar_jax.evaluation.metrics import layer_usage
from polar_jax.evaluation.metrics import method_rows
from polar_jax.evaluation.metrics import compute_metrics
from polar_jax.evaluation.metrics import pass_at_k
from polar_jax.evaluation.metrics import vote_at_k
from polar_jax.evaluation.metrics import voted
from polar_jax.evaluation.outcomes import Candidate
from polar_jax.evaluation.outcomes import MethodRun
from polar_jax.evaluation.outcomes import QuestionOutcome
from polar_jax.evaluation.outcomes import run_ranked
from polar_jax.evaluation.random_programs import random_program
from polar_jax.evaluation.random_programs import random_programs_like
from polar_jax.evaluation.random_programs import run_random_programs
from polar_jax.evaluation.search_oracle import ORACLE_SPACES
from polar_jax.evaluation.search_oracle import in_space
from polar_jax.evaluation.search_oracle import oracle_run
from polar_jax.evaluation.shortgpt import block_influence
from polar_jax.evaluation.shortgpt import matched_removal
from polar_jax.evaluation.shortgpt import removed_layers
from polar_jax.evaluation.shortgpt import run_shortgpt
from polar_jax.evaluation.shortgpt import shortgpt_program
from polar_jax.evaluation.polar import polar_run
from polar_jax.evaluation.polar import trust_search_cache
from polar_jax.evaluation.protocol import METHOD_TABLE
from polar_jax.evaluation.protocol import SEARCH_TEST_SET
from polar_jax.evaluation.protocol import build_results
from polar_jax.evaluation.protocol import default_eval_config
from polar_jax.evaluation.protocol import load_test_sets
from polar_jax.evaluation.protocol import run_evaluation
