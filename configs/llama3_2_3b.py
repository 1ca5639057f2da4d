"""The paper's setting for Llama-3.2-3B-Instruct (see polar_jax/experiments.py for what is
shared with the other models and what differs from the paper).

  python -m polar_jax.main --config=configs/llama3_2_3b.py:gpu --config.model.path=/ckpt/Llama-3.2-3B-Instruct --workdir=/tmp/polar_llama3_2_3b

Prompt preset `paper_llama_raw` follows the authors' release for this model family.
"""

from __future__ import annotations

from polar_jax.experiments import paper_config


def get_config(arg: str | None = None):
  return paper_config("Llama-3.2-3B-Instruct", "paper_llama_raw", arg)
