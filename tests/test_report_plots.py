"""The report's plots: every method visible and told apart, no ShortGPT row that removes nothing, intervals
drawn, and no matplotlib backend chosen by the library (a notebook keeps its inline figures)."""

import itertools

import matplotlib
import pytest

from polar_jax.data import Example
from polar_jax.evaluation import metrics, report
from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome
from polar_jax.search import summary as search_summary
from polar_jax.records import SearchRecord

DEPTH = 30
FULL = tuple(range(DEPTH))
SHORT = FULL[:26]


def _run(method, label, correct, program=FULL, kind="deployable", info=None, candidates=1):
  outcomes = tuple(QuestionOutcome(f"q{i}", 1, tuple(
      Candidate(program=program, answer="1", correct=ok if j == 0 else True, layers=len(program) * 3,
                generated_tokens=3) for j in range(candidates))) for i, ok in enumerate(correct))
  return MethodRun(method=method, label=label, kind=kind, test_set="arith", outcomes=outcomes, info=info or {})


@pytest.fixture(scope="module")
def results():
  """The issue's situation: PoLar, full depth and a ShortGPT that removes 0 layers on one point, two more
  ShortGPT rows, three equal search oracles, and the rows made by the evaluation's own metrics code."""
  same = [True] * 6 + [False] * 6
  runs = [_run("full_depth_greedy", "Full depth, greedy", same),
          _run("polar", "PoLar (top-5 predicted programs)", same, candidates=5),
          _run("shortgpt_matched", "ShortGPT, 0 layers removed (n matched to PoLar's mean layers)", same,
               info={"n": 0}),
          _run("shortgpt_n4", "ShortGPT, 4 layers removed", [True] * 5 + [False] * 7, SHORT, info={"n": 4}),
          _run("shortgpt_n8", "ShortGPT, 8 layers removed", [True] * 2 + [False] * 10, FULL[:22], info={"n": 8}),
          _run("program_vote[k=3]", "3 best training programs, majority answer (3 runs)", same)]
  runs += [_run(f"search_oracle_{space}", f"Search oracle, {space} (ORACLE)", same, SHORT, kind="oracle")
           for space in ("joint", "skip_only", "repeat_only")]
  rows = [row for run in runs for row in metrics.method_rows(run, DEPTH, (1, 5))]
  metrics.add_intervals(rows, runs, {"arith": [Example(id=f"q{i}", question="?", answer="1") for i in range(12)]})
  return {"k": 5, "model": {"name": "tiny", "depth": DEPTH}, "rows": rows,
          "polar_layer_usage": {"arith": metrics.layer_usage([SHORT, FULL + (29,)], DEPTH)}}


def test_tradeoff_shows_every_method_apart(results, tmp_path):
  drawn = report.plot_tradeoff(results, tmp_path / "tradeoff.png")
  assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
  methods = [e["method"] for e in drawn["legend"]]
  assert "shortgpt_matched" not in methods  # removes no layer: full depth again
  assert sorted(methods) == sorted({r["method"] for r in results["rows"]} - {"shortgpt_matched"})
  looks = {(e["color"], e["marker"]) for e in drawn["legend"]}
  assert len(looks) == len(methods)  # every method looks different
  marker = {e["method"]: e["marker"] for e in drawn["legend"]}
  assert marker["shortgpt_n4"] == marker["shortgpt_n8"] != marker["polar"] != marker["full_depth_greedy"]
  assert len({marker["polar"], marker["full_depth_greedy"], marker["shortgpt_n4"], marker["search_oracle_joint"],
              marker["program_vote[k=3]"]}) == 5  # one marker per family
  assert [e["number"] for e in drawn["legend"]] == list(range(1, len(methods) + 1))
  centres = drawn["markers"]["arith"]
  assert len(centres) == len(methods)
  for (m1, x1, y1), (m2, x2, y2) in itertools.combinations(centres, 2):
    assert abs(x1 - x2) >= 9 - 1e-6 or abs(y1 - y2) >= 9, f"{m1} covers {m2}"
  assert all("ci95" in r for r in results["rows"] if r["level"] == "all")  # the error bars' source


def test_spread_moves_only_what_would_be_covered():
  shifts, groups = report._spread([(100.0, 50.0), (100.0, 50.0), (100.0, 50.0), (300.0, 50.0), (104.0, 90.0)], 9.0)
  assert shifts == [0.0, 9.0, 18.0, 0.0, 0.0]
  assert groups[0] == groups[1] == groups[2] and len({groups[0], groups[3], groups[4]}) == 3
  assert report._number_ranges([3, 1, 2, 7, 9, 10]) == "1-3,7,9-10"


def test_plots_leave_the_backend_alone(results, tmp_path):
  before = matplotlib.get_backend()
  matplotlib.use("svg")  # stands for a notebook's inline backend
  try:
    report.plot_tradeoff(results, tmp_path / "tradeoff.png")
    report.plot_layer_usage(results, tmp_path / "layer_usage.png")
    record = SearchRecord(id="a", question="?", depth=DEPTH, initial_score=1.0, valid=(SHORT, FULL + (29,)),
                          invalid=(FULL[:20],))
    search_summary.write_summary([record], tmp_path / "search")
    assert matplotlib.get_backend() == "svg"
  finally:
    matplotlib.use(before)
  for name in ("tradeoff.png", "layer_usage.png", "search/layer_usage.png"):
    assert (tmp_path / name).stat().st_size > 10_000
