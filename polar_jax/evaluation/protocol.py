"""The evaluation protocol: every method on the same questions, prompts and metrics, from one method table.

    results = run_evaluation(EvalOptions(), model=model, task=task, test_sets={"gsm8k": examples},
                             predictor=predictor, search_records=records, calibration=train_examples,
                             out_dir="/tmp/eval")

Methods (`EvalOptions.methods`; `METHOD_TABLE` below, run in this order on every test set):
  full_depth        the plain model, greedy
  sampling          the full program sampled k times at each of `temperatures`
  polar             the predictor's top-k programs per question, all run (pass@1 = the top program)
  polar_dense       the same predictor trained on the menu's dense supervision (`menu.dense`): its top-1, run
  shortgpt          ShortGPT with n chosen to match PoLar's mean executed layers, plus `shortgpt_sweep`
  random_programs   random programs of PoLar's per-question lengths, in PoLar's program space
  router            the DR.LLM-style per-layer router (`evaluation/router.py`), trained on the search records
and once, over the search records rather than a test set:
  search_ablations  oracles over the searched questions' valid programs: joint, skip-only, repeat-only (the
                    label names the split)

A method is a `Method`: an optional `prepare(ctx)` that fits or loads what it needs once (ShortGPT's Block
Influence on calibration questions, the router on the search records) and `run(ctx, test_set, examples)`
returning its `MethodRun`s through `ctx.run`, which loads a finished run from `runs/<test set>/<key>.json`
instead of recomputing it (an interrupted evaluation resumes per method). To add a method, write its two
functions and add one entry to `METHOD_TABLE` (and its name to `options.EVAL_METHODS`).

Outputs in `out_dir`: `runs/` (every per-test-set method, the menu's rows included), `questions.jsonl` (the test
questions), `results.json`, `results.md` (with the per-question section of `polar_jax.inspect`), `tradeoff.png`,
`layer_usage.png` (`report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from polar_jax import inspect as inspect_lib
from polar_jax import options as options_lib
from polar_jax.evaluation import full_depth, metrics, random_programs, report, search_oracle, shortgpt
from polar_jax.evaluation.outcomes import MethodRun, run_pairs
from polar_jax.evaluation.polar import polar_run, trust_search_cache
from polar_jax.options import EvalOptions
from polar_jax.program_eval import prompt_ids
from polar_jax.programs import Program
from polar_jax.programs.executor import executor_for
from polar_jax.records import SearchRecord
from polar_jax.workdir import write_json_atomic

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


@dataclasses.dataclass
class EvalContext:
  """What the methods of one evaluation share: inputs, options, the run store, and what earlier methods left
  (`polar`: this test set's PoLar run, which ShortGPT-matched and random programs take lengths from)."""
  config: EvalOptions
  model: Any
  task: Any
  predictor: Any
  search_records: Sequence[SearchRecord]
  calibration: Sequence[Any]
  out: pathlib.Path
  depth: int
  k: int
  common: dict[str, Any]
  store: _RunStore
  runs: list[MethodRun] = dataclasses.field(default_factory=list)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  warmed: set[str] = dataclasses.field(default_factory=set)
  state: dict[str, Any] = dataclasses.field(default_factory=dict)  # what `prepare` steps fitted
  polar: dict[str, MethodRun] = dataclasses.field(default_factory=dict)  # test set -> PoLar run
  menu: Any = None  # the menu stage's MenuMatrix, when there is one
  menu_dir: Any = None  # its directory (the selectors' cached question features)
  dense_predictor: Any = None  # the predictor trained on the menu's dense supervision (`menu.dense`)

  def say(self, message: str) -> None:
    if self.config.progress:
      print(message, flush=True)

  def skip(self, method: str, reason: str) -> None:
    self.skipped.append({"method": method, "reason": reason})

  def run(self, test_set: str, examples: Sequence[Any], key: str, compute: Callable[[], MethodRun]) -> MethodRun:
    """The saved run of `key` on `test_set`, or `compute()` (after one untimed full-depth warm-up batch per
    test set, so compiles stay out of every method's timings); appended to the results."""
    def timed():
      if self.config.warmup and test_set not in self.warmed:
        self.warmed.add(test_set)
        full = Program.full(self.depth)
        n = min(len(examples), int(self.config.max_batch))
        warm = {**self.common, "progress": f"warm-up on {test_set}" if self.common.get("progress") else False}
        run_pairs(self.model, examples, [(i, full) for i in range(n)], self.task, **warm)
      self.say(f"evaluate: {key} on {test_set} ({len(examples)} questions)")
      shown = self.common.get("progress")
      if shown:  # the method's bars are named by method and test set, not "run_programs"
        self.common["progress"] = f"{key} on {test_set}"
      try:
        return compute()
      finally:
        self.common["progress"] = shown
    result = self.store.get(test_set, key, [str(ex.id) for ex in examples], timed)
    self.runs.append(result)
    return result


@dataclasses.dataclass(frozen=True)
class Method:
  """One evaluation method: `run(ctx, test_set, examples)` (None: not run per test set) and an optional
  `prepare(ctx)` run once before any test set."""
  run: Callable[[EvalContext, str, Sequence[Any]], None] | None = None
  prepare: Callable[[EvalContext], None] | None = None
  finish: Callable[[EvalContext], None] | None = None  # once after every test set


# --- the methods ----------------------------------------------------------------------------------------------


def _full_depth(ctx: EvalContext, name: str, examples) -> None:
  ctx.run(name, examples, "full_depth_greedy",
          lambda: full_depth.full_depth_greedy(ctx.model, examples, ctx.task, test_set=name, **ctx.common))


def _sampling(ctx: EvalContext, name: str, examples) -> None:
  for t in ctx.config.temperatures:
    ctx.run(name, examples, full_depth.sampling_method_key(float(t)),
            lambda t=t: full_depth.full_depth_sampling(ctx.model, examples, ctx.task, temperature=float(t),
                                                       num_samples=ctx.k, test_set=name,
                                                       seed=int(ctx.config.sampling_seed), **ctx.common))


def _polar_prepare(ctx: EvalContext) -> None:
  if ctx.predictor is None:
    ctx.skip("polar", "no predictor was given")


def _polar(ctx: EvalContext, name: str, examples) -> None:
  if ctx.predictor is None:
    return
  run = ctx.run(name, examples, "polar",
                lambda: polar_run(ctx.model, examples, ctx.task, ctx.predictor, k=ctx.k, test_set=name,
                                  warmup=bool(ctx.config.warmup), **ctx.common))
  ctx.polar[name] = run
  if ctx.config.trust_search_cache:
    ctx.runs.append(trust_search_cache(run, examples, ctx.search_records))


def _polar_dense(ctx: EvalContext, name: str, examples) -> None:
  """The paper's predictor trained on the menu's dense supervision (`menu.dense`): its top-1 program, run."""
  if ctx.dense_predictor is None:
    if not ctx.state.get("polar_dense_skipped"):
      ctx.state["polar_dense_skipped"] = True
      ctx.skip("polar_dense", "no dense predictor (the menu stage trains it with menu.dense_predictor=True)")
    return
  ctx.run(name, examples, "polar_dense",
          lambda: polar_run(ctx.model, examples, ctx.task, ctx.dense_predictor, k=1, test_set=name,
                            warmup=bool(ctx.config.warmup), method="polar_dense",
                            label="PoLar's predictor trained on the menu's dense supervision (top-1)",
                            **ctx.common))


def _shortgpt_prepare(ctx: EvalContext) -> None:
  limit = int(ctx.config.calibration_size)
  ctx.say(f"evaluate: ShortGPT Block Influence on {min(len(ctx.calibration), limit)} calibration questions")
  path = ctx.out / "block_influence.json"
  if path.exists():
    ctx.state["influence"] = np.asarray(json.loads(path.read_text())["block_influence"], np.float64)
  elif not ctx.calibration:
    ctx.skip("shortgpt", "no calibration questions were given")
  else:
    chosen = list(ctx.calibration)[:limit]
    influence = shortgpt.block_influence(ctx.model, prompt_ids(ctx.model, chosen, ctx.task))
    write_json_atomic(path, {"calibration_questions": len(chosen),
                             "block_influence": [float(v) for v in influence]})  # a kill leaves no torn file
    ctx.state["influence"] = influence


def _shortgpt(ctx: EvalContext, name: str, examples) -> None:
  influence = ctx.state.get("influence")
  if influence is None:
    return
  sweep = [int(n) for n in ctx.config.shortgpt_sweep if 0 < int(n) < ctx.depth]
  matched_n = None
  polar = ctx.polar.get(name)
  if ctx.config.shortgpt_match and polar is not None:
    matched_n = shortgpt.matched_removal(ctx.depth, metrics.compute_metrics(polar.outcomes)["layers_per_token"])
  elif ctx.config.shortgpt_match:
    ctx.skip("shortgpt (matched)", f"no PoLar run on {name} to match")
  for n in ([matched_n] if matched_n is not None else []) + [n for n in sweep if n != matched_n]:
    run = ctx.run(name, examples, f"shortgpt_n{n}",
                  lambda n=n: shortgpt.run_shortgpt(ctx.model, examples, ctx.task, influence, n, test_set=name,
                                                    **ctx.common))
    if n == matched_n:  # The same run, named as the matched row (and saved under that name for inspection).
      matched = dataclasses.replace(run, method="shortgpt_matched",
                                    label=f"ShortGPT, {n} layers removed (n matched to PoLar's mean layers)",
                                    info={**run.info, "matched_to": "polar"})
      ctx.runs[-1] = ctx.store.get(name, matched.method, [str(ex.id) for ex in examples], lambda: matched)


def _random_programs(ctx: EvalContext, name: str, examples) -> None:
  polar = ctx.polar.get(name)
  if polar is None:
    ctx.skip("random_programs", f"no PoLar run on {name} to take lengths from")
    return
  lengths = [len(o.candidates[0].program) if o.candidates else None for o in polar.outcomes]
  ctx.run(name, examples, "random_programs",
          lambda: random_programs.run_random_programs(ctx.model, examples, ctx.task, lengths, test_set=name,
                                                      seed=int(ctx.config.random_seed), matched_to="PoLar top-1",
                                                      **ctx.common))


def _search_ablations(ctx: EvalContext) -> None:
  if not ctx.search_records:
    ctx.skip("search_ablations", "no search records were given")
    return
  for space in search_oracle.ORACLE_SPACES:
    ctx.runs.append(search_oracle.oracle_run(ctx.search_records, space, test_set=SEARCH_TEST_SET,
                                             split_label=ctx.config.search_split or None))


def _router_prepare(ctx: EvalContext) -> None:
  from polar_jax.evaluation import router  # pylint: disable=import-outside-toplevel
  ctx.say(f"evaluate: the per-layer router on {len(ctx.search_records)} search records")
  if not ctx.search_records:
    ctx.skip("router", "no search records to train on")
    return
  ctx.state["router"] = router.train_or_load_router(options_lib.to_config_dict(ctx.config.router), ctx.model,
                                                    ctx.task, ctx.search_records, ctx.out / "router")


def _router(ctx: EvalContext, name: str, examples) -> None:
  from polar_jax.evaluation import router  # pylint: disable=import-outside-toplevel
  if "router" not in ctx.state:
    return
  ctx.run(name, examples, "router",
          lambda: router.run_router(ctx.model, examples, ctx.task, ctx.state["router"], test_set=name,
                                    warmup=bool(ctx.config.warmup), **ctx.common))


def _menu(ctx: EvalContext, name: str, examples) -> None:
  from polar_jax.evaluation import menu_rows  # pylint: disable=import-outside-toplevel
  if ctx.menu is None:
    if not ctx.state.get("menu_skipped"):  # once, not per test set
      ctx.state["menu_skipped"] = True
      ctx.skip("menu", "no menu matrix (run the menu stage)")
    return
  runs = menu_rows.menu_runs(ctx.menu, examples, test_set=name)
  if not runs:
    ctx.skip("menu", f"the menu matrix lacks questions of {name!r}")
  ids = [str(ex.id) for ex in examples]
  for run in runs:  # saved like every method's run (read from the matrix, nothing is run)
    ctx.runs.append(ctx.store.get(name, run.method, ids, lambda run=run: run))


def _selection(ctx: EvalContext, name: str, examples) -> None:
  from polar_jax.evaluation import selection  # pylint: disable=import-outside-toplevel
  if ctx.menu is None or ctx.menu_dir is None:
    if not ctx.state.get("selection_skipped"):
      ctx.state["selection_skipped"] = True
      ctx.skip("selection", "no menu matrix (run the menu stage)")
    return
  menu_ids = {q.id for q in ctx.menu.questions("test")}
  if any(ex.id not in menu_ids for ex in examples):
    ctx.skip("selection", f"the menu matrix lacks questions of {name!r}")
    return
  ctx.say(f"evaluate: menu selectors on {name} ({len(examples)} questions)")
  selection.selection_runs(ctx.model, ctx.task, ctx.menu, ctx.menu_dir, examples, test_set=name,
                           saved=lambda key, compute: ctx.run(name, examples, key, compute), **ctx.common)


# Run order per test set; `prepare` steps run in PREPARE_ORDER first. PoLar precedes the methods matched to it.
METHOD_TABLE: dict[str, Method] = {
    "full_depth": Method(run=_full_depth),
    "sampling": Method(run=_sampling),
    "polar": Method(run=_polar, prepare=_polar_prepare),
    "polar_dense": Method(run=_polar_dense),
    "shortgpt": Method(run=_shortgpt, prepare=_shortgpt_prepare),
    "random_programs": Method(run=_random_programs),
    "menu": Method(run=_menu),
    "selection": Method(run=_selection),
    "router": Method(run=_router, prepare=_router_prepare),
    "search_ablations": Method(finish=_search_ablations),
}
PREPARE_ORDER = ("shortgpt", "polar", "router")
assert set(METHOD_TABLE) == set(options_lib.EVAL_METHODS)


def run_evaluation(config: EvalOptions | ml_collections.ConfigDict, *, model, task,
                   test_sets: Mapping[str, Sequence[Any]], predictor=None,
                   search_records: Sequence[SearchRecord] = (), calibration: Sequence[Any] = (), out_dir,
                   menu=None, menu_dir=None, dense_predictor=None) -> dict:
  """Runs the configured methods on every test set and writes the report (see the module docstring).

  Args:
    config: `polar_jax.options.EvalOptions`, or its ConfigDict form (`default_eval_config()` or a variant).
    model: the loaded `Model`.
    task: a `polar_jax.program_eval.TaskConfig` (prompt, answer format, max_new_tokens).
    test_sets: name -> examples (in-distribution and out-of-distribution sets alike).
    predictor: a `ProgramPredictor`, or None to skip the PoLar rows (and those matched to them).
    search_records: the search output (for the search ablations and `trust_search_cache`).
    calibration: training questions for ShortGPT's Block Influence.
    menu: the menu stage's `MenuMatrix` (the best fixed program and menu oracle rows), or None.
    menu_dir: its directory (the menu selectors read their fitting features there).
    dense_predictor: a `ProgramPredictor` trained on the menu's dense supervision (`polar_dense`), or None.
    out_dir: where runs and the report go.

  Returns:
    The results dict written to `results.json`.
  """
  config = options_lib.coerce(EvalOptions, config, "evaluate")
  methods = options_lib.parse_methods(config.methods)
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
  common = dict(max_batch=int(config.max_batch), progress=bool(config.progress), executor=executor_for(model))
  ctx = EvalContext(config=config, model=model, task=task, predictor=predictor, search_records=search_records,
                    calibration=calibration, out=out, depth=model.config.num_layers, k=k, common=common,
                    store=_RunStore(out), menu=menu, menu_dir=menu_dir, dense_predictor=dense_predictor)
  chosen = [m for m in METHOD_TABLE if m in methods]
  for name in PREPARE_ORDER:
    if name in chosen and METHOD_TABLE[name].prepare is not None:
      METHOD_TABLE[name].prepare(ctx)
  for test_set, examples in test_sets.items():
    for name in chosen:
      if METHOD_TABLE[name].run is not None:
        METHOD_TABLE[name].run(ctx, test_set, examples)
  for name in chosen:
    if METHOD_TABLE[name].finish is not None:
      METHOD_TABLE[name].finish(ctx)
  write_questions(out, test_sets)
  results = build_results(config, model, task, test_sets, ctx.runs, ctx.skipped, ctx.depth, k)
  report.write_report(results, out, plots=bool(config.plots))
  return results


def write_questions(out: pathlib.Path, test_sets: Mapping[str, Sequence[Any]]) -> None:
  """`out/questions.jsonl`: every test question (its test set and `Example` fields), one line each, for reading
  runs back per question (`polar_jax.inspect`)."""
  lines = [json.dumps({"test_set": name, **ex.to_dict()}, ensure_ascii=False)
           for name, examples in test_sets.items() for ex in examples]
  tmp = out / (inspect_lib.QUESTIONS_FILE + ".tmp")
  tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  os.replace(tmp, out / inspect_lib.QUESTIONS_FILE)


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
  metrics.add_intervals(rows, runs, test_sets)
  sets = {}
  for name, examples in test_sets.items():
    levels: dict[str, int] = {}
    for ex in examples:
      levels[str(ex.level)] = levels.get(str(ex.level), 0) + 1
    sets[name] = {"n": len(examples), "levels": levels,
                  "datasets": sorted({str(ex.id).split("/")[0] for ex in examples})}
  questions = {name: {str(ex.id): {"question": ex.question, "gold": ex.answer} for ex in examples}
               for name, examples in test_sets.items()}
  per_question = inspect_lib.per_question_results([run.to_json() for run in runs], questions)
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
      "per_question": per_question,
      "skipped": list(skipped),
  }
