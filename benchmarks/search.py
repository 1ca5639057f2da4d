"""Scoring benchmark: the same (question, program) pairs scored four ways, side by side in one process.

  python benchmarks/search.py --out search.json          # 84 questions x 24 programs = 2,016 pairs
  python benchmarks/search.py --quick --out quick.json   # a few minutes on 2 cores, the same keys

Pairs: the embedded default's questions (arithmetic ladder levels 11 and 13, train split, in the search's order
after the 4 few-shot candidates of each dataset, `--skip`) and prompt (`raw_qa_3shot`, 8 new tokens), each question with
the full program and programs one skip / repeat edit away in the predictor's space (what the search's first
simulations evaluate). Scorers:
  (a) generate: KV-cached greedy generation then verification (`reward="generate"`; a batch's common prompt
      prefix once per program, `Executor.prefill_shared`);
  (b) one pass: `reward="teacher_forced"`, the completion scorer without any sharing;
  (c0) one pass + shared layer prefixes: rows of one question share their programs' common steps;
  (c) one pass + shared layer prefixes + shared contexts (the search's scorer): besides (c0), the prompts'
      question-independent tokens (few-shot turns) are computed once per program and kept across calls
      (`completions.ContextCache`, emptied after the warm-up, so (c) pays for every context it computes);
  (d) reference: the release's way, transformers `generate` per pair (the PoLar release's layer-list
      replacement; no KV cache when a layer repeats), on a stratified sample of pairs.
(a), (b), (c0), (c) run interleaved over chunks of questions (each chunk: the four in rotating order), so load
changes hit all alike. Undecided one-pass pairs are generated inside (b) / (c0) / (c), and their time counts.

Keys: evals_per_s_generate, evals_per_s_one_pass, evals_per_s_one_pass_shared, evals_per_s_reference,
agreement_pairs, agreement_equal (rewards of (b), (c0) and (c) equal to (a)'s; all must hold), scorer_gflops
(achieved by (c): its executed FLOPs / its seconds), matmul_gflops (a large float32 matmul in this process),
ideal_speedup (of (c) over (a): the FLOPs (a) executed over the floor of (c)'s sharing: every distinct
(context, program prefix) node over the context and every distinct (question, program prefix) node over the
rest of its sequence, each computed once), ceiling_evals_per_s / ceiling_speedup_vs_reference (that floor's
FLOPs at the measured matmul rate: the most any such scorer could reach here, against (d)), and details
(decided shares, speedups, executor compiles inside the timings, load average, machine).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import emit, machine
from polar_jax.data import get_preset, load_split, make_stop_checker, score_generation
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig, run_programs
from polar_jax.program_eval.task import Prompts
from polar_jax.programs import executor_for
from polar_jax.programs.completions import ContextCache
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


def add_pair_flags(parser) -> None:
  """The flags that choose the benchmark's (question, program) pairs (`load_pairs`), shared by the scripts that
  reuse them (`undecided.py`, `prompt_states.py`)."""
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--datasets", default="arith_level11,arith_level13")
  parser.add_argument("--questions", type=int, default=84, help="In total, split over the datasets.")
  parser.add_argument("--programs", type=int, default=24, help="Programs per question (the full one included).")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip", type=int, default=4,
                      help="Questions skipped at the start of each dataset: the few-shot candidates (shown other "
                           "shots, so three of them have contexts of their own; 8 of the default search's 128 "
                           "questions are candidates). Kept at 4 so that runs compare with earlier ones.")


def dataset_names(args) -> list[str]:
  """The datasets `--datasets` names (comma-separated)."""
  return [d for d in args.datasets.split(",") if d]


def load_pairs(model, args, split: str = "train"):
  """(examples, pairs) of the flags `add_pair_flags` adds: the first questions of each dataset's split after
  `skip`, and per question the full program plus random single edits of it (`_pairs`)."""
  names = dataset_names(args)
  per = args.questions // len(names)
  examples = [e for d in names for e in load_split(d, split, limit=args.skip + per, seed=args.seed)[args.skip:]]
  return examples, _pairs(model, examples, args.programs, args.seed)


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
  add_pair_flags(parser)
  parser.add_argument("--split", default="train")
  parser.add_argument("--prompt", default="raw_qa_3shot", help="A polar_jax.data prompt preset.")
  parser.add_argument("--chunk", type=int, default=12, help="Questions per interleaved chunk.")
  parser.add_argument("--max-batch", type=int, default=32)
  parser.add_argument("--max-new-tokens", type=int, default=8)
  parser.add_argument("--reference-pairs", type=int, default=16)
  parser.add_argument("--quick", action="store_true", help="8 questions x 12 programs, 4 reference pairs.")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.quick:
    args.questions, args.programs, args.chunk, args.reference_pairs = 8, 12, 8, 4

  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  load_before = os.getloadavg()
  model = load_model(args.model)
  examples, pairs = load_pairs(model, args, args.split)
  few_shot = "auto" if get_preset(args.prompt).few_shot > 0 else None
  variants = {"generate": ("generate", False, False), "one_pass": ("teacher_forced", False, False),
              "one_pass_layers": ("teacher_forced", True, False), "one_pass_shared": ("teacher_forced", True, True)}
  tasks = {name: TaskConfig.from_preset(args.prompt, max_new_tokens=args.max_new_tokens, reward=reward,
                                        few_shot_split=few_shot) for name, (reward, _, _) in variants.items()}
  executor = executor_for(model)

  def run(name, rows):
    _, layers, contexts = variants[name]
    return run_programs(model, examples, rows, tasks[name], share_prefixes=layers, share_contexts=contexts,
                        max_batch=args.max_batch, executor=executor)

  warm = [p for p in pairs if p[0] < 2]  # compiles outside the timings
  for name in tasks:
    run(name, warm)
  executor._scorer.contexts = ContextCache(executor.context_cache_bytes)  # (c) computes every context it uses
  seconds = {name: 0.0 for name in tasks}
  compiles = {name: 0 for name in tasks}  # executor traces inside the timings (shapes the warm-up did not meet)
  results = {name: [None] * len(pairs) for name in tasks}
  work = {"generate": {}, "one_pass_shared": {}}
  chunks = [list(range(s, min(s + args.chunk, len(examples)))) for s in range(0, len(examples), args.chunk)]
  for number, chunk in enumerate(chunks):
    members = [j for j, (q, _) in enumerate(pairs) if q in set(chunk)]
    k = number % len(tasks)
    for name in list(tasks)[k:] + list(tasks)[:k]:
      totals = {**executor._scorer.totals, **executor.generation_totals}
      traced = executor.compiles
      t0 = time.perf_counter()
      records = run(name, [pairs[j] for j in members])
      seconds[name] += time.perf_counter() - t0
      compiles[name] += executor.compiles - traced
      for j, record in zip(members, records):
        results[name][j] = record
      if name in work:
        for key, value in {**executor._scorer.totals, **executor.generation_totals}.items():
          work[name][key] = work[name].get(key, 0) + value - totals[key]
  n = len(pairs)
  rate = {name: n / seconds[name] for name in tasks}
  agree = {name: sum(a.correct == b.correct for a, b in zip(results["generate"], results[name]))
           for name in ("one_pass", "one_pass_layers", "one_pass_shared")}
  decided = {name: sum(r.decided_by == "one_pass" for r in results[name]) / n for name in agree}

  # FLOPs, as executed (padding included): (a) its prefill (a shared prefix once per program group), decode and
  # LM head; (c) the completion scorer's token-layers (its rows and its context passes) and head positions,
  # plus the generation of its undecided pairs.
  cfg = model.config
  per_layer, head = _layer_flops(cfg), 2.0 * cfg.hidden_size * cfg.vocab_size

  def executed_flops(w):
    layers = sum(w.get(k, 0) for k in ("prefill_token_layers", "decode_token_layers", "executed_token_layers",
                                       "context_token_layers"))
    return layers * per_layer + (w.get("head_tokens", 0) + w.get("decode_head_tokens", 0)) * head

  flops_a = executed_flops(work["generate"])
  flops_c = executed_flops(work["one_pass_shared"])
  # The floor of (c)'s sharing: each distinct (context, program prefix) node over its context, each distinct
  # (question, program prefix) node over the rest of its sequence (prompt + ~4 completion tokens), once.
  prompts = Prompts(model, examples, tasks["one_pass_shared"])
  ids = [prompts.ids(i) for i in range(len(examples))]
  ctx = [prompts.context_length(i) for i in range(len(examples))]
  nodes_ctx = {(tuple(ids[q][:ctx[q]]), p[:k]) for q, p in pairs if ctx[q] for k in range(1, len(p) + 1)}
  nodes = {(q, p[:k]) for q, p in pairs for k in range(1, len(p) + 1)}
  flops_floor = (sum(len(c) for c, _ in nodes_ctx) + sum(len(ids[q]) - ctx[q] + 4 for q, _ in nodes)) * per_layer \
      + n * 4 * head

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

  matmul = _matmul_gflops()
  # The most any scorer doing (c)'s floor of work could reach against the reference on this machine: the floor's
  # FLOPs at this process's large-matmul rate (the [scoring] issue's 100x target is above it on the 2-core CPU).
  ceiling = n / (flops_floor / (matmul * 1e9))
  result = {
      "evals_per_s_generate": rate["generate"],
      "evals_per_s_one_pass": rate["one_pass"],
      "evals_per_s_one_pass_shared": rate["one_pass_shared"],
      "evals_per_s_reference": ref_rate,
      "agreement_pairs": n,
      "agreement_equal": min(agree.values()),
      **{f"agreement_equal_{name}": value for name, value in agree.items()},
      "evals_per_s_one_pass_layers": rate["one_pass_layers"],
      "scorer_gflops": flops_c / seconds["one_pass_shared"] / 1e9,
      "matmul_gflops": matmul,
      "ideal_speedup": flops_a / flops_floor,
      "achieved_share_of_ideal": (rate["one_pass_shared"] / rate["generate"]) / (flops_a / flops_floor),
      "speedup_one_pass": rate["one_pass"] / rate["generate"],
      "speedup_one_pass_layers": rate["one_pass_layers"] / rate["generate"],
      "speedup_one_pass_shared": rate["one_pass_shared"] / rate["generate"],
      "speedup_vs_reference": rate["one_pass_shared"] / ref_rate,
      "ceiling_evals_per_s": ceiling, "ceiling_speedup_vs_reference": ceiling / ref_rate,
      "decided_one_pass": decided["one_pass"],
      "decided_one_pass_layers": decided["one_pass_layers"],
      "decided_one_pass_shared": decided["one_pass_shared"],
      "base_accuracy": float(np.mean([r.correct for r, (_, p) in zip(results["generate"], pairs)
                                      if len(p) == model.depth and p == tuple(range(model.depth))])),
      "seconds": seconds, "compiles_timed": compiles,
      "gflop_generate": flops_a / 1e9, "gflop_one_pass_shared": flops_c / 1e9, "gflop_floor": flops_floor / 1e9,
      "work_generate": work["generate"], "work_one_pass_shared": work["one_pass_shared"],
      "reference_pairs": len(sample), "reference_agreement": ref_agree / max(len(sample), 1),
      "reference_seconds_skip_only": mean[False], "reference_seconds_repeating": mean[True],
      "repeat_share": share,
      "questions": len(examples), "programs_per_question": args.programs, "chunk": args.chunk,
      "model": args.model, "datasets": dataset_names(args), "split": args.split,
      "prompt": args.prompt,
      "max_new_tokens": args.max_new_tokens, "max_batch": args.max_batch,
      "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": machine(),
  }
  emit(result, args.out)


if __name__ == "__main__":
  main()
