"""The evaluation protocol: PoLar and every baseline on the same questions, prompts and metrics.

    results = run_evaluation(default_eval_config(), model=model, task=task, test_sets={"gsm8k": examples},
                             predictor=predictor, search_records=records, calibration=train_examples,
                             out_dir="/tmp/eval")

Methods (`config.methods`), each run on every test set:
  full_depth        the plain model, greedy
  sampling          the full program sampled k times at each of `config.temperatures`
  polar             the predictor's top-k programs per question, all run (pass@1 = the top program)
  shortgpt          ShortGPT with n chosen to match PoLar's mean executed layers, plus `config.shortgpt_sweep`
  random_programs   random programs of PoLar's per-question lengths, in PoLar's program space
  search_ablations  oracles over the search records' valid programs: joint, skip-only, repeat-only (these are
                    the searched questions, not the test questions; the label names the split)
  router            the DR.LLM-style per-layer router (`baselines/router.py`), trained on the search records

Our PoLar rows always run every decoded program. `config.trust_search_cache` adds a row computed the way the
reference release scores by default: a decoded program that the search found valid (invalid) for that same
question counts as correct (wrong) without being run. It is for comparison only; in the pipeline the test
questions are never searched, so that row equals the PoLar row and reports 0 cache hits.

Outputs in `out_dir`: `runs/<test set>/<method>.json` (every method's per-question candidates; a finished one
is loaded, not recomputed, so an interrupted evaluation resumes per method), `results.json`, `results.md`,
`tradeoff.png`, `layer_usage.png` (`polar_jax.report`). Metrics: `polar_jax.baselines.metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from polar_jax import options as options_lib
from polar_jax import report
from polar_jax.baselines import full_depth, metrics, random_programs, search_oracle, shortgpt
from polar_jax.baselines.outcomes import MethodRun, run_pairs, run_ranked
from polar_jax.data.example import normalize_question
from polar_jax.options import EvalOptions
from polar_jax.program_eval import prompt_ids
from polar_jax.programs import Program
from polar_jax.programs.executor import executor_for
from polar_jax.records import SearchRecord

METHODS = options_lib.EVAL_METHODS
parse_methods = options_lib.parse_methods
SEARCH_TEST_SET = "search records"


def default_eval_config() -> ml_collections.ConfigDict:
  """The evaluation's options (`polar_jax.options.EvalOptions`, fields documented there) as a ConfigDict."""
  return options_lib.to_config_dict(EvalOptions())


def load_test_sets(specs: Sequence[str | tuple[str, str]], *, limit: int | None = None, seed: int = 0,
                   **load_kwargs: Any) -> dict[str, list]:
  """Test sets by name from `dataset` or `dataset:split` specs (default split "test"), e.g. for out-of-
  distribution evaluation: ["gsm8k", "svamp", "asdiv", "mawps", "jsonl:test"] (jsonl with manual_dir=...)."""
  from polar_jax.data import load_split  # pylint: disable=import-outside-toplevel
  out = {}
  for spec in specs:
    dataset, split = (spec.split(":", 1) + ["test"])[:2] if isinstance(spec, str) else spec
    out[f"{dataset}/{split}"] = load_split(dataset, split, limit=limit, seed=seed, **load_kwargs)
  return out


# --- PoLar ---------------------------------------------------------------------------------------------------


def polar_run(model, examples: Sequence[Any], task, predictor, *, k: int, test_set: str, max_batch: int = 32,
              progress: bool = False, executor=None, warmup: bool = True) -> MethodRun:
  """Decodes the predictor's top-k programs per question (timed: encoder + predictor + beam search) and runs
  them all (rank-1 programs timed on their own). `warmup` first predicts one question untimed (compiles)."""
  depth = model.config.num_layers
  if predictor.config.depth != depth:
    raise ValueError(f"The predictor was trained for a {predictor.config.depth}-layer model, but the model has "
                     f"{depth} layers; train one on this model's search records.")
  if warmup:
    predictor.predict([examples[0].question])
  start = time.perf_counter()
  decoded = predictor.predict([ex.question for ex in examples])
  overhead = time.perf_counter() - start
  ranked = [[c.program for c in d.candidates[:k]] for d in decoded]
  scores = [[c.score for c in d.candidates[:k]] for d in decoded]
  return run_ranked(model, examples, ranked, task, method="polar", label=f"PoLar (top-{k} predicted programs)",
                    test_set=test_set, scores=scores, overhead_seconds=overhead, max_batch=max_batch,
                    progress=progress, executor=executor,
                    info={"k": k, "empty_programs_dropped": int(sum(d.num_empty for d in decoded)),
                          "decode": dataclasses.asdict(predictor.decode_options)})


