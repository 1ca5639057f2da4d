"""Scoring benchmark: the same (question, program) pairs scored four ways, side by side in one process.

  python benchmarks/search.py --out search.json          # 84 questions x 24 programs = 2,016 pairs
  python benchmarks/search.py --quick --out quick.json   # a few minutes on 2 cores, the same keys

Pairs: the embedded default's questions (arithmetic ladder levels 1 and 3, train split) and prompt
(`free_prefix`, 12 new tokens), each question with the full program and programs one skip / repeat edit away in
the predictor's space (what the default search's 24 simulations evaluate). Scorers:
  (a) generate: today's scorer, KV-cached greedy generation then verification (`reward="generate"`);
  (b) one pass: `reward="teacher_forced"`, the completion scorer without prefix sharing;
  (c) one pass + shared prefixes: (b) with rows of one question sharing their programs' common steps;
  (d) reference: the release's way, transformers `generate` per pair (the PoLar release's layer-list
      replacement; no KV cache when a layer repeats), on a stratified sample of pairs.
(a), (b), (c) run interleaved over chunks of questions (each chunk: the three in rotating order), so load
changes hit all three alike. Undecided one-pass pairs are generated inside (b) / (c), and their time counts.

Keys: evals_per_s_generate, evals_per_s_one_pass, evals_per_s_one_pass_shared, evals_per_s_reference,
agreement_pairs, agreement_equal (rewards of (b) and (c) equal to (a)'s; both must hold), scorer_gflops (achieved
by (c): its counted FLOPs / its seconds), matmul_gflops (a large float32 matmul in this process), ideal_speedup
(of (c) over (a): (a)'s counted FLOPs over the floor of prefix sharing, every distinct (question, program
prefix) node computed once), and details (decided shares, speedups, load average, machine).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import emit, machine
from polar_jax.data import load_split, make_stop_checker, score_generation
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig, prompt_ids, run_programs
from polar_jax.programs import executor_for
from polar_jax.search.tree import children


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


def _pairs(model, examples, per_question: int, seed: int) -> list[tuple[int, tuple[int, ...]]]:
  depth = model.depth
  full = tuple(range(depth))
  kids = children(full, depth, space="predictor")
  rng = np.random.default_rng(seed)
  out = []
  for q in range(len(examples)):
    picks = rng.choice(len(kids), size=min(per_question - 1, len(kids)), replace=False)
    out += [(q, full)] + [(q, kids[int(k)]) for k in picks]
  return out


def _layer_flops(cfg) -> float:
  """Matmul FLOPs of one decoder layer per token (attention scores excluded: small at these lengths)."""
  d, h, kv, hd, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
  return 2.0 * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f)


def _matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  return 2.0 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--datasets", default="arith_level1,arith_level3")
  parser.add_argument("--split", default="train")
  parser.add_argument("--prompt", default="free_prefix", help="A polar_jax.data prompt preset.")
  parser.add_argument("--questions", type=int, default=84, help="In total, split over the datasets.")
  parser.add_argument("--programs", type=int, default=24, help="Programs per question (the full one included).")
  parser.add_argument("--chunk", type=int, default=12, help="Questions per interleaved chunk.")
  parser.add_argument("--max-batch", type=int, default=32)
  parser.add_argument("--max-new-tokens", type=int, default=12)
  parser.add_argument("--reference-pairs", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="8 questions x 12 programs, 4 reference pairs.")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.quick:
    args.questions, args.programs, args.chunk, args.reference_pairs = 8, 12, 8, 4

  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  load_before = os.getloadavg()
  model = load_model(args.model)
  names = [d for d in args.datasets.split(",") if d]
  examples = [e for d in names for e in load_split(d, args.split, limit=args.questions // len(names),
                                                    seed=args.seed)]
  pairs = _pairs(model, examples, args.programs, args.seed)
  tasks = {name: TaskConfig.from_preset(args.prompt, max_new_tokens=args.max_new_tokens, reward=reward)
           for name, reward in (("generate", "generate"), ("one_pass", "teacher_forced"),
                                ("one_pass_shared", "teacher_forced"))}
  executor = executor_for(model)
  kwargs = dict(max_batch=args.max_batch, executor=executor)
  warm = [p for p in pairs if p[0] < 2]  # compiles outside the timings
  for name, task in tasks.items():
    run_programs(model, examples, warm, task, share_prefixes=name == "one_pass_shared", **kwargs)
  seconds = {name: 0.0 for name in tasks}
  results = {name: [None] * len(pairs) for name in tasks}
  work = {}
  chunks = [list(range(s, min(s + args.chunk, len(examples)))) for s in range(0, len(examples), args.chunk)]
  for number, chunk in enumerate(chunks):
    members = [j for j, (q, _) in enumerate(pairs) if q in set(chunk)]
    names_order = list(tasks)[number % 3:] + list(tasks)[:number % 3]
    for name in names_order:
      totals = dict(executor._scorer.totals) if executor._scorer is not None else {}
      t0 = time.perf_counter()
      records = run_programs(model, examples, [pairs[j] for j in members], tasks[name],
                             share_prefixes=name == "one_pass_shared", **kwargs)
      seconds[name] += time.perf_counter() - t0
      for j, record in zip(members, records):
        results[name][j] = record
      if name == "one_pass_shared":
        for key, value in executor._scorer.totals.items():
          work[key] = work.get(key, 0) + value - totals.get(key, 0)
  n = len(pairs)
  rate = {name: n / seconds[name] for name in tasks}
  agree_b = sum(a.correct == b.correct for a, b in zip(results["generate"], results["one_pass"]))
  agree_c = sum(a.correct == c.correct for a, c in zip(results["generate"], results["one_pass_shared"]))
  decided = {name: sum(r.decided_by == "one_pass" for r in results[name]) / n for name in ("one_pass", "one_pass_shared")}

  # FLOPs. (a): every row's program over its prompt (prefill) and its generated tokens (decode), plus the LM
  # head per generated token. (c): the completion scorer's counted token-layers and head positions, plus the
  # generation of its undecided pairs.
  cfg = model.config
  per_layer, head = _layer_flops(cfg), 2.0 * cfg.hidden_size * cfg.vocab_size
  ids = prompt_ids(model, examples, tasks["generate"])
  def generate_flops(records, rows):
    return sum(len(r.program) * (len(ids[pairs[j][0]]) + r.generated_tokens) * per_layer + r.generated_tokens * head
               for j, r in zip(rows, records))
  # Generation computes the prompt tokens common to every question (the chat template) once per program and
  # batch (`prefill_shared`); credit that once per distinct program.
  common = len(os.path.commonprefix([tuple(x) for x in ids])) if len(ids) > 1 else 0
  programs = {p for _, p in pairs}
  flops_a = (generate_flops(results["generate"], range(n)) - sum(len(p) * common * per_layer for _, p in pairs)
             + sum(len(p) * common * per_layer for p in programs))
  # The floor of prefix sharing: every distinct (question, program prefix) node run once over its sequence.
  nodes = {(q, p[:k]) for q, p in pairs for k in range(1, len(p) + 1)}
  seq = {q: len(ids[q]) + 4 for q, _ in pairs}  # prompt + the canonical completion (about 4 tokens)
  flops_floor = sum(seq[q] for q, _ in nodes) * per_layer + n * 4 * head
  undecided = [j for j, r in enumerate(results["one_pass_shared"]) if r.decided_by != "one_pass"]
  flops_c = (work.get("executed_token_layers", 0) * per_layer + work.get("head_tokens", 0) * head
             + generate_flops([results["one_pass_shared"][j] for j in undecided], undecided))

  # (d) the reference, on a stratified sample (skip-only vs repeating programs).
  prompt_cfg = tasks["generate"].prompt
  repeats = [len(set(p)) < len(p) for _, p in pairs]
  rng = np.random.default_rng(args.seed)
  sample = []
  for stratum in (False, True):
    members = [j for j, r in enumerate(repeats) if r == stratum]
    take = min(len(members), args.reference_pairs // 2)
    sample += [(stratum, int(j)) for j in rng.choice(members, size=take, replace=False)] if take else []
  reference = ReferenceRunner(model, prompt_cfg, args.max_new_tokens)
  reference.generate(ids[0], tuple(range(model.depth)))  # warm-up
  times = {False: [], True: []}
  ref_agree = 0
  for stratum, j in sample:
    q, program = pairs[j]
    t0 = time.perf_counter()
    text = reference.generate(ids[q], program)
    times[stratum].append(time.perf_counter() - t0)
    answer, _ = score_generation(text, examples[q], prompt_cfg.answer_format, assistant_prefix=prompt_cfg.assistant_prefix)
    ref_agree += answer == results["generate"][j].answer
  share = float(np.mean(repeats))
  mean = {k: float(np.mean(v)) if v else 0.0 for k, v in times.items()}
  per_eval = (1 - share) * mean[False] + share * mean[True]
  ref_rate = 1.0 / per_eval if per_eval > 0 else float("nan")

  result = {
      "evals_per_s_generate": rate["generate"],
      "evals_per_s_one_pass": rate["one_pass"],
      "evals_per_s_one_pass_shared": rate["one_pass_shared"],
      "evals_per_s_reference": ref_rate,
      "agreement_pairs": n,
      "agreement_equal": min(agree_b, agree_c),
      "agreement_equal_one_pass": agree_b,
      "agreement_equal_one_pass_shared": agree_c,
      "scorer_gflops": flops_c / seconds["one_pass_shared"] / 1e9,
      "matmul_gflops": _matmul_gflops(),
      "ideal_speedup": flops_a / flops_floor,
      "achieved_share_of_ideal": (rate["one_pass_shared"] / rate["generate"]) / (flops_a / flops_floor),
      "speedup_one_pass": rate["one_pass"] / rate["generate"],
      "speedup_one_pass_shared": rate["one_pass_shared"] / rate["generate"],
      "speedup_vs_reference": rate["one_pass_shared"] / ref_rate,
      "decided_one_pass": decided["one_pass"],
      "decided_one_pass_shared": decided["one_pass_shared"],
      "base_accuracy": float(np.mean([r.correct for r, (_, p) in zip(results["generate"], pairs)
                                      if len(p) == model.depth and p == tuple(range(model.depth))])),
      "seconds": seconds,
      "gflop_generate": flops_a / 1e9, "gflop_one_pass_shared": flops_c / 1e9, "gflop_floor": flops_floor / 1e9,
      "completion_scorer_work": work,
      "reference_pairs": len(sample), "reference_agreement": ref_agree / max(len(sample), 1),
      "reference_seconds_skip_only": mean[False], "reference_seconds_repeating": mean[True],
      "repeat_share": share,
      "questions": len(examples), "programs_per_question": args.programs, "chunk": args.chunk,
      "model": args.model, "datasets": names, "split": args.split, "prompt": args.prompt,
      "max_new_tokens": args.max_new_tokens, "max_batch": args.max_batch,
      "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": machine(),
  }
  emit(result, args.out)


if __name__ == "__main__":
  main()
