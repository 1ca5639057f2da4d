"""Model configuration: a frozen, hashable dataclass built from a Hugging Face `config.json`.

One decoder family covers Llama 3.x (with `llama3` RoPE scaling), Qwen2 / Qwen2.5 (q/k/v biases), Qwen3
(per-head q/k RMSNorm, a `head_dim` decoupled from hidden / heads) and SmolLM2 (Llama with tied embeddings).
Two more families reuse its attention and differ where their fields say: Qwen1.5-MoE (`qwen2_moe`: a routed
mixture of experts plus a gated shared expert in place of the MLP, see `moe.py`) and Gemma 3 (`gemma3_text`:
sliding-window local layers between global ones, four (1 + w) norms per layer, GeGLU, see `gemma3.py`).
The config is marked static for `jax.jit`, so it must stay hashable: tuples, never lists or dicts.

Anything we do not implement fails here, at load time, with a message naming the field, rather than
producing silently wrong logits later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from polar_jax.errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "qwen2_moe", "gemma3_text")
SLIDING, FULL = "sliding_attention", "full_attention"


class UnsupportedModelError(UserError, ValueError):
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
  # Qwen2-MoE (`qwen2_moe`): routed experts + a sigmoid-gated shared expert in place of the MLP.
  num_experts: int = 0
  num_experts_per_tok: int = 0
  moe_intermediate_size: int = 0  # Width of each routed expert.
  shared_expert_intermediate_size: int = 0
  norm_topk_prob: bool = False  # Renormalize the top-k router probabilities to sum to 1.
  dense_layers: tuple[int, ...] = ()  # Layers with a plain MLP of `intermediate_size` (mlp_only_layers, ...).
  # Gemma 3 (`gemma3_text`).
  layer_types: tuple[str, ...] = ()  # Per layer "sliding_attention" / "full_attention"; () = all full.
  sliding_window: int = 0  # Keys a sliding layer sees, itself included (query - key < window).
  rope_local_theta: float = 10000.0  # RoPE base of the sliding layers (the global one is rope_theta).
  rope_linear_factor: float = 1.0  # Linear RoPE scaling of the global layers (Gemma 3 4B and up: 8).
  query_pre_attn_scalar: float = 0.0  # Attention scale is this ** -0.5 (Gemma); 0 = head_dim.
  final_logit_softcapping: float = 0.0  # 0 = off.

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedModelError(
          f"model_type {self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}.")
    if self.model_type == "qwen2_moe":
      if not 0 < self.num_experts_per_tok <= self.num_experts:
        raise UnsupportedModelError(
            f"num_experts_per_tok ({self.num_experts_per_tok}) must be in 1..num_experts ({self.num_experts}).")
      if self.moe_intermediate_size <= 0 or self.shared_expert_intermediate_size <= 0:
        raise UnsupportedModelError("qwen2_moe needs moe_intermediate_size > 0 and "
                                    "shared_expert_intermediate_size > 0.")
      if any(not 0 <= i < self.num_layers for i in self.dense_layers):
        raise UnsupportedModelError(f"dense layer ids {self.dense_layers} out of range for {self.num_layers} layers.")
    if self.layer_types:
      if len(self.layer_types) != self.num_layers:
        raise UnsupportedModelError(
            f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers.")
      bad = sorted(set(self.layer_types) - {SLIDING, FULL})
      if bad:
        raise UnsupportedModelError(f"layer_types {bad} are not supported (only {SLIDING!r}, {FULL!r}).")
      if SLIDING in self.layer_types and self.sliding_window <= 0:
        raise UnsupportedModelError("sliding_attention layers need sliding_window > 0.")
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

  @property
  def is_moe(self) -> bool:
    return self.model_type == "qwen2_moe"

  @property
  def is_gemma(self) -> bool:
    return self.model_type == "gemma3_text"

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

    if model_type == "gemma3_text":
      return _gemma3_from_hf(cls, hf, need, dtype, source)

    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise UnsupportedModelError(f"{source}: hidden_act {act!r} is not supported (only 'silu').")
    if hf.get("mlp_bias", False):
      raise UnsupportedModelError(f"{source}: mlp_bias=true is not supported.")
    if hf.get("pretraining_tp", 1) not in (1, None):
      raise UnsupportedModelError(f"{source}: pretraining_tp={hf['pretraining_tp']} is not supported (use 1).")
    if model_type in ("qwen2", "qwen3", "qwen2_moe") and hf.get("use_sliding_window", False):
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

    bos, eos_ids = _special_ids(hf)

    moe = {}
    if model_type == "llama":
      qkv_bias = o_bias = bool(hf.get("attention_bias", False))
    elif model_type == "qwen2":
      qkv_bias, o_bias = True, False
    elif model_type == "qwen2_moe":
      qkv_bias, o_bias = bool(hf.get("qkv_bias", True)), False
      moe = _qwen2_moe_fields(hf, need, source)
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
        bos_token_id=bos,
        eos_token_ids=eos_ids,
        dtype=dtype,
        **moe,
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



def _special_ids(hf: Mapping[str, Any]) -> tuple[int | None, tuple[int, ...]]:
  eos = hf.get("eos_token_id")
  eos_ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
  bos = hf.get("bos_token_id")
  if isinstance(bos, (list, tuple)):
    bos = bos[0] if bos else None
  return (None if bos is None else int(bos)), eos_ids


def _qwen2_moe_fields(hf: Mapping[str, Any], need, source: str) -> dict[str, Any]:
  """The MoE fields of a `qwen2_moe` config; which layers are dense follows transformers' Qwen2MoE rule."""
  num_experts = int(need("num_experts"))
  if num_experts <= 0:
    raise UnsupportedModelError(f"{source}: num_experts={num_experts}; a qwen2_moe model without experts is not "
                                "supported (convert it as model_type 'qwen2').")
  step = int(hf.get("decoder_sparse_step", 1) or 1)
  only = {int(i) for i in (hf.get("mlp_only_layers") or [])}
  layers = int(need("num_hidden_layers"))
  dense = tuple(i for i in range(layers) if i in only or (i + 1) % step)
  if len(dense) == layers:
    raise UnsupportedModelError(f"{source}: every layer is dense (mlp_only_layers / decoder_sparse_step); convert "
                                "it as model_type 'qwen2'.")
  return dict(num_experts=num_experts, num_experts_per_tok=int(need("num_experts_per_tok")),
              moe_intermediate_size=int(need("moe_intermediate_size")),
              shared_expert_intermediate_size=int(need("shared_expert_intermediate_size")),
              norm_topk_prob=bool(hf.get("norm_topk_prob", False)), dense_layers=dense)


