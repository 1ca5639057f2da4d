"""The PolarPredictor network: parameter count and numerical parity with the release's torch architecture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polar_jax.predictor.model import PolarPredictor, PredictorConfig, count_params, init_params

PAPER_PARAMS = 2_113_284  # d=256, 4 heads, 2 blocks, D=28, 1024-dim encoder (Qwen3-Embedding-0.6B)


def _torch_reference(depth, feature_dim, d, heads, blocks):
  """The release's PolarPredictor modules, rebuilt from torch building blocks (not its code)."""
  torch = pytest.importorskip("torch")
  nn = torch.nn
  torch.manual_seed(0)
  layer = nn.TransformerEncoderLayer(d_model=d, nhead=heads, dim_feedforward=4 * d, dropout=0.1, batch_first=True)
  return nn.ModuleDict({
      "q_proj": nn.Linear(feature_dim, d), "layer_embedding": nn.Embedding(depth, d),
      "cross_attn": nn.MultiheadAttention(d, heads, batch_first=True, dropout=0.1),
      "layer_encoder": nn.TransformerEncoder(layer, num_layers=blocks, enable_nested_tensor=False),
      "seg_head": nn.Linear(d, 1), "op_head": nn.Linear(d, 3)}).eval()


def test_parameter_count_matches_paper_and_release_architecture():
  assert count_params(PredictorConfig(depth=28), 1024) == PAPER_PARAMS
  reference = _torch_reference(28, 1024, 256, 4, 2)
  assert sum(p.numel() for p in reference.parameters()) == PAPER_PARAMS


def test_large_config_shapes_without_allocating():
  shapes = jax.eval_shape(lambda: init_params(PredictorConfig(depth=36), 1024, jax.random.PRNGKey(0)))
  assert shapes["layer_queries"].shape == (36, 256)
  assert shapes["block_1"]["mlp_in"]["kernel"].shape == (256, 1024)


def _linear(m):
  return {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}


def _attention(mha):
  w, b = mha.in_proj_weight.detach().numpy(), mha.in_proj_bias.detach().numpy()
  d = w.shape[1]
  out = {name: {"kernel": w[i * d:(i + 1) * d].T, "bias": b[i * d:(i + 1) * d]}
         for i, name in enumerate(("query", "key", "value"))}
  out["out"] = _linear(mha.out_proj)
  return out


def _norm(m):
  return {"scale": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}


def test_forward_matches_torch_reference():
  torch = pytest.importorskip("torch")
  depth, feature_dim, d, heads, blocks = 6, 12, 16, 4, 2
  ref = _torch_reference(depth, feature_dim, d, heads, blocks)
  params = {"token_proj": _linear(ref["q_proj"]), "layer_queries": ref["layer_embedding"].weight.detach().numpy(),
            "cross_attention": _attention(ref["cross_attn"]), "boundary_head": _linear(ref["seg_head"]),
            "op_head": _linear(ref["op_head"])}
  for i, block in enumerate(ref["layer_encoder"].layers):
    params[f"block_{i}"] = {"self_attention": _attention(block.self_attn), "attention_norm": _norm(block.norm1),
                            "mlp_in": _linear(block.linear1), "mlp_out": _linear(block.linear2),
                            "mlp_norm": _norm(block.norm2)}
  rng = np.random.default_rng(0)
  features = rng.normal(size=(3, 9, feature_dim)).astype(np.float32)
  mask = np.arange(9)[None, :] < np.array([[9], [4], [1]])
  with torch.no_grad():
    tokens = ref["q_proj"](torch.from_numpy(features))
    queries = ref["layer_embedding"].weight[None].expand(3, -1, -1)
    x, _ = ref["cross_attn"](queries, tokens, tokens, key_padding_mask=torch.from_numpy(~mask))
    x = ref["layer_encoder"](x)
    seg, ops = ref["seg_head"](x)[..., 0].numpy(), ref["op_head"](x).numpy()
  ours_b, ours_o = PolarPredictor(PredictorConfig(depth, d, heads, blocks)).apply({"params": params}, features, mask)
  np.testing.assert_allclose(ours_b, seg, atol=1e-5)
  np.testing.assert_allclose(ours_o, ops, atol=1e-5)


@pytest.fixture(scope="module")
def small():
  config = PredictorConfig(depth=5, d_model=16, num_heads=2, num_blocks=1)
  model = PolarPredictor(config)
  return model, init_params(config, 8, jax.random.PRNGKey(1)), jax.jit(model.apply, static_argnames="deterministic")


def test_padding_is_masked(small):
  _, params, apply = small
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 4, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  garbage = features.copy()
  garbage[~mask] = 100.0
  longer = np.concatenate([garbage, rng.normal(size=(2, 4, 8)).astype(np.float32)], axis=1)
  longer_mask = np.concatenate([mask, np.zeros((2, 4), bool)], axis=1)
  b1, o1 = apply({"params": params}, features, mask)
  b2, o2 = apply({"params": params}, longer, longer_mask)
  assert b1.shape == (2, 5) and o1.shape == (2, 5, 3)
  np.testing.assert_allclose(b1, b2, atol=1e-5)
  np.testing.assert_allclose(o1, o2, atol=1e-5)


def test_dropout_only_in_training_and_reproducible(small):
  _, params, apply = small
  features, mask = jnp.ones((1, 3, 8)), jnp.ones((1, 3), bool)
  run = lambda seed: apply({"params": params}, features, mask, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)})[1]
  eval_out = apply({"params": params}, features, mask)[1]
  assert not np.allclose(run(0), eval_out)
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))


def test_config_rejects_bad_shapes():
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    PredictorConfig(depth=28, d_model=250, num_heads=4)
  with pytest.raises(ValueError, match="depth must be >= 2"):
    PredictorConfig(depth=1)
