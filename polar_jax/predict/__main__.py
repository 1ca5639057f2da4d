"""Programs and answers for new questions from a finished workdir (loads the model and the trained chooser):

  python -m polar_jax.predict --workdir=/tmp/polar_quick --question="What is 7 + 5?"
  python -m polar_jax.predict --workdir=/tmp/polar_quick --questions=new.jsonl --method=polar --k=3 --out=p.jsonl
  python -m polar_jax.predict --workdir=/tmp/polar_quick --list_methods

Prints, per question, the chosen program(s) in compact form (`0-9 [10-11]x2 12-29`) with the answer and reply
under each (with a gold answer, the verdict), and full depth's answer next to them (`--nofull_depth` skips it).
`--method` (repeatable) picks among what the workdir has (`--list_methods`); the default is the workdir's best
one-run chooser by its evaluation's pass@1, and the output says which and why. A jsonl line is
{"question": ..., "answer": optional gold, "id": optional, "dataset": optional few-shot source}.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging

from polar_jax.errors import user_errors

_WORKDIR = flags.DEFINE_string("workdir", None, "A pipeline run's workdir with a finished train (or menu) stage.")
_QUESTION = flags.DEFINE_multi_string("question", [], "A question (repeatable).")
_QUESTIONS = flags.DEFINE_string("questions", None, "A jsonl file: {\"question\", \"answer\" (optional gold), \"id\", "
                                 "\"dataset\"} per line.")
_METHOD = flags.DEFINE_multi_string("method", [], "A method the workdir has (repeatable; --list_methods lists them). "
                                    "Default: its best one-run chooser by the evaluation's pass@1.")
_K = flags.DEFINE_integer("k", 1, "Programs per question for polar / polar_dense (their top-k, each run).")
_FULL = flags.DEFINE_bool("full_depth", True, "Also run full depth on each question, for comparison.")
_DATASET = flags.DEFINE_string("dataset", None, "The dataset whose few-shot examples the prompts use (default: the "
                               "workdir's first dataset; a jsonl line's \"dataset\" wins).")
_OUT = flags.DEFINE_string("out", None, "Also write one JSON line per (question, method) here.")
_LIST = flags.DEFINE_bool("list_methods", False, "List the workdir's methods with their evaluation pass@1; run "
                          "nothing.")


def _pct(x) -> str:
  return "—" if x is None else f"{100 * x:.1f}%"


def _reply(text: str, limit: int = 28) -> str:
  shown = repr(text.strip("\n"))
  return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _line(name: str, run, width: int, marker: str = "") -> str:
  verdict = "" if run.correct is None else f"  correct={'yes' if run.correct else 'no'}"
  score = "" if run.score is None else f"  score={run.score:.3f}"
  return (f"  {name:<{width}}  {run.compact:<24} {len(run.program):>3} steps  answer={run.answer or '—':<8} "
          f"reply={_reply(run.text)}{verdict}{score}{marker}")


def _print_methods(predictor) -> None:
  print(f"{predictor.workdir}: methods (pass@1 pooled over its evaluation's test sets)")
  methods = predictor.methods()
  width = max(len(m["method"]) for m in methods)
  for m in methods:
    runs = "one run" if m["one_run"] or m["method"] == "full_depth" else "several runs"
    print(f"  {m['method']:<{width}}  {_pct(m['pass1']):>6}  {runs:<12}  {m['about']}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from polar_jax import predict, resources  # pylint: disable=import-outside-toplevel
  resources.enable_compilation_cache()  # before the first compile
  try:
    if not _WORKDIR.value:
      raise predict.PredictError("--workdir is required: a pipeline run's workdir, e.g. --workdir=/tmp/polar_quick.")
    predictor = predict.WorkdirPredictor(_WORKDIR.value)
    if _LIST.value:
      _print_methods(predictor)
      return 0
    questions = [predict.Question(q, dataset=_DATASET.value) for q in _QUESTION.value]
    if _QUESTIONS.value:
      questions += [q if q.dataset or not _DATASET.value else predict.Question(q.text, q.gold, q.id, _DATASET.value)
                    for q in predict.read_questions(_QUESTIONS.value)]
    if not questions:
      raise predict.PredictError("No question given: pass --question=\"What is 7 + 5?\" (repeatable) or "
                                 "--questions=FILE.jsonl.")
    methods = [predictor.check_method(m) for m in _METHOD.value]
    if not methods:
      method, why = predictor.default_method()
      methods = [method]
      print(f"method: {method} (default: {why}; --method picks another, --list_methods lists them)")
    ranked = [m for m in methods if m in predict.RANKED_METHODS]
    if _K.value != 1 and not ranked:
      raise predict.PredictError(f"--k={_K.value} ranks a predictor's programs, and no --method here has a "
                                 f"predictor ({', '.join(methods)}); add --method=polar or --method=polar_dense.")
    predictions = {m: predictor.predict(questions, m, k=_K.value if m in ranked else 1,
                                        full_depth=_FULL.value and i == 0) for i, m in enumerate(methods)}
  except user_errors() as e:
    print(f"polar_jax.predict: error: {e}", file=sys.stderr)
    return 2
  print(f"model {predictor.opts.model.name}, prompt {predictor.opts.task.preset}, {predictor.depth} layers "
        f"(full depth: 0-{predictor.depth - 1})")
  def label(m, p, j):
    return m if len(p.runs) == 1 else f"{m} #{j + 1}" if m in predict.RANKED_METHODS else f"{m} run {j + 1}"

  width = max([len("full depth")] + [len(label(m, p, j)) for m in methods for p in predictions[m]
                                     for j in range(len(p.runs))] + [len(m) for m in methods])
  first = predictions[methods[0]]
  for i, q in enumerate(questions):
    name = q.id or f"question {i + 1}"
    print(f"\n[{name}] {q.text}" + ("" if q.gold is None else f"  (gold: {q.gold})"))
    for m in methods:
      p = predictions[m][i]
      if not p.runs:
        print(f"  {m:<{width}}  (no program: the predictor decoded none for this question)")
      for j, run in enumerate(p.runs):
        marker = "  <- its answer" if len(p.runs) > 1 and j == p.chosen else ""
        print(_line(label(m, p, j), run, width, marker))
    if first[i].full_depth is not None and methods != ["full_depth"]:
      print(_line("full depth", first[i].full_depth, width))
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.write_text("".join(json.dumps(predictions[m][i].to_json(), ensure_ascii=False) + "\n"
                           for i in range(len(questions)) for m in methods), encoding="utf-8")
    print(f"\nwrote {len(questions) * len(methods)} lines to {out}")
  return 0


if __name__ == "__main__":
  from polar_jax.options_io import strict_flags_parser
  app.run(main, flags_parser=strict_flags_parser("polar_jax.predict"))
