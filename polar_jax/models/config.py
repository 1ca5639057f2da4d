"""Model configuration: a frozen, hashable dataclass built from a Hugging Face `config.json`.

One decoder family covers Llama 3.x (with `llama3` RoPE scaling), Qwen2 / Qwen2.5 (q/k/v biases), Qwen3
(per-head q/k RMSNorm, a `head_dim` decoupled from hidden / heads) and SmolLM2 (Llama with tied embeddings).
The config is marked static for `jax.jit`, so it must stay hashable: tuples, never lists or dicts.

Anything we do not implement fails here, at load time, with a message naming the field, rather than
producing silently wrong logits later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")


class UnsupportedModelError(ValueError):
  """The checkpoint's architecture or one of its options is not implemented."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3.x frequency-dependent RoPE scaling (`rope_type: llama3`)."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static description of a decoder-only transformer of the Llama / Qwen family."""
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  qkv_bias: bool = False  # Qwen2: biases on q, k, v (not o).
  o_bias: bool = False  # Llama with attention_bias=True: bias on o too.
  qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE.
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  dtype: str = "float32"  # Compute / parameter dtype: "float32" or "bfloat16".

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedModelError(
          f"model_type {self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}.")
    if self.num_heads % self.num_kv_heads:
      raise UnsupportedModelError(
          f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads "
          f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise UnsupportedModelError(f"head_dim must be even for rotary embeddings, got {self.head_dim}.")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")

  @property
  def num_groups(self) -> int:
    """Query heads per key/value head (GQA group size)."""
    return self.num_heads // self.num_kv_heads

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], *, dtype: str = "float32", source: str = "config.json"
                   ) -> "ModelConfig":
    """Builds a config from the parsed contents of an HF `config.json`.

    Accepts both the classic layout (`rope_theta`, `rope_scaling`) and transformers 5's `rope_parameters`.
    `source` names the file in error messages.
    """
    model_type = hf.get("model_type")
    if model_type is None:
      raise UnsupportedModelError(f"{source} has no 'model_type'; is this a Hugging Face model config?")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedModelError(
          f"{source}: model_type {model_type!r} is not supported; supported: "
          f"{', '.join(SUPPORTED_MODEL_TYPES)}.")

    def need(key):
      if key not in hf:
        raise UnsupportedModelError(f"{source}: required field {key!r} is missing for model_type {model_type!r}.")
      return hf[key]

    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise UnsupportedModelError(f"{source}: hidden_act {act!r} is not supported (only 'silu').")
    if hf.get("mlp_bias", False):
      raise UnsupportedModelError(f"{source}: mlp_bias=true is not supported.")
    if hf.get("pretraining_tp", 1) not in (1, None):
      raise UnsupportedModelError(f"{source}: pretraining_tp={hf['pretraining_tp']} is not supported (use 1).")
    if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window", False):
      raise UnsupportedModelError(
          f"{source}: use_sliding_window=true is not supported; the published Qwen2.5 / Qwen3 checkpoints "
          "use full attention (use_sliding_window=false).")
    layer_types = hf.get("layer_types")
    if layer_types and any(t != "full_attention" for t in layer_types):
      raise UnsupportedModelError(
          f"{source}: layer_types {sorted(set(layer_types))} are not supported (only 'full_attention').")

    hidden = int(need("hidden_size"))
    heads = int(need("num_attention_heads"))
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_dim = hf.get("head_dim") or hidden // heads

    rope = dict(hf.get("rope_parameters") or {})
    legacy_scaling = hf.get("rope_scaling")
    if legacy_scaling:
      rope = {**legacy_scaling, **rope}
    rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
      scaling = RopeScaling(
          factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
          high_freq_factor=float(rope["high_freq_factor"]),
          original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
    elif rope_type != "default":
      raise UnsupportedModelError(
          f"{source}: rope type {rope_type!r} is not supported (only 'default' and 'llama3').")

    eos = hf.get("eos_token_id")
    eos_ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    bos = hf.get("bos_token_id")
    if isinstance(bos, (list, tuple)):
      bos = bos[0] if bos else None

    if model_type == "llama":
      qkv_bias = o_bias = bool(hf.get("attention_bias", False))
    elif model_type == "qwen2":
      qkv_bias, o_bias = True, False
    else:  # qwen3
      qkv_bias = o_bias = bool(hf.get("attention_bias", False))

    return cls(
        model_type=model_type,
        vocab_size=int(need("vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(need("intermediate_size")),
        num_layers=int(need("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling=scaling,
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=model_type == "qwen3",
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
        dtype=dtype,
    )

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike, *, dtype: str = "float32") -> "ModelConfig":
    """Reads `<path>/config.json`."""
    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
      raise FileNotFoundError(
          f"No config.json in {os.fspath(path)!r}: point the model path at a local Hugging Face snapshot "
          "directory (the folder holding config.json, tokenizer.json and *.safetensors).")
    try:
      with open(config_path) as f:
        hf = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path} is not valid JSON: {e}") from None
    return cls.from_hf_dict(hf, dtype=dtype, source=config_path)

