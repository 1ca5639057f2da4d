"""The paper's setting for Qwen3-8B (see polar_jax/experiments.py for what is
shared with the other models and what differs from the paper).

  python -m polar_jax.main --config=configs/qwen3_8b.py:gpu --config.model.path=/ckpt/Qwen3-8B --workdir=/tmp/polar_qwen3_8b

Prompt preset `paper_qwen3` follows the authors' release for this model family.
"""

from __future__ import annotations

from polar_jax.experiments import paper_config


def get_config(arg: str | None = None):
  return paper_config("Qwen3-8B", "paper_qwen3", arg)
