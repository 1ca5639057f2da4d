"""The end-to-end pipeline as library functions: convert -> search -> train -> evaluate in one workdir.

`main.py` is a thin absl wrapper around `run_pipeline(config, workdir)`; a notebook can call the same
function, or one stage at a time. Each stage writes its outputs under the workdir and a `<stage>/done.json`
marker last; a stage whose marker exists is skipped, so a killed run continues where it stopped (the search
also resumes inside a stage: finished questions are never redone).

Workdir layout:
  config.json              the config the workdir belongs to (a different config is refused unless
                           `overwrite=True`, which clears the stage outputs first)
  convert/model.json       the model: name, source, depth, dtype, parameter count
  search/records.jsonl     one line per searched question (valid / invalid programs); summary.json,
                           layer_usage.png (the papers' findings)
  predictor/               checkpoints, best/, tensorboard/ of the predictor's training
  evaluate/                per-method records, results.json, results.md, tradeoff.png, layer_usage.png
  results.json, results.md the final table (copied from evaluate/)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import time
from typing import Any, Sequence

import ml_collections

STAGES = ("convert", "search", "train", "evaluate")
# Fields that may change between runs of one workdir without invalidating its outputs.
_VOLATILE_FIELDS = ("stages", "overwrite", "progress")


class WorkdirMismatchError(ValueError):
  """The workdir holds the outputs of a different config."""


def _user_errors() -> tuple[type[BaseException], ...]:
  """Errors caused by the input (files, configs, data), reported by `main` as one clear line, no traceback."""
  from polar_jax.data import DataFormatError
  from polar_jax.models import CheckpointFormatError, UnsupportedModelError
  from polar_jax.predictor import CheckpointMismatchError, SupervisionError
  from polar_jax.programs import ProgramError
  from polar_jax.search import CorruptRecordsError
  return (WorkdirMismatchError, FileNotFoundError, UnsupportedModelError, CheckpointFormatError, DataFormatError,
          SupervisionError, CheckpointMismatchError, ProgramError, CorruptRecordsError, NoSupervisionError,
          ConfigError)


class NoSupervisionError(RuntimeError):
  """The search found no valid program to train on."""


class ConfigError(ValueError):
  """A config value is invalid."""


# --- configs -------------------------------------------------------------------------------------------------


def parse_variants(arg: str | None, known: Sequence[str]) -> set[str]:
  """`"quick,paper_prompt"` -> {"quick", "paper_prompt"}; unknown names are an error listing the known ones."""
  names = {v.strip() for v in (arg or "").split(",") if v.strip()}
  unknown = sorted(names - set(known))
  if unknown:
    raise ConfigError(f"Unknown config variant(s) {unknown}; known: {list(known)}.")
  return names


def base_config() -> ml_collections.ConfigDict:
  """Every field the pipeline reads, with defaults; configs/*.py start from this and override."""
  from polar_jax import evaluate, train
  from polar_jax.search import SearchConfig

  c = ml_collections.ConfigDict()
  c.name = "polar"
  c.seed = 0
  c.stages = ",".join(STAGES)
  c.overwrite = False
  c.progress = True

  c.model = ml_collections.ConfigDict(dict(
      name="smollm2-135m-instruct",  # a registered name (polar_jax.models.list_models())
      path="",  # a local HF snapshot directory or .gguf file; overrides `name` when set
      dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      datasets="arith_level1",  # comma-separated `polar_jax.data` names (in-distribution)
      num_search=64,  # per dataset, from the train split; searched, then the predictor's training set
      num_validation=16,  # per dataset, validation split; searched, the predictor's validation set
      num_test=100,  # per dataset, test split; evaluated, never searched
      num_calibration=32,  # per dataset, more train questions (disjoint from the searched ones): ShortGPT
      ood="",  # comma-separated datasets evaluated on their test split (out of distribution)
      manual_dir="",  # for the `jsonl` dataset: a folder with your own {train,validation,test}.jsonl
      data_dir=""))  # TFDS cache; default $POLAR_JAX_CACHE/tfds
  c.task = ml_collections.ConfigDict(dict(
      preset="free_prefix",  # a `polar_jax.data` prompt preset (prompt, answer format, assistant prefix)
      max_new_tokens=16,
      choice_scoring="generate"))  # or "loglik" for multiple-choice datasets
  search = dataclasses.asdict(SearchConfig())
  search.update(max_batch=32, max_active=32, per_question=False, repair=False, shard="")  # shard: "i/n"
  c.search = ml_collections.ConfigDict(search)
  c.search.max_len = ml_collections.FieldReference(None, field_type=int)
  c.encoder = ml_collections.ConfigDict(dict(
      name="minilm",  # "minilm" (embedded), "token_embeddings" (the LLM's own), "hf" (a local HF snapshot,
      path=""))  #      e.g. Qwen3-Embedding-0.6B as in the paper, given by `path`)
  c.predictor = train.default_config()
  c.evaluate = evaluate.default_eval_config()
  return c


def config_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as JSON, without the fields that may change between runs of one workdir."""
  d = json.loads(config.to_json_best_effort())
  for key in _VOLATILE_FIELDS:
    d.pop(key, None)
  return d


def stage_list(config) -> list[str]:
  stages = [s.strip() for s in str(config.stages).split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ConfigError(f"Unknown stage(s) {unknown} in config.stages; stages are {list(STAGES)}.")
  return stages


def _csv(text: str) -> list[str]:
  return [t.strip() for t in str(text).split(",") if t.strip()]


def validate_config(config) -> None:
  """Checks names and values before anything slow happens; raises ConfigError naming the field."""
  from polar_jax import data, evaluate
  stage_list(config)
  known = set(data.list_datasets())
  for field in ("datasets", "ood"):
    bad = [d for d in _csv(config.data[field]) if d not in known]
    if bad:
      raise ConfigError(f"config.data.{field}: unknown dataset(s) {bad}; known: {sorted(known)}.")
  if "jsonl" in _csv(config.data.datasets) + _csv(config.data.ood) and not config.data.manual_dir:
    raise ConfigError("config.data.datasets names 'jsonl' but config.data.manual_dir is empty: point it at a "
                      "folder with your {train,validation,test}.jsonl.")
  for field in ("num_search", "num_validation", "num_test", "num_calibration"):
    if config.data[field] < 0:
      raise ConfigError(f"config.data.{field} must be >= 0, got {config.data[field]}.")
  if config.task.preset not in data.PRESETS:
    raise ConfigError(f"config.task.preset {config.task.preset!r} is unknown; presets: {sorted(data.PRESETS)}.")
  if config.encoder.name not in ("minilm", "token_embeddings", "hf"):
    raise ConfigError(f"config.encoder.name {config.encoder.name!r} is unknown; use 'minilm', "
                      "'token_embeddings' or 'hf' (with config.encoder.path).")
  if config.encoder.name == "hf" and not config.encoder.path:
    raise ConfigError("config.encoder.name='hf' needs config.encoder.path (a local HF snapshot, e.g. "
                      "Qwen3-Embedding-0.6B).")
  try:
    search_config(config)
    evaluate.parse_methods(config.evaluate.methods)
  except ValueError as e:
    raise ConfigError(str(e)) from None


# --- the workdir ---------------------------------------------------------------------------------------------


def prepare_workdir(config, workdir: str | pathlib.Path) -> pathlib.Path:
  """Creates the workdir or checks that it belongs to this config (see the module docstring)."""
  workdir = pathlib.Path(workdir).expanduser().absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  saved_path = workdir / "config.json"
  ours = config_identity(config)
  if saved_path.exists():
    saved = json.loads(saved_path.read_text())
    if saved != ours:
      if not config.overwrite:
        diff = _diff(saved, ours)
        raise WorkdirMismatchError(
            f"{workdir} holds the results of a different config ({'; '.join(diff[:6])}"
            f"{'; ...' if len(diff) > 6 else ''}). Use another --workdir, or pass --config.overwrite=True to "
            "delete its outputs and start again.")
      for stage in STAGES:
        shutil.rmtree(workdir / stage, ignore_errors=True)
      for name in ("results.json", "results.md"):
        (workdir / name).unlink(missing_ok=True)
  tmp = saved_path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(ours, indent=2, sort_keys=True))
  tmp.replace(saved_path)
  return workdir


def _diff(a, b, prefix="") -> list[str]:
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}{key}.")
    elif va != vb:
      out.append(f"{prefix}{key}: {va!r} there, {vb!r} now")
  return out


def _done(workdir: pathlib.Path, stage: str) -> dict | None:
  marker = workdir / stage / "done.json"
  return json.loads(marker.read_text()) if marker.exists() else None


def _mark_done(workdir: pathlib.Path, stage: str, info: dict) -> None:
  (workdir / stage).mkdir(parents=True, exist_ok=True)
  tmp = workdir / stage / "done.json.tmp"
  tmp.write_text(json.dumps(info, indent=2))
  tmp.replace(workdir / stage / "done.json")


def _say(config, message: str) -> None:
  if config.progress:
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


def load_splits(config) -> Splits:
  from polar_jax import data

  kw = dict(seed=config.seed, data_dir=config.data.data_dir or None)
  if config.data.manual_dir:
    kw["manual_dir"] = config.data.manual_dir
  datasets = _csv(config.data.datasets)
  if not datasets:
    raise ConfigError("config.data.datasets is empty; name at least one dataset (see polar_jax.data.list_datasets()).")
  search, validation, test, calibration = {}, {}, {}, {}
  for name in datasets:
    train = data.load_split(name, "train", limit=config.data.num_search + config.data.num_calibration, **kw)
    search[name] = train[:config.data.num_search]
    calibration[name] = train[config.data.num_search:]
    validation[name] = data.load_split(name, "validation", limit=config.data.num_validation, **kw)
    test[name] = data.load_split(name, "test", limit=config.data.num_test, **kw)
  ood = {name: data.load_split(name, "test", limit=config.data.num_test, **kw) for name in _csv(config.data.ood)}
  return Splits(search, validation, test, calibration, ood)


# --- stages --------------------------------------------------------------------------------------------------


def model_source(config) -> str:
  return config.model.path or config.model.name


def load_model_for(config):
  from polar_jax.models import load_model
  return load_model(model_source(config), dtype=config.model.dtype)


def stage_convert(config, workdir: pathlib.Path):
  """Loads (and on first use converts and caches) the model; records what was loaded."""
  from polar_jax.models import transformer
  start = time.perf_counter()
  model = load_model_for(config)
  if _done(workdir, "convert") is None:
    info = {"name": model.name, "source": model.source, "depth": model.depth, "dtype": model.config.dtype,
            "parameters": transformer.count_params(model.params), "seconds": time.perf_counter() - start}
    (workdir / "convert").mkdir(exist_ok=True)
    (workdir / "convert" / "model.json").write_text(json.dumps(info, indent=2))
    _mark_done(workdir, "convert", info)
  _say(config, f"model {model.name}: {model.depth} layers ({time.perf_counter() - start:.1f}s)")
  return model


def task_config(config):
  from polar_jax.program_eval import TaskConfig
  return TaskConfig.from_preset(config.task.preset, max_new_tokens=config.task.max_new_tokens,
                                choice_scoring=config.task.choice_scoring)


def search_config(config):
  from polar_jax.search import SearchConfig
  names = {f.name for f in dataclasses.fields(SearchConfig)}
  values = {k: v for k, v in config.search.items() if k in names}
  values["seed"] = config.search.seed
  return SearchConfig(**values)


def stage_search(config, workdir: pathlib.Path, model, splits: Splits) -> list[dict]:
  """Searches the train and validation questions; writes records, summary.json and the layer-usage plot."""
  from polar_jax import search as search_lib
  from polar_jax.search.records import parse_shard
  from polar_jax.search.scoring import TaskScorer

  out = workdir / "search"
  out.mkdir(exist_ok=True)
  records_path = out / "records.jsonl"
  examples = splits.searched()
  if _done(workdir, "search") is None:
    task = task_config(config)
    scorer = TaskScorer(model, examples, task, max_batch=config.search.max_batch,
                        per_question=config.search.per_question)
    shard = parse_shard(config.search.shard) if config.search.shard else None
    bar = _progress(config, len(examples), "search")
    finished = len(search_lib.read_records(records_path)) if records_path.exists() else 0
    bar.update(finished)
    scorer = _ProgressScorer(scorer, bar)
    run = search_lib.run_search(examples, scorer, search_config(config), records_path, shard=shard,
                                repair=config.search.repair, max_active=config.search.max_active,
                                on_record=lambda rec: bar.update(1))
    bar.close()
    records = search_lib.read_records(records_path)
    summary = search_lib.write_summary(records, out, title=f"{model.name}: valid programs ({config.name})")
    _mark_done(workdir, "search", {"questions": len(records), "evaluations": run.evaluations,
                                   "seconds": run.seconds, "skipped_existing": run.skipped})
    _say(config, f"search: {len(records)} questions, {run.evaluations} program runs in {run.seconds:.0f}s; "
                 f"summary in {out / 'summary.json'}")
    del summary
  return search_lib.read_records(records_path)


class _ProgressScorer:
  """Shows the program runs on the search's progress bar (questions finish in waves, runs are continuous)."""

  def __init__(self, scorer, bar):
    self.scorer, self.bar, self.depth, self.runs = scorer, bar, scorer.depth, 0

  def score(self, pairs):
    out = self.scorer.score(pairs)
    self.runs += len(pairs)
    self.bar.set_postfix_str(f"{self.runs} program runs", refresh=True)
    return out


def make_encoder(config, model):
  from polar_jax import predictor
  name = config.encoder.name
  if name == "minilm":
    return predictor.MiniLMEncoder()
  if name == "token_embeddings":
    return predictor.TokenEmbeddingEncoder.from_model(model)
  if name == "hf":
    return predictor.hf_hidden_state_encoder(config.encoder.path)
  raise ConfigError(f"Unknown config.encoder.name {name!r}; use 'minilm', 'token_embeddings' or 'hf'.")


def stage_train(config, workdir: pathlib.Path, model, splits: Splits, records: list[dict]):
  """Trains the predictor on the searched train questions (validated on the searched validation ones)."""
  from polar_jax import train
  from polar_jax.predictor.supervision import supervision_from_search
  out = workdir / "predictor"
  encoder = make_encoder(config, model)
  if _done(workdir, "train") is None:
    where = str(workdir / "search" / "records.jsonl")
    train_ids = {e.id for d in splits.search for e in splits.search[d]}
    val_ids = {e.id for d in splits.validation for e in splits.validation[d]}
    train_sup = supervision_from_search(records, model.depth, train_ids, where)
    val_sup = supervision_from_search(records, model.depth, val_ids, where)
    if not train_sup:
      raise NoSupervisionError(f"The search found no valid program for any of the {len(train_ids)} training questions "
                         f"({where}); there is nothing to train on. Search more questions or simulations.")
    trainer_config = ml_collections.ConfigDict(config.predictor.to_dict())
    trainer_config.progress = bool(config.progress)
    result = train.train_predictor(trainer_config, out, train_sup, encoder, validation=val_sup or None)
    _mark_done(workdir, "train", {"step": result.step, "best_step": result.best_step,
                                  "best_val_loss": result.best_val_loss, "train_questions": len(train_sup),
                                  "validation_questions": len(val_sup)})
  return encoder


def stage_evaluate(config, workdir: pathlib.Path, model, splits: Splits, records: list[dict], encoder) -> dict:
  from polar_jax import evaluate
  from polar_jax.predictor import DecodeOptions, ProgramPredictor

  out = workdir / "evaluate"
  results_path = out / "results.json"
  if _done(workdir, "evaluate") is None:
    predictor = None
    if (workdir / "predictor").exists():
      decode = DecodeOptions(**config.predictor.decode.to_dict())
      predictor = ProgramPredictor.from_checkpoint(workdir / "predictor", encoder, depth=model.depth, decode=decode)
    test_sets = dict(splits.test)
    test_sets.update({f"{name} (ood)": ex for name, ex in splits.ood.items()})
    calibration = [e for d in splits.calibration for e in splits.calibration[d]]
    eval_config = ml_collections.ConfigDict(config.evaluate.to_dict())
    eval_config.progress = bool(config.progress)
    evaluate.run_evaluation(eval_config, model=model, task=task_config(config), test_sets=test_sets,
                            predictor=predictor, search_records=records, calibration=calibration, out_dir=out)
    _mark_done(workdir, "evaluate", {"results": str(results_path)})
  for name in ("results.json", "results.md"):
    if (out / name).exists():
      shutil.copyfile(out / name, workdir / name)
  return json.loads(results_path.read_text())


def _progress(config, total: int, desc: str):
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=desc, disable=not config.progress, file=sys.stdout, dynamic_ncols=True)


# --- all together --------------------------------------------------------------------------------------------


def run_pipeline(config, workdir: str | pathlib.Path) -> dict:
  """Runs the configured stages in `workdir`; returns the results (or {} when `evaluate` did not run)."""
  validate_config(config)
  stages = stage_list(config)
  workdir = prepare_workdir(config, workdir)
  start = time.perf_counter()
  model = stage_convert(config, workdir)
  if stages == ["convert"]:
    return {}
  splits = load_splits(config)
  records: list[dict] = []
  if "search" in stages or "train" in stages or "evaluate" in stages:
    if "search" in stages:
      records = stage_search(config, workdir, model, splits)
    elif (workdir / "search" / "records.jsonl").exists():
      from polar_jax.search import read_records
      records = read_records(workdir / "search" / "records.jsonl")
  encoder = None
  if "train" in stages:
    encoder = stage_train(config, workdir, model, splits, records)
  results: dict = {}
  if "evaluate" in stages:
    if encoder is None:
      encoder = make_encoder(config, model)
    results = stage_evaluate(config, workdir, model, splits, records, encoder)
    if config.progress and (workdir / "results.md").exists():
      print((workdir / "results.md").read_text(), flush=True)
  _say(config, f"done in {time.perf_counter() - start:.0f}s; outputs in {workdir}")
  return results


USER_ERRORS = _user_errors()
