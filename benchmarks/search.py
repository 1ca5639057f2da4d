"""Search benchmark: evaluations per second of our batched search against the authors' approach, one process.

  python benchmarks/search.py --out search.json

Ours: `polar_jax.search.search` over --questions questions x --simulations simulations with the search's scorer
(`TaskScorer`: the evaluation's `run_programs`, KV-cached generation under per-row programs, schedule-sharing
batches). The reference is how the PoLar
release runs a program: transformers' PyTorch `LlamaForCausalLM` holding the same (dequantized) weights,
its layer list replaced by the program's layers and `config.num_hidden_layers` set to the program's length
(transformers' forward slices the layer list by it), one `generate` call per (question, program), the same
prompt ids, greedy, the same stop rule, and `use_cache=False` when the program repeats a layer (a cache keyed
by layer index is wrong for repeats). For skip-only programs the cache is kept and each layer's cache index is
set to its position (stock transformers sizes its cache by `num_hidden_layers`).

Running the reference on all pairs would take hours on a CPU, so it runs on a sample of the pairs our search
evaluated, stratified into skip-only and repeating programs (their costs differ by an order of magnitude), and
`reference_evals_per_s` weights the two strata's measured mean times by their shares among all evaluations.
`reference_agreement` is the share of sampled pairs where the reference extracted the same answer as ours.

Keys: evaluations, distinct_programs, evals_per_s, reference_evals_per_s, speedup, plus details (seconds,
compiles, schedule utilization, repeat share, per-stratum reference times, base / oracle accuracy).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import emit, machine
from polar_jax.data import load_split, make_stop_checker, score_generation
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig, prompt_ids
from polar_jax.records import VALID_THRESHOLD
from polar_jax.search import SearchConfig, search
from polar_jax.search.scoring import TaskScorer


def torch_llama(model):
  """A transformers LlamaForCausalLM holding `model`'s weights (the inverse of our conversion rules)."""
  import torch
  import transformers

  c = model.config
  if c.model_type != "llama" or c.qkv_bias or c.o_bias or c.rope_scaling is not None:
    raise ValueError(f"The reference builder covers plain Llama configs (SmolLM2); got {c.model_type}.")
  hf_config = transformers.LlamaConfig(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
      num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
      head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta,
      max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=c.tie_word_embeddings,
      bos_token_id=c.bos_token_id, eos_token_id=list(c.eos_token_ids), attention_bias=False, mlp_bias=False)
  hf = transformers.LlamaForCausalLM(hf_config).eval()
  p = {k: np.asarray(v) for k, v in model.params.items() if k != "layers"}
  layers = {k: np.asarray(v) for k, v in model.params["layers"].items()}
  h = c.hidden_size
  state = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"],
           "lm_head.weight": p["embed"] if c.tie_word_embeddings else p["lm_head"].T}
  for i in range(c.num_layers):
    pre = f"model.layers.{i}."
    state[pre + "input_layernorm.weight"] = layers["attn_norm"][i]
    state[pre + "post_attention_layernorm.weight"] = layers["mlp_norm"][i]
    for name in "qkv":
      state[pre + f"self_attn.{name}_proj.weight"] = layers[name][i].reshape(h, -1).T
    state[pre + "self_attn.o_proj.weight"] = layers["o"][i].reshape(-1, h).T
    for name in ("gate", "up", "down"):
      state[pre + f"mlp.{name}_proj.weight"] = layers[name][i].T
  missing, unexpected = hf.load_state_dict(
      {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}, strict=False)
  if missing or unexpected:
    raise RuntimeError(f"Reference weights do not fit: missing {missing}, unexpected {unexpected}.")
  return hf


