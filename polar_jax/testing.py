"""Tiny random models for tests, notebooks and examples (no files needed).

`tiny_model()` returns a real `Model`: random weights in the real layout and a word-level tokenizer over
`vocab_size` tokens named `w0 .. w{V-1}` (with `<eos>` = id 0 and `<pad>` = id 1), so every code path that
takes a loaded model (executor, search, evaluation) can run on it in milliseconds.
"""

from __future__ import annotations

import jax
from tokenizers import Tokenizer as _HFTokenizer, models, pre_tokenizers, decoders

from polar_jax.models import transformer
from polar_jax.models.config import ModelConfig
from polar_jax.models.registry import Model
from polar_jax.models.tokenizer import Tokenizer


def tiny_tokenizer(vocab_size: int) -> Tokenizer:
  vocab = {"<eos>": 0, "<pad>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
  backend = _HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  backend.decoder = decoders.WordPiece(prefix="##")  # Joins tokens with spaces.
  template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
              "{% if add_generation_prompt %}assistant {% endif %}")
  return Tokenizer(backend, chat_template=template, eos_token="<eos>", pad_token="<pad>")


def tiny_config(model_type: str = "llama", **overrides) -> ModelConfig:
  base = dict(model_type=model_type, vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=4,
              num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0,
              max_position_embeddings=512, tie_word_embeddings=False, qkv_bias=model_type == "qwen2",
              qk_norm=model_type == "qwen3", eos_token_ids=(0,))
  base.update(overrides)
  return ModelConfig(**base)


def tiny_model(model_type: str = "llama", seed: int = 0, scale: float = 0.25, **overrides) -> Model:
  """A random model whose greedy outputs vary with the program (scale is large enough to matter)."""
  cfg = tiny_config(model_type, **overrides)
  params = transformer.init_params(cfg, jax.random.key(seed), scale=scale)
  return Model(f"tiny-{model_type}", cfg, params, tiny_tokenizer(cfg.vocab_size), "random")
