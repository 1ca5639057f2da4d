"""Evaluation metrics, search ablations, random programs, the cache-trusting row and the report, on hand-made
outcomes (no model): every expected number below is computed by hand."""

import json

import numpy as np
import pytest

from polar_jax import evaluation as evaluate
from polar_jax import options
from polar_jax.evaluation import report
from polar_jax.evaluation import metrics, random_programs, search_oracle
from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome
from polar_jax.data import Example
from polar_jax.programs import parse
from polar_jax.records import SearchRecord


def cand(answer, correct, program=(0, 1, 2, 3), layers=None, tokens=None, score=None):
  return Candidate(program=tuple(program), answer=answer, correct=correct, layers=layers, generated_tokens=tokens,
                   score=score)


def outcome(i, *cands, level=0):
  return QuestionOutcome(f"q{i}", level, tuple(cands))


# Three questions, top-3 candidates each (correct marked with *):
#   q0: wrong, right*, wrong     -> pass@1 0, pass@2 1, pass@3 1
#   q1: right*, wrong, wrong     -> 1, 1, 1
#   q2: wrong, wrong, wrong      -> 0, 0, 0
OUTCOMES = [
    outcome(0, cand("1", False), cand("2", True), cand("3", False)),
    outcome(1, cand("5", True), cand("6", False), cand("7", False)),
    outcome(2, cand(None, False), cand("8", False), cand("9", False)),
]


def test_pass_at_k_matches_hand_computation():
  m = metrics.compute_metrics(OUTCOMES, ks=(1, 2, 3))
  assert m["pass@1"] == pytest.approx(1 / 3)
  assert m["pass@k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3), "3": pytest.approx(2 / 3)}
  assert m["oracle"] == pytest.approx(2 / 3)
  assert m["answered"] == pytest.approx(2 / 3)  # q2's top candidate has no answer


def test_vote_majority_and_ties():
  # Majority: "4" twice beats "3" once, although "3" ranks first with the best score.
  c = [cand("3", False, score=-0.1), cand("4", True, score=-0.5), cand("4", True, score=-0.9)]
  assert metrics.voted(c, 3).answer == "4" and metrics.vote_at_k(outcome(0, *c), 3)
  assert not metrics.vote_at_k(outcome(0, *c), 1)  # top-1 only: "3"
  # 2-2 tie: the group holding the higher predictor score wins, wherever it ranks.
  tie = [cand("4", False, score=-0.5), cand("3", True, score=-0.2), cand("4", False, score=-0.6),
         cand("3", True, score=-2.0)]
  assert metrics.voted(tie, 4).answer == "3" and metrics.vote_at_k(outcome(0, *tie), 4)
  # A tie without scores (samples): the better rank wins.
  samples = [cand("7", False), cand("8", True), cand("8", True), cand("7", False)]
  assert metrics.voted(samples, 4).answer == "7"
  # Equal values vote together ("0.5" and "1/2"); answers of None do not vote.
  grouped = [cand("1/3", False, score=-0.1), cand("0.5", True, score=-0.3), cand(None, False, score=-0.4),
             cand("1/2", True, score=-0.5), cand(None, False, score=-0.6)]
  assert metrics.voted(grouped, 5).answer == "0.5"
  assert metrics.voted([cand(None, False), cand(" ", False)], 2) is None
  assert not metrics.vote_at_k(outcome(0, cand(None, False)), 1)


def test_vote_at_k_over_questions():
  m = metrics.compute_metrics(OUTCOMES, ks=(1, 3))
  # q0: 1,2,3 all distinct -> tie, no scores -> rank 1 ("1", wrong); q1: "5" right; q2: rank 2 ("8", wrong).
  assert m["vote@k"] == {"1": pytest.approx(1 / 3), "3": pytest.approx(1 / 3)}


def test_layer_means():
  outs = [
      outcome(0, cand("1", True, program=(0, 1), layers=2 * 5, tokens=5), cand("2", False, layers=4 * 3, tokens=3)),
      outcome(1, cand("1", True, program=(0, 1, 1, 2, 3), layers=5 * 1, tokens=1)),
  ]
  m = metrics.compute_metrics(outs, ks=(1, 2))
  assert m["layers_per_token"] == pytest.approx((2 + 5) / 2)
  assert m["layers_per_question"] == pytest.approx((10 + 5) / 2)
  assert m["layers_per_question_all"] == pytest.approx((10 + 12 + 5) / 2)
  assert m["generated_tokens"] == pytest.approx(3)
  assert m["program_length_histogram"] == {2: 1, 5: 1}


def test_method_rows_levels_seconds_and_oracle_kind():
  outs = [outcome(i, cand("1", i % 2 == 0, layers=8, tokens=2), level=1 + i % 2) for i in range(4)]
  run = MethodRun("m", "M", "deployable", "set", tuple(outs), overhead_seconds=1.0, top1_seconds=3.0,
                  rest_seconds=4.0)
  rows = metrics.method_rows(run, depth=4, ks=(1, 2))
  assert [r["level"] for r in rows] == ["all", 1, 2]
  assert rows[0]["seconds_per_question"] == pytest.approx(1.0) and rows[0]["seconds_per_question_all"] == 2.0
  assert rows[0]["pass@1"] == 0.5 and rows[1]["pass@1"] == 1.0 and rows[2]["pass@1"] == 0.0
  oracle = metrics.method_rows(MethodRun("o", "O", "oracle", "set", tuple(outs)), depth=4)[0]
  assert oracle["pass@1"] is None and oracle["vote@k"] is None and oracle["oracle"] == 0.5


def test_layer_usage_counts():
  table = metrics.layer_usage([(0, 1, 1, 3), (0, 1, 2, 3), (1, 1, 1)], depth=4)
  assert table == [[1, 2, 0], [0, 1, 2], [2, 1, 0], [1, 2, 0]]


def test_method_run_round_trip(tmp_path):
  run = MethodRun("polar", "PoLar", "deployable", "set", tuple(OUTCOMES), 0.5, 1.5, 2.5, 3, {"k": 3})
  run.save(tmp_path / "r.json")
  assert MethodRun.load(tmp_path / "r.json") == run
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="delete it"):
    MethodRun.load(tmp_path / "bad.json")


