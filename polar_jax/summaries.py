"""TensorBoard scalars of a run (light: standard library; tensorboardX only when installed).

Every stage writes its own event folder under the workdir: `search/tensorboard` (valid-program shares and
program runs per second as questions finish), `predictor/tensorboard` (the training and validation curves),
`evaluate/tensorboard` (per test set and method: pass@1, layers per token, seconds per question, and the
results table as text), so `tensorboard --logdir=<workdir>` shows the whole run side by side.

The event files are written by `tensorboardX` (no TensorFlow), which is optional: install the `tensorboard`
extra (`pip install -e ".[tensorboard]"`). Without it `create_writer` returns a writer that does nothing, and
the first such call in a process says once that TensorBoard summaries are off; the run itself is unchanged.
"""

from __future__ import annotations

import math
import pathlib
import re
import sys
from typing import Any, Iterable, Mapping, Protocol

_OFF_SAID = False


class ScalarWriter(Protocol):
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...
  def write_text(self, step: int, texts: Mapping[str, str]) -> None: ...
  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...
  def flush(self) -> None: ...
  def close(self) -> None: ...


def tag(*parts: str) -> str:
  """A TensorBoard tag from free-form parts ("arith (ood)", "x@1") -> "arith_ood/x_1" (TensorBoard's characters)."""
  return "/".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p).strip("_") or "_" for p in parts)


class TensorBoardWriter:
  """Scalars and text to TensorBoard event files in `logdir` (tensorboardX's SummaryWriter)."""

  def __init__(self, logdir: str | pathlib.Path, summary_writer_cls):
    pathlib.Path(logdir).mkdir(parents=True, exist_ok=True)
    self.logdir = str(logdir)
    self._writer = summary_writer_cls(self.logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for name, value in scalars.items():
      if value is not None and math.isfinite(float(value)):
        self._writer.add_scalar(name, float(value), int(step))

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    for name, text in texts.items():
      self._writer.add_text(name, text, int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Numeric hyperparameters as `hparams/<name>` scalars at step 0, and all of them as one text table."""
    numeric = {f"hparams/{k}": v for k, v in hparams.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    self.write_scalars(0, numeric)
    rows = "\n".join(f"| {k} | {v} |" for k, v in hparams.items())
    self.write_text(0, {"hparams": f"| name | value |\n|---|---|\n{rows}"})

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class NullWriter:
  """Writes nothing (TensorBoard summaries off, or a process other than the lead one)."""

  logdir = None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    del step, texts

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def create_writer(logdir: str | pathlib.Path, *, enabled: bool = True) -> ScalarWriter:
  """A TensorBoard writer for `logdir` when tensorboardX imports (and `enabled`), else a `NullWriter`."""
  global _OFF_SAID
  if not enabled:
    return NullWriter()
  try:
    summary_writer_cls = _summary_writer_class()
  except ImportError:
    if not _OFF_SAID:
      _OFF_SAID = True
      print("[polar_jax] TensorBoard summaries are off: tensorboardX is not installed "
            "(pip install -e \".[tensorboard]\" to write them).", file=sys.stderr, flush=True)
    return NullWriter()
  return TensorBoardWriter(logdir, summary_writer_cls)


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch. tensorboardX imports torch at import time when it is
  installed, only to accept torch tensors; that takes seconds, and torch is no runtime dependency here (the
  values written are floats). `import torch` elsewhere works as before afterwards."""
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # an `import torch` now raises ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if block and "torch" in sys.modules and sys.modules["torch"] is None:
      del sys.modules["torch"]
  return SummaryWriter


class SearchScalars:
  """The search's scalars as its questions finish (step = questions finished, earlier runs' included).

  `search/questions_with_valid_program`: share of the finished questions with at least one valid program;
  `search/valid_program_share`: valid programs / programs the search scored, pooled over those questions;
  `search/evaluations_per_question`: mean programs scored per question; `search/evaluations_per_s`: program
  runs per second of this process since the stage started. `finish` adds the papers' findings
  (`search.summarize`'s shares) at the last step. Records are duck-typed (`valid`, `invalid`, `evaluations`).
  """

  def __init__(self, logdir: str | pathlib.Path, earlier: Iterable[Any] = (), *, enabled: bool = True):
    self.writer = create_writer(logdir, enabled=enabled)
    self.questions = self.with_valid = self.valid = self.invalid = self.evaluations = 0
    for rec in earlier:
      self._count(rec)

  def _count(self, rec: Any) -> None:
    self.questions += 1
    self.with_valid += bool(rec.valid)
    self.valid += len(rec.valid)
    self.invalid += len(rec.invalid)
    self.evaluations += int(rec.evaluations)

  def record(self, rec: Any, *, program_runs: int, seconds: float) -> None:
    """One more finished question; `program_runs` run in `seconds` by this process so far."""
    self._count(rec)
    scored = self.valid + self.invalid
    self.writer.write_scalars(self.questions, {
        "search/questions_with_valid_program": self.with_valid / self.questions,
        "search/valid_program_share": self.valid / scored if scored else None,
        "search/evaluations_per_question": self.evaluations / self.questions,
        "search/evaluations_per_s": program_runs / seconds if seconds > 0 else None})

  def finish(self, summary: Mapping[str, Any]) -> None:
    keys = ("base_accuracy", "oracle_accuracy", "base_correct_with_shorter_valid", "base_wrong_corrected",
            "base_wrong_corrected_shorter")
    self.writer.write_scalars(self.questions, {f"search/{k}": summary.get(k) for k in keys})
    self.writer.close()


def write_evaluation(logdir: str | pathlib.Path, results: Mapping[str, Any], markdown: str | None = None) -> None:
  """The evaluation's scalars at step 0: per test set and method (its id) `evaluate_<set>/pass_at_1/<method>`
  (the oracle share for an ORACLE row), `.../layers_per_token/...`, `.../seconds_per_question/...`; and the
  Markdown results table as text (`evaluate/results`)."""
  writer = create_writer(logdir)
  for row in results.get("rows", ()):
    if row.get("level") != "all":
      continue
    group = f"evaluate {row['test_set']}"
    value = row.get("oracle") if row.get("kind") == "oracle" else row.get("pass@1")
    writer.write_scalars(0, {tag(group, "pass_at_1", row["method"]): value,
                             tag(group, "layers_per_token", row["method"]): row.get("layers_per_token"),
                             tag(group, "seconds_per_question", row["method"]): row.get("seconds_per_question")})
  if markdown:
    writer.write_text(0, {"evaluate/results": markdown})
  writer.close()
