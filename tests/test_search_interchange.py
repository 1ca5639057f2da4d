"""PoLar `merged_mcts_samples.json` export / import, and the findings summary."""

import dataclasses
import json

import pytest

from polar_jax.programs import parse
from polar_jax.records import SearchRecord
from polar_jax.search import (FunctionScorer, SearchConfig, export_polar, from_polar, import_polar, search,
                              summarize, to_polar, write_summary)
from polar_jax.search.interchange import InterchangeError, space_report
from polar_jax.search.records import RecordWriter, dumps_record, read_records

DEPTH = 6


def _reward(index, ids):
  # Question 0: the full program is right and so are programs without layer 5; question 1: only programs
  # repeating layer 1; question 2: nothing is right.
  if index == 0:
    return float(ids == tuple(range(DEPTH)) or 5 not in ids)
  if index == 1:
    return float(ids.count(1) >= 2)
  return 0.0


@pytest.fixture(scope="module")
def records():
  examples = [{"id": "a", "question": "1+1?", "answer": "2", "level": 1, "subject": "Algebra"},
              {"id": "b", "question": "Ünïcode \\frac{1}{2}", "answer": 7},
              {"id": "c", "question": "hard", "answer": "\\frac{3}{4}"}]
  scorer = FunctionScorer(_reward, DEPTH)
  return search(examples, scorer, SearchConfig(num_simulations=48, space="predictor", seed=1))


def test_polar_export_then_import_is_lossless(records, tmp_path):
  path = tmp_path / "merged_mcts_samples.json"
  export_polar(records, path)
  back = import_polar(path)
  assert back == records
  assert [dumps_record(r) for r in back] == [dumps_record(r) for r in records]  # Key order too.
  assert isinstance(back[1].gold, int)


def test_export_uses_the_release_fields(records):
  samples = to_polar(records)["samples"]
  full = list(range(DEPTH))
  for rec, sample in zip(records, samples):
    assert sample["question"] == rec.question and sample["gt_ans"] == str(rec.gold)
    assert sample["initial_score"] == rec.initial_score
    valid = sample["final_valid_transitions"]
    assert all(isinstance(p, list) and all(type(x) is int for x in p) for p in valid)
    assert (full in valid) == (rec.initial_score == 1.0)
    assert all(parse(p, DEPTH) is not None for p in valid)  # Predictor space: all trainable.
    assert not set(map(tuple, valid)) & set(map(tuple, sample["final_invalid_transitions"]))
  assert samples[0]["initial_score"] == 1.0 and samples[1]["initial_score"] == 0.0
  assert samples[1]["final_valid_transitions"] and not samples[2]["final_valid_transitions"]


def test_import_of_another_tools_layouts():
  data = [
      {"sample_info": {"question": "q?", "ground_truth": "4"}, "initial_transition_metric": 1,
       "final_valid_transitions": [[0, 1, 2, 3], {"path": [0, 1, 1, 3]}, [0, 1, 2, 3]],
       "final_invalid_transitions": [[0, 3], [0, 1, 1, 3]]},
      {"question": "r?", "answer": "5", "final_valid_transitions": [], "final_invalid_transitions": [[0, 1, 2, 3]]},
  ]
  recs = from_polar(data, depth=4)
  assert [r.id for r in recs] == ["sample-000000", "sample-000001"]  # No id anywhere: the position.
  assert recs[0].question == "q?" and recs[0].gold == "4" and recs[0].initial_score == 1.0
  assert recs[0].valid_programs == ((0, 1, 2, 3), (0, 1, 1, 3))  # Deduplicated.
  assert recs[0].invalid_programs == ((0, 3),)  # A program listed as valid stays valid.
  assert recs[1].initial_score == 0.0  # Inferred from the full program being invalid.
  assert from_polar({"samples": data}, depth=4) == recs
  keyed = from_polar({"x": data[0], "y": data[1]}, depth=4)  # An object of samples: the keys are the ids.
  assert [r.id for r in keyed] == ["x", "y"]
  assert [dataclasses.replace(r, id=q.id) for r, q in zip(keyed, recs)] == recs
  with pytest.raises(ValueError, match="--depth"):
    from_polar(data)
  with pytest.raises(InterchangeError, match=r"sample 0: field final_valid_transitions\[0\]\[1\]: layer id 9 is "
                                             r"outside 0\.\.3"):
    from_polar([{"question": "q", "final_valid_transitions": [[0, 9]]}], depth=4)


