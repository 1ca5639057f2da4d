"""The offline selection lab: fit and score selectors on a menu matrix exactly, without the LLM.

  python -m polar_jax.lab                                  # the shipped matrix of the embedded default
  python -m polar_jax.lab --matrix=/tmp/polar_default/menu --out=/tmp/lab.json

Prints the table (pass@1 with 95% Wilson intervals; against full depth the paired difference with its 95%
cluster-bootstrap interval and McNemar's exact p; layers per token) and writes JSON (`--out`):
  {"n_test", "n_programs", "methods": {name: {"pass1", "ci95", "diff_vs_full", "diff_ci95", "mcnemar_p",
   "layers_per_token", "deployable", ...}}}
Selectors are fitted on the matrix's train rows and tuned on its validation rows; only the scorer reads test
outcomes (`polar_jax.menu.matrix`).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

from polar_jax.errors import user_errors

SHIPPED = pathlib.Path(__file__).resolve().parent / "menu" / "shipped" / "smollm2_arith_v2"

_MATRIX = flags.DEFINE_string("matrix", None, "A menu directory (a workdir's menu/); default: the shipped one.")
_OUT = flags.DEFINE_string("out", None, "Write the table as JSON here.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
_N_BOOT = flags.DEFINE_integer("n_boot", 10000, "Bootstrap resamples.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from polar_jax.menu import lab  # pylint: disable=import-outside-toplevel
  from polar_jax.menu.matrix import MenuMatrix  # pylint: disable=import-outside-toplevel
  try:
    matrix = MenuMatrix.load(_MATRIX.value or SHIPPED)
    table = lab.lab_table(matrix, lab.all_selectors(), seed=_SEED.value, n_boot=_N_BOOT.value)
  except user_errors() as e:
    print(f"polar_jax.lab: error: {e}", file=sys.stderr)
    return 2
  print(lab.markdown(table))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(table, indent=2))
  return 0


if __name__ == "__main__":
  app.run(main)
