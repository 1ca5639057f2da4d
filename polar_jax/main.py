"""Entry point: `python -m polar_jax.main --config=configs/default.py --workdir=DIR`."""

import sys


def run():
  print("polar_jax: the end-to-end pipeline is not built yet.")
  return 0


if __name__ == "__main__":
  sys.exit(run())
