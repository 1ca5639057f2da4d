"""math-verify behind a hard wall-clock timeout: a persistent worker process that is killed when a check hangs.

math-verify's own timeout uses SIGALRM: it raises in non-main threads and cannot interrupt C-level work (a
sympy power tower). A search or evaluation loop must never hang on one odd answer, so every symbolic check runs
in a separate process (`verify_worker.py`, JSON lines over pipes, no pickle) and the parent waits at most
`timeout_s`; on timeout the worker is killed, the check counts as incorrect, and the next check starts a fresh
worker. The worker is started lazily on the first symbolic check (about half a second to import math_verify)
and then reused; plain numeric answers never reach it (see `answers.is_correct`).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pathlib
import select
import subprocess
import sys
import tempfile
import threading

_WORKER = pathlib.Path(__file__).with_name("verify_worker.py")
STARTUP_TIMEOUT_S = 120.0


@dataclasses.dataclass
class VerifierStats:
  """Counters, for tests and benchmarks: how often the worker was used, timed out, and (re)started."""
  checks: int = 0
  timeouts: int = 0
  errors: int = 0
  starts: int = 0


class VerifierError(RuntimeError):
  """The math-verify worker could not be started at all."""


class MathVerifier:
  """One math-verify worker process; thread-safe (checks are serialized)."""

  def __init__(self):
    self._proc: subprocess.Popen | None = None
    self._owner_pid = os.getpid()  # A forked child must not share (or reap) its parent's worker.
    self._stderr = None
    self._lock = threading.Lock()
    self._next_id = 0
    self.stats = VerifierStats()

  def _start(self) -> subprocess.Popen:
    self._stderr = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=self._stderr, text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    self.stats.starts += 1
    line = self._read_line(proc, STARTUP_TIMEOUT_S)
    if line is None or not json.loads(line).get("ready"):
      self._kill(proc)
      self._stderr.seek(0)
      raise VerifierError(f"The math-verify worker ({_WORKER}) did not start: {self._stderr.read()[-2000:]!r}. "
                          "Check that `math-verify` is installed (`pip install math-verify`).")
    return proc

  @staticmethod
  def _read_line(proc: subprocess.Popen, timeout_s: float) -> str | None:
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
      return None
    line = proc.stdout.readline()
    return line or None  # "" means the worker died.

  @staticmethod
  def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
      if stream is not None:
        stream.close()

  def check(self, gold: str, pred: str, timeout_s: float) -> bool:
    """True if math-verify proves `pred` equal to `gold`; False if not, on error, or after `timeout_s`."""
    with self._lock:
      if self._owner_pid != os.getpid():
        self._proc, self._owner_pid = None, os.getpid()
      if self._proc is None or self._proc.poll() is not None:
        self._proc = self._start()
      self.stats.checks += 1
      self._next_id += 1
      request = {"id": self._next_id, "gold": gold, "pred": pred}
      try:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
      except (BrokenPipeError, OSError):
        self._restart_after_failure()
        return False
      line = self._read_line(self._proc, timeout_s)
      if line is None:
        self.stats.timeouts += 1
        self._restart_after_failure()
        return False
      reply = json.loads(line)
      if reply.get("id") != self._next_id:  # Cannot happen with one request in flight; stay safe anyway.
        self._restart_after_failure()
        return False
      if "error" in reply:
        self.stats.errors += 1
      return bool(reply.get("correct"))

  def _restart_after_failure(self) -> None:
    """Kills the worker; the next check starts a new one (a hung sympy call cannot be interrupted otherwise)."""
    if self._proc is not None:
      self._kill(self._proc)
      self._proc = None

  def close(self) -> None:
    with self._lock:
      if self._owner_pid == os.getpid():
        self._restart_after_failure()


_VERIFIER = MathVerifier()
atexit.register(_VERIFIER.close)


def default_verifier() -> MathVerifier:
  """The process-wide verifier that `answers.is_correct` uses."""
  return _VERIFIER
