"""Checkpoint conversion: HF-named tensors -> the stacked params pytree of `transformer.py`.

Every source key is mapped by an explicit rule, every shape is checked against the config, and unknown,
missing or duplicate keys are errors naming the key (and file). Per-layer tensors are stacked on axis 0, and
per-expert tensors (`mlp.experts.<e>.*`, Qwen2-MoE) on axes 0 (layer) and 1 (expert). The rules depend on
the family: its per-layer norms are the family table's `hf_norms` (Gemma 3's `post_attention_layernorm` is the
norm *after* attention, Llama's the one before the MLP); a Qwen2-MoE dense layer's MLP goes into the
shared-expert slot (see `moe.py`). The config's per-layer data arrays (`transformer.layer_data`) are appended
last.
Both sources funnel through the same rules: an HF snapshot directory (safetensors, single or sharded), and a
GGUF file whose tensors are first renamed to HF names and put back into HF layout (llama.cpp permutes the
rows of q/k for its interleaved RoPE; we undo that).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

from polar_jax.models import moe, transformer
from polar_jax.models.config import ModelConfig
from polar_jax.models.safetensors_io import CheckpointFormatError, checkpoint_files, iter_tensors


@dataclasses.dataclass(frozen=True)
class _Rule:
  target: str  # Name in params ("embed") or in params["layers"] ("q").
  per_layer: bool
  hf_shape: Callable[[ModelConfig], tuple[int, ...]]
  transform: Callable[[np.ndarray, ModelConfig], np.ndarray]
  per_expert: bool = False  # Key `mlp.experts.<e>.<rest>`, stored at [layer, e].


def _t(w, cfg):  # [out, in] -> [in, out]
  return w.T


def _pad(w: np.ndarray, axis: int, size: int) -> np.ndarray:
  """Zero-pads one axis to `size` (a Qwen2-MoE dense MLP or shared expert in the wider shared slot)."""
  if w.shape[axis] == size:
    return w
  widths = [(0, 0)] * w.ndim
  widths[axis] = (0, size - w.shape[axis])
  return np.pad(w, widths)


def _rules(cfg: ModelConfig) -> dict[str, _Rule]:
  rules = _base_rules()
  ident = lambda w, c: w  # noqa: E731
  for hf_name, target in transformer.family(cfg).hf_norms:  # The family's per-layer norms ([D] each).
    rules[hf_name] = _Rule(target, True, lambda c: (c.hidden_size,), ident)
  if cfg.is_moe:
    fs = moe.shared_width(cfg)
    fe = lambda c: c.moe_intermediate_size  # noqa: E731
    shared = lambda c: c.shared_expert_intermediate_size  # noqa: E731
    dense = lambda c: c.intermediate_size  # noqa: E731
    into_slot_in = lambda w, c: _pad(w.T, 1, fs)  # noqa: E731  [F, D] -> [D, Fs]
    into_slot_out = lambda w, c: _pad(w.T, 0, fs)  # noqa: E731  [D, F] -> [Fs, D]
    for width, prefix in ((dense, "mlp."), (shared, "mlp.shared_expert.")):
      rules[prefix + "gate_proj.weight"] = _Rule(
          "shared_gate", True, lambda c, w=width: (w(c), c.hidden_size), into_slot_in)
      rules[prefix + "up_proj.weight"] = _Rule(
          "shared_up", True, lambda c, w=width: (w(c), c.hidden_size), into_slot_in)
      rules[prefix + "down_proj.weight"] = _Rule(
          "shared_down", True, lambda c, w=width: (c.hidden_size, w(c)), into_slot_out)
    rules["mlp.experts.*.gate_proj.weight"] = _Rule(
        "expert_gate", True, lambda c: (fe(c), c.hidden_size), _t, per_expert=True)
    rules["mlp.experts.*.up_proj.weight"] = _Rule(
        "expert_up", True, lambda c: (fe(c), c.hidden_size), _t, per_expert=True)
    rules["mlp.experts.*.down_proj.weight"] = _Rule(
        "expert_down", True, lambda c: (c.hidden_size, fe(c)), _t, per_expert=True)
    rules["mlp.gate.weight"] = _Rule("router", True, lambda c: (c.num_experts, c.hidden_size), _t)
    rules["mlp.shared_expert_gate.weight"] = _Rule(
        "shared_expert_gate", True, lambda c: (1, c.hidden_size), lambda w, c: w[0])
  return rules


def _base_rules() -> dict[str, _Rule]:
  h = lambda c: c.num_heads * c.head_dim  # noqa: E731
  kv = lambda c: c.num_kv_heads * c.head_dim  # noqa: E731
  ident = lambda w, c: w  # noqa: E731
  return {
      "model.embed_tokens.weight": _Rule("embed", False, lambda c: (c.vocab_size, c.hidden_size), ident),
      "lm_head.weight": _Rule("lm_head", False, lambda c: (c.vocab_size, c.hidden_size), _t),
      "model.norm.weight": _Rule("final_norm", False, lambda c: (c.hidden_size,), ident),
      "self_attn.q_proj.weight": _Rule(
          "q", True, lambda c: (h(c), c.hidden_size),
          lambda w, c: w.T.reshape(c.hidden_size, c.num_heads, c.head_dim)),
      "self_attn.k_proj.weight": _Rule(
          "k", True, lambda c: (kv(c), c.hidden_size),
          lambda w, c: w.T.reshape(c.hidden_size, c.num_kv_heads, c.head_dim)),
      "self_attn.v_proj.weight": _Rule(
          "v", True, lambda c: (kv(c), c.hidden_size),
          lambda w, c: w.T.reshape(c.hidden_size, c.num_kv_heads, c.head_dim)),
      "self_attn.o_proj.weight": _Rule(
          "o", True, lambda c: (c.hidden_size, h(c)),
          lambda w, c: w.T.reshape(c.num_heads, c.head_dim, c.hidden_size)),
      "self_attn.q_proj.bias": _Rule(
          "q_bias", True, lambda c: (h(c),), lambda w, c: w.reshape(c.num_heads, c.head_dim)),
      "self_attn.k_proj.bias": _Rule(
          "k_bias", True, lambda c: (kv(c),), lambda w, c: w.reshape(c.num_kv_heads, c.head_dim)),
      "self_attn.v_proj.bias": _Rule(
          "v_bias", True, lambda c: (kv(c),), lambda w, c: w.reshape(c.num_kv_heads, c.head_dim)),
      "self_attn.o_proj.bias": _Rule("o_bias", True, lambda c: (c.hidden_size,), ident),
      "self_attn.q_norm.weight": _Rule("q_norm", True, lambda c: (c.head_dim,), ident),
      "self_attn.k_norm.weight": _Rule("k_norm", True, lambda c: (c.head_dim,), ident),
      "mlp.gate_proj.weight": _Rule("gate", True, lambda c: (c.intermediate_size, c.hidden_size), _t),
      "mlp.up_proj.weight": _Rule("up", True, lambda c: (c.intermediate_size, c.hidden_size), _t),
      "mlp.down_proj.weight": _Rule("down", True, lambda c: (c.hidden_size, c.intermediate_size), _t),
  }


_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT_KEY = re.compile(r"^mlp\.experts\.(\d+)\.(.+)$")
# Keys some exports carry that hold nothing we need (RoPE buffers are recomputed from the config).
_IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$|^model\.rotary_emb\.inv_freq$")


def expected_keys(cfg: ModelConfig) -> list[str]:
  """The exact HF tensor names a checkpoint of this config must hold (tied embeddings: no lm_head)."""
  dense_mlp = ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
  layer_parts = [hf_name for hf_name, _ in transformer.family(cfg).hf_norms]
  layer_parts += ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                  "self_attn.o_proj.weight"]
  if not cfg.is_moe:
    layer_parts += dense_mlp
  if cfg.qkv_bias:
    layer_parts += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
  if cfg.o_bias:
    layer_parts += ["self_attn.o_proj.bias"]
  if cfg.qk_norm:
    layer_parts += ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
  keys = ["model.embed_tokens.weight", "model.norm.weight"]
  if not cfg.tie_word_embeddings:
    keys.append("lm_head.weight")
  keys += [f"model.layers.{i}.{p}" for i in range(cfg.num_layers) for p in layer_parts + _moe_parts(cfg, i)]
  return keys


def _moe_parts(cfg: ModelConfig, layer: int) -> list[str]:
  if not cfg.is_moe:
    return []
  if layer in cfg.dense_layers:
    return ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
  parts = ["mlp.gate.weight", "mlp.shared_expert_gate.weight"]
  parts += [f"mlp.shared_expert.{p}_proj.weight" for p in ("gate", "up", "down")]
  return parts + [f"mlp.experts.{e}.{p}_proj.weight" for e in range(cfg.num_experts) for p in ("gate", "up", "down")]


def _np_dtype(cfg: ModelConfig):
  return ml_dtypes.bfloat16 if cfg.dtype == "bfloat16" else np.float32


def convert_tensors(tensors: Iterable[tuple[str, np.ndarray, str]], cfg: ModelConfig) -> dict:
  """Maps (hf_name, array, origin) triples to the stacked params pytree (numpy arrays, cfg.dtype).

  `origin` (a file name) is only used in error messages. Raises CheckpointFormatError on unknown, duplicate,
  missing or wrongly shaped tensors.
  """
  rules = _rules(cfg)
  wanted = set(expected_keys(cfg))
  dt = _np_dtype(cfg)
  seen: dict[str, str] = {}
  top: dict[str, np.ndarray] = {}
  layers: dict[str, list] = {}
  for name, array, origin in tensors:
    if _IGNORED.match(name):
      continue
    if cfg.tie_word_embeddings and name == "lm_head.weight":
      continue  # Some tied checkpoints also store the (identical) output matrix.
    if name in seen:
      raise CheckpointFormatError(f"Tensor {name!r} appears twice: in {seen[name]} and in {origin}.")
    seen[name] = origin
    m = _LAYER_KEY.match(name)
    rule_key, layer_index = (m.group(2), int(m.group(1))) if m else (name, None)
    expert = _EXPERT_KEY.match(rule_key)
    if expert:
      rule_key, expert_index = f"mlp.experts.*.{expert.group(2)}", int(expert.group(1))
    rule = rules.get(rule_key)
    if rule is None or name not in wanted:
      raise CheckpointFormatError(
          f"Unexpected tensor {name!r} in {origin}: a {cfg.model_type} checkpoint with {cfg.num_layers} layers "
          f"(qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm}, tied embeddings={cfg.tie_word_embeddings}) has "
          "no such weight. Is config.json the one that belongs to these weights?")
    want = rule.hf_shape(cfg)
    if tuple(array.shape) != want:
      raise CheckpointFormatError(
          f"Tensor {name!r} in {origin} has shape {tuple(array.shape)}, expected {want} from config.json.")
    value = np.ascontiguousarray(rule.transform(np.asarray(array), cfg).astype(dt))
    if rule.per_expert:
      slots = layers.setdefault(rule.target, [None] * cfg.num_layers)
      slots[layer_index] = slots[layer_index] or [None] * cfg.num_experts
      slots[layer_index][expert_index] = value
    elif rule.per_layer:
      layers.setdefault(rule.target, [None] * cfg.num_layers)[layer_index] = value
    else:
      top[rule.target] = value
  missing = sorted(wanted - set(seen), key=_natural_key)
  if missing:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise CheckpointFormatError(f"Checkpoint is missing {len(missing)} tensor(s): {shown}.")
  params = dict(top)
  params["layers"] = _stack_layers(layers, cfg)
  return params


def _stack_layers(layers: dict[str, list], cfg: ModelConfig) -> dict[str, np.ndarray]:
  """Stacks per-layer (and per-expert) lists; Qwen2-MoE dense layers get zeros where they have no tensor."""
  dense_fill = {}
  if cfg.is_moe:
    dense_fill = {k: (v.shape[1:], v.dtype) for k, v in moe.mlp_shapes(cfg, _np_dtype(cfg)).items()}
  out = {}
  for target, slots in layers.items():
    filled = []
    for value in slots:
      if isinstance(value, list):
        value = np.stack(value)
      elif value is None:  # Only a dense MoE layer's router / experts / shared gate (the key check ran first).
        shape, dtype = dense_fill[target]
        value = np.zeros(shape, dtype)
      filled.append(value)
    out[target] = np.stack(filled)
  out.update(transformer.layer_data(cfg))
  return out


def _natural_key(s: str):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def convert_hf_snapshot(directory: str, cfg: ModelConfig) -> dict:
  """Reads every safetensors file of an HF snapshot and converts it (numpy params)."""

  def gen():
    for path in checkpoint_files(directory):
      for name, array in iter_tensors(path):
        yield name, array, path

  return convert_tensors(gen(), cfg)