def _record_lookup(search_records: Sequence[SearchRecord]) -> Callable[[Any], SearchRecord | None]:
  by_id = {r.id: r for r in search_records}
  by_text = {normalize_question(r.question): r for r in search_records}
  return lambda ex: by_id.get(str(ex.id)) or by_text.get(normalize_question(ex.question))


def trust_search_cache(run: MethodRun, examples: Sequence[Any],
                       search_records: Sequence[SearchRecord]) -> MethodRun:
  """The release's cache-trusting score of a PoLar run: a candidate the search found valid (invalid) for the
  same question counts as correct (wrong) without our run's verdict. Comparison only."""
  find = _record_lookup(search_records)
  valid_hits = invalid_hits = questions = 0
  outcomes = []
  for ex, outcome in zip(examples, run.outcomes, strict=True):
    rec = find(ex)
    if rec is None:
      outcomes.append(outcome)
      continue
    questions += 1
    valid = set(rec.valid_programs)
    invalid = set(rec.invalid_programs)
    cands = []
    for c in outcome.candidates:
      if c.program in valid:
        valid_hits += 1
        c = dataclasses.replace(c, correct=True, source="cache_valid")
      elif c.program in invalid:
        invalid_hits += 1
        c = dataclasses.replace(c, correct=False, source="cache_invalid")
      cands.append(c)
    outcomes.append(dataclasses.replace(outcome, candidates=tuple(cands)))
  return dataclasses.replace(
      run, method=f"{run.method}_trust_search_cache", kind="reference",
      label=f"{run.label}, release protocol: search-cache verdicts trusted (comparison only)",
      outcomes=tuple(outcomes),
      info={**run.info, "searched_questions": questions, "valid_cache_hits": valid_hits,
            "invalid_cache_hits": invalid_hits})


# --- orchestration -------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "test_set"


class _RunStore:
  """Saved method runs under `out_dir/runs`: a finished (test set, method) is loaded instead of recomputed."""

  def __init__(self, out_dir: pathlib.Path):
    self.root = out_dir / "runs"

  def get(self, test_set: str, method: str, ids: Sequence[str], compute: Callable[[], MethodRun]) -> MethodRun:
    path = self.root / _slug(test_set) / f"{_slug(method)}.json"
    if path.exists():
      run = MethodRun.load(path)
      if run.ids != list(ids):
        raise ValueError(f"{path} holds {method} on {len(run.ids)} other questions than the {len(ids)} of test set "
                         f"{test_set!r}; use a new out_dir or delete that file to recompute it.")
      return run
    run = compute()
    run.save(path)
    return run


def _polar_lengths(run: MethodRun) -> list[int | None]:
  return [len(o.candidates[0].program) if o.candidates else None for o in run.outcomes]


