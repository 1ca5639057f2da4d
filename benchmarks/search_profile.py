"""Where a search's wall time goes: each compiled call of the scorer blocked until done and charged to its name.

Runs `python -m polar_jax.search run` in this process (the flags after `--`) with every jitted function of the
completion scorer (`programs.completions`: question-row passes, context passes, gathers, prompt states, bank
stores and growth) and of the executor (generation) wrapped: a call's time, compile included, is measured up to
`jax.block_until_ready` of its outputs. Blocking removes the overlap of host work with device work, so the total
can be above an unwrapped run's (not measured); the shares are what to read. Prints JSON: the search's own last
line, the seconds, calls and share of each function, its most frequent input shapes, and the search seconds no
function was charged (the tree search and planning on the host, eager array operations, transfers, dispatch).
A shard carries the fixed costs (compiles, filling the context bank) of a whole search, so on a shard those
shares are larger than on the whole search.

  python benchmarks/search_profile.py --json-out=profile.json -- --config=configs/default.py:sims=96 \\
      --config.search.shard=0/4 --out=/tmp/profile.jsonl

Set POLAR_JAX_XLA_CACHE=0 so compiles count as in a first run (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import time

import jax

import common

_SCORER = ("_pass", "_gather", "_gather_rows", "_context_trunk", "_context_suffix", "_take")
_EXECUTOR = ("_generate", "_prefill_logits")


def main() -> None:
  own, argv = (sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]) if "--" in sys.argv \
      else (sys.argv[1:], [])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--json-out", default=None, help="also write the JSON here")
  out = parser.parse_args(own).json_out
  if not argv:
    common.bad_input("search_profile", "no search flags: give them after `--`, e.g. -- --config=configs/default.py "
                     "--out=s.jsonl")
  load_before = os.getloadavg()[0]
  from polar_jax.programs import completions, executor

  seconds: dict[str, float] = collections.defaultdict(float)
  calls: collections.Counter = collections.Counter()
  shapes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

  def charge(name, t0, args):
    seconds[name] += time.perf_counter() - t0
    calls[name] += 1
    shapes[name][str([tuple(a.shape) for a in args if hasattr(a, "shape")][:4])] += 1

  def wrap(name, fn):
    def timed(*args, **kwargs):
      t0 = time.perf_counter()
      result = jax.block_until_ready(fn(*args, **kwargs))
      charge(name, t0, args)
      return result
    return timed

  scorer_init, executor_init = completions.CompletionScorer.__init__, executor.Executor.__init__
  resize = completions.ContextCache._resize

  def init_scorer(self, ex):
    scorer_init(self, ex)
    for name in _SCORER:
      setattr(self, name, wrap(name, getattr(self, name)))
    self.contexts._store = wrap("_store", self.contexts._store)

  def init_executor(self, *args, **kwargs):
    executor_init(self, *args, **kwargs)
    for name in _EXECUTOR:
      setattr(self, name, wrap(name, getattr(self, name)))

  def timed_resize(self, bank, slots, length):
    t0 = time.perf_counter()
    resize(self, bank, slots, length)
    jax.block_until_ready((bank["k"], bank["v"]))
    charge("_resize", t0, (bank["k"],))

  completions.CompletionScorer.__init__ = init_scorer
  executor.Executor.__init__ = init_executor
  completions.ContextCache._resize = timed_resize
  from polar_jax.search import __main__ as search_main
  sys.argv = ["polar_jax.search", "run", *argv]
  stdout = io.StringIO()
  t0 = time.perf_counter()
  with contextlib.redirect_stdout(stdout):
    try:
      search_main.main()
    except SystemExit as e:
      if e.code:
        raise
  total = time.perf_counter() - t0
  last = common.search_result(stdout.getvalue())
  if last is None:
    sys.exit("search_profile: the search printed no result line (did it run?)")
  search = last["seconds"]
  charged = sum(seconds.values())
  common.emit({
      "search_args": argv, "search": last, "process_seconds": round(total, 1), "load_before": round(load_before, 2),
      "polar_jax_xla_cache": os.environ.get("POLAR_JAX_XLA_CACHE"),
      "functions": {name: {"seconds": round(s, 1), "calls": calls[name], "share_of_search": round(s / search, 3),
                           "top_shapes": dict(shapes[name].most_common(4))}
                    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1])},
      "charged_seconds": round(charged, 1), "uncharged_search_seconds": round(search - charged, 1),
      "machine": common.machine(),
  }, out)


if __name__ == "__main__":
  main()
