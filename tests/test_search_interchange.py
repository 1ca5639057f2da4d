"""PoLar `merged_mcts_samples.json` export / import, and the findings summary."""

import dataclasses
import json

import pytest

from polar_jax.programs import parse
from polar_jax.records import SearchRecord
from polar_jax.search import (FunctionScorer, SearchConfig, export_polar, from_polar, import_polar, search,
                              summarize, to_polar, write_summary)
from polar_jax.search.records import dumps_record

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
  assert [r.id for r in recs] == ["sample-000000", "sample-000001"]
  assert recs[0].question == "q?" and recs[0].gold == "4" and recs[0].initial_score == 1.0
  assert recs[0].valid_programs == ((0, 1, 2, 3), (0, 1, 1, 3))  # Deduplicated.
  assert recs[0].invalid_programs == ((0, 3),)  # A program listed as valid stays valid.
  assert recs[1].initial_score == 0.0  # Inferred from the full program being invalid.
  assert from_polar({"samples": data}, depth=4) == recs == from_polar({"x": data[0], "y": data[1]}, depth=4)
  with pytest.raises(ValueError, match="pass depth="):
    from_polar(data)
  with pytest.raises(ValueError, match=r"sample 0: final_valid_transitions\[0\] is not a program"):
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