class ReferenceRunner:
  """One `generate` call per (prompt, program), the release's way (module docstring)."""

  def __init__(self, model, prompt_cfg, max_new_tokens: int):
    import torch
    import transformers

    self.torch = torch
    self.hf = torch_llama(model)
    self.layers = list(self.hf.model.layers)
    self.tokenizer = model.tokenizer
    self.max_new_tokens = max_new_tokens
    done = make_stop_checker(prompt_cfg.answer_format, prompt_cfg.assistant_prefix)
    tokenizer = model.tokenizer

    class AnswerComplete(transformers.StoppingCriteria):
      def __init__(self, prompt_len):
        self.prompt_len = prompt_len

      def __call__(self, input_ids, scores, **kwargs):
        text = tokenizer.decode(input_ids[0, self.prompt_len:].tolist())
        return torch.tensor([done(text)], dtype=torch.bool)

    self.stop_class = AnswerComplete
    self.eos = list(model.config.eos_token_ids)

  def generate(self, prompt_ids: list[int], program: tuple[int, ...]) -> str:
    torch = self.torch
    hf = self.hf
    hf.model.layers = torch.nn.ModuleList([self.layers[i] for i in program])
    hf.config.num_hidden_layers = len(program)
    repeats = len(set(program)) < len(program)
    if not repeats:
      for position, layer in enumerate(hf.model.layers):
        layer.self_attn.layer_idx = position
    ids = torch.tensor([prompt_ids])
    try:
      with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                          do_sample=False, use_cache=not repeats, eos_token_id=self.eos, pad_token_id=self.eos[0],
                          stopping_criteria=[self.stop_class(len(prompt_ids))])
    finally:
      for i, layer in enumerate(self.layers):
        layer.self_attn.layer_idx = i
      hf.model.layers = torch.nn.ModuleList(self.layers)
      hf.config.num_hidden_layers = len(self.layers)
    return self.tokenizer.decode(out[0, len(prompt_ids):].tolist())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--dataset", default="arith_level1",
                      help="SmolLM2-135M is at the floor on real math sets; the ladder is a controlled synthetic set.")
  parser.add_argument("--split", default="train")
  parser.add_argument("--prompt", default="paper_prefix", help="A polar_jax.data prompt preset.")
  parser.add_argument("--questions", type=int, default=16)
  parser.add_argument("--simulations", type=int, default=64)
  parser.add_argument("--space", default="cola", choices=["cola", "predictor"])
  parser.add_argument("--leaves", type=int, default=8, help="Leaves per question per round.")
  parser.add_argument("--max-batch", type=int, default=32)
  parser.add_argument("--max-new-tokens", type=int, default=50)
  parser.add_argument("--per-question", action="store_true", help="Never mix questions in a batch.")
  parser.add_argument("--reference-pairs", type=int, default=24)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  model = load_model(args.model)
  examples = load_split(args.dataset, args.split, limit=args.questions, seed=args.seed)
  task = TaskConfig.from_preset(args.prompt, max_new_tokens=args.max_new_tokens, dataset=args.dataset)
  prompt_cfg = task.prompt
  scorer = TaskScorer(model, examples, task, max_batch=args.max_batch, per_question=args.per_question)
  config = SearchConfig(num_simulations=args.simulations, space=args.space, leaves_per_round=args.leaves,
                        seed=args.seed)
  start = time.perf_counter()
  records = search(examples, scorer, config, max_active=len(examples))
  seconds = time.perf_counter() - start

  index_of = {ex.id: i for i, ex in enumerate(examples)}
  pairs = [(index_of[r.id], e.program, e.answer) for r in records for e in r.valid + r.invalid]
  evaluations = len(pairs)
  repeats = [len(set(p)) < len(p) for _, p, _ in pairs]
  rng = np.random.default_rng(args.seed)
  sample = []
  for stratum in (False, True):
    members = [i for i, r in enumerate(repeats) if r == stratum]
    take = min(len(members), args.reference_pairs // 2)
    sample += [(stratum, pairs[i]) for i in rng.choice(members, size=take, replace=False)] if take else []

  reference = ReferenceRunner(model, prompt_cfg, args.max_new_tokens)
  ids = prompt_ids(model, examples, task)  # The token ids our search fed the model.
  reference.generate(ids[0], tuple(range(model.depth)))  # Warm-up.
  times = {False: [], True: []}
  agree = 0
  for stratum, (q, program, ours) in sample:
    t0 = time.perf_counter()
    text = reference.generate(ids[q], program)
    times[stratum].append(time.perf_counter() - t0)
    answer, _ = score_generation(text, examples[q], prompt_cfg.answer_format,
                                 assistant_prefix=prompt_cfg.assistant_prefix)
    agree += answer == ours
  share = float(np.mean(repeats)) if repeats else 0.0
  mean = {k: float(np.mean(v)) if v else 0.0 for k, v in times.items()}
  per_eval = (1 - share) * mean[False] + share * mean[True]
  ref_rate = 1.0 / per_eval if per_eval > 0 else float("nan")
  rate = evaluations / seconds
  valid = [r for r in records if r.initial_score is not None]
  result = {
      "evaluations": evaluations,
      "distinct_programs": len({p for _, p, _ in pairs}),
      "evals_per_s": rate,
      "reference_evals_per_s": ref_rate,
      "speedup": rate / ref_rate,
      "questions": len(records),
      "simulations": args.simulations,
      "space": args.space,
      "seconds": seconds,
      "compiles": scorer.executor.compiles,
      "batches": scorer.stats.batches,
      "rows_per_batch": scorer.stats.rows / max(scorer.stats.batches, 1),
      "schedule_utilization": scorer.stats.schedule_utilization,
      "generated_tokens_per_eval": scorer.stats.tokens / max(scorer.stats.rows, 1),
      "repeat_share": share,
      "reference_pairs": len(sample),
      "reference_seconds_skip_only": mean[False],
      "reference_seconds_repeating": mean[True],
      "reference_agreement": agree / max(len(sample), 1),
      "base_accuracy": float(np.mean([r.initial_score > VALID_THRESHOLD for r in valid])) if valid else None,
      "oracle_accuracy": float(np.mean([bool(r.valid) for r in records])),
      "model": args.model, "dataset": args.dataset, "split": args.split, "prompt": args.prompt,
      "max_new_tokens": args.max_new_tokens, "max_batch": args.max_batch, "per_question": args.per_question,
      "machine": machine(),
  }
  emit(result, args.out)


if __name__ == "__main__":
  main()
