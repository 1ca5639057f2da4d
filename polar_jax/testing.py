"""Tiny random models for tests, notebooks and examples (no files needed).

`tiny_model()` returns a real `Model`: random weights in the real layout and a word-level tokenizer over
`vocab_size` tokens named `w0 .. w{V-1}` (with `<eos>` = id 0 and `<pad>` = id 1), so every code path that
takes a loaded model (executor, search, evaluation) can run on it in milliseconds. `reference_logits` and
`reference_greedy` run a program the plainest way (a Python loop over its layers, no cache, no schedule) to
test the executor against.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
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


# Family-specific fields of the tiny configs: Qwen2-MoE with 6 experts, top-2, a shared expert and one dense
# layer; Gemma 3 alternating sliding (window 3, shorter than the test prompts) and global layers.
_FAMILY_FIELDS = {
    "qwen2": dict(qkv_bias=True),
    "qwen3": dict(qk_norm=True),
    "qwen2_moe": dict(qkv_bias=True, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, dense_layers=(2,)),
    "gemma3_text": dict(qk_norm=True, tie_word_embeddings=True, sliding_window=3, rope_theta=1e6,
                        layer_types=("sliding_attention", "full_attention") * 2, query_pre_attn_scalar=24.0,
                        final_logit_softcapping=30.0),
}

# Extra scale of the random embedding table. Gemma scales embeddings by sqrt(hidden) and its post-norms fix each
# layer's output scale, so at a uniform weight scale the (tied) embedding dominates and every program echoes
# the last token; a smaller embedding lets the layers, and so the program, decide.
_EMBED_SCALE = {"gemma3_text": 0.1}


def tiny_config(model_type: str = "llama", **overrides) -> ModelConfig:
  base = dict(model_type=model_type, vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=4,
              num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0,
              max_position_embeddings=512, tie_word_embeddings=False, eos_token_ids=(0,))
  base.update(_FAMILY_FIELDS.get(model_type, {}))
  base.update(overrides)
  return ModelConfig(**base)


def tiny_model(model_type: str = "llama", seed: int = 0, scale: float = 0.25, **overrides) -> Model:
  """A random model whose greedy outputs vary with the program (scale is large enough to matter)."""
  cfg = tiny_config(model_type, **overrides)
  params = transformer.init_params(cfg, seed, scale=scale)  # An int seed: drawn with numpy, nothing compiles.
  if cfg.model_type in _EMBED_SCALE:
    params["embed"] = params["embed"] * _EMBED_SCALE[cfg.model_type]
  return Model(f"tiny-{model_type}", cfg, params, tiny_tokenizer(cfg.vocab_size), "random")


@functools.partial(jax.jit, static_argnames=("cfg", "program"))
def _program_logits(params, tokens, *, cfg: ModelConfig, program: tuple[int, ...]):
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, jnp.arange(tokens.shape[1])[None])
  key_mask = transformer.causal_key_mask(jnp.ones_like(tokens))
  empty = jnp.zeros(tokens.shape + (cfg.num_kv_heads, cfg.head_dim), x.dtype)
  for layer_id in program:  # Unrolled: one layer after another, weights indexed by a constant.
    lp = jax.tree.map(lambda w, i=layer_id: w[i], params["layers"])
    x, _, _ = transformer.layer(lp, cfg, x, rope, empty, empty, 0, key_mask)
  return transformer.logits(params, cfg, transformer.final_norm(params, cfg, x))[0]


def reference_logits(model: Model, ids: Sequence[int], program: Sequence[int]) -> np.ndarray:
  """Logits [S, V] of running `program`'s layers one by one on one unpadded prompt (compiled once per program
  and length)."""
  return np.asarray(_program_logits(model.params, jnp.asarray([list(ids)]), cfg=model.config,
                                    program=tuple(int(i) for i in program)))


def reference_greedy(model: Model, ids: Sequence[int], program: Sequence[int], n: int) -> list[int]:
  """n greedy tokens by recomputing the whole prefix each step (no KV cache). The prefix sits in a fixed
  right-padded buffer, which the causal mask makes invisible to it, so this compiles once per program."""
  buf = np.full((1, len(ids) + n), model.tokenizer.pad_id, np.int32)
  buf[0, :len(ids)] = ids
  program = tuple(int(i) for i in program)
  out = []
  for t in range(len(ids), len(ids) + n):
    logits = _program_logits(model.params, jnp.asarray(buf), cfg=model.config, program=program)
    out.append(int(jnp.argmax(logits[t - 1])))
    buf[0, t] = out[-1]
  return out
