"""The one-pass reward: one prefill of prompt + the canonical gold completion decides a greedy pair exactly.

Greedy decoding is deterministic: the token generated at step j is the argmax after the prompt and the tokens
generated before it. One prefill of prompt + c_1..c_m (the gold answer as the model would write it: `16` after
`The answer is `, `16}` inside an opened `\\boxed{`) under program P gives the argmax a_j at every completion
position j = 1..m+1. Walking them in order reproduces generation exactly as long as a_j = c_j: the generated
prefix is then c_1..c_{j-1}, and at the first j with a_j != c_j (or j = m+1) the generated token is a_j. So
the pair's greedy output is known token by token up to and including the first deviation, and the pair is
*decided* (`decided_by="one_pass"`) when generation provably ends inside that known prefix:

- the stop rule of the task fires on the known tokens (an end-of-sequence token, the balancing `}` of the
  box, a complete number after `The answer is `) or the token budget runs out: the generated text is then
  known completely and is scored by the same `score_generation` as a generated run (correct or not);
- last-number answers after a digit-free assistant prefix, with a plain integer gold: a deviation that puts a
  wrong digit into the answer's digit run (a_j is a digit other than c_j, or a digit after the complete gold)
  makes the first number of the reply differ from the gold. Under the number stop rule that number is the
  extracted answer, so the pair is wrong. (The one assumption: the reply does not continue `1,7` into a second
  number after a comma that alone matches the gold; the agreement tests and `benchmarks/search.py` measure
  it.) A leading `0` is left to generation (`016` is 16).

Every other pair (a deviation into text that may still lead to a correct answer: a space, a word, a decimal
point, `\\frac`) is *undecided* and is generated as before. The same prefill yields the gold completion's
log-probability under P (`gold_logprob`), a graded signal stored beside the 0/1 reward.

The canonical completion is lead + gold + tail: a space when the assistant prefix ends without one, the gold
answer, and the most likely next text (a period after a number, the closing brace of a box). Lead and tail are
guesses that cost nothing when wrong (the walk stops at the first deviation either way); a right guess lets
the walk reach the stop rule (`44` then `.` then ` To`: the number is complete). The completion is used only
when its tokens are what the tokenizer makes of prompt text + completion text (no merge across the
boundary); otherwise the pair is generated. `gold_logprob` sums over lead + gold.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from polar_jax import data
from polar_jax.program_eval.confidence import answer_end_token
from polar_jax.program_eval.task import Prompts, TaskConfig
from polar_jax.programs import Program
from polar_jax.records import RunRecord

ONE_PASS = "one_pass"


@dataclasses.dataclass(frozen=True)
class Completion:
  """A question's canonical completion after the prompt: `tokens` = lead + gold + tail, where the gold part
  `tokens[gold_start:gold_end]` is what `gold_logprob` sums over, and `digit_positions` are the positions at
  which a wrong digit decides the pair (the wrong-digit rule; empty where it does not apply)."""
  tokens: tuple[int, ...]
  gold_start: int
  gold_end: int
  digit_positions: frozenset[int]


def completion_parts(example: data.Example, cfg: data.PromptConfig) -> tuple[str, str, str] | None:
  """(lead, gold, tail) text of the reply a correct greedy run most likely writes, or None where there is no
  single canonical one. The lead and tail are guesses that cost nothing when wrong: they only extend how far
  the greedy path is known (a leading space after a prefix without one; the period after a number)."""
  gold = str(example.answer).strip()
  if not gold or example.is_multiple_choice:
    return None
  prefix = cfg.assistant_prefix
  if cfg.answer_format == "last_number":
    if not prefix or data.extract_answer(gold, "last_number") != gold:
      return None
    return ("" if prefix[-1:].isspace() else " "), gold, "."
  if data.device_stop_kwargs(cfg.answer_format, prefix).get("close_brace_depth") == 1:
    return "", gold, "}"  # the prefix opened the box
  return "\\boxed{", gold, "}"


def canonical_completion(prompts: Prompts, index: int) -> Completion | None:
  """The canonical completion of example `index`, or None (then its pairs are generated)."""
  cfg = prompts.task.prompt
  parts = completion_parts(prompts.examples[index], cfg)
  if parts is None:
    return None
  lead, gold, tail = parts
  tokenizer = prompts.model.tokenizer
  pieces = [tokenizer.encode(x, add_special_tokens=False) if x else [] for x in parts]
  tokens = [t for piece in pieces for t in piece]
  joint = tokenizer.encode(prompts.text(index) + lead + gold + tail, add_special_tokens=not cfg.use_chat_template)
  if not pieces[1] or joint != list(prompts.ids(index)) + tokens:
    return None  # the tokenizer would merge across a boundary: not what the model would emit token by token
  gold_start, gold_end = len(pieces[0]), len(pieces[0]) + len(pieces[1])
  digits = [tokenizer.decode([t]) for t in pieces[1]]
  rule = (cfg.answer_format == "last_number" and not any(ch.isdigit() for ch in cfg.assistant_prefix + lead)
          and gold.isdigit() and all(len(d) == 1 and d.isdigit() for d in digits))
  # A wrong digit inside the gold digits, or a digit right after them (the number would grow).
  positions = frozenset(range(gold_start, gold_end + 1)) if rule else frozenset()
  return Completion(tuple(tokens), gold_start, gold_end, positions)


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the known greedy prefix says: `decided` with (text, answer, correct, generated tokens), or not."""
  decided: bool
  text: str = ""
  answer: str | None = None
  correct: bool = False
  generated: int = 0


