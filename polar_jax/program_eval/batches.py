"""One device batch of (question, program) pairs: generated and scored, or options compared by log-likelihood.

Each function returns one `RunRecord` per row with `seconds` 0; the run loop (`runs.py`) times the batch and
fills in each row's share.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from polar_jax import data
from polar_jax.data.example import CHOICE_LETTERS
from polar_jax.records import RunRecord
from polar_jax.program_eval.confidence import answer_logprob
from polar_jax.program_eval.task import Prompts, TaskConfig
from polar_jax.programs import Program
from polar_jax.programs.executor import Executor, StopRule

LOGLIK_FORMAT = "choice_loglik"
# Option rows per prefill call in log-likelihood scoring: the executor returns full [S, V] logits per row
# (~30 MB for a 160-token SmolLM2 prompt), so rows go through in small groups and are reduced at once.
_LOGLIK_ROWS = 8


def generate_batch(executor: Executor, prompts: Prompts, batch: list[tuple[int, Program]], task: TaskConfig,
                   temperature: float, seed: int | Sequence[int], *, kept_contexts: bool = False) -> list[RunRecord]:
  """Generates every row under its program (the task's on-device stop rule) and scores the answers. `seed`: one
  sampling seed per row, or an int (row r: seed + r). kept_contexts: the prompts' contexts (template, few-shot
  turns) take their keys / values from the completion scorer's cache (`Executor.generate`'s context_lengths)."""
  cfg = task.prompt
  stop = StopRule(**data.device_stop_kwargs(cfg.answer_format, cfg.assistant_prefix))
  contexts = [prompts.context_length(i) for i, _ in batch] if kept_contexts else None
  result = executor.generate([prompts.ids(i) for i, _ in batch], [p for _, p in batch], task.max_new_tokens,
                             stop=stop, temperature=temperature, seed=seed, context_lengths=contexts)
  out = []
  for row, (i, program) in enumerate(batch):
    text = result.texts[row]
    answer, correct = data.score_generation(text, prompts.examples[i], cfg.answer_format,
                                            assistant_prefix=cfg.assistant_prefix)
    confidence = answer_logprob(prompts.model.tokenizer, result.tokens[row], result.token_logprobs[row], answer)
    out.append(RunRecord(prompts.examples[i].id, program.ids, text, answer, bool(correct),
                         int(result.layers_executed[row]), int(result.num_generated[row]), 0.0, cfg.answer_format,
                         answer_logprob=confidence))
  return out


def option_logliks(executor: Executor, prompt_tokens: Sequence[Sequence[int]], option_tokens: Sequence[Sequence[int]],
                   programs: Sequence[Program]) -> np.ndarray:
  """Total log-probability of each row's option tokens after its prompt, under its program: float64 [R].

  Prompt and option are tokenized apart and concatenated, so every option is conditioned on the same prompt
  tokens. An empty option scores -inf.
  """
  scores = np.full(len(prompt_tokens), -np.inf)
  rows = [j for j in range(len(prompt_tokens)) if len(option_tokens[j]) > 0]
  for start in range(0, len(rows), _LOGLIK_ROWS):
    chunk = rows[start:start + _LOGLIK_ROWS]
    seqs = [list(prompt_tokens[j]) + list(option_tokens[j]) for j in chunk]
    logits = executor.prefill_logits(seqs, [programs[j] for j in chunk])  # [len_j, V] each
    for j, row_logits in zip(chunk, logits):
      p, m = len(prompt_tokens[j]), len(option_tokens[j])
      x = row_logits[p - 1:p + m - 1].astype(np.float64)  # [m, V]: positions predicting the option tokens.
      x = x - x.max(axis=-1, keepdims=True)
      logp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
      scores[j] = float(logp[np.arange(m), np.asarray(option_tokens[j])].sum())
  return scores


def loglik_batch(executor: Executor, prompts: Prompts, batch: list[tuple[int, Program]]) -> list[RunRecord]:
  """Answers every (multiple-choice) row with its most likely option under its program: one prefill per option."""
  tokenizer = prompts.model.tokenizer
  prompt_rows, option_rows, program_rows, owner = [], [], [], []
  for row, (i, program) in enumerate(batch):
    for choice in prompts.examples[i].choices:
      prompt_rows.append(prompts.ids(i))
      option_rows.append(tokenizer.encode(choice))
      program_rows.append(program)
      owner.append(row)
  scores = option_logliks(executor, prompt_rows, option_rows, program_rows)
  owner = np.asarray(owner)
  out = []
  for row, (i, program) in enumerate(batch):
    example = prompts.examples[i]
    best = int(np.argmax(scores[owner == row]))
    letter = CHOICE_LETTERS[best]
    out.append(RunRecord(example.id, program.ids, example.choices[best], letter, letter == example.answer,
                         len(program) * len(example.choices), 0, 0.0, LOGLIK_FORMAT, decided_by="loglik"))
  return out
