"""Dissimilar programs in one round: full depth vs random programs of the same length, through `run_programs`.

  python benchmarks/dissimilar.py --out dissimilar.json

Variants, each timed on the same questions, interleaved, after one untimed warm-up run (the compiles):
`full` (every question at full depth, one batch), `full_b1` (full depth one question per batch: the batching
effect alone), `random_old` (random programs of full length, the default plan: unlike programs each alone
under `max_waste`) and `random_step_cost_<c>` (the same pairs coalesced with `run_programs(step_cost=c)`).
A variant whose plan equals an earlier one's is not timed again (`same_plan_as`). Per variant: seconds per
question (min and median over --repeats), batches, batches per `rows x schedule steps`, row-steps, generated
tokens per question, and the ratio to `full`. `step_cost_estimate` is a schedule step's fixed cost in row
steps fitted from `full` and `full_b1` (cost per batch = steps x (fixed + rows x per-row)).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from common import emit, machine
from polar_jax import data
from polar_jax.evaluation.random_programs import random_programs_like
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig, run_programs
from polar_jax.programs import Program, merge_programs


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--questions", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--step-costs", type=float, nargs="*", default=[2.0, 4.0, 16.0])
  ap.add_argument("--max-new-tokens", type=int, default=12)
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  model = load_model("smollm2-135m-instruct")
  depth = model.config.num_layers
  examples = data.load_split("arith_level1", "test", limit=args.questions)
  task = TaskConfig.from_preset("free_prefix", max_new_tokens=args.max_new_tokens)
  full = Program.full(depth)
  random = random_programs_like(examples, [depth] * len(examples), depth, seed=0)
  variants = {"full": (full, {}), "full_b1": (full, {"max_batch": 1}), "random_old": (random, {})}
  for c in args.step_costs:
    variants[f"random_step_cost_{c:g}"] = (random, {"step_cost": c})

  def run(name):
    programs, options = variants[name]
    batches = []
    start = time.perf_counter()
    records = run_programs(model, examples, programs, task, on_batch=batches.append, **options)
    return time.perf_counter() - start, records, batches

  out = {"questions": len(examples), "program_length": depth, "repeats": args.repeats,
         "max_new_tokens": args.max_new_tokens, "load_average_start": machine()["load_average"], "variants": {}}
  timed, plans = [], {}
  for name in variants:  # Warm-up (compiles) and the plan of each variant.
    _, records, batches = run(name)
    shapes = [(len(b), len(merge_programs([r.program for r in b]))) for b in batches]
    plan = tuple(sorted(tuple(sorted((r.id, r.program) for r in b)) for b in batches))
    info = {"batches": len(batches),
            "rows_x_steps": dict(collections.Counter(f"{r}x{s}" for r, s in sorted(shapes, reverse=True))),
            "row_steps": sum(r * s for r, s in shapes),
            "generated_tokens_per_question": sum(r.generated_tokens for r in records) / len(records),
            "accuracy": sum(r.correct for r in records) / len(records)}
    if plan in plans:
      info["same_plan_as"] = plans[plan]
    else:
      plans[plan] = name
      timed.append(name)
      info["seconds"] = []
    out["variants"][name] = info
  for _ in range(args.repeats):
    for name in timed:
      out["variants"][name]["seconds"].append(run(name)[0])
  n = len(examples)
  for name, info in out["variants"].items():
    seconds = out["variants"][info.get("same_plan_as", name)]["seconds"]
    info["s_per_question_min"] = min(seconds) / n
    info["s_per_question_median"] = statistics.median(seconds) / n
  full_info = out["variants"]["full"]
  for info in out["variants"].values():
    info["ratio_to_full_min"] = info["s_per_question_min"] / full_info["s_per_question_min"]
    info["ratio_to_full_median"] = info["s_per_question_median"] / full_info["s_per_question_median"]
    info.pop("seconds", None)
  # Per question: full = steps (fixed / n + per_row), full_b1 = steps (fixed + per_row); fixed / per_row:
  alone, shared = out["variants"]["full_b1"]["s_per_question_median"], full_info["s_per_question_median"]
  per_row = (shared - alone / n) / (1 - 1 / n)
  out["step_cost_estimate"] = (alone - per_row) / per_row if per_row > 0 else None
  out["machine"] = machine()
  emit(out, args.out)


if __name__ == "__main__":
  main()
