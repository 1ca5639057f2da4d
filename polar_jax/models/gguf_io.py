"""GGUF files (llama.cpp) -> HF-named tensors in HF layout, an HF-style config and tokenizer metadata.

Quantized tensors are dequantized to float32 with the `gguf` package. llama.cpp's converter permutes the rows
of q_proj / k_proj of Llama-architecture files so that rotary pairs are interleaved; we apply the inverse
permutation so that the HF conversion rules (and the HF 'rotate half' RoPE) apply unchanged. Gemma 3 files
are not permuted (llama.cpp runs Gemma with the NeoX 'rotate half' RoPE), but their norm weights are stored
as (1 + w), the factor llama.cpp multiplies by; we subtract the 1 again. Hyperparameters llama.cpp fixes in
code rather than in the file (Gemma 3: one global layer in six, local RoPE base 10000, the 27B's attention
scale) are filled in the way llama.cpp fills them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

import gguf
import numpy as np

_SUPPORTED_ARCHS = ("llama", "gemma3")

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GEMMA3_LAYER_NAMES = {
    **{k: v for k, v in _LAYER_NAMES.items() if k != "ffn_norm.weight"},
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


class GGUFFile:
  """An opened GGUF file: metadata as plain Python values, tensors on demand."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"GGUF file {self.path!r} does not exist.")
    try:
      self.reader = gguf.GGUFReader(self.path)
    except Exception as e:  # The reader raises assorted errors on non-GGUF input.
      raise ValueError(f"{self.path} is not a readable GGUF file: {e}") from None
    self.metadata: dict[str, Any] = {}
    for key, field in self.reader.fields.items():
      try:
        self.metadata[key] = field.contents()
      except Exception:  # Fields the reader cannot decode are not needed.
        continue
    self.arch = self.metadata.get("general.architecture")
    if self.arch not in _SUPPORTED_ARCHS:
      raise ValueError(f"{self.path}: GGUF architecture {self.arch!r} is not supported "
                       f"(supported: {', '.join(_SUPPORTED_ARCHS)}).")
    self.tensor_names = [t.name for t in self.reader.tensors]

  def _m(self, key: str, default=None):
    return self.metadata.get(f"{self.arch}.{key}", default)

  def hf_config(self) -> dict[str, Any]:
    """An HF-style `config.json` dict equivalent to the GGUF hyperparameters."""
    if self.arch == "gemma3":
      return self._gemma3_config()
    heads = int(self._m("attention.head_count"))
    hidden = int(self._m("embedding_length"))
    vocab = self._m("vocab_size") or len(self.metadata["tokenizer.ggml.tokens"])
    if "rope_freqs.weight" in self.tensor_names or self._m("rope.scaling.type") not in (None, "none"):
      raise ValueError(f"{self.path}: GGUF RoPE scaling is not supported; load this model from its HF snapshot.")
    return {
        "model_type": "llama",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(self._m("feed_forward_length")),
        "num_hidden_layers": int(self._m("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(self._m("attention.head_count_kv", heads)),
        "head_dim": int(self._m("rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(self._m("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(self._m("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(self._m("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in self.tensor_names,
        "bos_token_id": self.metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": self.metadata.get("tokenizer.ggml.eos_token_id"),
    }

  def _gemma3_config(self) -> dict[str, Any]:
    heads = int(self._m("attention.head_count"))
    hidden = int(self._m("embedding_length"))
    layers = int(self._m("block_count"))
    head_dim = int(self._m("attention.key_length", 256))
    pattern = self._m("attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):  # Newer files: one flag per layer, True = sliding.
      layer_types = ["sliding_attention" if p else "full_attention" for p in pattern]
    else:
      layer_types = ["full_attention" if (i + 1) % int(pattern) == 0 else "sliding_attention" for i in range(layers)]
    scaling = None
    kind = self._m("rope.scaling.type")
    if kind == "linear":
      scaling = {"rope_type": "linear", "factor": float(self._m("rope.scaling.factor"))}
    elif kind not in (None, "none"):
      raise ValueError(f"{self.path}: GGUF RoPE scaling {kind!r} is not supported for gemma3.")
    vocab = self._m("vocab_size") or len(self.metadata["tokenizer.ggml.tokens"])
    return {
        "model_type": "gemma3_text",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(self._m("feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(self._m("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(self._m("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(self._m("rope.freq_base", 1_000_000.0)),
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": scaling,
        "sliding_window": int(self._m("attention.sliding_window")),
        "layer_types": layer_types,
        # llama.cpp: 1/sqrt(head_dim), except the 27B (62 layers): 1/sqrt(hidden / heads).
        "query_pre_attn_scalar": hidden // heads if layers == 62 else head_dim,
        "final_logit_softcapping": self._m("final_logit_softcapping"),
        "max_position_embeddings": int(self._m("context_length", 32768)),
        "tie_word_embeddings": "output.weight" not in self.tensor_names,
        "bos_token_id": self.metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": self.metadata.get("tokenizer.ggml.eos_token_id"),
    }

  def tokenizer_metadata(self) -> dict[str, Any]:
    return {k: v for k, v in self.metadata.items() if k.startswith("tokenizer.")}

  def dequantized(self) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in numpy order) for every tensor, exactly as the gguf reader dequantizes."""
    for t in self.reader.tensors:
      yield t.name, np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)

  def hf_tensors(self) -> Iterator[tuple[str, np.ndarray, str]]:
    """(HF name, array in HF layout, origin) triples for `convert.convert_tensors`."""
    heads = int(self._m("attention.head_count"))
    kv_heads = int(self._m("attention.head_count_kv", heads))
    gemma = self.arch == "gemma3"
    layer_names = _GEMMA3_LAYER_NAMES if gemma else _LAYER_NAMES
    for name, w in self.dequantized():
      m = _BLOCK.match(name)
      if m:
        part = layer_names.get(m.group(2))
        hf = None if part is None else f"model.layers.{m.group(1)}.{part}"
      else:
        hf = _TOP_NAMES.get(name)
      if hf is None:
        raise ValueError(f"{self.path}: unexpected GGUF tensor {name!r} for architecture {self.arch!r}.")
      if gemma:
        if name.endswith("norm.weight"):
          w = w - np.float32(1.0)
      elif name.endswith("attn_q.weight"):
        w = unpermute_rows(w, heads)
      elif name.endswith("attn_k.weight"):
        w = unpermute_rows(w, kv_heads)
      yield hf, w, f"{self.path}:{name}"


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation: per head, interleaved rotary pairs -> two halves.

  w: [n_heads * head_dim, in_features].
  """
  out_features = w.shape[0]
  hd = out_features // n_heads
  return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
