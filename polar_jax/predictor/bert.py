"""A BERT encoder in Flax linen and the converter from HF BERT safetensors weights.

The predictor's default question encoder is all-MiniLM-L6-v2, a 6-layer BERT. We only need its token-level
hidden states (no pooler, no heads), so this module is the BERT embedding + encoder stack and nothing more.
transformers 5 has no Flax classes, so the network is written here and checked against the PyTorch
`BertModel` in tests (parity <= 1e-4).

Weights are converted by rule: every HF key is matched by exactly one rule, every shape is checked, and an
unknown, duplicate or missing key is an error naming the key (the pooler and the `position_ids` buffer are
known keys that the token-level encoder deliberately leaves out).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class BertConversionError(ValueError):
  """The checkpoint does not match the BERT architecture we implement."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of an HF BERT `config.json` that the encoder uses."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  @classmethod
  def from_json(cls, path: str | pathlib.Path) -> "BertConfig":
    """Reads an HF `config.json`, refusing variants this encoder does not implement."""
    with open(path) as f:
      raw = json.load(f)
    if raw.get("model_type") != "bert":
      raise BertConversionError(f"{path}: model_type is {raw.get('model_type')!r}, expected 'bert'.")
    if raw.get("hidden_act", "gelu") != "gelu":
      raise BertConversionError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (only exact 'gelu').")
    if raw.get("position_embedding_type", "absolute") != "absolute":
      raise BertConversionError(
          f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not supported (only 'absolute').")
    if raw["hidden_size"] % raw["num_attention_heads"]:
      raise BertConversionError(f"{path}: hidden_size {raw['hidden_size']} is not divisible by "
                                f"num_attention_heads {raw['num_attention_heads']}.")
    return cls(
        vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
        num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
        max_positions=raw["max_position_embeddings"], type_vocab_size=raw.get("type_vocab_size", 2),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-12))


class _BertLayer(nn.Module):
  """One post-norm BERT block: self-attention, add & norm, GELU MLP, add & norm."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask):  # x: [B, S, H], mask: [B, S] bool
    cfg = self.config
    b, s, h = x.shape
    hd = h // cfg.num_heads
    split = lambda t: t.reshape(b, s, cfg.num_heads, hd)  # [B, S, N, hd]
    q = split(nn.Dense(h, name="query")(x))
    k = split(nn.Dense(h, name="key")(x))
    v = split(nn.Dense(h, name="value")(x))
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(hd).astype(np.float32)  # [B, N, S, S]
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits, axis=-1)
    ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, s, h)  # [B, S, H]
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="attention_norm")(x + nn.Dense(h, name="attention_out")(ctx))
    y = nn.gelu(nn.Dense(cfg.intermediate_size, name="mlp_in")(x), approximate=False)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="mlp_norm")(x + nn.Dense(h, name="mlp_out")(y))


class BertEncoder(nn.Module):
  """Token ids -> last hidden states; padded positions are returned as zeros."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, mask):  # input_ids: [B, S] int32, mask: [B, S] bool -> [B, S, H]
    cfg = self.config
    positions = jnp.arange(input_ids.shape[1])[None, :]  # [1, S]
    x = (nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
         + nn.Embed(cfg.max_positions, cfg.hidden_size, name="position_embeddings")(positions)
         + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(jnp.zeros_like(input_ids)))
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="embeddings_norm")(x)  # [B, S, H]
    for i in range(cfg.num_layers):
      x = _BertLayer(cfg, name=f"layer_{i}")(x, mask)
    return jnp.where(mask[..., None], x, 0.0)


# HF key (after an optional "bert." prefix) -> (flax path template, transpose?). `{i}` is the layer index.
_LINEAR_RULES = {
    r"attention\.self\.query": "query", r"attention\.self\.key": "key", r"attention\.self\.value": "value",
    r"attention\.output\.dense": "attention_out", r"intermediate\.dense": "mlp_in", r"output\.dense": "mlp_out",
}
_NORM_RULES = {r"attention\.output\.LayerNorm": "attention_norm", r"output\.LayerNorm": "mlp_norm"}
_EMBED_RULES = {
    "embeddings.word_embeddings.weight": ("word_embeddings", "embedding"),
    "embeddings.position_embeddings.weight": ("position_embeddings", "embedding"),
    "embeddings.token_type_embeddings.weight": ("token_type_embeddings", "embedding"),
    "embeddings.LayerNorm.weight": ("embeddings_norm", "scale"),
    "embeddings.LayerNorm.bias": ("embeddings_norm", "bias"),
}
# Known keys that the token-level encoder does not use.
_IGNORED = re.compile(r"^(embeddings\.position_ids|pooler\.dense\.(weight|bias))$")


def _target_path(key: str) -> tuple[tuple[str, ...], bool] | None:
  """Maps one HF key to (flax param path, transpose) or None when no rule matches."""
  if key in _EMBED_RULES:
    return _EMBED_RULES[key], False
  m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", key)
  if not m:
    return None
  layer, module, kind = f"layer_{int(m.group(1))}", m.group(2), m.group(3)
  for pattern, name in _LINEAR_RULES.items():
    if re.fullmatch(pattern, module):
      return (layer, name, "kernel" if kind == "weight" else "bias"), kind == "weight"
  for pattern, name in _NORM_RULES.items():
    if re.fullmatch(pattern, module):
      return (layer, name, "scale" if kind == "weight" else "bias"), False
  return None


def convert_bert_weights(state: Mapping[str, np.ndarray], config: BertConfig) -> dict:
  """HF BERT state dict (numpy) -> flax params for `BertEncoder(config)`.

  Raises BertConversionError on an unknown key, two keys mapping to one parameter, a shape mismatch, or a
  parameter that no key provided.
  """
  expected = jax.eval_shape(
      lambda: BertEncoder(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32),
                                        jnp.ones((1, 2), bool)))["params"]
  expected_flat = {path: leaf.shape for path, leaf in _flatten(expected).items()}
  out: dict[tuple[str, ...], np.ndarray] = {}
  for raw_key, value in state.items():
    key = raw_key[len("bert."):] if raw_key.startswith("bert.") else raw_key
    if _IGNORED.match(key):
      continue
    target = _target_path(key)
    if target is None:
      raise BertConversionError(f"Unknown BERT weight {raw_key!r}: no conversion rule matches it. "
                                "Is this a plain BertModel checkpoint?")
    path, transpose = target
    if path not in expected_flat:
      raise BertConversionError(f"Weight {raw_key!r} maps to {'/'.join(path)}, which a "
                                f"{config.num_layers}-layer BertEncoder does not have (check config.json).")
    if path in out:
      raise BertConversionError(f"Two weights map to {'/'.join(path)} (the second is {raw_key!r}).")
    array = np.asarray(value, dtype=np.float32)
    array = array.T if transpose else array
    if array.shape != expected_flat[path]:
      raise BertConversionError(f"Weight {raw_key!r} has shape {array.shape} after conversion, expected "
                                f"{expected_flat[path]} for {'/'.join(path)}.")
    out[path] = array
  missing = sorted("/".join(p) for p in expected_flat if p not in out)
  if missing:
    raise BertConversionError(f"The checkpoint lacks {len(missing)} BERT weight(s): {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}.")
  return _unflatten(out)


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      flat.update(_flatten(v, prefix + (k,)))
    else:
      flat[prefix + (k,)] = v
  return flat


def _unflatten(flat: Mapping[tuple[str, ...], object]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree
