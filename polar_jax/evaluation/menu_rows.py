"""Result rows read from the program menu's dense matrix (`polar_jax.menu`): exact, nothing is run again.

- `best_fixed_program`: the one menu program with the highest training accuracy (ties: shorter), chosen on the
  matrix's train rows and applied to every test question. Deployable.
- `menu_oracle` (ORACLE): a question counts when any menu program answers it correctly.

The matrix's test rows are the pipeline's test questions (the menu stage ran every menu program on them), so
these rows are the same runs the pipeline would make; seconds are not re-measured (None); layers per
question are the matrix's where the pair was generated (unknown where one prefill decided it).
"""

from __future__ import annotations

from typing import Any, Sequence

from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome

MENU_METHODS = ("best_fixed_program", "menu_oracle")


def menu_runs(matrix, examples: Sequence[Any], *, test_set: str) -> list[MethodRun]:
  """The menu's rows for one test set; [] when the matrix lacks some of its questions."""
  from polar_jax.menu import lab  # pylint: disable=import-outside-toplevel
  test = lab.scoring_view(matrix)
  row_of = {q.id: i for i, q in enumerate(test.questions)}
  if any(ex.id not in row_of for ex in examples):
    return []
  fixed = lab.best_fixed_index(matrix.fit_view("train"))
  oracle = lab.oracle_choice(test)
  runs = []
  for method, label, kind, choose in (
      ("best_fixed_program", f"Best fixed menu program (#{fixed}, chosen on train)", "deployable", lambda i: fixed),
      ("menu_oracle", f"Menu oracle: any of {matrix.n_programs} menu programs correct (ORACLE)", "oracle",
       lambda i: int(oracle[i]))):
    outcomes = []
    for ex in examples:
      i = row_of[ex.id]
      j = choose(i)
      tokens = int(test.generated_tokens[i, j])
      cand = Candidate(program=matrix.programs[j], answer=str(test.answer[i, j]) if test.answer_known[i, j] else None,
                       correct=bool(test.correct[i, j]),
                       layers=int(test.layers[i, j]) if tokens >= 0 else None,  # one prefill is not the cost
                       generated_tokens=tokens if tokens >= 0 else None, source="menu")
      outcomes.append(QuestionOutcome(ex.id, int(ex.level), (cand,)))
    info = {"program_index": fixed, "program": list(matrix.programs[fixed])} if method == "best_fixed_program" else {}
    runs.append(MethodRun(method=method, label=label, kind=kind, test_set=test_set, outcomes=tuple(outcomes),
                          info={**info, "from": "menu matrix"}))
  return runs
