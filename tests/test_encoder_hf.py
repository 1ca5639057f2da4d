"""The paper's encoder path: an LLM-based embedding model (Qwen3-Embedding is a Qwen3 decoder) from a local HF
snapshot, its token-level final hidden states as question features, against transformers' Qwen3Model."""

import numpy as np
import pytest

from polar_jax.predictor import hf_hidden_state_encoder
from polar_jax.testing import tiny_tokenizer


def test_hf_hidden_state_encoder_matches_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  import transformers
  torch.manual_seed(0)
  config = transformers.Qwen3Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16)
  model = transformers.Qwen3ForCausalLM(config).eval()
  model.save_pretrained(tmp_path)
  tiny_tokenizer(96).backend.save(str(tmp_path / "tokenizer.json"))
  encoder = hf_hidden_state_encoder(str(tmp_path))
  assert encoder.feature_dim == 64
  texts = ["w5 w6 w7 w8", "w9 w10"]
  features, mask = encoder.encode(texts)
  assert mask.sum(1).tolist() == [4, 2]
  for row, text in enumerate(texts):
    ids = torch.tensor([[int(t[1:]) for t in text.split()]])
    with torch.no_grad():
      ref = model.model(ids).last_hidden_state[0].numpy()
    np.testing.assert_allclose(features[row, :len(ref)], ref, atol=1e-4)
    assert not features[row, len(ref):].any()
