"""Running programs of layers on questions: the shared layer under evaluation, baselines and search scoring.

`run_programs` takes (question, program) pairs, builds each question's prompt once (`TaskConfig`: prompt preset,
token budget, how multiple choice is scored), packs the pairs into batches that share schedules
(`polar_jax.search.batching.plan_batches`: the same program across questions rides together), generates with
the executor under the task's on-device stop rule, and scores every answer with the data package. Output: one
`RunRecord` per pair, in input order.

Multiple-choice questions can instead be scored by log-likelihood (`choice_scoring="loglik"`): one prefill per
option (prompt tokens + option tokens) under the program, no decoding; the option whose tokens have the highest
total log-probability is the answer (its letter). Its `layers` count one prefill pass per option.

`evaluate_program` runs one fixed program (default: full depth) over a list of questions and summarizes
accuracy, executed layers, generated tokens and throughput. With `out_dir` it appends one JSON line per
finished question to `records.jsonl` (flushed per batch, so a killed run keeps its work) and resumes from it:
questions already there are skipped. `summary.json` is written at the end.

Timing: a record's `seconds` is its share of its batch's wall time (generation or prefills, and scoring), so
summed over records it is the time spent on them, compiles included (`summary["compiles"]` says how many).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from polar_jax import data
from polar_jax.data.example import CHOICE_LETTERS
from polar_jax.data.prompts import few_shot_source
from polar_jax.programs import Program, ProgramError
from polar_jax.programs.executor import Executor, StopRule, executor_for
from polar_jax.records import RunRecord
from polar_jax.search.batching import plan_batches

CHOICE_SCORINGS = ("generate", "loglik")
LOGLIK_FORMAT = "choice_loglik"
RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"
# Option rows per prefill call in log-likelihood scoring: the executor returns full [S, V] logits per row
# (~30 MB for a 160-token SmolLM2 prompt), so rows go through in small groups and are reduced at once.
_LOGLIK_ROWS = 8


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """How a question is asked and scored.

  Attributes:
    prompt: the prompt preset (template, chat options, assistant prefix, few-shot count, answer format).
    max_new_tokens: generation budget per row.
    choice_scoring: "generate" (multiple choice answered in text, like other questions) or "loglik" (options
      compared by log-likelihood under the program; non-multiple-choice questions still generate).
    few_shot_split: "<dataset>:<split>" that few-shot examples come from when `prompt.few_shot > 0` (the first
      `few_shot + 1` of a seed-0 sample; the question itself is never shown). `from_preset(..., dataset=)`
      fills it in from `polar_jax.data.prompts.few_shot_source`.
  """
  prompt: data.PromptConfig
  max_new_tokens: int = 50
  choice_scoring: str = "generate"
  few_shot_split: str | None = None

  def __post_init__(self):
    if not isinstance(self.prompt, data.PromptConfig):
      raise TypeError(f"TaskConfig.prompt must be a polar_jax.data.PromptConfig, got {type(self.prompt).__name__} "
                      "(use TaskConfig.from_preset('paper') for a named preset).")
    if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}.")
    if self.choice_scoring not in CHOICE_SCORINGS:
      raise ValueError(f"Unknown choice_scoring {self.choice_scoring!r}; use one of {list(CHOICE_SCORINGS)}.")
    if self.few_shot_split is not None:
      _parse_split(self.few_shot_split)
    if self.prompt.few_shot > 0 and self.few_shot_split is None:
      raise ValueError(f"Prompt {self.prompt.name!r} asks for {self.prompt.few_shot} few-shot examples, so "
                       "few_shot_split='<dataset>:<split>' is needed (or TaskConfig.from_preset(..., dataset=...)).")

  @classmethod
  def from_preset(cls, name: str, *, max_new_tokens: int = 50, choice_scoring: str = "generate",
                  dataset: str | None = None, few_shot_split: str | None = None, **prompt_overrides) -> TaskConfig:
    """A task from a prompt preset name (`polar_jax.data.PRESETS`), e.g. `from_preset("free_prefix",
    max_new_tokens=16)`; `prompt_overrides` replace preset fields (`few_shot=3`), and `dataset` picks the
    few-shot source for that dataset when none is given."""
    prompt = data.get_preset(name, **prompt_overrides)
    if prompt.few_shot > 0 and few_shot_split is None and dataset is not None:
      few_shot_split = ":".join(few_shot_source(dataset))
    return cls(prompt, max_new_tokens=max_new_tokens, choice_scoring=choice_scoring, few_shot_split=few_shot_split)

  def to_json(self) -> dict[str, Any]:
    prompt = dataclasses.asdict(self.prompt)
    prompt["chat_template_kwargs"] = dict(self.prompt.chat_template_kwargs)
    return {"prompt": prompt, "max_new_tokens": self.max_new_tokens, "choice_scoring": self.choice_scoring,
            "few_shot_split": self.few_shot_split}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> TaskConfig:
    return cls(data.PromptConfig(**obj["prompt"]), max_new_tokens=obj["max_new_tokens"],
               choice_scoring=obj["choice_scoring"], few_shot_split=obj.get("few_shot_split"))


def _parse_split(spec: str) -> tuple[str, str]:
  dataset, sep, split = str(spec).partition(":")
  if not sep or not dataset or not split:
    raise ValueError(f"few_shot_split must look like '<dataset>:<split>' (e.g. 'gsm8k:train'), got {spec!r}.")
  return dataset, split


# --- inputs ---------------------------------------------------------------------------------------------------


def _as_program(p: Any, depth: int, where: str) -> Program:
  if isinstance(p, Program):
    if p.depth != depth:
      raise ProgramError(f"{where}: program {p.compact()} is for a {p.depth}-layer model, but this model has "
                         f"{depth} layers.")
    return p
  try:
    return Program(p, depth)
  except ProgramError as e:
    raise ProgramError(f"{where}: {e}") from None


def _is_id_list(x: Any) -> bool:
  if isinstance(x, np.ndarray):
    return x.ndim == 1 and x.dtype.kind in "iu"
  return isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_int(i) for i in x)


def _is_pair(x: Any) -> bool:
  return (isinstance(x, (list, tuple)) and len(x) == 2 and _is_int(x[0])
          and isinstance(x[1], (Program, list, tuple, np.ndarray)))


def normalize_pairs(examples: Sequence[data.Example], programs: Any, depth: int) -> list[tuple[int, Program]]:
  """(example index, Program) pairs from one program for all, one per example, or explicit pairs."""
  if not examples:
    raise ValueError("No examples given: pass a non-empty list of polar_jax.data.Example (load_split(...)).")
  if isinstance(programs, Program) or _is_id_list(programs):
    program = _as_program(programs, depth, "the program")
    return [(i, program) for i in range(len(examples))]
  programs = list(programs)
  if programs and all(_is_pair(x) for x in programs):
    pairs = []
    for j, (i, p) in enumerate(programs):
      if not 0 <= int(i) < len(examples):
        raise ValueError(f"Pair {j} refers to example {int(i)}, but only {len(examples)} examples were given.")
      pairs.append((int(i), _as_program(p, depth, f"pair {j} (question {examples[int(i)].id})")))
    return pairs
  if len(programs) != len(examples):
    raise ValueError(f"Got {len(programs)} programs for {len(examples)} examples: pass one program per example, "
                     "a single program for all, or (example index, program) pairs.")
  return [(i, _as_program(p, depth, f"program {i} (question {examples[i].id})")) for i, p in enumerate(programs)]


class _Prompts:
  """Prompt token ids per example index, rendered once (few-shot examples loaded once)."""

  def __init__(self, model, examples: Sequence[data.Example], task: TaskConfig):
    self.model, self.examples, self.task = model, examples, task
    self.few_shot: list[data.Example] = []
    if task.prompt.few_shot > 0:
      dataset, split = _parse_split(task.few_shot_split)
      self.few_shot = data.load_split(dataset, split, limit=task.prompt.few_shot + 1, seed=0)
    self._ids: dict[int, list[int]] = {}

  def ids(self, index: int) -> list[int]:
    if index not in self._ids:
      cfg = self.task.prompt
      text = data.render_prompt(self.examples[index], cfg, self.model.tokenizer, self.few_shot)
      # Raw prompts get the tokenizer's BOS, as the release runs them; chat templates write their own.
      ids = self.model.tokenizer.encode(text, add_special_tokens=not cfg.use_chat_template)
      if not ids:
        raise ValueError(f"The prompt of question {self.examples[index].id!r} is empty after tokenization.")
      self._ids[index] = ids
    return self._ids[index]


def prompt_ids(model, examples: Sequence[data.Example], task: TaskConfig) -> list[list[int]]:
  """The token ids `run_programs` feeds the model for each example (template, few-shot turns, BOS rule)."""
  prompts = _Prompts(model, examples, task)
  return [prompts.ids(i) for i in range(len(examples))]


# --- one batch --------------------------------------------------------------------------------------------------


def _generate_batch(executor: Executor, prompts: _Prompts, batch: list[tuple[int, Program]], task: TaskConfig,
                    temperature: float, seed: int) -> list[tuple]:
  cfg = task.prompt
  stop = StopRule(**data.device_stop_kwargs(cfg.answer_format, cfg.assistant_prefix))
  result = executor.generate([prompts.ids(i) for i, _ in batch], [p for _, p in batch], task.max_new_tokens,
                             stop=stop, temperature=temperature, seed=seed)
  out = []
  for row, (i, _) in enumerate(batch):
    text = result.texts[row]
    answer, correct = data.score_generation(text, prompts.examples[i], cfg.answer_format,
                                            assistant_prefix=cfg.assistant_prefix)
    out.append((text, answer, correct, int(result.layers_executed[row]), int(result.num_generated[row]),
                cfg.answer_format))
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


def _loglik_batch(executor: Executor, prompts: _Prompts, batch: list[tuple[int, Program]]) -> list[tuple]:
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
    out.append((example.choices[best], letter, letter == example.answer, len(program) * len(example.choices), 0,
                LOGLIK_FORMAT))
  return out


# --- the run loop -----------------------------------------------------------------------------------------------


def _iter_runs(model, examples, pairs: list[tuple[int, Program]], task: TaskConfig, *, temperature: float,
               seed: int, max_batch: int, progress: bool | str, executor: Executor | None,
               per_question: bool = False) -> Iterator[list[tuple[int, RunRecord]]]:
  """Yields, batch by batch, (pair index, record) for every pair."""
  if executor is None:
    executor = executor_for(model)
  elif executor.model is not model:
    raise ValueError("The executor given runs another model; pass executor=None or one built for this model.")
  if not _is_int(max_batch) or max_batch < 1:
    raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}.")
  prompts = _Prompts(model, examples, task)
  loglik = [task.choice_scoring == "loglik" and examples[i].is_multiple_choice for i, _ in pairs]
  # Similar prompt lengths batch together (less left padding); plan_batches keeps this order within a program.
  order = sorted(range(len(pairs)), key=lambda j: (loglik[j], len(prompts.ids(pairs[j][0])), j))
  batches = []
  for kind in (False, True):
    group = [j for j in order if loglik[j] == kind]
    plan = plan_batches([(pairs[j][0], pairs[j][1].ids) for j in group], max_batch, per_question=per_question)
    batches += [[group[k] for k in b] for b in plan]
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=len(pairs), desc=progress if isinstance(progress, str) else "run_programs", unit="run")
  try:
    for number, batch in enumerate(batches):
      start = time.perf_counter()
      rows = [pairs[j] for j in batch]
      if loglik[batch[0]]:
        scored = _loglik_batch(executor, prompts, rows)
      else:
        scored = _generate_batch(executor, prompts, rows, task, temperature,
                                 (int(seed) * 1_000_003 + number) % (2 ** 31 - 1))
      share = (time.perf_counter() - start) / len(batch)
      yield [(j, RunRecord(examples[i].id, program.ids, text, answer, bool(correct), layers, tokens, share, fmt))
             for j, (i, program), (text, answer, correct, layers, tokens, fmt) in zip(batch, rows, scored)]
      if bar is not None:
        bar.update(len(batch))
  finally:
    if bar is not None:
      bar.close()


def run_programs(model, examples: Sequence[data.Example], programs: Any, task: TaskConfig, *,
                 temperature: float = 0.0, seed: int = 0, max_batch: int = 32, progress: bool | str = False,
                 executor: Executor | None = None, per_question: bool = False) -> list[RunRecord]:
  """Runs (question, program) pairs and scores them; returns one record per pair, in input order.

  Args:
    model: a loaded `polar_jax.models.Model`.
    examples: the questions.
    programs: one Program (or id list) per example, a single one for all, or (example index, Program) pairs.
    task: prompt, token budget and multiple-choice scoring.
    temperature: 0 for greedy decoding; > 0 samples (`seed` and the batch number seed each batch).
    max_batch: rows per device batch (pairs sharing a program are packed first, `plan_batches`).
    progress: show a tqdm bar (a string is its label).
    executor: reuse an executor (default: the model's shared one, so compiles are reused).
    per_question: never batch two questions together (batch shapes, and so float rounding, then do not depend
      on which other questions are pending: what a search needs to reproduce itself exactly after a restart).
  """
  pairs = normalize_pairs(examples, programs, model.config.num_layers)
  out: list[RunRecord | None] = [None] * len(pairs)
  for batch in _iter_runs(model, examples, pairs, task, temperature=temperature, seed=seed, max_batch=max_batch,
                          progress=progress, executor=executor, per_question=per_question):
    for j, record in batch:
      out[j] = record
  return out  # type: ignore[return-value]


# --- evaluating one program -------------------------------------------------------------------------------------


def read_records(path: str | os.PathLike) -> list[RunRecord]:
  """Reads a records.jsonl strictly: a bad line or a repeated id raises ValueError naming `file:line`."""
  records, seen = [], {}
  with open(path, encoding="utf-8") as fh:
    for number, line in enumerate(fh, 1):
      if not line.strip():
        continue
      try:
        record = RunRecord.from_json(json.loads(line))
      except ValueError as e:  # json.JSONDecodeError is a ValueError.
        raise ValueError(f"{path}:{number}: not a valid run record ({e}). Fix or delete that line to resume, "
                         "or use another out_dir.") from None
      if record.id in seen:
        raise ValueError(f"{path}:{number}: question {record.id!r} already has a record (line {seen[record.id]}).")
      seen[record.id] = number
      records.append(record)
  return records


def summarize(records: Sequence[RunRecord]) -> dict[str, Any]:
  """Accuracy, executed layers, generated tokens and throughput over records."""
  n = len(records)
  layers = sum(r.layers for r in records)
  tokens = sum(r.generated_tokens for r in records)
  seconds = sum(r.seconds for r in records)
  correct = sum(r.correct for r in records)
  return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
          "mean_layers": layers / n if n else 0.0, "mean_layers_per_token": layers / tokens if tokens else None,
          "mean_generated_tokens": tokens / n if n else 0.0, "seconds": seconds,
          "questions_per_s": n / seconds if seconds > 0 else None,
          "tokens_per_s": tokens / seconds if seconds > 0 else None,
          "answer_format": "+".join(sorted({r.answer_format for r in records}))}


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  os.replace(tmp, path)


def evaluate_program(model, examples: Sequence[data.Example], task: TaskConfig, program: Any = None, *,
                     out_dir: str | os.PathLike | None = None, max_batch: int = 32, progress: bool | str = True,
                     temperature: float = 0.0, seed: int = 0,
                     info: Mapping[str, Any] | None = None) -> tuple[list[RunRecord], dict[str, Any]]:
  """Runs one program (default: full depth) on every example; returns (records in example order, summary).

  Args:
    info: dataset facts to put in the summary (e.g. {"dataset": "gsm8k", "split": "test"}).
    out_dir: if set, records.jsonl (appended per batch, resumed: questions already there are skipped) and
      summary.json are written there. Records there must come from the same program.
    Other arguments as in `run_programs`.

  Summary keys: the `info` entries, n, correct, accuracy, mean_layers (per question), mean_layers_per_token,
  mean_generated_tokens, seconds (summed record shares), questions_per_s, tokens_per_s, answer_format, model,
  depth, program (compact form), program_length, prompt (preset name), max_new_tokens, choice_scoring,
  temperature, seed, resumed (records read back from out_dir), compiles (executor traces in this call),
  wall_seconds (this call).
  """
  wall = time.perf_counter()
  depth = model.config.num_layers
  if not examples:
    raise ValueError("No examples given: pass a non-empty list of polar_jax.data.Example (load_split(...)).")
  program = Program.full(depth) if program is None else _as_program(program, depth, "evaluate_program")
  ids = [ex.id for ex in examples]
  if len(set(ids)) != len(ids):
    dup = next(i for i in ids if ids.count(i) > 1)
    raise ValueError(f"Question id {dup!r} occurs more than once in examples; ids key the records.")
  done: dict[str, RunRecord] = {}
  fh = None
  if out_dir is not None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORDS_FILE
    if path.exists():
      for record in read_records(path):
        if record.program != program.ids:
          raise ValueError(f"{path} holds records of program {list(record.program)} (question {record.id!r}), not "
                           f"{program.compact()!r}; use another out_dir for another program.")
        done[record.id] = record
    fh = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  resumed = sum(i in done for i in ids)
  todo = [ex for ex in examples if ex.id not in done]
  executor = executor_for(model)
  compiles = executor.compiles
  try:
    if todo:
      for batch in _iter_runs(model, todo, [(i, program) for i in range(len(todo))], task, temperature=temperature,
                              seed=seed, max_batch=max_batch, progress=progress, executor=executor):
        for _, record in batch:
          done[record.id] = record
          if fh is not None:
            fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        if fh is not None:
          fh.flush()
          os.fsync(fh.fileno())
  finally:
    if fh is not None:
      fh.close()
  records = [done[i] for i in ids]
  summary = {**(info or {}), **summarize(records), "model": model.name, "depth": depth,
             "program": program.compact(), "program_length": len(program), "prompt": task.prompt.name,
             "max_new_tokens": task.max_new_tokens, "choice_scoring": task.choice_scoring,
             "temperature": float(temperature), "seed": int(seed), "resumed": resumed,
             "compiles": executor.compiles - compiles, "wall_seconds": time.perf_counter() - wall,
             "task": task.to_json()}
  if out_dir is not None:
    _write_json(pathlib.Path(out_dir) / SUMMARY_FILE, summary)
  return records, summary
