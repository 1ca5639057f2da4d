"""Every stage's options as one frozen dataclass, with the defaults in one place (light: no jax).

The pipeline's ml_collections config is *derived* from these dataclasses (`base_config()`), and read back
into them strictly (`pipeline_options(config)`): an unknown or mistyped key is a `ConfigError` that names the
key and the closest known one. Each stage takes its own options object:

  search   -> `SearchOptions` (the tree's `SearchConfig` fields + the driver's batching / sharding knobs)
  train    -> `TrainOptions` (network, targets, optimizer, validation, decoding, checkpoints, mesh, ...)
  evaluate -> `EvalOptions` (methods, k, sampling, baselines, the router's `RouterOptions`)

and the pipeline reads `ModelOptions`, `DataOptions`, `TaskOptions`, `EncoderOptions` itself.
`train.default_config()` / `evaluation.default_eval_config()` are ConfigDict views of the same defaults for
notebooks; `train_predictor` / `run_evaluation` accept either form and convert once at their entry.

Config files take big_vision-style arguments (`configs/default.py:quick,n_test=500`): `parse_arg` reads them
against typed defaults.

This module imports only the standard library, ml_collections and light polar_jax modules; the layering test
(`tests/test_layering.py`) keeps it so.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import ml_collections

from polar_jax.options_io import coerce, from_mapping, parse_arg, to_config_dict  # re-exported
from polar_jax.predictor.decode import DecodeOptions
from polar_jax.predictor.targets import TargetOptions
from polar_jax.search.tree import SearchConfig

STAGES = ("convert", "search", "menu", "train", "evaluate")
EVAL_METHODS = ("full_depth", "sampling", "polar", "polar_dense", "shortgpt", "random_programs", "menu", "selection",
                "search_ablations", "router")
ENCODERS = ("minilm", "token_embeddings", "hf")

# --- the pipeline's own sections ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  name: str = "smollm2-135m-instruct"  # a registered name (polar_jax.models.list_models())
  path: str = ""  # a local HF snapshot directory or .gguf file; overrides `name` when set
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class DataOptions:
  datasets: str = "arith_level1"  # comma-separated `polar_jax.data` names (in-distribution)
  num_search: int = 64  # per dataset, from the train split; searched, then the predictor's training set
  num_validation: int = 16  # per dataset, validation split; searched, the predictor's validation set
  num_test: int = 100  # per dataset, test split; evaluated, never searched
  num_calibration: int = 32  # per dataset, more train questions (disjoint from the searched ones): ShortGPT
  ood: str = ""  # comma-separated datasets evaluated on their test split (out of distribution)
  manual_dir: str = ""  # for the `jsonl` dataset: a folder with your own {train,validation,test}.jsonl
  data_dir: str = ""  # TFDS cache; default $POLAR_JAX_CACHE/tfds


@dataclasses.dataclass(frozen=True)
class TaskOptions:
  preset: str = "free_prefix"  # a `polar_jax.data` prompt preset (prompt, answer format, assistant prefix)
  max_new_tokens: int = 16
  choice_scoring: str = "generate"  # or "loglik" for multiple-choice datasets


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
  name: str = "minilm"  # "minilm" (embedded), "token_embeddings" (the LLM's own), "hf" (a local HF snapshot,
  path: str = ""  #        e.g. Qwen3-Embedding-0.6B as in the paper, given by `path`)


# --- search ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchOptions(SearchConfig):
  """The search stage: the tree's `SearchConfig` (its defaults are the papers') plus how it is driven.

  Attributes (beyond SearchConfig's):
    max_batch: rows per device batch of the scorer.
    max_active: questions searched at once (their leaves share batches).
    per_question: never batch two questions together (bit-identical resume; slower).
    repair: move a half-written records line aside instead of refusing to resume.
    shard: "i/n" to search only this process's share of the questions ("" = all, or by process index).
    reward: how the search decides a (question, program) pair: "teacher_forced" (one prefill of the canonical
      gold completion decides it where that is exact, else it is generated: `program_eval.one_pass`) or
      "generate". Evaluation always generates (its seconds are the deployable cost).
  """
  max_batch: int = 32
  max_active: int = 32
  per_question: bool = False
  repair: bool = False
  shard: str = ""
  reward: str = "teacher_forced"

  def __post_init__(self):
    super().__post_init__()
    if self.reward not in ("teacher_forced", "generate"):
      raise ValueError(f"SearchOptions.reward must be 'teacher_forced' or 'generate', got {self.reward!r}.")

  def tree(self) -> SearchConfig:
    """The per-question search parameters alone (a search record's `config` holds them and `record_config`'s)."""
    names = [f.name for f in dataclasses.fields(SearchConfig)]
    return SearchConfig(**{n: getattr(self, n) for n in names})

  def record_config(self) -> dict:
    """What a search record's `config` holds: the tree's parameters and how the driver batched."""
    return {**self.tree().to_json(), "max_batch": self.max_batch, "max_active": self.max_active,
            "per_question": self.per_question}


@dataclasses.dataclass(frozen=True)
class MenuOptions:
  """The menu stage (`polar_jax.menu`): the top_k searched programs by training questions they are valid for,
  plus full depth, run on every train, validation and test question (a dense outcome matrix).

  Attributes:
    top_k: menu programs besides the full program.
    num_train / num_validation: questions per dataset from the train / validation split (the first ones, so the
      searched questions are among them); 0 = the data section's num_search / num_validation. Test rows are
      the data section's test questions.
    chunk_questions: questions per resumable chunk (each chunk runs every program).
    reward: "teacher_forced" (one prefill decides a pair where exact; yields the gold log-probability) or
      "generate".
    max_batch: rows per device batch.
    answers: keep every cell's reply in full (its answer and the model's confidence in it), which answer voting
      and confidence selection need: with the one-pass reward, pairs it does not certify correct are generated.
    dense_predictor: also train the paper's predictor on the matrix's train rows (`polar_jax.menu.dense`, with
      the `predictor` section's options) for the `polar_dense` evaluation method and the lab's row.
    reuse: an earlier menu directory (a workdir's menu/, or "shipped" for the package's copy of the embedded
      default's) of the same model and task whose cells are copied instead of run (`polar_jax.menu.build`):
      after a new search only the new programs' columns cost time. Not part of the workdir's identity.
  """
  top_k: int = 64
  num_train: int = 0
  num_validation: int = 0
  chunk_questions: int = 50
  reward: str = "teacher_forced"
  max_batch: int = 32
  answers: bool = True
  dense_predictor: bool = True
  reuse: str = ""

  def __post_init__(self):
    if self.reward not in ("teacher_forced", "generate"):
      raise ValueError(f"MenuOptions.reward must be 'teacher_forced' or 'generate', got {self.reward!r}.")
    for name in ("top_k", "num_train", "num_validation"):
      if getattr(self, name) < 0:
        raise ValueError(f"MenuOptions.{name} must be >= 0, got {getattr(self, name)}.")
    if self.chunk_questions < 1 or self.max_batch < 1:
      raise ValueError("MenuOptions.chunk_questions and max_batch must be >= 1.")


# --- train ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NetworkOptions:
  """The predictor network's shape (its depth comes from the model)."""
  d_model: int = 256
  num_heads: int = 4
  num_blocks: int = 2
  dropout: float = 0.1


@dataclasses.dataclass(frozen=True)
class TargetSettings:
  """The release's data options (`predictor.targets.TargetOptions`, whose seed is the trainer's)."""
  max_programs: int = TargetOptions.max_programs
  original_weight: float = TargetOptions.original_weight
  normalize_per_question: bool = TargetOptions.normalize_per_question

  def resolve(self, seed: int) -> TargetOptions:
    return TargetOptions(seed=seed, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
  batch_size: int = 128
  num_epochs: int = 10
  num_steps: int = -1  # > 0 overrides num_epochs
  learning_rate: float = 5e-4
  lr_schedule: str = "cosine"  # "cosine", "linear" or "none"
  warmup_steps: int = 10
  weight_decay: float = 0.0
  adam_eps: float = 1e-8
  grad_clip_norm: float = 0.0
  length_beta: float = 0.0  # > 0: the release's polar_lenpref (it used 0.05)


@dataclasses.dataclass(frozen=True)
class ValidationOptions:
  every_steps: int = 0  # 0: once per epoch
  batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
  every_steps: int = 100
  keep: int = 2
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class MeshOptions:
  model_parallelism: int = 1
  rules: str = "replicated"


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
  num_threads: int = 2
  prefetch: int = 4


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
  coordinator_address: str = ""
  num_processes: int = 1
  process_id: int = -1


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The trainer: the paper's recipe (the release README's sample command); shrink it for CPU runs."""
  seed: int = 42
  predictor: NetworkOptions = NetworkOptions()
  targets: TargetSettings = TargetSettings()
  train: OptimizerOptions = OptimizerOptions()
  eval: ValidationOptions = ValidationOptions()
  decode: DecodeOptions = DecodeOptions()
  checkpoint: CheckpointOptions = CheckpointOptions()
  log_every_steps: int = 20
  progress: bool = True
  mesh: MeshOptions = MeshOptions()
  data: LoaderOptions = LoaderOptions()
  distributed: DistributedOptions = DistributedOptions()


# --- evaluate -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RouterOptions:
  """The DR.LLM-style router: MLP width, pooling windows, valid programs per question, AdamW steps / lr /
  weight decay on full batches, prompts per routing / feature pass, init seed."""
  hidden: int = 64
  windows: int = 8
  max_programs: int = 8
  steps: int = 300
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  batch_size: int = 16
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """The evaluation.

  Attributes:
    methods: comma-separated names from `EVAL_METHODS`; all of them by default.
    k: candidates per question for PoLar and samples per temperature; pass@k / vote@k reported for 1..k.
    temperatures: the sampling baselines' temperatures (the paper: 0.3, 0.7, 1.0).
    sampling_seed: base seed of the samples (sample j of every question uses seed + 1009 j).
    shortgpt_match: add the ShortGPT row whose n matches PoLar's mean executed layers per token.
    shortgpt_sweep: more removal counts n (each a row; values >= depth are skipped).
    calibration_size: at most this many calibration questions for ShortGPT's Block Influence.
    random_seed: seed of the random-program baseline.
    trust_search_cache: add the release's cache-trusting PoLar row (comparison only).
    search_split: the split named in the search-ablation labels ("" = read it from the record ids).
    max_batch: rows per device batch.
    warmup: before timing, run the full program once on a batch of each test set (compiles outside timings).
    progress: progress bars / lines.
    plots: write tradeoff.png and layer_usage.png.
    title: a heading for results.md (e.g. "smoke run").
    router: the DR.LLM-style router's options.
  """
  methods: str = ",".join(EVAL_METHODS)
  k: int = 5
  temperatures: tuple[float, ...] = (0.3, 0.7, 1.0)
  sampling_seed: int = 0
  shortgpt_match: bool = True
  shortgpt_sweep: tuple[int, ...] = (2, 4, 8)
  calibration_size: int = 64
  random_seed: int = 0
  trust_search_cache: bool = False
  search_split: str = ""
  max_batch: int = 32
  warmup: bool = True
  progress: bool = False
  plots: bool = True
  title: str = ""
  router: RouterOptions = RouterOptions()


# --- the whole pipeline ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  name: str = "polar"
  seed: int = 0
  stages: str = ",".join(STAGES)
  overwrite: bool = False
  progress: bool = True
  model: ModelOptions = ModelOptions()
  data: DataOptions = DataOptions()
  task: TaskOptions = TaskOptions()
  search: SearchOptions = SearchOptions()
  menu: MenuOptions = MenuOptions()
  encoder: EncoderOptions = EncoderOptions()
  predictor: TrainOptions = TrainOptions()
  evaluate: EvalOptions = EvalOptions()


# Operational fields: how a run goes, not what it produces; they may change between runs of one workdir (dotted
# paths; a section name covers the whole section). Batch sizes listed here do not change results (a row's
# outputs do not depend on the rows it is batched with), the search's do with `per_question=False`, so they stay.
VOLATILE_FIELDS = ("stages", "overwrite", "progress", "name", "search.repair", "search.shard", "menu.max_batch",
                   "menu.reuse",
                   "predictor.progress", "predictor.log_every_steps", "predictor.checkpoint", "predictor.data",
                   "predictor.eval.batch_size", "predictor.distributed", "evaluate.progress", "evaluate.plots",
                   "evaluate.max_batch", "evaluate.warmup")
# What each stage reads: its identity is these sections of the config (a dotted path: one field). A change there
# reruns the stage and the ones after it; the earlier stages are kept.
STAGE_READS = {
    "convert": ("model",),
    "search": ("model", "seed", "data", "task", "search"),
    "menu": ("model", "seed", "data", "task", "search", "menu"),
    "train": ("model", "seed", "data", "task", "search", "menu", "encoder", "predictor"),
    "evaluate": ("model", "seed", "data", "task", "search", "menu", "encoder", "predictor", "evaluate"),
}
# Fields whose change reruns a finished stage but keeps its files (the evaluation's saved method runs are keyed
# by method, so another method list or title reuses them).
RERUN_FIELDS = {"evaluate": ("evaluate.methods", "evaluate.title")}


def parse_methods(methods: str | typing.Sequence[str]) -> list[str]:
  """`"full_depth,polar"` -> ["full_depth", "polar"]; an unknown name is a ValueError listing the known ones."""
  names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
  names = [m for m in names if m]
  unknown = [m for m in names if m not in EVAL_METHODS]
  if unknown:
    raise ValueError(f"Unknown evaluation method(s) {unknown}; known: {list(EVAL_METHODS)}.")
  return names


def base_config() -> ml_collections.ConfigDict:
  """Every field the pipeline reads, with its default: `to_config_dict(PipelineOptions())`.

  configs/*.py start from this and override; `pipeline_options` reads the result back strictly.
  """
  return to_config_dict(PipelineOptions())


def pipeline_options(config: Any) -> PipelineOptions:
  """The pipeline's config (a ConfigDict from a config file plus command-line overrides) as options."""
  return coerce(PipelineOptions, config)


def to_json(options: Any) -> dict[str, Any]:
  """Options as plain JSON types (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(options)))


def _drop(d: dict[str, Any], dotted: str) -> None:
  head, _, rest = dotted.partition(".")
  if not rest:
    d.pop(head, None)
  elif isinstance(d.get(head), dict):
    _drop(d[head], rest)


def _pick(d: dict[str, Any], dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(d, dict) or part not in d:
      return None
    d = d[part]
  return d


def identity(options: PipelineOptions) -> dict[str, Any]:
  """The options that decide a workdir's outputs, as JSON (without `VOLATILE_FIELDS`)."""
  d = to_json(options)
  for key in VOLATILE_FIELDS:
    _drop(d, key)
  return d


def stage_identity(ident: dict[str, Any], stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """A stage's part of an `identity` (also of one saved by an older version): (what its outputs depend on,
  the `RERUN_FIELDS` whose change only reruns it)."""
  ident = json.loads(json.dumps(ident))
  for key in VOLATILE_FIELDS:
    _drop(ident, key)
  rerun = {key: _pick(ident, key) for key in RERUN_FIELDS.get(stage, ())}
  for key in rerun:
    _drop(ident, key)
  return {key: _pick(ident, key) for key in STAGE_READS[stage]}, rerun
