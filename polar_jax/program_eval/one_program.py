"""Evaluating one fixed program over a list of questions: records.jsonl (resumable), summary.json.

`evaluate_program` appends one JSON line per finished question to `records.jsonl` (flushed per batch, so a
killed run keeps its work) and resumes from it: questions already there are skipped. `summary.json` is
written at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from polar_jax import data
from polar_jax.program_eval.pairs import as_program
from polar_jax.records import RunRecord
from polar_jax.program_eval.runs import iter_runs
from polar_jax.program_eval.task import TaskConfig
from polar_jax.programs import Program
from polar_jax.programs.executor import executor_for

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"


def read_run_records(path: str | os.PathLike) -> list[RunRecord]:
  """Reads a records.jsonl of run records strictly: a bad line or a repeated id raises ValueError naming
  `file:line`."""
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


def summarize_runs(records: Sequence[RunRecord]) -> dict[str, Any]:
  """Accuracy, executed layers, generated tokens and throughput over run records."""
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


def _read_done(path: pathlib.Path, program: Program) -> dict[str, RunRecord]:
  """The records already in `path`, by id; they must be of `program`."""
  done = {}
  for record in read_run_records(path):
    if record.program != program.ids:
      raise ValueError(f"{path} holds records of program {list(record.program)} (question {record.id!r}), not "
                       f"{program.compact()!r}; use another out_dir for another program.")
    done[record.id] = record
  return done


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
  program = Program.full(depth) if program is None else as_program(program, depth, "evaluate_program")
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
      done = _read_done(path, program)
    fh = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  resumed = sum(i in done for i in ids)
  todo = [ex for ex in examples if ex.id not in done]
  executor = executor_for(model)
  compiles = executor.compiles
  try:
    if todo:
      for batch in iter_runs(model, todo, [(i, program) for i in range(len(todo))], task, temperature=temperature,
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
  summary = {**(info or {}), **summarize_runs(records), "model": model.name, "depth": depth,
             "program": program.compact(), "program_length": len(program), "prompt": task.prompt.name,
             "max_new_tokens": task.max_new_tokens, "choice_scoring": task.choice_scoring,
             "temperature": float(temperature), "seed": int(seed), "resumed": resumed,
             "compiles": executor.compiles - compiles, "wall_seconds": time.perf_counter() - wall,
             "task": task.to_json()}
  if out_dir is not None:
    _write_json(pathlib.Path(out_dir) / SUMMARY_FILE, summary)
  return records, summary
