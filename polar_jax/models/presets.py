"""The paper's models as their published HF `config.json` contents.

Used to build configs without weights (shape checks with `jax.eval_shape`, dry runs of the paper's
settings, key-list checks) and to recognise the models by name. The weights themselves always come from a
local HF snapshot (`load_model("/path/to/snapshot")`).
"""

from __future__ import annotations

from polar_jax.models.config import ModelConfig

PAPER_MODELS: dict[str, dict] = {
    "Llama-3.2-3B-Instruct": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
        "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "max_position_embeddings": 131072, "tie_word_embeddings": True, "attention_bias": False,
        "mlp_bias": False, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    },
    "Qwen2.5-3B-Instruct": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
        "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
        "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 70,
        "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "Qwen3-8B": {
        "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000, "rope_scaling": None,
        "max_position_embeddings": 40960, "sliding_window": None, "use_sliding_window": False,
        "max_window_layers": 36, "tie_word_embeddings": False, "attention_bias": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "Qwen1.5-MoE-A2.7B-Chat": {
        "model_type": "qwen2_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 8192,
        "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 21,
        "tie_word_embeddings": False, "decoder_sparse_step": 1, "num_experts": 60, "num_experts_per_tok": 4,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "norm_topk_prob": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
}

# Published total parameter counts (embeddings included), for shape tests.
PUBLISHED_PARAMS = {"Llama-3.2-3B-Instruct": 3.21e9, "Qwen2.5-3B-Instruct": 3.09e9, "Qwen3-8B": 8.19e9,
                    "Qwen1.5-MoE-A2.7B-Chat": 14.3e9}


def paper_config(name: str, dtype: str = "bfloat16") -> ModelConfig:
  """The ModelConfig of one of the paper's models (no weights needed)."""
  if name not in PAPER_MODELS:
    raise KeyError(f"Unknown paper model {name!r}; known: {', '.join(PAPER_MODELS)}.")
  return ModelConfig.from_hf_dict(PAPER_MODELS[name], dtype=dtype, source=f"preset {name}")
