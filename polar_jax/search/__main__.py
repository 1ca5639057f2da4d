"""Command line for search outputs: run a search, merge shards, repair, export / import, summarize.

  python -m polar_jax.search run --dataset arith_level1 --split train --limit 64 --out runs/s.jsonl [--shard 0/4]
  python -m polar_jax.search merge runs/s.jsonl runs/s.shard-0000{0,1,2,3}-of-00004.jsonl
  python -m polar_jax.search repair runs/s.jsonl          # moves bad lines to runs/s.jsonl.rejected
  python -m polar_jax.search export runs/s.jsonl merged_mcts_samples.json
  python -m polar_jax.search import merged_mcts_samples.json runs/imported.jsonl --depth 28
  python -m polar_jax.search summary runs/s.jsonl runs/summary/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from polar_jax.search import interchange, records, summary
from polar_jax.search.tree import SearchConfig

log = logging.getLogger("polar_jax.search")


def _run(args) -> None:
  from polar_jax.data import get_preset, load_split, preset_for_model
  from polar_jax.models import load_model
  from polar_jax.search.mcts import run_search
  from polar_jax.program_eval import TaskConfig
  from polar_jax.search.scoring import TaskScorer

  model = load_model(args.model)
  examples = load_split(args.dataset, args.split, limit=args.limit, seed=args.data_seed)
  prompt_cfg = get_preset(args.prompt) if args.prompt else preset_for_model(args.model)
  task = TaskConfig(prompt_cfg, max_new_tokens=args.max_new_tokens, choice_scoring=args.choice_scoring)
  scorer = TaskScorer(model, examples, task, max_batch=args.max_batch, per_question=args.per_question)
  config = SearchConfig(num_simulations=args.simulations, length_penalty=args.length_penalty,
                        exploration=args.exploration, space=args.space, leaves_per_round=args.leaves,
                        seed=args.seed, widening=args.widening)
  shard = records.parse_shard(args.shard) if args.shard else None
  run = run_search(examples, scorer, config, args.out, shard=shard, repair=args.repair, max_active=args.max_active,
                   on_record=lambda r: log.info("%s: %d valid of %d evaluated, initial score %s", r.id,
                                                    len(r.valid), r.evaluations, r.initial_score))
  print(json.dumps({"output": run.output_path, "written": run.written, "skipped": run.skipped,
                    "evaluations": run.evaluations, "seconds": round(run.seconds, 1)}))
  if args.summary and (shard is None or shard[1] == 1):
    print(json.dumps(summary.write_summary(records.read_records(run.output_path), args.summary,
                                           title=f"{args.model} / {args.dataset} {args.split}"), indent=2))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m polar_jax.search", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)

  run = sub.add_parser("run", help="search programs for a dataset split (resumable)")
  run.add_argument("--model", default="smollm2-135m-instruct")
  run.add_argument("--dataset", required=True)
  run.add_argument("--split", default="train")
  run.add_argument("--limit", type=int, default=None)
  run.add_argument("--data-seed", type=int, default=0)
  run.add_argument("--prompt", default=None, help="prompt preset (default: the model's)")
  run.add_argument("--choice-scoring", default="generate", choices=("generate", "loglik"),
                   help="multiple-choice sets: generate an answer, or pick the most likely option")
  run.add_argument("--out", required=True)
  run.add_argument("--shard", default=None, help="i/n (default: this JAX process of all)")
  run.add_argument("--repair", action="store_true", help="move corrupt lines of --out aside and continue")
  run.add_argument("--simulations", type=int, default=200)
  run.add_argument("--length-penalty", type=float, default=5.0)
  run.add_argument("--exploration", type=float, default=1.8)
  run.add_argument("--space", default="cola", choices=["cola", "predictor"])
  run.add_argument("--leaves", type=int, default=8)
  run.add_argument("--widening", type=float, default=0.0)
  run.add_argument("--seed", type=int, default=0)
  run.add_argument("--max-active", type=int, default=32)
  run.add_argument("--max-batch", type=int, default=32)
  run.add_argument("--max-new-tokens", type=int, default=50)
  run.add_argument("--per-question", action="store_true")
  run.add_argument("--summary", default=None, help="directory for summary.json and the plot")

  merge = sub.add_parser("merge", help="join shard files, refusing duplicate ids")
  merge.add_argument("out")
  merge.add_argument("shards", nargs="+")

  repair = sub.add_parser("repair", help="move corrupt lines to <file>.rejected")
  repair.add_argument("path")

  export = sub.add_parser("export", help="records -> the release's merged_mcts_samples.json")
  export.add_argument("records")
  export.add_argument("out")

  imp = sub.add_parser("import", help="merged_mcts_samples.json -> records")
  imp.add_argument("path")
  imp.add_argument("out")
  imp.add_argument("--depth", type=int, default=None)

  summ = sub.add_parser("summary", help="summary.json and layer_usage.png")
  summ.add_argument("records")
  summ.add_argument("out_dir")

  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
  logging.getLogger("polar_jax").setLevel(logging.INFO)  # Our progress, not every library's chatter.
  try:
    if args.command == "run":
      _run(args)
    elif args.command == "merge":
      print(f"{len(records.merge_shards(args.shards, args.out))} records -> {args.out}")
    elif args.command == "repair":
      print(f"{len(records.read_records(args.path, repair=True))} good records kept in {args.path}")
    elif args.command == "export":
      interchange.export_polar(records.read_records(args.records), args.out)
    elif args.command == "import":
      if records.read_records(args.out):
        raise ValueError(f"{args.out} already holds records; import into a new file.")
      out = interchange.import_polar(args.path, depth=args.depth)
      with records.RecordWriter(args.out) as writer:
        for rec in out:
          writer.write(rec)
      print(f"{len(out)} records -> {args.out}")
    elif args.command == "summary":
      print(json.dumps(summary.write_summary(records.read_records(args.records), args.out_dir), indent=2))
  except (records.CorruptRecordsError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