def test_summary_findings_on_hand_made_records(tmp_path):
  def rec(qid, score, valid, invalid=()):
    return SearchRecord(id=qid, question="", gold="", depth=4, initial_score=score, valid=valid, invalid=invalid,
                        simulations=10, layers=0, seconds=1.0, seed=0, config={})

  full = [0, 1, 2, 3]
  records = [
      rec("c1", 1.0, [full, [0, 1, 3]]),  # Base-correct with a shorter valid program.
      rec("c2", 1.0, [full, [0, 0, 1, 2, 3]]),  # Base-correct, only a longer one.
      rec("c3", 1.0, [full, [0, 1, 2, 1, 3], [0, 2, 1, 3]]),  # Valid programs outside the skip/repeat space.
      rec("w1", 0.0, [[0, 2]], [full]),  # Corrected with a shorter program.
      rec("w2", 0.0, [[0, 1, 1, 2, 3]], [full]),  # Corrected, longer.
      rec("w3", 0.0, [], [full]),  # Not corrected.
  ]
  s = summarize(records)
  assert (s["base_correct"], s["base_wrong"]) == (3, 3)
  assert s["base_correct_with_shorter_valid"] == pytest.approx(1 / 3)
  assert s["base_wrong_corrected"] == pytest.approx(2 / 3)
  assert s["base_wrong_corrected_shorter"] == pytest.approx(1 / 3)
  assert s["oracle_accuracy"] == pytest.approx(5 / 6)
  assert s["valid_lengths"]["histogram"] == {"2": 1, "3": 1, "4": 4, "5": 3}
  # (0 1 2 1 3) repeats layer 1 and (0 2 1 3) runs every layer once, but neither is a skip / repeat program.
  assert s["valid_program_kinds"] == {"full": 3, "skip_only": 2, "repeat_only": 2, "skip_and_repeat": 0, "other": 2}
  assert s["shortest_valid"]["C->C"]["mean_length"] == pytest.approx(11 / 3)
  assert s["shortest_valid"]["W->C"]["mean_length"] == 3.5
  # Layer 2 is skipped by [0,1,3] (half of c1's weight); layer 1 by [0,2] (all of w1's); five questions.
  assert s["layers"]["skip"] == pytest.approx([0.0, 0.2, 0.1, 0.2])
  assert s["layers"]["repeat"] == pytest.approx([0.1, 0.2 + 1 / 15, 0.0, 0.0], abs=1e-6)  # c3: 1/3 of 1/5.
  out = write_summary(records, tmp_path)
  assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(out))
  assert (tmp_path / "layer_usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="several model depths"):
    summarize(records + [dataclasses.replace(records[0], depth=5)])


def test_command_line_round_trip(records, tmp_path, capsys):
  from polar_jax.search.__main__ import main
  from polar_jax.search.records import RecordWriter, read_records

  with RecordWriter(tmp_path / "s.jsonl") as writer:
    for rec in records:
      writer.write(rec)
  main(["export", str(tmp_path / "s.jsonl"), str(tmp_path / "m.json")])
  main(["import", str(tmp_path / "m.json"), str(tmp_path / "back.jsonl")])
  assert read_records(tmp_path / "back.jsonl") == records
  with pytest.raises(SystemExit) as exit_:
    main(["import", str(tmp_path / "m.json"), str(tmp_path / "back.jsonl")])
  assert exit_.value.code == 2 and "already holds records" in capsys.readouterr().err
  with open(tmp_path / "s.jsonl", "a") as f:
    f.write("garbage\n")
  with pytest.raises(SystemExit) as exit_:
    main(["summary", str(tmp_path / "s.jsonl"), str(tmp_path / "summary")])
  assert exit_.value.code == 2 and "line 4: not valid JSON" in capsys.readouterr().err
  main(["repair", str(tmp_path / "s.jsonl")])
  main(["summary", str(tmp_path / "s.jsonl"), str(tmp_path / "summary")])
  assert json.loads((tmp_path / "summary" / "summary.json").read_text())["questions"] == 3
  assert "good records kept" in capsys.readouterr().out


# The release's and RE-PoLar's layouts: ids, trajectories, what the predictor cannot learn.

FULL = [0, 1, 2, 3]
# A sample of the release's merged file (run_mcts.py / merge_mcts_samples.py write `query_id` at the top level).
RELEASE_SAMPLE = {"sample_id": 0, "global_idx": 7, "query_id": "dart-17", "question": "q?", "gt_ans": "4",
                  "initial_score": 0.0, "final_valid_transitions": [[0, 1, 1, 2, 3]],
                  "final_invalid_transitions": [FULL], "sample_info": {"question": "q?", "ground_truth": "4",
                                                                      "prompt_text": ""}}
# A sample of RE-PoLar's files: no question text, the id under sample_info, the raw visit log.
RE_POLAR_SAMPLE = {"final_valid_transitions": [[0, 2, 1, 3], [0, 1, 2, 3, 3]], "final_invalid_transitions": [FULL],
                   "initial_transition_metric": 0.0,
                   "sample_info": {"query_id": "math-0042", "domain": "Algebra", "math_level": 3, "difficulty": 1},
                   "search_trajectory": [{"path": FULL, "parent_path": None, "reward": 0.0},
                                         {"path": [0, 1, 2, 3, 3], "parent_path": FULL, "reward": 1.0}]}


def test_ids_come_from_query_ids_or_keys_and_round_trip(tmp_path):
  from polar_jax.predictor.supervision import load_supervision
  data = {"q17": {"question": "a?", "gt_ans": "1", "final_valid_transitions": [FULL]},
          "q18": dict(RELEASE_SAMPLE), "q19": dict(RE_POLAR_SAMPLE, question="c?")}
  path = tmp_path / "keyed.json"
  path.write_text(json.dumps(data, indent=1))
  recs = import_polar(path, depth=4)
  # A query id wins over the key; the key over the position. No quote characters.
  assert [r.id for r in recs] == ["q17", "dart-17", "math-0042"]
  sup = load_supervision(path, depth=4)
  assert [r.id for r in sup.records] == ["q17", "dart-17", "math-0042"]  # The training reader agrees.
  export_polar(recs, tmp_path / "out.json")
  exported = json.loads((tmp_path / "out.json").read_text())["samples"]
  assert [s["query_id"] for s in exported] == ["q17", "dart-17", "math-0042"]
  assert import_polar(tmp_path / "out.json") == recs
  assert [r.id for r in load_supervision(tmp_path / "out.json", depth=4).records] == ["q17", "dart-17", "math-0042"]
  # Positions when nothing names a question; a repeated id is refused (it would make an unreadable records file).
  assert [r.id for r in from_polar([{"question": "x"}, {"question": "y"}], depth=4)] == ["sample-000000",
                                                                                       "sample-000001"]
  with pytest.raises(InterchangeError, match=r"sample 1: question id 'dart-17' repeats the id of sample 0"):
    from_polar([RELEASE_SAMPLE, RELEASE_SAMPLE], depth=4)


def test_re_polar_trajectory_and_provenance_are_kept(tmp_path):
  rec, = from_polar({"samples": [RE_POLAR_SAMPLE]}, depth=4)
  assert rec.id == "math-0042" and rec.question == "" and rec.gold is None
  assert (rec.level, rec.subject) == (3, "Algebra")
  assert rec.extra["search_trajectory"] == RE_POLAR_SAMPLE["search_trajectory"]
  assert rec.extra["sample_info"] == RE_POLAR_SAMPLE["sample_info"]
  # Exported back to the sample's top level, where RE-PoLar's readers look; the records round-trip exactly.
  sample, = to_polar([rec])["samples"]
  assert sample["search_trajectory"] == RE_POLAR_SAMPLE["search_trajectory"]
  assert "search_trajectory" not in sample["polar_jax"]
  assert from_polar(to_polar([rec])) == [rec]
  with RecordWriter(tmp_path / "r.jsonl") as writer:
    writer.write(rec)
  assert read_records(tmp_path / "r.jsonl") == [rec]
  bad = dict(RE_POLAR_SAMPLE, search_trajectory=[{"path": [0, 7], "parent_path": None, "reward": 1.0}])
  with pytest.raises(InterchangeError, match=r"field search_trajectory\[0\]\.path\[1\]: layer id 7 is outside"):
    from_polar([bad], depth=4)


def test_import_reports_unlearnable_and_too_long_programs(tmp_path, capsys):
  from polar_jax.search.__main__ import main
  long_path = FULL + FULL + [3]  # 9 steps > 2 x 4
  data = {"samples": [dict(RE_POLAR_SAMPLE, final_invalid_transitions=[FULL, long_path]),
                      {"query_id": "ok", "question": "q", "final_valid_transitions": [[0, 1, 3]]}]}
  (tmp_path / "m.json").write_text(json.dumps(data))
  report = space_report(from_polar(data, depth=4))
  assert (report.outside_space, report.questions_outside, report.too_long) == (1, 1, 1)
  assert report.outside_examples == (("math-0042", (0, 2, 1, 3)),)  # A reorder: no segmentation spells it.
  main(["import", str(tmp_path / "m.json"), str(tmp_path / "r.jsonl"), "--depth", "4"])
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"2 records -> {tmp_path / 'r.jsonl'}"
  assert out[1].startswith("1 of 3 valid programs (in 1 of 2 questions) are outside the predictor's space") and \
      out[1].endswith("first: math-0042: [0, 2, 1, 3]")
  assert out[2] == ("1 of 5 programs are longer than the length limit (2 x depth steps); first: math-0042: "
                    "9 steps")


def test_import_without_depth_names_the_flag(tmp_path, capsys):
  from polar_jax.search.__main__ import main
  (tmp_path / "m.json").write_text(json.dumps({"samples": [RELEASE_SAMPLE]}, indent=2))
  with pytest.raises(SystemExit) as exit_:
    main(["import", str(tmp_path / "m.json"), str(tmp_path / "r.jsonl")])
  err = capsys.readouterr().err.strip()
  assert exit_.value.code == 2 and len(err.splitlines()) == 1
  assert f"{tmp_path / 'm.json'}, line 3 (sample 0): " in err and "with --depth" in err and "depth=" not in \
      err.split("with --depth")[0]