def run_evaluation(config: EvalOptions | ml_collections.ConfigDict, *, model, task, test_sets: Mapping[str, Sequence[Any]],
                   predictor=None, search_records: Sequence[SearchRecord] = (),
                   calibration: Sequence[Any] = (), out_dir) -> dict:
  """Runs the configured methods on every test set and writes the report (see the module docstring).

  Args:
    config: `polar_jax.options.EvalOptions`, or its ConfigDict form (`default_eval_config()` or a variant).
    model: the loaded `Model`.
    task: a `polar_jax.program_eval.TaskConfig` (prompt, answer format, max_new_tokens).
    test_sets: name -> examples (in-distribution and out-of-distribution sets alike).
    predictor: a `ProgramPredictor`, or None to skip the PoLar rows (and those matched to them).
    search_records: the search output (for the search ablations and `trust_search_cache`).
    calibration: training questions for ShortGPT's Block Influence.
    out_dir: where runs and the report go.

  Returns:
    The results dict written to `results.json`.
  """
  config = options_lib.coerce(EvalOptions, config, "evaluate")
  methods = parse_methods(config.methods)
  k = int(config.k)
  if k < 1:
    raise ValueError(f"config.k must be >= 1, got {k}.")
  if not test_sets:
    raise ValueError("run_evaluation needs at least one test set.")
  for name, examples in test_sets.items():
    if not examples:
      raise ValueError(f"Test set {name!r} is empty.")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  store = _RunStore(out)
  depth = model.config.num_layers
  executor = executor_for(model)
  common = dict(max_batch=int(config.max_batch), progress=bool(config.progress), executor=executor)
  skipped: list[dict[str, str]] = []
  runs: list[MethodRun] = []
  warmed: set[str] = set()
  say = (lambda msg: print(msg, flush=True)) if config.progress else (lambda msg: None)

  def get(test_set, examples, key, compute):
    def timed():
      if config.warmup and test_set not in warmed:
        warmed.add(test_set)
        full = Program.full(depth)
        run_pairs(model, examples, [(i, full) for i in range(min(len(examples), int(config.max_batch)))], task,
                  **common)
      say(f"evaluate: {key} on {test_set} ({len(examples)} questions)")
      return compute()
    run = store.get(test_set, key, [str(ex.id) for ex in examples], timed)
    runs.append(run)
    return run

  influence = None
  if "shortgpt" in methods:
    say(f"evaluate: ShortGPT Block Influence on {min(len(calibration), int(config.calibration_size))} "
        "calibration questions")
    influence = _block_influence(model, task, calibration, int(config.calibration_size), out, skipped)
  if "polar" in methods and predictor is None:
    skipped.append({"method": "polar", "reason": "no predictor was given"})
  router_model = None
  if "router" in methods:
    say(f"evaluate: the per-layer router on {len(search_records)} search records")
    router_model = _router(config, model, task, search_records, out, skipped)

  for name, examples in test_sets.items():
    if "full_depth" in methods:
      get(name, examples, "full_depth_greedy",
          lambda: full_depth.full_depth_greedy(model, examples, task, test_set=name, **common))
    if "sampling" in methods:
      for t in config.temperatures:
        get(name, examples, full_depth.sampling_method_key(float(t)),
            lambda t=t: full_depth.full_depth_sampling(model, examples, task, temperature=float(t), num_samples=k,
                                                       test_set=name, seed=int(config.sampling_seed), **common))
    polar = None
    if "polar" in methods and predictor is not None:
      polar = get(name, examples, "polar",
                  lambda: polar_run(model, examples, task, predictor, k=k, test_set=name,
                                    warmup=bool(config.warmup), **common))
      if config.trust_search_cache:
        runs.append(trust_search_cache(polar, examples, search_records))
    if influence is not None:
      sweep = [int(n) for n in config.shortgpt_sweep if 0 < int(n) < depth]
      matched_n = None
      if config.shortgpt_match and polar is not None:
        matched_n = shortgpt.matched_removal(depth, metrics.compute_metrics(polar.outcomes)["layers_per_token"])
      elif config.shortgpt_match:
        skipped.append({"method": "shortgpt (matched)", "reason": f"no PoLar run on {name} to match"})
      for n in ([matched_n] if matched_n is not None else []) + [n for n in sweep if n != matched_n]:
        run = get(name, examples, f"shortgpt_n{n}",
                  lambda n=n: shortgpt.run_shortgpt(model, examples, task, influence, n, test_set=name, **common))
        if n == matched_n:  # The same run, named as the matched row.
          runs[-1] = dataclasses.replace(run, method="shortgpt_matched",
                                         label=f"ShortGPT, {n} layers removed (n matched to PoLar's mean layers)",
                                         info={**run.info, "matched_to": "polar"})
    if "random_programs" in methods:
      if polar is None:
        skipped.append({"method": "random_programs", "reason": f"no PoLar run on {name} to take lengths from"})
      else:
        get(name, examples, "random_programs",
            lambda: random_programs.run_random_programs(model, examples, task, _polar_lengths(polar), test_set=name,
                                                        seed=int(config.random_seed), matched_to="PoLar top-1",
                                                        **common))
    if router_model is not None:
      from polar_jax.baselines import router  # pylint: disable=import-outside-toplevel
      get(name, examples, "router",
          lambda: router.run_router(model, examples, task, router_model, test_set=name,
                                    warmup=bool(config.warmup), **common))

  if "search_ablations" in methods:
    if search_records:
      for space in search_oracle.ORACLE_SPACES:
        runs.append(search_oracle.oracle_run(search_records, space, test_set=SEARCH_TEST_SET,
                                             split_label=config.search_split or None))
    else:
      skipped.append({"method": "search_ablations", "reason": "no search records were given"})

  results = build_results(config, model, task, test_sets, runs, skipped, depth, k)
  report.write_report(results, out, plots=bool(config.plots))
  return results


