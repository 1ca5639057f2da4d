"""The paper's setting for Qwen2.5-3B-Instruct (see polar_jax/experiments.py for what is
shared with the other models and what differs from the paper).

  python -m polar_jax.main --config=configs/qwen2_5_3b.py:gpu --config.model.path=/ckpt/Qwen2.5-3B-Instruct --workdir=/tmp/polar_qwen2_5_3b

Prompt preset `paper_qwen25` follows the authors' release for this model family.
"""

from __future__ import annotations

from polar_jax.experiments import paper_config


def get_config(arg: str | None = None):
  return paper_config("Qwen2.5-3B-Instruct", "paper_qwen25", arg)
