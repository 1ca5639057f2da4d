"""The math-verify worker process: reads JSON requests on stdin, writes one JSON verdict per line on stdout.

Run by `polar_jax.data.verifier` as `python verify_worker.py` (by file path, so that it imports nothing from
polar_jax and starts fast). It exists because math-verify's own timeout relies on SIGALRM, which only works in
the main thread and cannot interrupt long C-level arithmetic (sympy evaluating `2^{2^{2^{30}}}`); a separate
process can always be killed. Protocol, one JSON object per line:

  -> {"ready": true}                                  once, after math_verify is imported
  <- {"id": 7, "gold": "\\frac{1}{2}", "pred": "0.5"}
  -> {"id": 7, "correct": true}                       ("error": "..." added when parsing or verifying failed)
"""

import json
import resource
import sys

# A runaway expansion should fail with MemoryError here rather than take the host's memory.
_ADDRESS_SPACE_LIMIT = 4 << 30
# math-verify's own (signal-based) limits; the parent's wall-clock kill is the hard limit.
_SOFT_TIMEOUT_S = 5


def _limit_memory() -> None:
  try:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _ADDRESS_SPACE_LIMIT if hard == resource.RLIM_INFINITY else min(_ADDRESS_SPACE_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  except (ValueError, OSError):  # Not permitted here: the parent's timeout still bounds the time.
    pass


def _as_math(text: str) -> str:
  text = text.strip().strip("$").strip()
  return f"${text}$"


def main() -> None:
  _limit_memory()
  import math_verify  # pylint: disable=import-outside-toplevel

  out = sys.stdout
  out.write(json.dumps({"ready": True}) + "\n")
  out.flush()
  for line in sys.stdin:
    if not line.strip():
      continue
    request = json.loads(line)
    reply = {"id": request.get("id"), "correct": False}
    try:
      gold = math_verify.parse(_as_math(request["gold"]), parsing_timeout=_SOFT_TIMEOUT_S)
      pred = math_verify.parse(_as_math(request["pred"]), parsing_timeout=_SOFT_TIMEOUT_S)
      if gold and pred:
        reply["correct"] = bool(math_verify.verify(gold, pred, timeout_seconds=_SOFT_TIMEOUT_S))
    except Exception as e:  # pylint: disable=broad-except  # Any failure to parse or compare is "not equal".
      reply["error"] = f"{type(e).__name__}: {e}"[:500]
    out.write(json.dumps(reply) + "\n")
    out.flush()


if __name__ == "__main__":
  main()
