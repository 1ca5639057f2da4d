"""Program search: Monte Carlo tree search over programs of layers (CoLa's protocol, or the release's), batched,
resumable, sharded.

The core (tree, driver, records, interchange, summary) never touches a model; it calls a `Scorer`.
`polar_jax.search.scoring` provides the LLM scorer (imported on demand, it needs the executor).

The names below are loaded on first use (PEP 562), so importing one submodule, e.g. `polar_jax.search.tree`,
loads only what that submodule needs.
"""

import importlib

_EXPORTS = {
    "interchange": ("export_polar", "from_polar", "import_polar", "to_polar"),
    "mcts": ("SearchRun", "new_tree", "question_rng", "run_search", "search", "search_stream"),
    "release": ("ReleaseTree", "release_children", "release_ucb"),
    "records": ("CorruptRecordsError", "RecordWriter", "merge_shards", "parse_shard", "read_records", "shard_path",
                "without_timing"),
    "rewards": ("FunctionScorer", "ScoredProgram", "Scorer"),
    "summary": ("summarize", "write_summary"),
    "tree": ("PROTOCOLS", "SearchConfig", "SearchTree", "apply_edit", "child_edits", "children",
             "release_length_bounds", "spellable", "ucb"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
  module = _MODULE_OF.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
  globals()[name] = value  # Later lookups skip this function.
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
