"""Full-depth baselines: the plain model, greedy (the paper's "Base (tau=0)") and sampled ("Base (sampling)").

Sampling draws k independent generations of the full program per question at one temperature; sample j of
every question comes from one `run_programs` call with seed `program_eval.sample_seed(seed, j)` (a pair's
sample depends on that seed, its question and program only), so the first sample (what a user of
sampling would deploy, pass@1) is timed on its own and pass@k / vote@k are over the k samples.
"""

from __future__ import annotations

from typing import Any, Sequence

from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome, run_pairs, run_ranked
from polar_jax.program_eval.runs import sample_seed
from polar_jax.programs import Program


def full_depth_greedy(model, examples: Sequence[Any], task, *, test_set: str, max_batch: int = 32,
                      progress: bool = False, executor=None) -> MethodRun:
  """Every question under the full program, greedy."""
  full = Program.full(model.config.num_layers)
  return run_ranked(model, examples, [[full]] * len(examples), task, method="full_depth_greedy",
                    label="Full depth, greedy (T=0)", test_set=test_set, max_batch=max_batch, progress=progress,
                    executor=executor)


def sampling_method_key(temperature: float) -> str:
  return f"full_depth_sampling_t{temperature:g}"


def full_depth_sampling(model, examples: Sequence[Any], task, *, temperature: float, num_samples: int,
                        test_set: str, seed: int = 0, max_batch: int = 32, progress: bool = False,
                        executor=None) -> MethodRun:
  """`num_samples` sampled generations per question under the full program at `temperature` (> 0)."""
  if temperature <= 0:
    raise ValueError(f"Sampling needs a temperature > 0, got {temperature}; the greedy baseline is "
                     "full_depth_greedy.")
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
  before = getattr(executor, "compiles", 0) if executor is not None else 0
  full = Program.full(model.config.num_layers)
  pairs = [(i, full) for i in range(len(examples))]
  samples, seconds = [], []
  for j in range(num_samples):
    records, secs = run_pairs(model, examples, pairs, task, temperature=temperature, seed=sample_seed(seed, j),
                              max_batch=max_batch, progress=progress, executor=executor)
    samples.append(records)
    seconds.append(secs)
  outcomes = tuple(
      QuestionOutcome(str(ex.id), int(getattr(ex, "level", 0) or 0),
                      tuple(Candidate.from_run_record(samples[j][i]) for j in range(num_samples)))
      for i, ex in enumerate(examples))
  after = getattr(executor, "compiles", 0) if executor is not None else 0
  return MethodRun(method=sampling_method_key(temperature),
                   label=f"Full depth, sampling T={temperature:g} ({num_samples} samples)", kind="sampling",
                   test_set=test_set, outcomes=outcomes, top1_seconds=seconds[0], rest_seconds=sum(seconds[1:]),
                   compiles=after - before,
                   info={"temperature": temperature, "num_samples": num_samples, "seed": seed})