def _gemma3_rope(hf: Mapping[str, Any], source: str) -> tuple[float, float, float]:
  """(global theta, local theta, global linear factor) from either config layout.

  Classic: `rope_theta`, `rope_local_base_freq`, `rope_scaling` (global layers only). transformers 5:
  `rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}`.
  """
  params = hf.get("rope_parameters") or {}
  full = dict(params.get(FULL) or {})
  local = dict(params.get(SLIDING) or {})
  if hf.get("rope_scaling"):
    full = {**hf["rope_scaling"], **full}
  theta = float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)))
  local_theta = float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)))
  factor = 1.0
  kind = full.get("rope_type", full.get("type", "default"))
  if kind == "linear":
    factor = float(full["factor"])
  elif kind != "default":
    raise UnsupportedModelError(f"{source}: global rope type {kind!r} is not supported (only 'default', 'linear').")
  local_kind = local.get("rope_type", local.get("type", "default"))
  if local_kind != "default":
    raise UnsupportedModelError(f"{source}: sliding-layer rope type {local_kind!r} is not supported.")
  return theta, local_theta, factor


def _gemma3_from_hf(cls, hf: Mapping[str, Any], need, dtype: str, source: str) -> ModelConfig:
  act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  if act != "gelu_pytorch_tanh":
    raise UnsupportedModelError(f"{source}: hidden_activation {act!r} is not supported (only 'gelu_pytorch_tanh').")
  for flag in ("attention_bias", "use_bidirectional_attention"):
    if hf.get(flag):
      raise UnsupportedModelError(f"{source}: {flag}=true is not supported.")
  if hf.get("attn_logit_softcapping"):
    raise UnsupportedModelError(
        f"{source}: attn_logit_softcapping={hf['attn_logit_softcapping']} is not supported (transformers' Gemma 3 "
        "does not apply it either; the published Gemma 3 configs have null).")
  layers = int(need("num_hidden_layers"))
  layer_types = hf.get("layer_types")
  if not layer_types:
    pattern = int(hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6)
    layer_types = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers)]
  hidden = int(need("hidden_size"))
  heads = int(need("num_attention_heads"))
  theta, local_theta, factor = _gemma3_rope(hf, source)
  bos, eos_ids = _special_ids(hf)
  return cls(
      model_type="gemma3_text",
      vocab_size=int(need("vocab_size")),
      hidden_size=hidden,
      intermediate_size=int(need("intermediate_size")),
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or 256),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      rope_theta=theta,
      max_position_embeddings=int(hf.get("max_position_embeddings", 131072)),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
      qk_norm=True,
      bos_token_id=bos,
      eos_token_ids=eos_ids,
      dtype=dtype,
      layer_types=tuple(str(t) for t in layer_types),
      sliding_window=int(hf.get("sliding_window") or 0),
      rope_local_theta=local_theta,
      rope_linear_factor=factor,
      query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or 256),
      final_logit_softcapping=float(hf.get("final_logit_softcapping") or 0.0),
  )