def decide(argmax: Sequence[int], completion: Completion, example: data.Example, task: TaskConfig, tokenizer,
           stop_ids: Sequence[int]) -> Decision:
  """Walks the greedy tokens known from one prefill (`argmax` [m+1]) and decides the pair if it can."""
  cfg = task.prompt
  # The executor's on-device rule (`device_stop_kwargs`), which the host checker equals where there is one.
  on_device = data.device_stop_kwargs(cfg.answer_format, cfg.assistant_prefix)
  done = data.make_stop_checker(cfg.answer_format, cfg.assistant_prefix) if on_device else (lambda text: False)
  stops = set(int(t) for t in stop_ids)
  gold = completion.tokens
  generated: list[int] = []
  for j, token in enumerate(int(t) for t in argmax[:len(gold) + 1]):
    generated.append(token)
    text = tokenizer.decode(generated)
    if token in stops or len(generated) >= task.max_new_tokens or done(text):
      answer, correct = data.score_generation(text, example, cfg.answer_format, assistant_prefix=cfg.assistant_prefix)
      return Decision(True, text, answer, bool(correct), len(generated))
    if j < len(gold) and token == gold[j]:
      continue
    piece = tokenizer.decode([token])
    leading_zero = j == completion.gold_start and piece[:1] == "0"
    if j in completion.digit_positions and piece[:1].isdigit() and not leading_zero:
      answer = data.extract_answer(cfg.assistant_prefix + text, cfg.answer_format)
      return Decision(True, text, answer, False, len(generated))
    return Decision(False)
  return Decision(False)  # the whole canonical completion was generated without a stop


def _confidence(tokenizer, argmax, logprobs, completion: Completion, decision: Decision) -> float | None:
  """`RunRecord.answer_logprob` of a decided pair where the reply is known through its answer's last token
  (generated tokens that equal the completion's, whose log-probabilities the prefill gave)."""
  generated = [int(t) for t in argmax[:decision.generated]]
  matched = next((j for j, t in enumerate(generated) if j >= len(completion.tokens) or t != completion.tokens[j]),
                 len(generated))
  k = answer_end_token(tokenizer, generated, decision.answer)
  if k is None or k > matched:
    return None
  return float(np.mean(np.asarray(logprobs[:k], np.float64)))


def one_pass_batch(executor, prompts: Prompts, batch: list[tuple[int, Program]], task: TaskConfig, *,
                   share_prefixes: bool = True, positives_only: bool = False,
                   gold_logprobs: dict[int, float] | None = None,
                   share_contexts: bool = True, keep_prompts: bool = False) -> list[RunRecord | None]:
  """One-pass records for the decided rows of a batch; None for rows that must be generated (with
  positives_only, every row not decided correct: its full reply and confidence then come from generation).
  `gold_logprobs`, when given, receives row -> gold log-probability for every row the prefill scored (decided
  or not), so that a generated row can keep it. With share_contexts, the prompts' question-independent part
  (`Prompts.context_length`: template and few-shot turns) is computed once per program and kept; with
  keep_prompts too, the rows left to generation keep their prompts' keys / values for it
  (`completions.PromptState`: their generation then prefills one token)."""
  completions = {i: canonical_completion(prompts, i) for i in {i for i, _ in batch}}
  rows = [r for r, (i, _) in enumerate(batch) if completions[i] is not None]
  out: list[RunRecord | None] = [None] * len(batch)
  if not rows:
    return out
  seqs = [list(prompts.ids(batch[r][0])) + list(completions[batch[r][0]].tokens) for r in rows]
  starts = [len(prompts.ids(batch[r][0])) for r in rows]
  tokenizer = prompts.model.tokenizer
  contexts = [prompts.context_length(batch[r][0]) for r in rows] if share_contexts else None
  scores = executor.score_completions(seqs, [batch[r][1] for r in rows], starts, share_prefixes=share_prefixes,
                                      context_lengths=contexts, keep_prompts=keep_prompts and share_contexts)
  for r, argmax, logprobs in zip(rows, scores.argmax, scores.logprobs):
    i, program = batch[r]
    example = prompts.examples[i]
    decision = decide(argmax, completions[i], example, task, tokenizer, tokenizer.stop_ids)
    if gold_logprobs is not None:
      gold_logprobs[r] = float(np.sum(logprobs[:completions[i].gold_end]))
    if decision.decided and (decision.correct or not positives_only):
      out[r] = RunRecord(example.id, program.ids, decision.text, decision.answer, decision.correct, len(program),
                         decision.generated, 0.0, task.prompt.answer_format, decided_by=ONE_PASS,
                         gold_logprob=float(np.sum(logprobs[:completions[i].gold_end])),
                         answer_logprob=_confidence(tokenizer, argmax, logprobs, completions[i], decision))
  if scores.keep_prompts is not None:
    scores.keep_prompts([k for k, r in enumerate(rows) if out[r] is None])
  return out
