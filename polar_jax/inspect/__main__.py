"""Per-question inspection of a finished run (reads the workdir's files; no model, no jax):

  python -m polar_jax.inspect --workdir=/tmp/polar_quick                 # where methods disagree with full depth
  python -m polar_jax.inspect --workdir=/tmp/polar_quick --id=arith_level11/test/483   # one question in full
  python -m polar_jax.inspect --workdir=/tmp/polar_quick --set=arith_level11 --max_questions=0   # every contested one

Without --id: per test set, every deployable and sampling method against full depth (on how many questions it
runs another program, writes another answer, is right where full depth is wrong and wrong where it is right),
then the most contested questions with the disagreeing methods' programs and answers (results.md's per-question
section, from the same files). With --id: the question's text and gold answer, every method's rank-1 program
in compact form (`0-9 [10-11]x2 12-29`) with its answer and verdict, the candidates of methods with several,
the search's valid and invalid programs (searched questions) and the menu programs' answers on it.
"""

from __future__ import annotations

import sys

from absl import app, flags

from polar_jax.errors import user_errors

_WORKDIR = flags.DEFINE_string("workdir", None, "A pipeline run's workdir (python -m polar_jax.main --workdir=...).")
_ID = flags.DEFINE_string("id", None, "A question id (e.g. arith_level11/test/483); without it, the summary.")
_SET = flags.DEFINE_string("set", None, "Only this test set (default: every test set of the evaluation).")
_MAX_QUESTIONS = flags.DEFINE_integer("max_questions", 10, "Contested questions shown per test set in the summary "
                                      "(0: all of them).")
_MAX_PROGRAMS = flags.DEFINE_integer("max_programs", 20, "Valid / invalid search programs shown with --id (0: all).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from polar_jax.inspect import per_question  # pylint: disable=import-outside-toplevel
  try:
    if not _WORKDIR.value:
      raise per_question.InspectError("--workdir is required: the workdir of a pipeline run, e.g. "
                                      "--workdir=/tmp/polar_quick.")
    if _MAX_QUESTIONS.value < 0 or _MAX_PROGRAMS.value < 0:
      raise per_question.InspectError("--max_questions and --max_programs must be >= 0 (0 shows all).")
    view = per_question.WorkdirView(_WORKDIR.value)
    if _ID.value:
      text = per_question.question_markdown(view, _ID.value, test_set=_SET.value, max_programs=_MAX_PROGRAMS.value)
    else:
      names = view.check_set(_SET.value)
      if not names:
        raise per_question.InspectError(
            f"{view.workdir} has no evaluation runs yet (evaluate/runs/ is empty): finish the pipeline's evaluate "
            "stage, or give --id=<a searched question> to see its search records.")
      text = per_question.markdown(view.per_question(names, _MAX_QUESTIONS.value))
      if not text:
        raise per_question.InspectError(f"{view.workdir}'s evaluation has no full-depth run to compare with; add "
                                        "full_depth to --config.evaluate.methods, or give --id=ID.")
  except user_errors() as e:
    print(f"polar_jax.inspect: error: {e}", file=sys.stderr)
    return 2
  print(text, end="")
  return 0


if __name__ == "__main__":
  from polar_jax.options_io import strict_flags_parser
  app.run(main, flags_parser=strict_flags_parser("polar_jax.inspect"))
