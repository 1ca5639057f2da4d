"""Command line for search outputs: run a search, merge shards, repair, export / import, summarize.

  python -m polar_jax.search run --config=configs/default.py --out=runs/s.jsonl [--set=train|validation]
      [--config.search.num_simulations=64] [--config.search.shard=0/4] [--summary=runs/summary/]
  python -m polar_jax.search merge runs/s.jsonl runs/s.shard-0000{0,1,2,3}-of-00004.jsonl
  python -m polar_jax.search repair runs/s.jsonl          # moves bad lines to runs/s.jsonl.rejected
  python -m polar_jax.search export runs/s.jsonl merged_mcts_samples.json
  python -m polar_jax.search import merged_mcts_samples.json runs/imported.jsonl --depth 28
  python -m polar_jax.search summary runs/s.jsonl runs/summary/

In a multi-process run (`run` with `--coordinator_address`, `--num_processes`, `--process_id`, or `--distributed`
where JAX detects the cluster; the same command on every host) process i searches shard i/n into
`<out>.shard-<i>-of-<n>.jsonl`, and process 0 merges the shards into `--out` once all are done.

`run` reads the pipeline's config file (absl flags, overrides as in `python -m polar_jax.main`) and searches
what the pipeline's search stage searches: the config's model, task, search settings and questions (the
searched train and validation questions, or one of the two with `--set`), with the same scorer, so its records
are the pipeline's. The other commands take plain arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Sequence

from polar_jax.errors import user_errors
from polar_jax.search import interchange, records, summary

log = logging.getLogger("polar_jax.search")
_SETS = ("searched", "train", "validation")
_RUN_USAGE = "python -m polar_jax.search run"


def _define_run_flags() -> None:
  """The `run` command's absl flags, defined on first use (so that importing this module defines none)."""
  from absl import flags
  from ml_collections import config_flags
  if "out" in flags.FLAGS:
    return
  if "config" not in flags.FLAGS:
    config_flags.DEFINE_config_file(
        "config", None, "Config file (configs/*.py), optionally with ':variant', e.g. configs/default.py:quick.",
        lock_config=True)
  flags.DEFINE_string("out", None, "The records file (JSONL; resumed when it exists; shard files next to it).")
  flags.DEFINE_enum("set", "searched", _SETS, "Which of the config's searched questions: all (the pipeline's "
                    "search stage), only the train ones or only the validation ones.")
  flags.DEFINE_string("summary", None, "A directory for summary.json and the layer-usage plot.")
  from polar_jax import sharding
  sharding.define_distributed_flags()


def _questions(splits, which: str) -> list:
  if which == "train":
    return [e for d in splits.search for e in splits.search[d]]
  if which == "validation":
    return [e for d in splits.validation for e in splits.validation[d]]
  return splits.searched()


def _run(argv: Sequence[str]) -> None:
  from absl import app, flags
  from absl import logging as absl_logging
  from polar_jax import pipeline, resources, sharding
  from polar_jax.search.mcts import run_search
  from polar_jax.search.scoring import TaskScorer

  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  config = FLAGS.config
  if config is None or not FLAGS.out:
    raise app.UsageError(f"Both --config and --out are required, e.g. {_RUN_USAGE} --config=configs/default.py "
                         "--out=runs/s.jsonl")
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # Library INFO logs drown the progress; --v=0 shows them.
  logging.getLogger("polar_jax").setLevel(logging.INFO)  # Our progress, not every library's chatter.
  try:
    sharding.initialize_from_flags()  # before anything touches a device
    resources.enable_compilation_cache()  # before the first compile
    shard = pipeline.search_shard(config)  # None: this process's own (i/n of n processes)
    examples = _questions(pipeline.load_splits(config), FLAGS.set)
    model = pipeline.load_model_for(config)
    opts = pipeline.search_config(config)
    task = dataclasses.replace(pipeline.task_config(config), reward=opts.reward)
    scorer = TaskScorer(model, examples, task, max_batch=opts.max_batch,
                        per_question=opts.per_question)
    run = run_search(examples, scorer, opts.tree(), FLAGS.out, shard=shard, repair=opts.repair,
                     max_active=opts.max_active,
                     on_record=lambda r: log.info("%s: %d valid of %d evaluated, initial score %s", r.id,
                                                  len(r.valid), r.evaluations, r.initial_score))
    print(json.dumps({"output": run.output_path, "written": run.written, "skipped": run.skipped,
                      "evaluations": run.evaluations, "seconds": round(run.seconds, 1),
                      "total_evaluations": run.total_evaluations, "total_seconds": round(run.total_seconds, 1)}))
    count = run.shard[1] if shard is None else 1  # several processes: merge their shards into --out
    if count > 1:
      sharding.wait_for_all("search_shards_done")
      sharding.on_lead("search_merged", lambda: print(
          f"{len(records.merge_shards([records.shard_path(FLAGS.out, i, count) for i in range(count)], FLAGS.out))} "
          f"records from {count} shards -> {FLAGS.out}", flush=True))
    if FLAGS.summary and (shard is None or shard[1] == 1) and sharding.is_lead():
      print(json.dumps(summary.write_summary(records.read_records(FLAGS.out), FLAGS.summary,
                                             title=f"{model.name} / {config.name} ({FLAGS.set})"), indent=2))
  except user_errors() as e:
    print(f"polar_jax.search: error: {e}", file=sys.stderr)
    sys.exit(2)


def _run_command(args: Sequence[str]) -> None:
  """`run` with its absl flags (exits, as absl apps do)."""
  from absl import app
  _define_run_flags()
  from polar_jax.options_io import strict_flags_parser
  app.run(_run, argv=[_RUN_USAGE, *args], flags_parser=strict_flags_parser("polar_jax.search"))


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m polar_jax.search", description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.splitlines()[2:9]))
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("run", add_help=False,
                 help="search the config's questions (resumable; absl flags: `run --help`)")

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
  imp.add_argument("--depth", type=int, default=None,
                   help="the model's layer count (needed for files another tool wrote), e.g. 28")

  summ = sub.add_parser("summary", help="summary.json and layer_usage.png")
  summ.add_argument("records")
  summ.add_argument("out_dir")
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  """`argv`: the arguments after the program name (default `sys.argv[1:]`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # `run --summary` and `summary` write PNG files; the library chooses no backend.
  if argv and argv[0] == "run":
    _run_command(argv[1:])
    return
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
  logging.getLogger("polar_jax").setLevel(logging.INFO)  # Our progress, not every library's chatter.
  try:
    if args.command == "merge":
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
      for line in interchange.space_report(out).lines():
        print(line)
    elif args.command == "summary":
      print(json.dumps(summary.write_summary(records.read_records(args.records), args.out_dir), indent=2))
  except user_errors() + (ValueError,) as e:  # every failure here is about the files given
    print(f"polar_jax.search: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
