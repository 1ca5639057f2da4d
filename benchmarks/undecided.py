"""Why the one-pass reward leaves pairs undecided: on the scoring benchmark's pairs (`search.py`), the first
completion position where the greedy token leaves the canonical completion, and that token, for every pair
the one pass cannot decide. A count (no timing): one run says it.

  python benchmarks/undecided.py --out undecided.json
"""

from __future__ import annotations

import argparse
import collections

from common import emit
from search import add_pair_flags, dataset_names, load_pairs
from polar_jax.models import load_model
from polar_jax.program_eval import TaskConfig
from polar_jax.program_eval.one_pass import canonical_completion, decide
from polar_jax.program_eval.task import Prompts
from polar_jax.programs import Program, executor_for


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_pair_flags(parser)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  model = load_model(args.model)
  examples, pairs = load_pairs(model, args)  # the scoring benchmark's pairs
  task = TaskConfig.from_preset("raw_qa_3shot", max_new_tokens=8, reward="teacher_forced", few_shot_split="auto")
  prompts = Prompts(model, examples, task)
  tokenizer = model.tokenizer
  completions = {q: canonical_completion(prompts, q) for q in range(len(examples))}
  kept = [(q, p) for q, p in pairs if completions[q] is not None]
  scores = executor_for(model).score_completions(
      [list(prompts.ids(q)) + list(completions[q].tokens) for q, _ in kept], [Program(p, model.depth) for _, p in kept],
      [len(prompts.ids(q)) for q, _ in kept], context_lengths=[prompts.context_length(q) for q, _ in kept])
  at_position, tokens = collections.Counter(), collections.Counter()
  for (q, _), argmax in zip(kept, scores.argmax):
    c = completions[q]
    if decide(argmax, c, examples[q], task, tokenizer, tokenizer.stop_ids).decided:
      continue
    j = next((j for j, t in enumerate(argmax) if j >= len(c.tokens) or int(t) != c.tokens[j]), len(argmax) - 1)
    at_position[j] += 1
    tokens[tokenizer.decode([int(argmax[j])])] += 1
  emit({"pairs": len(pairs), "without_canonical_completion": len(pairs) - len(kept),
        "undecided": sum(at_position.values()), "undecided_at_position": dict(sorted(at_position.items())),
        "position_0_is": "the reply's first token (the space before the answer)",
        "deviating_tokens": dict(tokens.most_common(20)), "model": args.model,
        "datasets": dataset_names(args)}, args.out)


if __name__ == "__main__":
  main()