# --- search ablations ----------------------------------------------------------------------------------------


def test_space_membership():
  def spaces(program):
    return {s for s in search_oracle.ORACLE_SPACES if search_oracle.in_space(program, 4, s)}

  assert spaces([0, 2, 3]) == {"joint", "skip_only"}
  assert spaces([0, 1, 1, 2, 3]) == spaces([0, 1, 2, 1, 2, 3]) == {"joint", "repeat_only"}
  assert spaces([0, 0, 2, 3]) == {"joint"}  # skips and repeats
  assert spaces([0, 1, 2, 3, 1, 3]) == {"joint"}  # loops back over a block it did not run
  assert spaces([0, 1, 2, 1, 3]) == {"joint"}  # a partial repeat: outside the skip / repeat space
  assert spaces([0, 2, 1, 3]) == {"joint"}  # a reorder
  assert spaces(range(4)) == set(search_oracle.ORACLE_SPACES)
  with pytest.raises(ValueError, match="Unknown search space"):
    search_oracle.in_space([0], 4, "cola")


def _record(i, valid, level=1):
  return SearchRecord.from_json(
      {"id": f"ds/train/{i}", "question": f"question {i}", "gold": "1", "level": level, "subject": None, "depth": 4,
       "initial_score": float([0, 1, 2, 3] in valid), "initial_answer": "0",
       "valid": [{"program": p, "visits": 1, "answer": "1"} for p in valid],
       "invalid": [{"program": [0, 1, 2], "visits": 1, "answer": "0"}], "seconds": 2.0, "simulations": 8,
       "evaluations": 2 + i, "layers": 10 * i, "seed": None, "config": None})


RECORDS = [_record(0, [[0, 2, 3], [0, 1, 1, 2, 3]]), _record(1, [[0, 1, 2, 1, 2, 3]]), _record(2, []),
           _record(3, [[0, 1, 2, 3]])]


def test_search_oracles():
  joint, skip, repeat = (search_oracle.oracle_run(RECORDS, s, test_set="search records")
                         for s in search_oracle.ORACLE_SPACES)
  assert "train split" in joint.label and "ORACLE" in joint.label
  rows = {r.method: metrics.method_rows(r, depth=4)[0] for r in (joint, skip, repeat)}
  assert rows["search_oracle_joint"]["oracle"] == 0.75  # q2 has nothing valid
  assert rows["search_oracle_skip_only"]["oracle"] == 0.5  # q0 (0 2 3) and q3 (full)
  assert rows["search_oracle_repeat_only"]["oracle"] == 0.75  # q0 (0 1 1 2 3), q1, q3
  # Shortest valid program in the space, else the full program: skip-only lengths 3, 4, 4, 4.
  assert rows["search_oracle_skip_only"]["layers_per_token"] == pytest.approx((3 + 4 + 4 + 4) / 4)
  assert rows["search_oracle_repeat_only"]["layers_per_token"] == pytest.approx((5 + 6 + 4 + 4) / 4)
  assert rows["search_oracle_joint"]["pass@1"] is None
  # The search's cost: programs run and layer executions per question; no wall time (records overlap).
  assert (joint.info["evaluations_mean"], joint.info["search_layers_mean"]) == (3.5, 15.0)
  assert rows["search_oracle_joint"]["seconds_per_question"] is None


# --- random programs -----------------------------------------------------------------------------------------


def test_random_programs_match_lengths_and_are_seeded():
  exs = [Example(id=f"t/{i}", question=f"q {i}", answer="1") for i in range(6)]
  lengths = [1, 7, 12, 16, 20, None]
  progs = random_programs.random_programs_like(exs, lengths, depth=12, seed=3)
  assert [None if p is None else len(p) for p in progs] == lengths
  for p in progs[:-1]:
    parse(p, 12)  # in the predictor's segment space (raises otherwise)
  again = random_programs.random_programs_like(exs[::-1], lengths[::-1], depth=12, seed=3)[::-1]
  assert again == progs  # per-question seeding: order does not matter
  other = random_programs.random_programs_like(exs, lengths, depth=12, seed=4)
  assert other != progs
  with pytest.raises(ValueError, match="1..24"):
    random_programs.random_program(12, 25, np.random.default_rng(0))


