"""Question encoders: MiniLM parity with PyTorch BERT, weight conversion errors, bucketing, other encoders."""

import numpy as np
import pytest

from polar_jax.predictor import bert
from polar_jax.predictor.encoder import (CachedEncoder, HiddenStateEncoder, MiniLMEncoder, QuestionEncoder,
                                         TokenEmbeddingEncoder, token_bucket_length, minilm_dir, precompute_features)

QUESTIONS = [
    "What is 2+2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Let $f(x) = 3x^2 - 5$. Find $f(f(1))$.",
]


@pytest.fixture(scope="module")
def minilm():
  return MiniLMEncoder(batch_size=4)


def test_minilm_matches_pytorch_bert(minilm):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  folder = str(minilm_dir())
  reference = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  inputs = tokenizer(QUESTIONS, padding=True, return_tensors="pt")
  with torch.no_grad():
    expected = reference(**inputs).last_hidden_state.numpy()  # [B, S, 384]
  features, mask = minilm.encode(QUESTIONS)
  lengths = inputs["attention_mask"].sum(1).numpy()
  np.testing.assert_array_equal(mask.sum(1), lengths)
  assert features.shape[2] == minilm.feature_dim == 384
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(features[i, :n], expected[i, :n], atol=1e-4, rtol=0)
    assert not features[i, n:].any(), "padded positions must be zeros"


def test_padding_bucket_does_not_change_features(minilm):
  alone, alone_mask = minilm.encode(QUESTIONS[:1])
  batch, batch_mask = minilm.encode(QUESTIONS[:2])
  assert alone.shape[1] == token_bucket_length(alone_mask.sum(), 512) == 16
  assert batch.shape[1] == 64  # the long question has 38 tokens
  n = alone_mask.sum()
  np.testing.assert_allclose(batch[0, :n], alone[0, :n], atol=1e-5)
  assert batch_mask[0].sum() == n


def test_cached_encoder_and_precompute_match_direct(minilm):
  cached = CachedEncoder(minilm)
  direct, mask = minilm.encode(QUESTIONS)
  again, again_mask = cached.encode(QUESTIONS[::-1])
  np.testing.assert_array_equal(again_mask, mask[::-1])
  np.testing.assert_allclose(again, direct[::-1], atol=1e-5)
  table = precompute_features(cached, QUESTIONS, chunk=2)  # chunks of different buckets are padded to one
  assert table.features.shape == (3, 64, 384) and table.encoder == "all-MiniLM-L6-v2"
  np.testing.assert_allclose(table.features[2, :mask[2].sum()], direct[2, :mask[2].sum()], atol=1e-5)


def test_encoders_satisfy_the_protocol(minilm):
  table = np.arange(20, dtype=np.float32).reshape(10, 2)
  tok = type("Tok", (), {"encode": staticmethod(lambda text: [len(w) % 10 for w in text.split()])})()
  for encoder in (minilm, TokenEmbeddingEncoder(table, tok), HiddenStateEncoder(lambda i, m: i[..., None] * 1.0, tok, 1,
                                                                                  name="toy")):
    assert isinstance(encoder, QuestionEncoder)


def test_token_embedding_encoder_gathers_rows_and_checks_ids():
  table = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
  tok = type("Tok", (), {"encode": staticmethod(lambda text: [int(c) for c in text])})()
  features, mask = TokenEmbeddingEncoder(table, tok, batch_size=2).encode(["123", "45678"])
  assert features.shape == (2, 16, 3)
  np.testing.assert_array_equal(mask.sum(1), [3, 5])
  np.testing.assert_array_equal(features[1, :5], table[[4, 5, 6, 7, 8]])
  assert not features[0, 3:].any()
  bad = type("Tok", (), {"encode": staticmethod(lambda text: [12])})()
  with pytest.raises(ValueError, match="Token id 12 is outside the 10-row embedding table"):
    TokenEmbeddingEncoder(table, bad).encode(["x"])


def test_hidden_state_encoder_truncates_and_runs_function():
  tok = type("Tok", (), {"encode": staticmethod(lambda text: list(range(1, len(text) + 1)))})()
  encoder = HiddenStateEncoder(lambda ids, m: ids[..., None] * 2.0, tok, 1, name="toy", max_length=20)
  features, mask = encoder.encode(["a" * 30, "abc"])
  assert features.shape == (2, 20, 1) and mask.sum(1).tolist() == [20, 3]
  np.testing.assert_array_equal(features[1, :3, 0], [2, 4, 6])


@pytest.fixture(scope="module")
def minilm_state():
  from safetensors.numpy import load_file
  folder = minilm_dir()
  return bert.BertConfig.from_json(folder / "config.json"), load_file(str(folder / "model.safetensors"))


def test_converter_accepts_prefix_and_rejects_unknown_missing_and_misshapen(minilm_state):
  config, state = minilm_state
  prefixed = bert.convert_bert_weights({"bert." + k: v for k, v in state.items()}, config)
  assert prefixed["layer_5"]["mlp_in"]["kernel"].shape == (384, 1536)
  with pytest.raises(bert.BertConversionError, match="Unknown BERT weight 'cls.predictions.bias'"):
    bert.convert_bert_weights({**state, "cls.predictions.bias": np.zeros(3)}, config)
  missing = {k: v for k, v in state.items() if k != "encoder.layer.3.output.dense.bias"}
  with pytest.raises(bert.BertConversionError, match="lacks 1 BERT weight.*layer_3/mlp_out/bias"):
    bert.convert_bert_weights(missing, config)
  with pytest.raises(bert.BertConversionError, match=r"has shape \(384, 384\).*expected \(384, 1536\)"):
    bert.convert_bert_weights({**state, "encoder.layer.0.intermediate.dense.weight": np.zeros((384, 384))}, config)
  with pytest.raises(bert.BertConversionError, match="a 6-layer BertEncoder does not have"):
    bert.convert_bert_weights({**state, "encoder.layer.6.output.dense.bias": np.zeros(384)}, config)


def test_token_embedding_encoder_from_model():
  table = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  tok = type("Tok", (), {"encode": staticmethod(lambda text: [int(c) for c in text])})()
  model = type("Model", (), {"params": {"embed": table}, "tokenizer": tok, "name": "toy-lm"})()
  encoder = TokenEmbeddingEncoder.from_model(model)
  assert encoder.name == "toy-lm-token-embeddings" and encoder.feature_dim == 4
  np.testing.assert_array_equal(encoder.encode(["90"])[0][0, :2], table[[9, 0]])
