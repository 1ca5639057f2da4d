"""The [scoring] search target on one machine: 4x the search in no more wall time than an earlier revision.

Runs the default's search as it was at `--baseline` (a git revision of this repository: its own default config,
`--baseline-sims` simulations, its scorer `--baseline-reward`) and as it is now at `--sims` simulations, in turns
(baseline first in odd pairs, this tree first in even ones), each alone in a fresh process, and prints JSON: each
run's search seconds (the `seconds` its last line prints: the search, not data preparation or model loading),
evaluations, the load average around it, and the ratios of this tree's seconds to the baseline's (per pair,
min and median). The target: every pair's `ratio` <= 1.0 with `evaluations_ratio` >= 4.

  python benchmarks/search_budget.py --baseline=615ab23 --out=search_budget.json
  python benchmarks/search_budget.py --baseline=615ab23 --head-flags=--config.search.leaves_per_round=96

`--head-flags` adds flags to this tree's search (one string, split like a shell line; recorded in the JSON).

The baseline runs from a detached git worktree (removed at exit) with its own data cache (`--cache`, kept, so
a second run skips its data preparation), as its code would read its own files; each run's records are copied
to `--cache/records-<time>/` (`baseline{i}.jsonl`, `head{i}.jsonl`; their paths are in the JSON). This tree runs with
POLAR_JAX_XLA_CACHE=0, so neither side reads compiled executables from an earlier run. ~16 min a pair alone on
the 2-core CPU (`--sims=96` against 24).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _search(cwd: pathlib.Path, args: list[str], env: dict[str, str], out: pathlib.Path, log: pathlib.Path) -> dict:
  """One search run in a fresh interpreter: its last JSON line, the wall seconds of the process and the load. A
  failed run's stderr goes to `log` (kept: `out` lives in a temporary directory)."""
  load0, t0 = os.getloadavg()[0], time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "polar_jax.search", "run", f"--out={out}", *args], cwd=cwd,
                        env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - t0
  last = common.search_result(proc.stdout)
  if proc.returncode or last is None:
    log.write_text(proc.stderr)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
    raise RuntimeError(f"the search in {cwd} failed (exit {proc.returncode}): {tail[0]} (its stderr: {log})")
  return {"seconds": last["seconds"], "evaluations": last["evaluations"], "questions": last["written"],
          "output": last.get("output"),
          "process_seconds": round(wall, 1), "load_before": round(load0, 2),
          "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--baseline", required=True, help="git revision whose default search is the baseline")
  parser.add_argument("--baseline-sims", type=int, default=24)
  parser.add_argument("--baseline-reward", default="generate",
                      help="the baseline's search.reward ('generate': the scorer before the one-pass reward)")
  parser.add_argument("--sims", type=int, default=96, help="this tree's simulations per question")
  parser.add_argument("--head-flags", default="",
                      help="more flags for this tree's search, e.g. '--config.search.leaves_per_round=24'")
  parser.add_argument("--pairs", type=int, default=1)
  parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "polar_jax_search_budget_cache"),
                      help="the baseline's POLAR_JAX_CACHE (data and model files; kept between runs) and where a "
                      "failed run's stderr is written")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.pairs < 1:
    common.bad_input("search_budget", f"--pairs={args.pairs}: give 1 or more pairs")

  rev = subprocess.run(["git", "rev-parse", "--verify", f"{args.baseline}^{{commit}}"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  if rev.returncode:
    common.bad_input("search_budget", f"--baseline={args.baseline} is not a revision of {ROOT}; pass a commit of its "
                     "history")
  baseline_rev = rev.stdout.strip()
  head_rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
  dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip())
  os.makedirs(args.cache, exist_ok=True)
  try:
    head_flags = shlex.split(args.head_flags)
  except ValueError as e:
    common.bad_input("search_budget", f"--head-flags: {e}; pass one shell-quoted string")
  if any(f.startswith(("--out", "--config.search.num_simulations")) for f in head_flags):
    common.bad_input("search_budget", "--head-flags must not set --out or the simulations: use --sims")
  # Each invocation's records go to a folder of their own under --cache (kept, for `search summary`).
  records_dir = pathlib.Path(args.cache) / time.strftime("records-%Y%m%d-%H%M%S")
  runs: dict[str, list[dict]] = {"baseline": [], "head": []}
  with tempfile.TemporaryDirectory(prefix="search_budget_") as tmp:
    tree = pathlib.Path(tmp) / "baseline"
    added = subprocess.run(["git", "worktree", "add", "--detach", str(tree), baseline_rev], cwd=ROOT,
                           capture_output=True, text=True)
    if added.returncode:
      sys.exit(f"search_budget: git worktree add failed: {added.stderr.strip()}")
    failed = None
    try:
      # Neither side reads compiled executables from an earlier run: a user's JAX cache is not passed on.
      env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "PYTHONPATH")}
      base_env = {**env, "POLAR_JAX_CACHE": args.cache, "PYTHONPATH": str(tree)}
      head_env = {**env, "POLAR_JAX_XLA_CACHE": "0"}
      sides = {
          "baseline": lambda i: _search(tree, ["--config=configs/default.py",
                                               f"--config.search.num_simulations={args.baseline_sims}",
                                               f"--config.search.reward={args.baseline_reward}"],
                                        base_env, pathlib.Path(tmp) / f"baseline{i}.jsonl",
                                        pathlib.Path(args.cache) / f"baseline{i}.stderr.txt"),
          "head": lambda i: _search(ROOT, ["--config=configs/default.py",
                                           f"--config.search.num_simulations={args.sims}", *head_flags],
                                    head_env, pathlib.Path(tmp) / f"head{i}.jsonl",
                                    pathlib.Path(args.cache) / f"head{i}.stderr.txt"),
      }
      for i in range(args.pairs):
        for side in (("baseline", "head") if i % 2 == 0 else ("head", "baseline")):
          run = sides[side](i)
          runs[side].append(run)
          print(f"pair {i} {side}: {run}", file=sys.stderr)
          try:  # the records outlive the temporary directory (`search summary` gives each run's findings)
            records_dir.mkdir(parents=True, exist_ok=True)
            run["records"] = str(shutil.copy(run.pop("output") or "", records_dir / f"{side}{i}.jsonl"))
          except OSError as e:
            run["records"] = f"not kept: {e}"
    except RuntimeError as e:  # the runs done so far are still printed below
      failed = str(e)
    finally:
      if subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                        capture_output=True).returncode:
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
  pairs = min(len(runs["head"]), len(runs["baseline"]))
  ratios = [h["seconds"] / b["seconds"] for h, b in zip(runs["head"][:pairs], runs["baseline"][:pairs])]
  evals = {side: sorted({r["evaluations"] for r in runs[side]}) for side in runs}
  common.emit({
      "baseline_rev": baseline_rev, "head_rev": head_rev, "head_dirty": dirty,
      "baseline": {"simulations": args.baseline_sims, "reward": args.baseline_reward, "runs": runs["baseline"]},
      "head": {"simulations": args.sims, "flags": head_flags, "runs": runs["head"]},
      "evaluations_ratio": (evals["head"][0] / evals["baseline"][0]
                            if len(evals["head"]) == len(evals["baseline"]) == 1 else None),
      # A --head-flags shard or question count makes the ratios compare different work: say so.
      "same_questions": len({r["questions"] for side in runs for r in runs[side]}) <= 1,
      "ratio": [round(r, 3) for r in ratios], "ratio_min": round(min(ratios), 3) if ratios else None,
      "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
      "target": "every pair's ratio <= 1.0 with evaluations_ratio >= 4", "failed": failed,
      "machine": common.machine(),
  }, args.out)
  if failed:
    sys.exit(f"search_budget: {failed}")


if __name__ == "__main__":
  main()
