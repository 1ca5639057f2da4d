"""Base accuracy: the full-depth model on every math benchmark, per prompt / answer-format variant.

  python benchmarks/base_accuracy.py --n 200 --out base.json
  python benchmarks/base_accuracy.py --n 16 --datasets arith_level1,gsm8k --presets free_prefix

For each dataset (its test split; `--n` seeded questions, or all when fewer) and each prompt preset, runs the
full program with `polar_jax.program_eval.evaluate_program` (greedy, batched, on-device stop rules) and records
n, accuracy, mean generated tokens and questions/s. Multiple-choice sets (MathQA, MMLU-STEM) are also scored by
option log-likelihood (`choice_scoring="loglik"`: one prefill per option, no decoding) under each preset's prompt.
The arithmetic ladder (`arith_level1..5`) is a CONTROLLED SYNTHETIC BENCHMARK and is labelled so in the table.

Presets (`polar_jax.data.PRESETS`): `paper` (the paper's prompt, `\\boxed{}` answers), `paper_prefix` (the same with
the assistant prefix `The answer is \\boxed{`), `free` (the bare question, last number of the reply),
`free_prefix` (the bare question, prefix `The answer is `, the number that follows).

Token budgets (`--max-new-tokens` overrides both): 50 for presets without a prefix (the paper's budget: a
free-form reply may reason before its answer). 16 with a prefix: there the answer comes first and the on-device
stop rule ends a row as soon as the box closes or the number is complete, so the cap only bounds rows that never
do; in a batch such a row holds every row to the cap. Measured with the SmolLM2 tokenizer on 200 questions per
set: the gold answer plus its closing `}.` takes at most 8 tokens on GSM8K, SVAMP, ASDiv and the ladder, 13 on
MAWPS, 2 on MathQA / MMLU-STEM, and more than 16 on 4 of 200 MATH level-1 questions (LaTeX answers, at most 23).

questions/s is n over the summed batch times, compiles included (each new prompt-length bucket compiles once per
process; `compiles` per row says how many), on whatever else the machine was running (the load average is
recorded). Output: a Markdown table on stdout and JSON (`--out`, rewritten after every row): per dataset x preset
x scoring the row's numbers, plus the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import machine

DATASETS = ("gsm8k", "math_level1", "svamp", "asdiv", "mawps", "mawps_addsub", "mawps_singleop", "mawps_singleeq",
            "mawps_multiarith", "mathqa", "mmlu_stem", "arith_level1", "arith_level2", "arith_level3", "arith_level4",
            "arith_level5")
PRESETS = ("paper", "paper_prefix", "free", "free_prefix")
SYNTHETIC_LABEL = "controlled synthetic benchmark"


def default_budget(preset: str) -> int:
  from polar_jax.data import get_preset
  return 16 if get_preset(preset).assistant_prefix else 50


def run_row(model, dataset: str, split: str, preset: str, scoring: str, n: int, max_new_tokens: int | None,
            max_batch: int, records_dir: str | None) -> dict:
  from polar_jax.data import load_split
  from polar_jax.program_eval import TaskConfig, evaluate_program

  examples = load_split(dataset, split, limit=n)
  budget = max_new_tokens if max_new_tokens is not None else default_budget(preset)
  task = TaskConfig.from_preset(preset, max_new_tokens=budget, choice_scoring=scoring, dataset=dataset)
  label = f"{dataset}/{preset}" + ("/loglik" if scoring == "loglik" else "")
  out_dir = os.path.join(records_dir, label.replace("/", "-")) if records_dir else None
  _, summary = evaluate_program(model, examples, task, out_dir=out_dir, max_batch=max_batch, progress=label,
                                info={"dataset": dataset, "split": split})
  row = {"dataset": dataset, "split": split, "preset": preset, "choice_scoring": scoring,
         "synthetic": dataset.startswith("arith_level")}
  row.update({k: summary[k] for k in ("n", "accuracy", "mean_generated_tokens", "questions_per_s", "tokens_per_s",
                                      "mean_layers", "answer_format", "max_new_tokens", "seconds", "compiles")})
  if examples[0].choices:
    row["chance"] = sum(1 / len(ex.choices) for ex in examples) / len(examples)
  return row


def row_label(row: dict) -> str:
  label = row["dataset"]
  if row["choice_scoring"] == "loglik":
    label += " (log-likelihood)"
  if row["synthetic"]:
    label += " (synthetic)"
  if "chance" in row:
    label += f", chance {100 * row['chance']:.1f}%"
  return label


def markdown(rows: list[dict], presets: list[str]) -> str:
  """Rows: dataset (and scoring); columns: presets; cells: accuracy / mean generated tokens / questions per s."""
  table: dict[str, dict] = {}
  for row in rows:
    table.setdefault(row_label(row), {"n": row["n"]})[row["preset"]] = row
  lines = ["| dataset | n | " + " | ".join(presets) + " |", "|---|---:|" + "---:|" * len(presets)]
  for label, cells in table.items():
    out = []
    for preset in presets:
      r = cells.get(preset)
      out.append("" if r is None else
                 f"{100 * r['accuracy']:.1f}% / {r['mean_generated_tokens']:.1f} / {r['questions_per_s'] or 0:.2f}")
    lines.append(f"| {label} | {cells['n']} | " + " | ".join(out) + " |")
  lines.append("")
  lines.append("Cells: accuracy / mean generated tokens / questions per second (full depth, greedy). "
               f"arith_level1..5 (synthetic): the arithmetic ladder, a {SYNTHETIC_LABEL}.")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="smollm2-135m-instruct", help="any polar_jax.models.load_model name or path")
  ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated catalog names")
  ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated prompt presets")
  ap.add_argument("--choice-scoring", default="generate,loglik",
                  help="for multiple-choice sets: generate, loglik or both (non-multiple-choice sets always generate)")
  ap.add_argument("--split", default="test")
  ap.add_argument("--n", type=int, default=200, help="questions per dataset (a seeded sample; all if fewer)")
  ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 16 with an assistant prefix, else 50")
  ap.add_argument("--max-batch", type=int, default=32)
  ap.add_argument("--records-dir", default=None,
                  help="keep per-question records here (one folder per row; a rerun resumes from them)")
  ap.add_argument("--out", default=None, help="JSON output path")
  args = ap.parse_args()

  from polar_jax.data import catalog, get_preset
  from polar_jax.models import load_model

  datasets = [d for d in args.datasets.split(",") if d]
  presets = [p for p in args.presets.split(",") if p]
  scorings = [s for s in args.choice_scoring.split(",") if s]
  for d in datasets:
    catalog.dataset_spec(d)  # Unknown names fail here, before the model loads.
  for p in presets:
    get_preset(p)
  if not set(scorings) <= {"generate", "loglik"} or not scorings:
    ap.error(f"--choice-scoring takes generate and/or loglik, got {args.choice_scoring!r}")

  result = {"command": "python " + " ".join(sys.argv), "model": args.model, "split": args.split,
            "n_requested": args.n, "machine": machine(), "rows": []}
  result["machine"]["load_average_at_start"] = result["machine"].pop("load_average")
  start = time.time()
  model = load_model(args.model)
  result["model_load_seconds"] = time.time() - start
  for dataset in datasets:
    mc = dataset in ("mathqa", "mmlu_stem")
    for preset in presets:
      for scoring in (scorings if mc else ["generate"]):
        row = run_row(model, dataset, args.split, preset, scoring, args.n, args.max_new_tokens, args.max_batch,
                      args.records_dir)
        result["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
        result["seconds"] = time.time() - start
        result["table"] = markdown(result["rows"], presets)
        if args.out:
          with open(args.out + ".tmp", "w") as fh:
            json.dump(result, fh, indent=2)
          os.replace(args.out + ".tmp", args.out)
  print(result["table"])


if __name__ == "__main__":
  main()
