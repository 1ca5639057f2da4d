"""Predictor overhead benchmark: encoder + predictor + decode per question, in base-model layer equivalents.

  python benchmarks/predictor.py --out predictor.json

Prints and writes one JSON object (medians over --repeats timed runs after a warm-up, batch 1, all in one
process). Keys:
- encoder_ms, predictor_ms, decode_ms, total_ms: one question through the frozen encoder (tokenize + Flax
  BERT, all-MiniLM-L6-v2 by default), the PolarPredictor forward (d=256, 4 heads, 2 blocks, D = the base
  model's depth; random weights, or --checkpoint) and the host-side beam decode (beam 5, top-2 ops);
- prefill_ms: one full-depth prefill of the same question (evaluation prompt, chat template) through the
  base model (`polar_jax.models.transformer.forward`, jitted; SmolLM2-135M-Instruct by default);
  embed_head_ms: the same call with an empty layer stack (embedding, final norm and LM head only);
  per_layer_ms = (prefill_ms - embed_head_ms) / num_layers;
- overhead_layers = total_ms / per_layer_ms: the predictor's cost in executed layers (paper: 0.23 layers on
  Qwen1.5-MoE with Qwen3-Embedding-0.6B, on a GPU).
Expect a larger figure than the paper's here: the encoder is a fixed cost, and SmolLM2's layers (576 wide)
are small next to MiniLM's six (measured on 2 CPU cores: ~15 ms encoder, ~1.5 ms predictor, ~0.1 ms
decode, ~7.7 ms per SmolLM2 layer on a 104-token prompt, so ~2.1 layers).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import emit, machine, median_ms
from polar_jax.models import load_model, transformer
from polar_jax.predictor import DecodeOptions, MiniLMEncoder, PolarPredictor, PredictorConfig, decode_programs
from polar_jax.predictor import init_params, load_predictor

QUESTION = ("A baker made 24 muffins in the morning and 18 more in the afternoon. She sold 29 of them. "
            "How many muffins does she have left?")
PROMPT = ("Solve the following math problem and output ONLY the final answer directly, formatted strictly as "
          "\\boxed{{ANSWER}}.\n### Problem Start\n{question}\n### Problem End\nAnswer:")



def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="smollm2-135m-instruct", help="any polar_jax.models.load_model argument")
  parser.add_argument("--checkpoint", default=None, help="a predictor training workdir (default: random weights)")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  model = load_model(args.model)
  depth = model.config.num_layers
  encoder = MiniLMEncoder(batch_size=1)
  if args.checkpoint:
    config, params, _ = load_predictor(args.checkpoint, depth=depth, feature_dim=encoder.feature_dim)
  else:
    config = PredictorConfig(depth=depth)
    params = init_params(config, encoder.feature_dim, jax.random.PRNGKey(0))
  predictor = PolarPredictor(config)
  apply = jax.jit(lambda p, f, m: predictor.apply({"params": p}, f, m))
  options = DecodeOptions()

  features, mask = encoder.encode([QUESTION])
  logits = jax.device_get(apply(params, features, mask))
  encoder_ms = median_ms(lambda: encoder.encode([QUESTION]), args.repeats)
  predictor_ms = median_ms(lambda: jax.block_until_ready(apply(params, features, mask)), args.repeats)
  decode_ms = median_ms(lambda: decode_programs(*logits, options), args.repeats)
  total_ms = encoder_ms + predictor_ms + decode_ms

  tok = model.tokenizer
  text = PROMPT.format(question=QUESTION)
  if tok.chat_template:
    text = tok.apply_chat_template([{"role": "user", "content": text}])
  tokens = jnp.asarray([tok.encode(text, add_special_tokens=True)], jnp.int32)  # [1, S]
  forward = jax.jit(lambda p, t: transformer.forward(p, model.config, t))
  no_layers = dict(model.params, layers=jax.tree.map(lambda x: x[:0], model.params["layers"]))
  prefill_ms = median_ms(lambda: jax.block_until_ready(forward(model.params, tokens)), args.repeats)
  embed_head_ms = median_ms(lambda: jax.block_until_ready(forward(no_layers, tokens)), args.repeats)
  per_layer_ms = max(prefill_ms - embed_head_ms, 1e-9) / depth

  result = {
      "machine": machine(), "model": args.model, "num_layers": depth, "prefill_tokens": int(tokens.shape[1]),
      "encoder": encoder.name, "question_tokens": int(mask.sum()), "predictor_params_trained": bool(args.checkpoint),
      "encoder_ms": round(encoder_ms, 3), "predictor_ms": round(predictor_ms, 3), "decode_ms": round(decode_ms, 3),
      "total_ms": round(total_ms, 3), "prefill_ms": round(prefill_ms, 3), "embed_head_ms": round(embed_head_ms, 3),
      "per_layer_ms": round(per_layer_ms, 4), "overhead_layers": round(total_ms / per_layer_ms, 3),
      "paper_overhead_layers": 0.23, "repeats": args.repeats,
  }
  emit(result, args.out)
  return result


if __name__ == "__main__":
  main()
