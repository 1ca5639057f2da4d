"""The embedded default: SmolLM2-135M-Instruct on the arithmetic ladder, everything on CPU.

The arithmetic ladder is a *controlled synthetic benchmark* (generated arithmetic questions in words and
symbols, five difficulty levels; `polar_jax.data`), chosen because SmolLM2-135M is at the floor on every
real math benchmark (0-4% on GSM8K, SVAMP, ASDiv, MAWPS; chance on MathQA / MMLU-STEM), so a program search
there finds nothing to learn. Full-depth base accuracy with the `free_prefix` prompt (the question in the
chat template, the assistant turn opened with "The answer is ", the first number is the answer), greedy, n=64
validation questions per level, measured on 2 CPU cores:

  level 1 (one-digit addition)        59%
  level 2 (two-digit add / subtract)   5%
  level 3 (one-digit multiplication)  52%
  level 4 (three-digit addition)       0%
  level 5 (two-step expressions)       2%

Levels 1 and 3 carry the signal (about half right and half wrong at full depth), so the default searches,
trains and evaluates on them. With the paper's boxed prompt the same model scores 16% / 0% / 0% / 0% / 2%.

  python -m polar_jax.main --config=configs/default.py --workdir=/tmp/polar_default
  python -m polar_jax.main --config=configs/default.py:quick --workdir=/tmp/polar_quick

Arguments (big_vision style, comma-separated after the colon: `configs/default.py:quick,n_test=500`):
  quick         a few questions and simulations: the whole pipeline in a few minutes (used by the e2e test).
  paper_prompt  MATH levels 1-5 with the paper's exact prompt and boxed answers (the paper's protocol end to
                end; SmolLM2 is at the floor there, so expect near-zero accuracy), small sizes.
  n_search=N, n_validation=N, n_test=N   questions per dataset (after the variants above)
  protocol=polar_release   the authors' released MCTS (`polar_jax.search.release`) with its settings:
                100 simulations, c = sqrt(2), lambda 5, 10% random moves, root blocks <= 4, seed 42 (the
                same for every question), one leaf per round (its exact sequence), all edits (space cola), and
                its length bounds for the model's depth (SmolLM2's 30 layers are not in its table: (18, 34),
                see `search.tree.release_length_bounds`). protocol=cola is the default search.
  sims=N        MCTS simulations per question
  leaves=N      leaves each question selects per round (search.leaves_per_round; ceil(sims / N) rounds)
  preset=NAME   the prompt preset (e.g. raw_qa_3shot)
"""

from __future__ import annotations

import math

import ml_collections

from polar_jax import options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = options.parse_arg(arg, quick=False, paper_prompt=False, n_search=None, n_validation=None, n_test=None,
                          sims=None, leaves=None, preset=None, protocol=None)
  c = options.base_config()
  c.name = "smollm2-arith"
  c.model.name = "smollm2-135m-instruct"
  c.model.dtype = "float32"

  c.data.datasets = "arith_level11,arith_level13"  # ladder v2: successor, last digit
  c.data.num_search = 48  # per dataset, from the train split: the predictor's supervision
  c.data.num_validation = 16  # per dataset, searched too: the predictor's validation loss / match rate
  c.data.num_test = 500  # per dataset: 1,000 held-out test questions
  c.data.num_calibration = 32  # ShortGPT's calibration questions (train split, not searched ones)
  c.data.ood = ""  # e.g. "arith_level2,arith_level5"

  c.task.preset = "raw_qa_3shot"
  c.task.max_new_tokens = 8

  c.menu.top_k = 12  # + the full program
  c.menu.num_train = 200  # per dataset (the 48 searched ones first)
  c.menu.num_validation = 100  # per dataset
  c.menu.chunk_questions = 50

  c.search.num_simulations = 24  # `sims=96` searches 4x more (measured in the README; not the shipped menu yet)
  c.search.leaves_per_round = 8
  c.search.space = "predictor"  # every valid program is one the predictor can emit (and be trained on)
  c.search.max_batch = 32

  c.predictor.train.batch_size = 32
  c.predictor.train.num_epochs = 30
  c.predictor.train.warmup_steps = 10
  c.predictor.checkpoint.every_steps = 50

  if arg.quick:
    c.name += "-quick"
    c.data.datasets = "arith_level11"
    c.data.num_search = 8
    c.data.num_validation = 4
    c.data.num_test = 12
    c.data.num_calibration = 4
    c.menu.top_k = 3
    c.menu.num_train = 12
    c.menu.num_validation = 6
    c.menu.chunk_questions = 10
    c.search.num_simulations = 8
    c.predictor.train.num_epochs = 4
    c.predictor.train.batch_size = 16
    c.predictor.predictor.dropout = 0.0
    c.evaluate.temperatures = (0.7,)
    c.evaluate.shortgpt_sweep = (4,)
  if arg.paper_prompt:
    c.name += "-paper-prompt"
    c.data.datasets = ",".join(f"math_level{i}" for i in range(1, 6))
    c.data.num_search = 16
    c.data.num_validation = 4
    c.data.num_test = 20
    c.task.preset = "paper"
    c.task.max_new_tokens = 50
    c.search.num_simulations = 16
  for field, value in (("num_search", arg.n_search), ("num_validation", arg.n_validation),
                       ("num_test", arg.n_test)):
    if value is not None:
      c.data[field] = int(value)
  if arg.protocol is not None:
    c.search.protocol = str(arg.protocol)  # an unknown name is SearchConfig's error when the config is read
  if arg.protocol == "polar_release":
    c.name += "-polar-release"
    c.search.num_simulations = 100
    c.search.exploration = math.sqrt(2)
    c.search.length_penalty = 5.0
    c.search.random_prob = 0.1
    c.search.max_block = 4
    c.search.min_len = None  # the release's bounds for the model's depth
    c.search.max_len = None
    c.search.space = "cola"
    c.search.leaves_per_round = 1
    c.search.seed = 42
  if arg.sims is not None:
    c.search.num_simulations = int(arg.sims)
  if arg.leaves is not None:
    c.search.leaves_per_round = int(arg.leaves)
  if arg.preset is not None:
    c.task.preset = str(arg.preset)
  return c
