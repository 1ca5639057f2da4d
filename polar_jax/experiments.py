"""The paper's experiment settings (PoLar, ICML 2026), shared by configs/llama3_2_3b.py, qwen2_5_3b.py, qwen3_8b.py.

MATH levels 1-5 (per level 1,250 train / 250 validation / 500 test questions; see `polar_jax.data` for how
the shipped MATH files give these sizes), out-of-distribution GSM8K / SVAMP / ASDiv / MAWPS, the paper's
direct-answer prompt with boxed answers and at most 50 new tokens, greedy; 200 MCTS simulations per question
(lambda 5.0, c 1.8, random-child probability 0.1); the predictor d=256 / 4 heads / 2 blocks over a frozen
question encoder, AdamW lr 5e-4, batch 128, 10 epochs, cosine with 10 warmup steps, original-path weight 0.3,
at most 50 programs per question; beam 5 and the top-5 programs at evaluation.

Differences from the paper, stated: the paper's encoder is Qwen3-Embedding-0.6B (set
`--config.encoder.name=hf --config.encoder.path=/path/to/Qwen3-Embedding-0.6B`); the default here is the
embedded all-MiniLM-L6-v2 so that the config runs without another download. The paper's training pool is
DART-Math; point `--config.data.datasets=jsonl --config.data.manual_dir=...` at an export to use it.

Hardware variants (comma-separated after the colon, e.g. `configs/qwen3_8b.py:gpu`):
  tpu   a TPU VM / pod slice: bfloat16, predictor batch sharded over all chips, FSDP-style parameter rules;
        run one process per host, the same command on each (README, "Multi-host": the search shards
        questions by `jax.process_index()`, training spans every host's chips).
  gpu   one GPU box: bfloat16, larger search batches.
  runlocal  a few questions and simulations, for a quick check on a workstation.
"""

from __future__ import annotations

import ml_collections

from polar_jax import options


def paper_config(model_name: str, preset: str, arg: str | None) -> ml_collections.ConfigDict:
  arg = options.parse_arg(arg, tpu=False, gpu=False, runlocal=False)
  c = options.base_config()
  c.name = f"polar-{model_name}"
  c.model.name = model_name
  c.model.path = ""  # required: --config.model.path=/path/to/local/hf/snapshot
  c.model.dtype = "bfloat16"
  c.data.datasets = ",".join(f"math_level{i}" for i in range(1, 6))
  c.data.num_search = 1250
  c.data.num_validation = 250
  c.data.num_test = 500
  c.data.num_calibration = 0  # ShortGPT calibrates on the searched train questions' prompts
  c.data.ood = "gsm8k,svamp,asdiv,mawps"
  c.task.preset = preset
  c.task.max_new_tokens = 50
  c.search.num_simulations = 200
  c.search.length_penalty = 5.0
  c.search.exploration = 1.8
  c.search.max_batch = 64
  c.predictor.seed = 42
  c.predictor.predictor.d_model = 256
  c.predictor.predictor.num_heads = 4
  c.predictor.predictor.num_blocks = 2
  c.predictor.predictor.dropout = 0.1
  c.predictor.train.learning_rate = 5e-4
  c.predictor.train.batch_size = 128
  c.predictor.train.num_epochs = 10
  c.predictor.train.warmup_steps = 10
  c.predictor.train.lr_schedule = "cosine"
  c.predictor.targets.max_programs = 50
  c.predictor.targets.original_weight = 0.3
  c.predictor.decode.beam_size = 5
  c.predictor.decode.top_k = 5
  if arg.tpu:
    c.search.max_batch = 128
    c.predictor.mesh.rules = "fsdp"
  if arg.gpu:
    c.search.max_batch = 128
  if arg.runlocal:
    c.data.num_search, c.data.num_validation, c.data.num_test = 8, 4, 8
    c.data.ood = ""
    c.search.num_simulations = 8
    c.predictor.train.num_epochs = 2
  return c
