"""Models: parity with transformers' PyTorch models, conversion checks, shapes of the paper's models, errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from polar_jax.models import (CheckpointFormatError, ModelConfig, UnsupportedModelError, convert_hf_snapshot,
                              expected_keys, transformer)
from polar_jax.models.presets import PAPER_MODELS, PUBLISHED_PARAMS, paper_config

TINY = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2)

PARITY_CASES = {
    "llama_gqa": ("LlamaConfig", "LlamaForCausalLM", dict(TINY)),
    "llama_mha": ("LlamaConfig", "LlamaForCausalLM", dict(TINY, num_key_value_heads=4)),
    "llama3_rope_scaling": ("LlamaConfig", "LlamaForCausalLM", dict(
        TINY, max_position_embeddings=64, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(TINY, tie_word_embeddings=True)),
    "qwen2_bias": ("Qwen2Config", "Qwen2ForCausalLM", dict(TINY)),
    "qwen2_tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(TINY, tie_word_embeddings=True)),
    "qwen3_qknorm_head_dim": ("Qwen3Config", "Qwen3ForCausalLM", dict(TINY, head_dim=24)),
}


def save_random_torch_model(tmp_path, config_cls, model_cls, kwargs, seed=0):
  """A random transformers model saved with save_pretrained; norms and biases perturbed so they matter."""
  torch = pytest.importorskip("torch")
  import transformers
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "bias" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path)
  return model


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_logits_match_transformers(case, tmp_path):
  pytest.importorskip("torch")
  model = save_random_torch_model(tmp_path, *PARITY_CASES[case])
  assert_forward_matches(model, ModelConfig.from_hf_dir(tmp_path), tmp_path)


def assert_forward_matches(model, cfg, path, tol=1e-4):
  """Our converted forward pass on `path`'s snapshot gives the torch `model`'s logits on random ids."""
  import torch
  params = jax.tree.map(jnp.asarray, convert_hf_snapshot(str(path), cfg))
  ids = torch.randint(0, 100, (2, 40), generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    ref = model(ids).logits.numpy()
  ours = np.asarray(jax.jit(transformer.forward, static_argnums=1)(params, cfg, jnp.asarray(ids.numpy())))
  assert np.abs(ours - ref).max() <= tol


def test_left_padding_matches_unpadded(tmp_path):
  """A left-padded row gives the same logits on its real tokens as the same row alone."""
  save_random_torch_model(tmp_path, *PARITY_CASES["qwen2_bias"])
  cfg = ModelConfig.from_hf_dir(tmp_path)
  params = jax.tree.map(jnp.asarray, convert_hf_snapshot(str(tmp_path), cfg))
  ids = np.random.default_rng(0).integers(0, 100, (1, 12))
  padded = np.concatenate([np.zeros((1, 5), int), ids], 1)
  mask = np.concatenate([np.zeros((1, 5), int), np.ones((1, 12), int)], 1)
  alone = transformer.forward(params, cfg, jnp.asarray(ids))
  both = transformer.forward(params, cfg, jnp.asarray(padded), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(both[:, 5:]), np.asarray(alone), atol=1e-5)


def test_bfloat16_forward_close_to_float32(tmp_path):
  save_random_torch_model(tmp_path, *PARITY_CASES["llama_gqa"])
  cfg32 = ModelConfig.from_hf_dir(tmp_path)
  cfg16 = ModelConfig.from_hf_dir(tmp_path, dtype="bfloat16")
  p32 = jax.tree.map(jnp.asarray, convert_hf_snapshot(str(tmp_path), cfg32))
  p16 = jax.tree.map(jnp.asarray, convert_hf_snapshot(str(tmp_path), cfg16))
  assert p16["layers"]["q"].dtype == jnp.bfloat16
  ids = jnp.arange(20)[None] % 100
  l32 = transformer.forward(p32, cfg32, ids)
  l16 = transformer.forward(p16, cfg16, ids)
  assert l16.dtype == jnp.float32
  assert float(jnp.abs(l32 - l16).max()) < 0.05 * float(jnp.abs(l32).max())


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_model_parameter_counts_without_allocating(name):
  cfg = paper_config(name)
  shapes = jax.eval_shape(lambda key: transformer.init_params(cfg, key), jax.random.key(0))
  total = transformer.count_params(shapes)
  assert abs(total - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01, total
  # The forward pass traces at full size too (shapes only).
  out = jax.eval_shape(lambda p, t: transformer.forward(p, cfg, t), shapes,
                       jax.ShapeDtypeStruct((1, 8), jnp.int32))
  assert out.shape == (1, 8, cfg.vocab_size)


def test_paper_model_key_lists():
  llama = expected_keys(paper_config("Llama-3.2-3B-Instruct"))
  qwen25 = expected_keys(paper_config("Qwen2.5-3B-Instruct"))
  qwen3 = expected_keys(paper_config("Qwen3-8B"))
  # Published checkpoints: 28 x 9 + 2 (tied), 36 x 12 + 2 (tied, qkv biases), 36 x 11 + 3 (q/k norms, lm_head).
  assert (len(llama), len(qwen25), len(qwen3)) == (254, 434, 399)
  assert "lm_head.weight" not in llama and "lm_head.weight" in qwen3
  assert "model.layers.35.self_attn.v_proj.bias" in qwen25
  assert "model.layers.35.self_attn.k_norm.weight" in qwen3
  assert "model.layers.27.mlp.down_proj.weight" in llama and "model.layers.28.mlp.down_proj.weight" not in llama


def test_every_supported_model_type_has_a_family():
  from polar_jax.models.config import SUPPORTED_MODEL_TYPES
  assert set(transformer.FAMILIES) == set(SUPPORTED_MODEL_TYPES)


# --- bad input ------------------------------------------------------------------------------------------------


def _tiny_checkpoint(tmp_path):
  save_random_torch_model(tmp_path, *PARITY_CASES["llama_gqa"])
  from safetensors.numpy import load_file
  return load_file(os.path.join(tmp_path, "model.safetensors"))


def test_directory_without_config(tmp_path):
  with pytest.raises(FileNotFoundError, match="No config.json"):
    ModelConfig.from_hf_dir(tmp_path)


def test_unsupported_model_type(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
  with pytest.raises(UnsupportedModelError, match="'mamba' is not supported"):
    ModelConfig.from_hf_dir(tmp_path)


def test_unsupported_option_named():
  with pytest.raises(UnsupportedModelError, match="rope type 'yarn'"):
    ModelConfig.from_hf_dict({**PAPER_MODELS["Qwen3-8B"], "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
  with pytest.raises(UnsupportedModelError, match="use_sliding_window"):
    ModelConfig.from_hf_dict({**PAPER_MODELS["Qwen2.5-3B-Instruct"], "use_sliding_window": True})


def test_missing_tensor(tmp_path):
  tensors = _tiny_checkpoint(tmp_path)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
  with pytest.raises(CheckpointFormatError, match=r"missing 1 tensor\(s\): model.layers.1.mlp.up_proj.weight"):
    convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))


def test_extra_tensor(tmp_path):
  tensors = _tiny_checkpoint(tmp_path)
  tensors["model.layers.0.self_attn.extra.weight"] = np.zeros((3,), np.float32)
  save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
  with pytest.raises(CheckpointFormatError, match=r"Unexpected tensor 'model.layers.0.self_attn.extra.weight' in "
                     r".*model.safetensors"):
    convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))


def test_wrong_shape(tmp_path):
  tensors = _tiny_checkpoint(tmp_path)
  tensors["model.layers.2.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
  save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
  with pytest.raises(CheckpointFormatError, match=r"'model.layers.2.self_attn.k_proj.weight' .* has shape \(16, 64\), "
                     r"expected \(32, 64\)"):
    convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))


def test_duplicate_tensor_across_shards(tmp_path):
  tensors = _tiny_checkpoint(tmp_path)
  os.remove(os.path.join(tmp_path, "model.safetensors"))
  names = sorted(tensors)
  shard_a = {k: tensors[k] for k in names[: len(names) // 2]}
  shard_b = {k: tensors[k] for k in names[len(names) // 2:]}
  shard_b[names[0]] = tensors[names[0]]
  save_file(shard_a, os.path.join(tmp_path, "a.safetensors"))
  save_file(shard_b, os.path.join(tmp_path, "b.safetensors"))
  index = {"weight_map": {**{k: "a.safetensors" for k in shard_a}, **{k: "b.safetensors" for k in shard_b}}}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(CheckpointFormatError, match=f"'{names[0]}' appears twice"):
    convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))


def test_sharded_snapshot_converts(tmp_path):
  tensors = _tiny_checkpoint(tmp_path)
  single = convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))
  os.remove(os.path.join(tmp_path, "model.safetensors"))
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[:10], names[10:])):
    save_file({k: tensors[k] for k in part}, os.path.join(tmp_path, f"model-{i}.safetensors"))
    weight_map.update({k: f"model-{i}.safetensors" for k in part})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  sharded = convert_hf_snapshot(str(tmp_path), ModelConfig.from_hf_dir(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, single, sharded)


def test_directory_without_weights(tmp_path):
  from polar_jax.models import load_model
  (tmp_path / "config.json").write_text(json.dumps(PAPER_MODELS["Qwen3-8B"]))
  (tmp_path / "tokenizer.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="No weights in"):
    load_model(str(tmp_path))
