"""Math datasets, prompts and answer checking.

- Datasets: `load_split(dataset, split, limit=, seed=)` -> list[Example]; names in `list_datasets()` and the
  catalog module docstring (gsm8k, math, math500, svamp, asdiv, mawps[_addsub|_singleop|_singleeq|_multiarith],
  mathqa, mmlu_stem, math_level1..5, arith_level1..5 (a controlled synthetic benchmark), jsonl). Prepared once
  as TFDS array_record files (no TensorFlow), cached under `cache_dir()/tfds`.
- Prompts: `PromptConfig`, `PRESETS`, `preset_for_model`, `build_messages`, `render_prompt`, `draw_few_shot`.
- Answers: `ANSWER_FORMATS`, `extract_answer`, `is_correct`, `score_generation`; stopping: `make_stop_checker`.
"""

from polar_jax.data.answers import ANSWER_FORMATS, extract_answer, is_correct, score_generation
from polar_jax.data.catalog import DATASETS, read_split
from polar_jax.data.example import Example, normalize_question
from polar_jax.data.loading import list_datasets, load_split
from polar_jax.data.prompts import (PRESETS, PromptConfig, build_messages, draw_few_shot, get_preset,
                                    preset_for_model, render_prompt, select_few_shot)
from polar_jax.data.sources import DataFormatError
from polar_jax.data.stopping import device_stop_kwargs, make_stop_checker

__all__ = [
    "ANSWER_FORMATS", "DATASETS", "DataFormatError", "Example", "PRESETS", "PromptConfig", "build_messages",
    "device_stop_kwargs", "draw_few_shot", "extract_answer", "get_preset", "is_correct", "list_datasets",
    "load_split", "make_stop_checker", "normalize_question", "preset_for_model", "read_split", "render_prompt",
    "score_generation", "select_few_shot",
]
