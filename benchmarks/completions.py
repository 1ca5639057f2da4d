"""Completion scoring benchmark: shared program prefixes against the plain merged schedule.

  python benchmarks/completions.py --out completions.json

`Executor.score_completions` on `--questions` sequences (random ids, 70-110 tokens, the last 2-6 the
completion) x `--children` single-edit programs each (skip or repeat one layer at a seeded position: the
children of an MCTS root), with `share_prefixes` True and False in the same process, interleaved, `--repeats`
times each after one warm-up (the compiles). Prints and writes one JSON object: median milliseconds of each,
their ratio, the executed (row, step) pairs of each, the largest log-prob difference between them, the compiles
and the machine (load average included).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from common import emit, machine
from polar_jax.models import load_model
from polar_jax.programs import Executor


def workload(depth: int, vocab: int, questions: int, children: int, seed: int):
  rng = np.random.default_rng(seed)
  full = tuple(range(depth))
  seqs, progs, starts = [], [], []
  for _ in range(questions):
    seq = rng.integers(1, vocab, int(rng.integers(70, 111))).tolist()
    for i in rng.choice(depth, children, replace=children > depth):
      i = int(i)
      repeat = bool(rng.random() < 0.5)
      progs.append(full[:i + 1] + (i,) + full[i + 1:] if repeat else full[:i] + full[i + 1:])
      seqs.append(seq)
      starts.append(len(seq) - int(rng.integers(2, 7)))
  return seqs, progs, starts


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--questions", type=int, default=8)
  parser.add_argument("--children", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out")
  args = parser.parse_args()
  ex = Executor(load_model(args.model))
  seqs, progs, starts = workload(ex.depth, ex.cfg.vocab_size, args.questions, args.children, args.seed)

  def run(share):
    t0 = time.perf_counter()
    res = ex.score_completions(seqs, progs, starts, share_prefixes=share)
    return res, (time.perf_counter() - t0) * 1e3

  (shared, _), (plain, _) = run(True), run(False)  # Warm-up: the compiles.
  times = {True: [], False: []}
  for _ in range(args.repeats):
    for share in (True, False):
      times[share].append(run(share)[1])
  ms = {share: statistics.median(t) for share, t in times.items()}
  emit({"rows": len(seqs), "questions": args.questions, "children": args.children,
        "shared_ms": ms[True], "unshared_ms": ms[False], "ratio": ms[True] / ms[False],
        "shared_row_steps": shared.executed_row_steps, "unshared_row_steps": plain.executed_row_steps,
        "shared_passes": shared.passes,
        "max_logprob_diff": max(float(np.abs(a - b).max()) for a, b in zip(shared.logprobs, plain.logprobs)),
        "argmax_equal": all((a == b).all() for a, b in zip(shared.argmax, plain.argmax)),
        "compiles": ex.compiles, "times_ms": {"shared": times[True], "unshared": times[False]},
        "machine": machine()}, args.out)


if __name__ == "__main__":
  main()
