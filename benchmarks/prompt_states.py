"""Generation of the pairs the one pass leaves undecided, with and without the one pass's prompt states.

On the scoring benchmark's pairs (`search.py`: the embedded default's two datasets, 84 train questions x 24
programs, `raw_qa_3shot`, 8 new tokens), chunk by chunk of 12 questions as there: the one pass scores the
chunk (keeping the undecided pairs' `completions.PromptState`s), then the undecided pairs are generated twice,
in the batches `run_programs` makes, interleaved (the order alternates by chunk and repeat):

  question_prefill  as before: the context's keys / values come from the bank, the question is prefilled;
  prompt_states     the prompt's own keys / values come from the one pass: one token is prefilled per row.

The one-pass scoring itself is timed too, with and without keeping the states (with, its passes also return
their keys / values), interleaved the same way. An untimed first repeat compiles every shape of both variants.
Prints JSON: seconds of each, the ratios, the FLOP ideal of the generation ratio (token-layers executed:
prefill + decode, each variant's own count) and the records' agreement (every undecided pair's answer, text
and generated tokens equal in both variants; their log-probabilities are not compared).

  python benchmarks/prompt_states.py --out prompt_states.json
"""

from __future__ import annotations

import argparse
import os
import time

from common import emit, machine
from search import add_pair_flags, load_pairs
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig
from polar_jax.program_eval.batches import generate_batch
from polar_jax.program_eval.one_pass import one_pass_batch
from polar_jax.program_eval.task import Prompts
from polar_jax.programs import Program, executor_for
from polar_jax.programs.batching import plan_batches


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_pair_flags(parser)
  parser.add_argument("--chunk", type=int, default=12)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--max-batch", type=int, default=32)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  load_before = os.getloadavg()
  model = load_model(args.model)
  examples, pairs = load_pairs(model, args)
  pairs = [(q, Program(p, model.depth)) for q, p in pairs]
  task = TaskConfig.from_preset("raw_qa_3shot", max_new_tokens=8, reward="teacher_forced", few_shot_split="auto")
  prompts = Prompts(model, examples, task)
  ex = executor_for(model)
  scorer = ex._scorer_of()

  def score(rows, keep):
    return one_pass_batch(ex, prompts, rows, task, keep_prompts=keep)

  def generate(rows):
    batches = plan_batches([(q, p.ids) for q, p in rows], args.max_batch, quantum=ex.schedule_quantum)
    out = []
    for b in batches:
      out += generate_batch(ex, prompts, [rows[k] for k in b], task, 0.0, [0] * len(b), kept_contexts=True)
    return out

  chunks = [list(range(s, min(s + args.chunk, len(examples)))) for s in range(0, len(examples), args.chunk)]
  seconds = {"score_keep": 0.0, "score_plain": 0.0, "question_prefill": 0.0, "prompt_states": 0.0}
  layers = {"question_prefill": 0, "prompt_states": 0}
  n_undecided = equal = 0
  for rep in range(-1, args.repeats):  # repeat -1: untimed, every chunk's compiles in both variants
    for number, chunk in enumerate(chunks):
      rows = [p for p in pairs if p[0] in set(chunk)]
      first = (rep + number) % 2 == 0
      timed = {}
      for keep in ((True, False) if first else (False, True)):
        t0 = time.perf_counter()
        records = score(rows, keep)
        timed["score_keep" if keep else "score_plain"] = time.perf_counter() - t0
        if keep:
          undecided = [rows[r] for r, rec in enumerate(records) if rec is None]
          saved = dict(scorer.prompt_states)
      ex.drop_prompt_states()
      results, work = {}, {}
      for name in (("prompt_states", "question_prefill") if first else ("question_prefill", "prompt_states")):
        scorer.prompt_states.clear()
        if name == "prompt_states":
          scorer.prompt_states.update(saved)
        before = ex.generation_totals["prefill_token_layers"] + ex.generation_totals["decode_token_layers"]
        used = ex.generation_totals["prompt_states_used"]
        t0 = time.perf_counter()
        results[name] = generate(undecided)
        timed[name] = time.perf_counter() - t0
        work[name] = ex.generation_totals["prefill_token_layers"] + ex.generation_totals["decode_token_layers"] \
            - before
        states = ex.generation_totals["prompt_states_used"] - used
        assert states == (len(undecided) if name == "prompt_states" else 0), (name, states, len(undecided))
      ex.drop_prompt_states()
      if rep < 0:
        continue
      for name, value in timed.items():
        seconds[name] += value
      for name, value in work.items():
        layers[name] += value
      n_undecided += len(undecided)
      equal += sum((a.answer, a.text, a.generated_tokens) == (b.answer, b.text, b.generated_tokens)
                   for a, b in zip(results["question_prefill"], results["prompt_states"]))
  result = {
      "undecided_pairs": n_undecided,
      "pairs": len(pairs) * args.repeats,
      "records_equal": equal,
      "seconds": seconds,
      "generation_ratio": seconds["prompt_states"] / seconds["question_prefill"],
      "generation_ideal_ratio": layers["prompt_states"] / layers["question_prefill"],
      "token_layers": layers,
      "scoring_ratio": seconds["score_keep"] / seconds["score_plain"],
      "total_ratio": (seconds["score_keep"] + seconds["prompt_states"])
                     / (seconds["score_plain"] + seconds["question_prefill"]),
      "repeats": args.repeats,
      "chunk": args.chunk,
      "questions": len(examples),
      "programs_per_question": args.programs,
      "loadavg_before": list(load_before),
      "loadavg_after": list(os.getloadavg()),
      "machine": machine(),
  }
  emit(result, args.out)


if __name__ == "__main__":
  main()
