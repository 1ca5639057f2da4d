"""The end-to-end pipeline as library functions: convert -> search -> menu -> train -> evaluate in one workdir.

`main.py` is a thin absl wrapper around `run_pipeline(config, workdir)`; a notebook can call the same
function, or one stage at a time. The config (a ConfigDict from `configs/*.py` plus command-line overrides,
or a `polar_jax.options.PipelineOptions`) is read once, strictly, into frozen options
(`polar_jax.options`); each stage gets its own section. Each stage writes its outputs under the workdir and a
`<stage>/done.json` marker last (`polar_jax.workdir`); a stage whose marker exists is skipped, so a killed
run continues where it stopped (the search also resumes inside a stage: finished questions are never redone).

Workdir layout:
  config.json              the config the workdir belongs to
  convert/model.json       the model: name, source, depth, dtype, parameter count
  search/records.jsonl     one line per searched question (valid / invalid programs); summary.json,
                           layer_usage.png (the papers' findings); tensorboard/ (valid-program shares,
                           evaluations/s as questions finish)
  menu/                    the program menu: plan.json, chunks/*.npz, then matrix.npz + menu.json (the dense
                           outcome matrix, `polar_jax.menu`), features/, lab.json / lab.md, coverage.png,
                           programs.png
  predictor/               checkpoints, best/, tensorboard/ of the predictor's training
  predictor_dense/         the same predictor trained on the menu's train rows (`polar_jax.menu.dense`) and
                           dense_predictor.json (its test top-1s)
  evaluate/                per-method records, results.json, results.md, tradeoff.png, layer_usage.png,
                           tensorboard/ (pass@1, layers, seconds per method; the table as text)
  results.json, results.md the final table (copied from evaluate/)

Several processes (one per host; the entry point ran `jax.distributed.initialize`, see
`polar_jax.sharding.initialize_distributed`) run the same `run_pipeline` on one shared workdir and do the stages
convert, search and train (`MULTI_PROCESS_STAGES`). Process i searches questions i, i+n, ... into
`search/records.shard-<i>-of-<n>.jsonl`; when every shard is done, process 0 merges them into
`search/records.jsonl` (what the later stages read) and writes the summary and the marker. Training runs on
every process over a mesh of all their devices. Process 0 alone writes the shared files (config, markers) and
prints. The menu and the evaluation run one process (rerun the command without the multi-process flags and
with `--config.stages=menu,evaluate`). A killed process takes the job down (JAX's heartbeats); the same command
resumes every shard, with the same number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import time
from typing import Any

from polar_jax import options as options_lib
from polar_jax import summaries
from polar_jax import workdir as workdir_lib
from polar_jax.errors import ConfigError, UserError
from polar_jax.options import PipelineOptions, STAGES
from polar_jax.workdir import WorkdirError, WorkdirMismatchError

__all__ = ["ConfigError", "NoSupervisionError", "PipelineOptions", "Splits", "WorkdirError", "WorkdirMismatchError",
           "config_identity", "load_splits", "prepare_workdir", "run_pipeline", "validate_config"]


class NoSupervisionError(UserError, RuntimeError):
  """The search found no valid program to train on."""


class MultiProcessError(UserError, ValueError):
  """A setting a multi-process run cannot honour (a stage that runs in one process, an explicit shard)."""


# The stages a multi-process run does: the search in shards, the training over every process's devices.
MULTI_PROCESS_STAGES = ("convert", "search", "train")


def _processes() -> tuple[int, int]:
  """(this process's index, the process count): (0, 1) unless the entry point started several."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index(), jax.process_count()


def _device_count() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.device_count()


def search_shard(config: Any) -> tuple[int, int] | None:
  """The search's (index, count) from `search.shard`, or None for this process's own (process i of n); an
  explicit shard in a multi-process run is refused (every process would search the same questions)."""
  from polar_jax.search.records import parse_shard  # pylint: disable=import-outside-toplevel
  opts = _options(config)
  count = _processes()[1]
  if opts.search.shard and count > 1:
    raise MultiProcessError(f"config.search.shard={opts.search.shard} in a {count}-process run: leave it unset, "
                            f"process i searches shard i/{count}.")
  if not opts.search.shard:
    return None
  try:
    return parse_shard(opts.search.shard)
  except ValueError as e:  # one line, exit 2 (the entry points), not a traceback
    raise ConfigError(f"config.search.shard: {e} Give 'i/n' with 0 <= i < n, e.g. --config.search.shard=0/4.") from None


def check_processes(opts: PipelineOptions, stages: list[str]) -> int:
  """The process count; refuses what a multi-process run does not do."""
  count = _processes()[1]
  if count > 1:
    single = [s for s in stages if s not in MULTI_PROCESS_STAGES]
    if single:
      raise MultiProcessError(
          f"A {count}-process run does the stages {', '.join(MULTI_PROCESS_STAGES)} (the search in shards); "
          f"{' and '.join(single)} run in one process. Pass --config.stages={','.join(s for s in stages if s not in single)}"
          f", then rerun without the multi-process flags with --config.stages={','.join(single)}.")
    search_shard(opts)
  return count


def _options(config: Any) -> PipelineOptions:
  return options_lib.pipeline_options(config)


def config_identity(config: Any) -> dict[str, Any]:
  """The config as JSON, without the fields that may change between runs of one workdir."""
  return options_lib.identity(_options(config))


def stage_list(opts: PipelineOptions) -> list[str]:
  stages = _csv(opts.stages)
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ConfigError(f"Unknown stage(s) {unknown} in config.stages; stages are {list(STAGES)}.")
  return stages


def _csv(text: str) -> list[str]:
  return [t.strip() for t in str(text).split(",") if t.strip()]


def validate_config(config: Any) -> PipelineOptions:
  """Reads the config strictly and checks names and values before anything slow happens; raises ConfigError
  naming the field. Returns the options."""
  from polar_jax import data  # pylint: disable=import-outside-toplevel
  opts = _options(config)
  stage_list(opts)
  known = set(data.list_datasets())
  for field in ("datasets", "ood"):
    bad = [d for d in _csv(getattr(opts.data, field)) if d not in known]
    if bad:
      raise ConfigError(f"config.data.{field}: unknown dataset(s) {bad}; known: {sorted(known)}.")
  if "jsonl" in _csv(opts.data.datasets) + _csv(opts.data.ood) and not opts.data.manual_dir:
    raise ConfigError("config.data.datasets names 'jsonl' but config.data.manual_dir is empty: point it at a "
                      "folder with your {train,validation,test}.jsonl.")
  for field in ("num_search", "num_validation", "num_test", "num_calibration"):
    if getattr(opts.data, field) < 0:
      raise ConfigError(f"config.data.{field} must be >= 0, got {getattr(opts.data, field)}.")
  if opts.task.preset not in data.PRESETS:
    raise ConfigError(f"config.task.preset {opts.task.preset!r} is unknown; presets: {sorted(data.PRESETS)}.")
  if opts.encoder.name not in options_lib.ENCODERS:
    raise ConfigError(f"config.encoder.name {opts.encoder.name!r} is unknown; use 'minilm', "
                      "'token_embeddings' or 'hf' (with config.encoder.path).")
  if opts.encoder.name == "hf" and not opts.encoder.path:
    raise ConfigError("config.encoder.name='hf' needs config.encoder.path (a local HF snapshot, e.g. "
                      "Qwen3-Embedding-0.6B).")
  try:
    options_lib.parse_methods(opts.evaluate.methods)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return opts


def check_model(opts: PipelineOptions) -> None:
  """The model names an embedded model, or its path exists: checked before a run touches its workdir (a paper
  config without `model.path` is a valid config that this machine cannot run)."""
  import os  # pylint: disable=import-outside-toplevel
  from polar_jax.models import list_models  # pylint: disable=import-outside-toplevel
  path = os.path.expanduser(opts.model.path)
  if not opts.model.path and opts.model.name not in list_models():
    raise ConfigError(f"config.model.name {opts.model.name!r} is not embedded here (embedded: "
                      f"{', '.join(list_models())}): put its weights on this machine and set "
                      f"--config.model.path=/path/to/{opts.model.name} (a local HF snapshot directory or a .gguf "
                      "file).")
  if opts.model.path and not (os.path.isdir(path) or (path.endswith(".gguf") and os.path.isfile(path))):
    raise ConfigError(f"config.model.path {opts.model.path!r} is neither a directory (a local HF snapshot) nor a "
                      ".gguf file; fix the path.")


# Each stage's folders in the workdir (what rerunning it clears).
STAGE_DIRS = {"convert": ("convert",), "search": ("search",), "menu": ("menu",),
              "train": ("train", "predictor", "predictor_dense"), "evaluate": ("evaluate",)}
# Stages whose outputs a config change may delete only with overwrite=True (the search's records are hours of
# work that nothing else can rebuild; the model's conversion decides everything).
PROTECTED_STAGES = ("convert", "search")


def prepare_workdir(config: Any, workdir: str | pathlib.Path, notes: list[str] | None = None) -> pathlib.Path:
  """Creates the workdir or reconciles it with this config stage by stage (`polar_jax.workdir.prepare_workdir`:
  the first stage whose config changed and the later ones rerun; clearing the search needs overwrite=True)."""
  opts = _options(config)
  return workdir_lib.prepare_workdir(options_lib.identity(opts), workdir, stages=STAGES, overwrite=opts.overwrite,
                                     stage_identity=options_lib.stage_identity, stage_dirs=STAGE_DIRS,
                                     protected=PROTECTED_STAGES, notes=notes)


def _say(opts: PipelineOptions, message: str) -> None:
  if opts.progress:
    print(f"[polar_jax] {message}", flush=True)


# --- data ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Splits:
  """The questions of a run, per dataset."""
  search: dict[str, list]  # dataset -> train questions to search (the predictor's training set)
  validation: dict[str, list]
  test: dict[str, list]
  calibration: dict[str, list]
  ood: dict[str, list]

  def searched(self) -> list:
    return [e for d in self.search for e in self.search[d] + self.validation[d]]

  def ids(self, part: str) -> set[str]:
    """The question ids of one part ("search", "validation", "test", "calibration", "ood")."""
    groups = getattr(self, part)
    return {e.id for d in groups for e in groups[d]}


def _load_kwargs(opts: PipelineOptions) -> dict[str, Any]:
  """`data.load_split` keyword arguments from the data section (seed, data_dir, manual_dir)."""
  kw: dict[str, Any] = dict(seed=opts.seed, data_dir=opts.data.data_dir or None)
  if opts.data.manual_dir:
    kw["manual_dir"] = opts.data.manual_dir
  return kw


def load_splits(config: Any) -> Splits:
  """The config's questions. In a multi-process run (every process calls this) process 0 loads first, so that
  one process builds a dataset's TFDS cache and the others read it."""
  from polar_jax import sharding  # pylint: disable=import-outside-toplevel
  splits = sharding.on_lead("load_splits", lambda: _load_splits(config))
  return splits if splits is not None else _load_splits(config)


def _load_splits(config: Any) -> Splits:
  from polar_jax import data  # pylint: disable=import-outside-toplevel
  opts = _options(config)
  d = opts.data
  kw = _load_kwargs(opts)
  datasets = _csv(d.datasets)
  if not datasets:
    raise ConfigError("config.data.datasets is empty; name at least one dataset (see polar_jax.data.list_datasets()).")
  search, validation, test, calibration = {}, {}, {}, {}
  load = lambda name, split, n: data.load_split(name, split, limit=n, **kw) if n > 0 else []
  for name in datasets:
    train = load(name, "train", d.num_search + d.num_calibration)
    search[name] = train[:d.num_search]
    calibration[name] = train[d.num_search:]
    validation[name] = load(name, "validation", d.num_validation)
    test[name] = load(name, "test", d.num_test)
  ood = {name: load(name, "test", d.num_test) for name in _csv(d.ood)}
  return Splits(search, validation, test, calibration, ood)


# --- stages --------------------------------------------------------------------------------------------------


def model_source(config: Any) -> str:
  opts = _options(config)
  return opts.model.path or opts.model.name


def load_model_for(config: Any):
  from polar_jax.models import load_model  # pylint: disable=import-outside-toplevel
  opts = _options(config)
  check_model(opts)
  return load_model(model_source(opts), dtype=opts.model.dtype)


def task_config(config: Any):
  from polar_jax.program_eval import TaskConfig  # pylint: disable=import-outside-toplevel
  t = _options(config).task
  from polar_jax import data  # pylint: disable=import-outside-toplevel
  few_shot = "auto" if data.get_preset(t.preset).few_shot > 0 else None  # each question's own dataset
  return TaskConfig.from_preset(t.preset, max_new_tokens=t.max_new_tokens, choice_scoring=t.choice_scoring,
                                few_shot_split=few_shot)


def search_config(config: Any):
  """The search stage's options (`options.SearchOptions`; `.tree()` is the per-question SearchConfig)."""
  return _options(config).search


def stage_convert(opts: PipelineOptions, workdir: pathlib.Path):
  """Loads (and on first use converts and caches) the model; records what was loaded."""
  from polar_jax.models import transformer  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  model = load_model_for(opts)
  if workdir_lib.done(workdir, "convert") is None and _processes()[0] == 0:
    info = {"name": model.name, "source": model.source, "depth": model.depth, "dtype": model.config.dtype,
            "parameters": transformer.count_params(model.params), "seconds": time.perf_counter() - start}
    (workdir / "convert").mkdir(exist_ok=True)
    (workdir / "convert" / "model.json").write_text(json.dumps(info, indent=2))
    workdir_lib.mark_done(workdir, "convert", info)
  _say(opts, f"model {model.name}: {model.depth} layers ({time.perf_counter() - start:.1f}s)")
  return model


def stage_search(opts: PipelineOptions, workdir: pathlib.Path, model, splits: Splits) -> list:
  """Searches the train and validation questions; writes records, summary.json and the layer-usage plot."""
  from polar_jax import search as search_lib  # pylint: disable=import-outside-toplevel
  from polar_jax.search.scoring import TaskScorer  # pylint: disable=import-outside-toplevel

  s = opts.search
  out = workdir / "search"
  out.mkdir(exist_ok=True)
  records_path = out / "records.jsonl"
  examples = splits.searched()
  index, count = _processes()
  if _finished(opts, workdir, "search") is None:
    task = dataclasses.replace(task_config(opts), reward=s.reward)
    scorer = TaskScorer(model, examples, task, max_batch=s.max_batch, per_question=s.per_question)
    shard = search_shard(opts)
    this = shard or (index, count)
    mine = search_lib.shard_path(records_path, *this)  # records_path for one process
    earlier = search_lib.read_records(mine) if mine.exists() else []
    # Progress in simulations (they advance every round; questions finish in waves), with the questions written
    # and the program runs beside it.
    n_mine = len(range(this[0], len(examples), this[1]))
    per_question = s.num_simulations
    bar = _progress(opts, n_mine * per_question, "search" if this[1] == 1 else f"search (shard {this[0]}/{this[1]})",
                    unit="sim")
    bar.update(len(earlier) * per_question)
    start_n = bar.n
    scorer = _ProgressScorer(scorer, bar, questions=n_mine, written=len(earlier))
    scalars = summaries.SearchScalars(out / "tensorboard", earlier, enabled=index == 0)  # process 0's shard
    start = time.perf_counter()

    def on_record(rec):
      scorer.written += 1
      scorer.show()  # records are written after their last round: the count moves here, not in score()
      scalars.record(rec, program_runs=scorer.runs, seconds=time.perf_counter() - start)

    def on_round(simulations):
      bar.n = min(start_n + simulations, bar.total)
      bar.refresh()

    run = search_lib.run_search(examples, scorer, s.tree(), records_path, shard=shard, repair=s.repair,
                                max_active=s.max_active, on_record=on_record, on_round=on_round)
    bar.close()

    def finish():
      if count > 1:
        search_lib.merge_shards([search_lib.shard_path(records_path, i, count) for i in range(count)], records_path)
      records = search_lib.read_records(records_path)
      scalars.finish(search_lib.write_summary(records, out, title=f"{model.name}: valid programs ({opts.name})"))
      # The whole (possibly resumed) run: every record of the file, not only this process's.
      evaluations = sum(r.evaluations for r in records)
      seconds = round(sum(r.seconds or 0.0 for r in records), 3)
      workdir_lib.mark_done(workdir, "search", {"questions": len(records), "evaluations": evaluations,
                                                "seconds": seconds, "skipped_existing": run.skipped,
                                                "evaluations_this_process": run.evaluations,
                                                "seconds_this_process": round(run.seconds, 3),
                                                **({"processes": count} if count > 1 else {})})
      _say(opts, f"search: {len(records)} questions{f' from {count} shards' if count > 1 else ''}, {evaluations} "
                 f"program runs in {seconds:.0f}s of search; summary in {out / 'summary.json'}")

    from polar_jax import sharding  # pylint: disable=import-outside-toplevel
    sharding.wait_for_all("search_shards_done")  # every shard is complete before process 0 merges them
    sharding.on_lead("search_merged", finish)
  return search_lib.read_records(records_path)


def menu_parts(opts: PipelineOptions, splits: Splits) -> list[tuple[str, str, list]]:
  """The menu's (split, dataset, examples): train and validation prefixes per dataset, then the test sets."""
  from polar_jax import data  # pylint: disable=import-outside-toplevel
  d, m = opts.data, opts.menu
  kw = _load_kwargs(opts)
  parts = []
  for name in _csv(d.datasets):
    n = m.num_train or d.num_search
    parts.append(("train", name, data.load_split(name, "train", limit=n, **kw) if n else []))
  for name in _csv(d.datasets):
    n = m.num_validation or d.num_validation
    parts.append(("validation", name, data.load_split(name, "validation", limit=n, **kw) if n else []))
  for name, examples in splits.test.items():
    parts.append(("test", name, list(examples)))
  return parts


def stage_menu(opts: PipelineOptions, workdir: pathlib.Path, model, splits: Splits, records: list):
  """Ranks the searched programs on the training questions and runs the top K + full depth everywhere."""
  from polar_jax.menu import build  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import SHIPPED, MenuMatrix  # pylint: disable=import-outside-toplevel
  out = workdir / "menu"
  if _finished(opts, workdir, "menu") is None:
    start = time.perf_counter()
    m = opts.menu
    programs, counts = build.rank_programs(records, model.depth, splits.ids("search"), m.top_k)
    questions, examples = build.menu_questions(menu_parts(opts, splits))
    task = dataclasses.replace(task_config(opts), reward=m.reward)
    n_chunks = -(-len(questions) // m.chunk_questions)
    _say(opts, f"menu: {len(programs)} programs x {len(questions)} questions in {n_chunks} chunks")
    bar = _progress(opts, n_chunks, "menu chunks", initial=build.finished_chunks(out, m.answers))
    info = {"config": options_lib.to_json(opts), "search_train_valid_counts": counts,
            "ranking": "training questions the search found each program valid for"}
    reuse = None
    reuse_dir = SHIPPED if m.reuse == "shipped" else m.reuse
    if m.reuse:
      reuse = MenuMatrix.load(reuse_dir)
      lent = build.reusable_cells(reuse, info["config"], questions, programs)
      _say(opts, f"menu: {len(lent)} of {len(programs) * len(questions)} cells copied from {m.reuse}")
    matrix = build.build_menu(model, task, questions, examples, programs, out, chunk_questions=m.chunk_questions,
                              max_batch=m.max_batch, answers=m.answers, info=info, on_chunk=lambda i, n, sec: bar.update(1),
                              reuse=reuse)
    bar.close()
    from polar_jax.menu import features  # pylint: disable=import-outside-toplevel
    _say(opts, "menu: question features for the selectors (MiniLM; the LLM's prompt state at full depth)")
    features.ensure_features(out, matrix, model=model, task=task,
                             reuse=None if reuse is None else (reuse_dir, reuse))
    searched = [r for r in records if r.id in splits.ids("search")]
    oracle = sum(1 for r in searched if r.valid) / len(searched) if searched else None
    _write_menu_report(matrix, out, search_oracle=oracle)
    workdir_lib.mark_done(workdir, "menu", {"programs": matrix.n_programs, "questions": len(questions),
                                            "seconds": time.perf_counter() - start})
  return MenuMatrix.load(out)


def _write_menu_report(matrix, out: pathlib.Path, *, search_oracle: float | None = None) -> None:
  from polar_jax.menu import features, lab, plots  # pylint: disable=import-outside-toplevel
  selectors = lab.all_selectors(features.load_features(out, matrix), matrix.depth,
                                with_answers=lab.has_answers(matrix))
  table = lab.lab_table(matrix, selectors)
  (out / "lab.json").write_text(json.dumps(table, indent=2))
  (out / "lab.md").write_text(lab.markdown(table) + "\n")
  plots.plot_menu(matrix, out, search_oracle=search_oracle)


class _ProgressScorer:
  """Shows the program runs on the search's progress bar (questions finish in waves, runs are continuous)."""

  def __init__(self, scorer, bar, questions: int, written: int = 0):
    self.scorer, self.bar, self.depth, self.runs = scorer, bar, scorer.depth, 0
    self.questions, self.written = questions, written
    self.max_batch, self.per_question = scorer.max_batch, scorer.per_question  # Recorded in each record's config.

  def score(self, pairs):
    out = self.scorer.score(pairs)
    self.runs += len(pairs)
    self.show(refresh=False)
    return out

  def show(self, refresh: bool = True):
    """Questions written (of this process's) and program runs so far, beside the bar."""
    self.bar.set_postfix_str(f"{self.written}/{self.questions} questions, {self.runs} program runs", refresh=refresh)


def stage_train(opts: PipelineOptions, workdir: pathlib.Path, model, splits: Splits, records: list, menu=None):
  """Trains the predictor on the searched train questions (validated on the searched validation ones) and, with
  a menu and `menu.dense_predictor`, the same predictor on the menu's train rows (`polar_jax.menu.dense`)."""
  from polar_jax import train  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.encoder import make_encoder  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor.supervision import supervision_from_search  # pylint: disable=import-outside-toplevel
  out = workdir / "predictor"
  encoder = make_encoder(opts.encoder, model)
  if _finished(opts, workdir, "train") is None:
    where = str(workdir / "search" / "records.jsonl")
    train_ids, val_ids = splits.ids("search"), splits.ids("validation")
    train_sup = supervision_from_search(records, model.depth, train_ids, where)
    val_sup = supervision_from_search(records, model.depth, val_ids, where)
    if not train_sup:
      raise NoSupervisionError(f"The search found no valid program for any of the {len(train_ids)} training "
                               f"questions ({where}); there is nothing to train on. Search more questions or "
                               "simulations.")
    trainer = dataclasses.replace(opts.predictor, progress=opts.progress)
    result = train.train_predictor(trainer, out, train_sup, encoder, validation=val_sup or None)  # every process
    info = {"step": result.step, "best_step": result.best_step, "best_val_loss": result.best_val_loss,
            "train_questions": len(train_sup), "validation_questions": len(val_sup)}
    if menu is not None and opts.menu.dense_predictor:
      from polar_jax.menu import dense  # pylint: disable=import-outside-toplevel
      _say(opts, "train: the same predictor on the menu's dense supervision (its train rows; polar_dense)")
      dense_dir = workdir / dense.WORKDIR_DIR
      payload = dense.ensure_dense(menu, dense_dir / dense.TOP1_FILE, trainer=trainer, encoder=encoder,
                                   checkpoint=dense_dir)
      info["dense"] = {"train_questions": payload["train_questions"], "best_step": payload["best_step"]}
    if _processes()[0] == 0:
      workdir_lib.mark_done(workdir, "train", info)
  return encoder


def stage_evaluate(opts: PipelineOptions, workdir: pathlib.Path, model, splits: Splits, records: list,
                   encoder, menu=None) -> dict:
  from polar_jax import evaluation  # pylint: disable=import-outside-toplevel
  from polar_jax.predictor import ProgramPredictor  # pylint: disable=import-outside-toplevel

  out = workdir / "evaluate"
  results_path = out / "results.json"
  if _finished(opts, workdir, "evaluate") is None:
    predictor = None
    if (workdir / "predictor").exists():
      predictor = ProgramPredictor.from_checkpoint(workdir / "predictor", encoder, depth=model.depth,
                                                   decode=opts.predictor.decode)
    dense_predictor = None
    if menu is not None and (workdir / "predictor_dense" / "best").exists():
      dense_predictor = ProgramPredictor.from_checkpoint(workdir / "predictor_dense", encoder,
                                                         depth=model.depth, decode=opts.predictor.decode)
    test_sets = dict(splits.test)
    test_sets.update({f"{name} (ood)": ex for name, ex in splits.ood.items()})
    calibration = [e for d in splits.calibration for e in splits.calibration[d]]
    evaluation.run_evaluation(dataclasses.replace(opts.evaluate, progress=opts.progress), model=model,
                            task=task_config(opts), test_sets=test_sets, predictor=predictor,
                            search_records=records, calibration=calibration, out_dir=out, menu=menu,
                            menu_dir=workdir / "menu" if menu is not None else None,
                            dense_predictor=dense_predictor)
    summaries.write_evaluation(out / "tensorboard", json.loads(results_path.read_text()),
                               (out / "results.md").read_text() if (out / "results.md").exists() else None)
    workdir_lib.mark_done(workdir, "evaluate", {"results": str(results_path)})
  for name in workdir_lib.RESULT_FILES:  # copied only when they differ: reading a finished workdir writes nothing
    if (out / name).exists() and (not (workdir / name).exists()
                                  or (workdir / name).read_bytes() != (out / name).read_bytes()):
      shutil.copyfile(out / name, workdir / name)
  return json.loads(results_path.read_text())


def _progress(opts: PipelineOptions, total: int, desc: str, initial: int = 0, unit: str = "it"):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc=desc, disable=not opts.progress, file=sys.stdout, dynamic_ncols=True,
              initial=initial, unit=unit)


def _finished(opts: PipelineOptions, workdir: pathlib.Path, stage: str) -> dict | None:
  """The stage's done marker; says so when a rerun skips the finished stage."""
  marker = workdir_lib.done(workdir, stage)
  if marker is not None:
    _say(opts, f"{stage}: finished earlier, skipped ({workdir / stage / 'done.json'} says so)")
  return marker


# --- all together --------------------------------------------------------------------------------------------


def run_pipeline(config: Any, workdir: str | pathlib.Path) -> dict:
  """Runs the configured stages in `workdir`; returns the results (or {} when `evaluate` did not run)."""
  opts = validate_config(config)
  stages = stage_list(opts)
  check_model(opts)
  processes = check_processes(opts, stages)
  if _processes()[0] > 0:
    opts = dataclasses.replace(opts, progress=False)  # process 0 speaks for the run
  from polar_jax import sharding  # pylint: disable=import-outside-toplevel
  notes: list[str] = []
  prepared = sharding.on_lead("workdir", lambda: prepare_workdir(opts, workdir, notes))  # one process writes
  workdir = prepared or pathlib.Path(workdir).expanduser().absolute()
  for note in notes:
    _say(opts, note)
  if processes > 1:
    _say(opts, f"{processes} processes: the search in {processes} shards, training over "
               f"{_device_count()} devices")
  start = time.perf_counter()
  model = stage_convert(opts, workdir)
  if stages == ["convert"]:
    return {}
  splits = load_splits(opts)
  records: list = []
  if "search" in stages:
    records = stage_search(opts, workdir, model, splits)
  elif (workdir / "search" / "records.jsonl").exists():
    from polar_jax.search import read_records  # pylint: disable=import-outside-toplevel
    records = read_records(workdir / "search" / "records.jsonl")
  menu = None
  if "menu" in stages:
    menu = stage_menu(opts, workdir, model, splits, records)
  elif workdir_lib.done(workdir, "menu") is not None and processes == 1:  # (the dense predictor: one process)
    from polar_jax.menu.matrix import MenuMatrix  # pylint: disable=import-outside-toplevel
    menu = MenuMatrix.load(workdir / "menu")
  encoder = None
  if "train" in stages:
    encoder = stage_train(opts, workdir, model, splits, records, menu)
  results: dict = {}
  if "evaluate" in stages:
    if encoder is None:
      from polar_jax.predictor.encoder import make_encoder  # pylint: disable=import-outside-toplevel
      encoder = make_encoder(opts.encoder, model)
    results = stage_evaluate(opts, workdir, model, splits, records, encoder, menu)
    if opts.progress and results:
      from polar_jax.evaluation.report import console_summary  # pylint: disable=import-outside-toplevel
      print(console_summary(results, str(workdir / "results.md")), end="", flush=True)
  _say(opts, f"done in {time.perf_counter() - start:.0f}s; outputs in {workdir}")
  return results