# --- the release's cache-trusting row ------------------------------------------------------------------------


def test_trust_search_cache_overrides_verdicts():
  exs = [Example(id="ds/train/0", question="question 0", answer="1"),
         Example(id="other/test/9", question="question 1", answer="1"),  # found by its text
         Example(id="ds/test/5", question="never searched", answer="1")]
  outs = (outcome(0, cand("0", False, program=(0, 2, 3)), cand("1", True, program=(0, 1, 2))),
          outcome(1, cand("0", False, program=(0, 1, 2, 1, 2, 3))),
          outcome(2, cand("0", False, program=(0, 2, 3))))
  run = MethodRun("polar", "PoLar", "deployable", "set", outs)
  trusted = evaluate.trust_search_cache(run, exs, RECORDS)
  assert trusted.kind == "reference" and "comparison only" in trusted.label
  assert [c.correct for o in trusted.outcomes for c in o.candidates] == [True, False, True, False]
  assert [c.source for c in trusted.outcomes[0].candidates] == ["cache_valid", "cache_invalid"]
  assert (trusted.info["valid_cache_hits"], trusted.info["invalid_cache_hits"]) == (2, 1)
  assert trusted.info["searched_questions"] == 2


# --- report --------------------------------------------------------------------------------------------------


class _Task:
  prompt = type("P", (), {"name": "free_prefix", "template": "question", "answer_format": "last_number",
                          "assistant_prefix": "The answer is "})()
  max_new_tokens = 8
  choice_scoring = "generate"


def test_report_files_exist_and_parse(tmp_path):
  exs = [Example(id=f"ds/test/{i}", question=f"q{i}", answer="1", level=1 + i % 2) for i in range(3)]
  polar = MethodRun("polar", "PoLar (top-3)", "deployable", "ds/test",
                    tuple(dataclass_level(o, 1 + i % 2) for i, o in enumerate(OUTCOMES)), 0.3, 0.6, 0.9)
  full = MethodRun("full_depth_greedy", "Full depth", "deployable", "ds/test",
                   tuple(QuestionOutcome(f"ds/test/{i}", 1 + i % 2, (c,))
                         for i, c in enumerate([cand("2", True), cand("4", False), cand(None, False)])))
  runs = [full, polar, search_oracle.oracle_run(RECORDS, "joint", test_set="search records")]
  config = evaluate.default_eval_config()
  config.k = 3
  model = type("M", (), {"name": "tiny"})()
  results = evaluate.build_results(config, model, _Task(), {"ds/test": exs}, runs, [{"method": "x", "reason": "y"}],
                                   depth=4, k=3)
  files = report.write_report(results, tmp_path)
  assert set(files) == {"results.json", "results.md", "tradeoff.png", "layer_usage.png"}
  loaded = json.loads((tmp_path / "results.json").read_text())
  polar_row = next(r for r in loaded["rows"] if r["method"] == "polar" and r["level"] == "all")
  assert polar_row["pass@k"]["2"] == pytest.approx(2 / 3)
  assert loaded["polar_layer_usage"]["ds/test"][0] == [0, 3, 0]
  md = (tmp_path / "results.md").read_text()
  header = next(line for line in md.splitlines() if line.startswith("| method | n | pass@1"))
  assert "vote@3" in header and "pass@3 (oracle)" in header and "full 4" in header
  assert "| PoLar (top-3) | 3 | 33.3 [" in md and "skipped x: y" in md and "level 2" in md
  for name in ("tradeoff.png", "layer_usage.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Per question: PoLar is wrong where full depth is right on q0 and right where it is wrong on q1 (q2: both wrong).
  part = loaded["per_question"]["ds/test"]
  assert part["summary"] == [{"method": "polar", "label": "PoLar (top-3)", "n": 3, "other_program": 0,
                              "other_answer": 2, "fixes": 1, "breaks": 1}]
  assert [q["id"] for q in part["questions"]] == ["ds/test/0", "ds/test/1"]
  section = md[md.index("## Per question: where methods disagree with full depth"):]
  assert "2 of 3 questions have a method whose verdict differs" in section
  assert "| PoLar (top-3) | 3 | 0 | 2 | 1 | 1 |" in section
  assert "**ds/test/1**: q1 (gold: 1)" in section and "| PoLar (top-3) | `0-3` | 4 | 5 | yes |" in section


def dataclass_level(o, level):
  return QuestionOutcome(f"ds/test/{o.id[1:]}", level, o.candidates)


def test_load_test_sets_for_out_of_distribution():
  sets = evaluate.load_test_sets(["arith_level2", ("arith_level5", "validation")], limit=3)
  assert list(sets) == ["arith_level2/test", "arith_level5/validation"]
  assert [len(v) for v in sets.values()] == [3, 3]
  assert sets["arith_level5/validation"][0].id.startswith("arith_level5/validation/")
  with pytest.raises(ValueError, match="evaluation method"):
    options.parse_methods("polar,shortcut")
