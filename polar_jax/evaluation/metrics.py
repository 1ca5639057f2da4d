"""The evaluation's metrics, computed the same way for every method from its `MethodRun`.

Per test set and per level (DESIGN.md, "Metrics, honestly named"):
- `pass@1`: the rank-1 candidate is correct. The deployable accuracy.
- `pass@k` (ORACLE): any of the top-k candidates is correct against the ground truth (the paper's headline
  metric). A method with fewer than k candidates for a question uses the ones it has.
- `vote@k`: the majority answer over the top-k candidates (no ground truth used). Candidates without an
  answer do not vote; equal answers are grouped by value (`1/2` and `0.5` are one answer); a tie in votes is
  broken by the higher ranking score within each group (the predictor's log-probability), then by the better
  rank; no answer at all is wrong.
- layers: mean executed layers of the rank-1 candidate per question (prefill + decode passes x program
  length) and per generated token (the program length), and of all top-k candidates together, next to the
  full depth.
- seconds: wall seconds per question of choosing programs plus running the rank-1 candidates (the deployed
  cost), and plus all candidates (the cost of pass@k / vote@k); None for oracles (their cost is the search's,
  counted in programs run and layer executions in `info`).

For an "oracle" method (the search ablations), only `oracle` (the question has a correct candidate at all)
is defined; pass@1 and vote@k are None.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome
from polar_jax.data import answer_normalize as norm

DEFAULT_KS = (1, 2, 3, 4, 5)


def answer_key(answer: str) -> tuple[str, str]:
  """The value an answer votes for: exact rationals for plain numbers, a loose string key for the rest."""
  parsed = norm.parse_number(answer)
  if parsed is not None:
    return ("number", f"{parsed.value}{'%' if parsed.percent else ''}")
  return ("text", norm.normalize_text(answer))


def pass_at_k(outcome: QuestionOutcome, k: int) -> bool:
  """Any of the first k candidates is correct (oracle)."""
  return any(c.correct for c in outcome.candidates[:k])


def voted(candidates: Sequence[Candidate], k: int) -> Candidate | None:
  """The best candidate of the winning answer among the first k, or None when none of them has an answer."""
  groups: dict[tuple[str, str], list[tuple[int, Candidate]]] = collections.OrderedDict()
  for rank, c in enumerate(candidates[:k]):
    if c.answer is None or not c.answer.strip():
      continue
    groups.setdefault(answer_key(c.answer), []).append((rank, c))
  if not groups:
    return None

  def strength(members: list[tuple[int, Candidate]]):
    best_score = max((c.score for _, c in members if c.score is not None), default=-math.inf)
    return (len(members), best_score, -min(rank for rank, _ in members))

  winner = max(groups.values(), key=strength)
  return min(winner, key=lambda rc: rc[0])[1]


def vote_at_k(outcome: QuestionOutcome, k: int) -> bool:
  choice = voted(outcome.candidates, k)
  return choice is not None and choice.correct


def _mean(values: Sequence[float]) -> float | None:
  return float(sum(values) / len(values)) if values else None


def compute_metrics(outcomes: Sequence[QuestionOutcome], *, kind: str = "deployable",
            ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
  """Accuracy and layer metrics over a list of question outcomes (see the module docstring)."""
  n = len(outcomes)
  out: dict[str, Any] = {"n": n}
  if n == 0:
    return out
  kmax = max(ks)
  top1 = [o.candidates[0] for o in outcomes if o.candidates]
  out["candidates_mean"] = _mean([min(len(o.candidates), kmax) for o in outcomes])
  out["oracle"] = _mean([float(any(c.correct for c in o.candidates)) for o in outcomes])
  if kind == "oracle":
    out.update({"pass@1": None, "pass@k": None, "vote@k": None})
  else:
    out["pass@1"] = _mean([float(pass_at_k(o, 1)) for o in outcomes])
    out["pass@k"] = {str(k): _mean([float(pass_at_k(o, k)) for o in outcomes]) for k in ks}
    out["vote@k"] = {str(k): _mean([float(vote_at_k(o, k)) for o in outcomes]) for k in ks}
  out["answered"] = _mean([float(bool(o.candidates) and o.candidates[0].answer is not None) for o in outcomes])
  out["layers_per_token"] = _mean([c.layers_per_token for c in top1])
  known = [c.layers for c in top1 if c.layers is not None]
  out["layers_per_question"] = _mean(known) if len(known) == len(top1) else None
  all_k = [[c.layers for c in o.candidates[:kmax]] for o in outcomes]
  out["layers_per_question_all"] = (_mean([sum(x) for x in all_k])
                                    if all(v is not None for x in all_k for v in x) else None)
  out["generated_tokens"] = _mean([c.generated_tokens for c in top1 if c.generated_tokens is not None])
  out["program_length_histogram"] = dict(sorted(collections.Counter(len(c.program) for c in top1).items()))
  return out


def method_rows(run: MethodRun, depth: int, ks: Sequence[int] = DEFAULT_KS) -> list[dict[str, Any]]:
  """Result rows of one method on one test set: level "all", then one per level when there are several."""
  n = len(run.outcomes)
  base = {"method": run.method, "label": run.label, "kind": run.kind, "test_set": run.test_set,
          "full_depth": depth}
  timed = n > 0 and run.kind != "oracle" and run.info.get("from") != "menu matrix"  # An oracle runs nothing here: its cost is the search's (in `info`).
  seconds = {
      "seconds_per_question": (run.overhead_seconds + run.top1_seconds) / n if timed else None,
      "seconds_per_question_all": (run.overhead_seconds + run.top1_seconds + run.rest_seconds) / n if timed else None,
      "overhead_seconds_per_question": run.overhead_seconds / n if timed else None,
      "compiles": run.compiles,
  }
  rows = [{**base, "level": "all", **compute_metrics(run.outcomes, kind=run.kind, ks=ks), **seconds,
           "info": dict(run.info)}]
  levels = sorted({o.level for o in run.outcomes})
  if len(levels) > 1 or (levels and levels[0] != 0):
    for level in levels:
      subset = [o for o in run.outcomes if o.level == level]
      rows.append({**base, "level": level, **compute_metrics(subset, kind=run.kind, ks=ks)})
  return rows


def add_intervals(rows: list[dict[str, Any]], runs: Sequence[MethodRun], test_sets: Mapping[str, Sequence[Any]],
                  *, reference: str = "full_depth_greedy", seed: int = 0) -> None:
  """Adds to each level-"all" row its 95% Wilson interval (`ci95`, of pass@1, or of the oracle share for an
  oracle) and, against full-depth greedy on the same questions, the paired difference (`diff_vs_full`) with a
  95% cluster-bootstrap interval (`diff_ci95`; clusters: `Example.group`), McNemar's exact p and a verdict.
  Rows on questions the reference did not run (the search ablations) get the interval only."""
  from polar_jax import stats  # pylint: disable=import-outside-toplevel
  refs = {run.test_set: run for run in runs if run.method == reference}
  by_key = {(run.method, run.test_set): run for run in runs}
  for row in rows:
    if row.get("level") != "all":
      continue
    run = by_key.get((row["method"], row["test_set"]))
    if run is None or not run.outcomes:
      continue
    if run.kind == "oracle":
      hits = [any(c.correct for c in o.candidates) for o in run.outcomes]
    else:
      hits = [pass_at_k(o, 1) for o in run.outcomes]
    row["ci95"] = list(stats.wilson(sum(hits), len(hits)))
    ref = refs.get(run.test_set)
    if ref is None or [o.id for o in ref.outcomes] != [o.id for o in run.outcomes]:
      continue
    groups_of = {ex.id: (ex.group or ex.id) for ex in test_sets.get(run.test_set, ())}
    groups = [groups_of.get(o.id, o.id) for o in run.outcomes]
    cmp = stats.compare(hits, [pass_at_k(o, 1) for o in ref.outcomes], groups=groups, seed=seed)
    row.update({k: cmp[k] for k in ("diff_vs_full", "diff_ci95", "mcnemar_p", "wins", "losses", "verdict")})


def layer_usage(programs: Sequence[Sequence[int]], depth: int, max_count: int = 2) -> list[list[int]]:
  """[depth][max_count + 1] counts: how many programs run layer i 0, 1, ..., >= max_count times."""
  table = [[0] * (max_count + 1) for _ in range(depth)]
  for program in programs:
    counts = collections.Counter(int(i) for i in program)
    for layer in range(depth):
      table[layer][min(counts.get(layer, 0), max_count)] += 1
  return table