def _block_influence(model, task, calibration, limit: int, out: pathlib.Path, skipped: list) -> np.ndarray | None:
  path = out / "block_influence.json"
  if path.exists():
    return np.asarray(json.loads(path.read_text())["block_influence"], np.float64)
  if not calibration:
    skipped.append({"method": "shortgpt", "reason": "no calibration questions were given"})
    return None
  chosen = list(calibration)[:limit]
  influence = shortgpt.block_influence(model, prompt_ids(model, chosen, task))
  path.write_text(json.dumps({"calibration_questions": len(chosen),
                              "block_influence": [float(v) for v in influence]}, indent=1))
  return influence


def _router(config, model, task, search_records, out: pathlib.Path, skipped: list):
  from polar_jax.baselines import router  # pylint: disable=import-outside-toplevel
  if not search_records:
    skipped.append({"method": "router", "reason": "no search records to train on"})
    return None
  return router.train_or_load_router(options_lib.to_config_dict(config.router), model, task, search_records, out / "router")


def _task_info(task) -> dict[str, Any]:
  prompt = getattr(task, "prompt", None)
  return {"prompt": getattr(prompt, "name", None), "template": getattr(prompt, "template", None),
          "answer_format": getattr(prompt, "answer_format", None),
          "assistant_prefix": getattr(prompt, "assistant_prefix", None),
          "max_new_tokens": getattr(task, "max_new_tokens", None),
          "choice_scoring": getattr(task, "choice_scoring", None)}


def build_results(config, model, task, test_sets: Mapping[str, Sequence[Any]], runs: Sequence[MethodRun],
                  skipped: Sequence[Mapping[str, str]], depth: int, k: int) -> dict[str, Any]:
  """The results dict: metadata, one row per (method, test set, level), PoLar's layer usage."""
  ks = tuple(range(1, k + 1))
  rows = [row for run in runs for row in metrics.method_rows(run, depth, ks)]
  sets = {}
  for name, examples in test_sets.items():
    levels: dict[str, int] = {}
    for ex in examples:
      levels[str(ex.level)] = levels.get(str(ex.level), 0) + 1
    sets[name] = {"n": len(examples), "levels": levels,
                  "datasets": sorted({str(ex.id).split("/")[0] for ex in examples})}
  usage = {run.test_set: metrics.layer_usage([o.candidates[0].program for o in run.outcomes if o.candidates], depth)
           for run in runs if run.method == "polar"}
  return {
      "title": str(config.title),
      "model": {"name": getattr(model, "name", None), "depth": depth},
      "task": _task_info(task),
      "k": k,
      "config": options_lib.to_json(options_lib.coerce(EvalOptions, config, "evaluate")),
      "test_sets": sets,
      "rows": rows,
      "polar_layer_usage": usage,
      "skipped": list(skipped),
  }
