"""Program search: the CoLa Monte Carlo tree search over programs of layers, batched, resumable, sharded.

The core (tree, driver, records, interchange, summary) never touches a model; it calls a `Scorer`.
`polar_jax.search.scoring` provides the LLM scorer (imported on demand, it needs the executor).
"""

from polar_jax.search.interchange import export_polar
from polar_jax.search.interchange import from_polar
from polar_jax.search.interchange import import_polar
from polar_jax.search.interchange import to_polar
from polar_jax.search.mcts import SearchRun
from polar_jax.search.mcts import question_rng
from polar_jax.search.mcts import run_search
from polar_jax.search.mcts import search
from polar_jax.search.mcts import search_stream
from polar_jax.search.records import CorruptRecordsError
from polar_jax.search.records import RecordWriter
from polar_jax.search.records import merge_shards
from polar_jax.search.records import parse_shard
from polar_jax.search.records import read_records
from polar_jax.search.records import shard_path
from polar_jax.search.records import without_timing
from polar_jax.search.rewards import FunctionScorer
from polar_jax.search.rewards import ScoredProgram
from polar_jax.search.rewards import Scorer
from polar_jax.search.summary import summarize
from polar_jax.search.summary import write_summary
from polar_jax.search.tree import SearchConfig
from polar_jax.search.tree import SearchTree
from polar_jax.search.tree import apply_edit
from polar_jax.search.tree import child_edits
from polar_jax.search.tree import children
from polar_jax.search.tree import spellable
from polar_jax.search.tree import ucb
