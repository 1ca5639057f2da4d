"""Qwen2-MoE (Qwen1.5-MoE): parity with transformers incl. router choices, routed-expert implementations,
dense layers, the executor under programs, the full-size config's shapes and key list, conversion errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from polar_jax.models import (CheckpointFormatError, ModelConfig, UnsupportedModelError, convert_hf_snapshot,
                              expected_keys, moe, transformer)
from polar_jax.models.presets import PAPER_MODELS, PUBLISHED_PARAMS, paper_config
from polar_jax.programs import Executor, StopRule
from polar_jax.testing import reference_greedy, reference_logits, tiny_model
from test_executor import PROMPTS
from test_models import save_random_torch_model

TINY_MOE = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, num_experts=6, moe_intermediate_size=32)
CASES = {
    # Dense layer 1 via mlp_only_layers; dense MLP (96) wider than the shared expert (48): padded slot.
    "mlp_only_layers": dict(TINY_MOE, num_experts_per_tok=2, shared_expert_intermediate_size=48, mlp_only_layers=[1]),
    # Dense layers 0 and 2 via decoder_sparse_step=2; renormalized top-3.
    "sparse_step_norm_topk": dict(TINY_MOE, num_experts_per_tok=3, shared_expert_intermediate_size=128,
                                  decoder_sparse_step=2, norm_topk_prob=True),
}
SPARSE_FLAGS = {"mlp_only_layers": [1, 0, 1], "sparse_step_norm_topk": [0, 1, 0]}


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  model = save_random_torch_model(path, "Qwen2MoeConfig", "Qwen2MoeForCausalLM", CASES[request.param])
  cfg = ModelConfig.from_hf_dir(path)
  params = jax.tree.map(jnp.asarray, convert_hf_snapshot(str(path), cfg))
  return request.param, model, cfg, params, path


@pytest.fixture(scope="module")
def tiny():
  """Tiny random Qwen2-MoE: 4 layers (layer 2 dense), 6 experts, top-2, a shared expert."""
  return tiny_model("qwen2_moe")


def _our_router_choices(params, cfg, ids):
  """Top-k experts per sparse layer [N, k], from our own layers run one by one (routing on our hidden states)."""
  tokens = jnp.asarray(ids)
  x = transformer.embed(params, cfg, tokens)
  rope = transformer.rope_tables(cfg, transformer.positions_from_mask(jnp.ones_like(tokens)))
  mask = transformer.causal_key_mask(jnp.ones_like(tokens))
  empty = jnp.zeros(tokens.shape + (cfg.num_kv_heads, cfg.head_dim))
  choices = {}
  for i in range(cfg.num_layers):
    lp = jax.tree.map(lambda w: w[i], params["layers"])
    if i not in cfg.dense_layers:  # The MoE block's input: the residual after attention, normed.
      after_attn, _, _ = transformer.attention_block(lp, cfg, x, rope, empty, empty, 0, mask)
      h = transformer.rms_norm(after_attn, lp["mlp_norm"], cfg.rms_norm_eps)
      choices[i] = np.asarray(moe.route(h.reshape(-1, cfg.hidden_size), lp["router"], cfg)[1])
    x, _, _ = transformer.layer(lp, cfg, x, rope, empty, empty, 0, mask)
  return choices


def test_logits_and_router_choices_match_transformers(converted):
  torch = pytest.importorskip("torch")
  case, model, cfg, params, _ = converted
  assert cfg.num_experts_per_tok < cfg.num_experts
  np.testing.assert_array_equal(np.asarray(params["layers"]["moe_sparse"]), SPARSE_FLAGS[case])
  ids = torch.randint(0, 100, (2, 40), generator=torch.Generator().manual_seed(1))
  torch_choices = {}
  hooks = [layer.mlp.gate.register_forward_hook(
      lambda mod, inp, out, i=i: torch_choices.__setitem__(i, out[2].numpy()))
      for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")]
  with torch.no_grad():
    ref = model(ids).logits.numpy()
  for h in hooks:
    h.remove()
  ours = np.asarray(jax.jit(transformer.forward, static_argnums=1)(params, cfg, jnp.asarray(ids.numpy())))
  assert np.abs(ours - ref).max() <= 1e-4
  mine = _our_router_choices(params, cfg, ids.numpy())
  assert sorted(mine) == sorted(torch_choices) == [i for i in range(3) if i not in cfg.dense_layers]
  for i in mine:  # Same experts in the same (probability) order.
    np.testing.assert_array_equal(mine[i], torch_choices[i])


@pytest.mark.parametrize("tokens", [3, 40])  # 3 x top-2 <= 6 experts: "auto" gathers; 40 tokens: grouped.
def test_routed_implementations_agree(tiny, tokens):
  cfg = tiny.config
  lp = jax.tree.map(lambda w: w[0], tiny.params["layers"])
  h = jax.random.normal(jax.random.key(0), (1, tokens, cfg.hidden_size))
  mlp = jax.jit(moe.mlp, static_argnums=1, static_argnames="impl")
  ref = mlp(lp, cfg, h, impl="dense")
  for impl in ("grouped", "gathered", "auto"):
    np.testing.assert_allclose(np.asarray(mlp(lp, cfg, h, impl=impl)), np.asarray(ref), atol=1e-5, rtol=1e-5)
  # Top-k < E really selects: dropping the unselected experts' weights changes nothing.
  _, experts = moe.route(h[0], lp["router"], cfg)
  unused = np.setdiff1d(np.arange(cfg.num_experts), np.asarray(experts))
  if unused.size:
    pruned = dict(lp, expert_down=lp["expert_down"].at[unused].set(0.0))
    np.testing.assert_allclose(np.asarray(mlp(pruned, cfg, h)), np.asarray(ref), atol=1e-5, rtol=1e-5)


def test_dense_layer_runs_only_its_mlp(tiny):
  """A dense layer (flag 0) ignores its router and experts and adds its MLP (in the shared slot) ungated."""
  cfg = tiny.config
  lp = jax.tree.map(lambda w: w[cfg.dense_layers[0]], tiny.params["layers"])
  assert int(lp["moe_sparse"]) == 0
  h = jax.random.normal(jax.random.key(1), (2, 5, cfg.hidden_size))
  out = moe.mlp(lp, cfg, h)
  plain = jnp.einsum("bsf,fd->bsd", jax.nn.silu(h @ lp["shared_gate"]) * (h @ lp["shared_up"]), lp["shared_down"])
  np.testing.assert_allclose(np.asarray(out), np.asarray(plain), atol=1e-5)
  scrambled = dict(lp, router=-lp["router"], expert_up=2 * lp["expert_up"], shared_expert_gate=lp["router"][:, 0])
  np.testing.assert_array_equal(np.asarray(moe.mlp(scrambled, cfg, h)), np.asarray(out))


# --- executor ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executor(tiny):
  return Executor(tiny)


@pytest.mark.parametrize("program", [[0, 1, 2, 2, 3], [3, 2, 1, 0]])
def test_program_matches_layer_by_layer_reference(tiny, executor, program):
  assert tiny.config.dense_layers == (2,)
  ids = PROMPTS[0]
  np.testing.assert_allclose(executor.prefill_logits([ids], program)[0], reference_logits(tiny, ids, program),
                             atol=1e-5, rtol=1e-5)


def test_cached_generation_equals_uncached(tiny, executor):
  """Prefill routes 7 tokens (grouped), decode one token at a time (gathered); repeats incl. the dense layer."""
  program = [0, 1, 1, 2, 3, 2]
  res = executor.generate([PROMPTS[0]], program, 8, stop=StopRule(stop_ids=()))
  assert len(set(res.tokens[0])) > 2
  assert res.tokens[0] == reference_greedy(tiny, PROMPTS[0], program, 8)


# --- the full-size model, without weights -----------------------------------------------------------------------


def test_qwen15_moe_parameter_count_and_keys():
  name = "Qwen1.5-MoE-A2.7B-Chat"
  cfg = paper_config(name)
  assert (cfg.num_layers, cfg.num_experts, cfg.num_experts_per_tok, cfg.dense_layers) == (24, 60, 4, ())
  shapes = jax.eval_shape(lambda key: transformer.init_params(cfg, key), jax.random.key(0))
  assert shapes["layers"]["expert_gate"].shape == (24, 60, 2048, 1408)
  assert shapes["layers"]["shared_down"].shape == (24, 5632, 2048)
  assert "moe_sparse" not in shapes["layers"]  # No dense layers: no flag, no padding.
  total = transformer.count_params(shapes)
  assert abs(total - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01, total
  keys = expected_keys(cfg)
  # Per layer: 2 norms, q/k/v/o + 3 biases, router, shared gate, 3 shared-expert and 60 x 3 expert matrices.
  assert len(keys) == 24 * 194 + 3
  assert "model.layers.23.mlp.experts.59.down_proj.weight" in keys and "lm_head.weight" in keys
  assert "model.layers.0.mlp.shared_expert_gate.weight" in keys and "model.layers.0.mlp.gate_proj.weight" not in keys


# --- bad input --------------------------------------------------------------------------------------------------


def test_missing_expert_tensor(converted):
  case, _, _, _, path = converted
  tensors = load_file(os.path.join(path, "model.safetensors"))
  sparse = SPARSE_FLAGS[case].index(1)
  key = f"model.layers.{sparse}.mlp.experts.5.up_proj.weight"
  del tensors[key]
  broken = path.parent / f"{path.name}-broken"
  broken.mkdir()
  save_file(tensors, os.path.join(broken, "model.safetensors"))
  (broken / "config.json").write_text((path / "config.json").read_text())
  with pytest.raises(CheckpointFormatError, match=f"missing 1 tensor\\(s\\): {key}"):
    convert_hf_snapshot(str(broken), ModelConfig.from_hf_dir(broken))


def test_unsupported_moe_configs():
  base = PAPER_MODELS["Qwen1.5-MoE-A2.7B-Chat"]
  with pytest.raises(UnsupportedModelError, match="without experts"):
    ModelConfig.from_hf_dict({**base, "num_experts": 0})
  with pytest.raises(UnsupportedModelError, match="every layer is dense"):
    ModelConfig.from_hf_dict({**base, "mlp_only_layers": list(range(24))})
  with pytest.raises(UnsupportedModelError, match="num_experts_per_tok"):
    ModelConfig.from_hf_dict({**base, "num_experts_per_tok": 61})
  with pytest.raises(UnsupportedModelError, match="'moe_intermediate_size' is missing"):
    ModelConfig.from_hf_dict({k: v for k, v in base.items() if k != "moe_intermediate_size"})
