"""Reading supervision files (our JSONL, the release's layouts), their errors, and the grain pipeline."""

import json

import numpy as np
import pytest

from polar_jax.predictor.encoder import QuestionFeatures
from polar_jax.predictor.input_pipeline import BatchPlan, evaluation_batches, training_batches
from polar_jax.predictor.supervision import (SupervisionError, SupervisionRecord, load_supervision, release_splits,
                                             supervision_from_search)
from polar_jax.records import SearchRecord
from polar_jax.predictor.targets import build_examples

SAMPLE = {"question": "Solve ...", "gt_ans": "\\boxed{42}", "initial_score": 0.0,
          "final_valid_transitions": [[0, 1, 2, 4, 5, 6], [0, 1, 2, 2, 3, 4, 5]],
          "final_invalid_transitions": [[0, 1, 3, 4, 5]]}


def _write(path, obj):
  path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
  return path


def test_search_jsonl_with_dict_or_plain_programs(tmp_path):
  lines = [{"id": "q1", "question": "What is 1+1?", "gold": "2", "initial_score": 1, "depth": 4,
            "valid": [{"program": [0, 1, 2, 3], "visits": 9}, {"program": [0, 2, 3], "visits": 2}],
            "invalid": [[0, 0]], "evaluations": 12, "seconds": 1.5},
           {"id": "q2", "question": "And 2+2?", "gold": "4", "initial_score": 0, "depth": 4, "valid": [[1, 1, 2, 3]]}]
  path = _write(tmp_path / "search.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
  sup = load_supervision(path)
  assert sup.depth == 4 and len(sup) == 2
  assert sup.records[0].valid == ((0, 1, 2, 3), (0, 2, 3)) and sup.records[0].invalid == ((0, 0),)
  assert sup.records[1].id == "q2" and sup.records[1].gold == "4" and sup.records[0].initial_score == 1.0
  with pytest.raises(SupervisionError, match="line 1: record depth 4 differs from depth 5"):
    load_supervision(path, depth=5)


def test_supervision_from_search_records():
  records = [SearchRecord(id="a", question="qa", gold=2, depth=4, initial_score=1.0, valid=[(0, 1, 2, 3), (0, 2)],
                          invalid=[(0,)]),
             SearchRecord(id="b", question="qb", gold="x", depth=4, initial_score=0.0, invalid=[(0, 1, 2, 3)]),
             SearchRecord(id="c", question="qc", gold=None, depth=4, initial_score=0.0, valid=[(1, 1, 2, 3)])]
  sup = supervision_from_search(records, 4, {"a", "b"}, "s.jsonl")
  assert sup == [SupervisionRecord(id="a", question="qa", gold="2", initial_score=1.0, depth=4,
                                   valid=((0, 1, 2, 3), (0, 2)), invalid=((0,),), source="s.jsonl, id a")]
  assert [r.id for r in supervision_from_search(records, 4, {"a", "b", "c"}, "s.jsonl")] == ["a", "c"]


@pytest.mark.parametrize("layout", ["samples", "list", "dict"])
def test_release_layouts(tmp_path, layout):
  other = {"sample_info": {"question": "Other?", "answer": "7"}, "initial_transition_metric": 1.0,
           "final_valid_transitions": [{"path": [0, 1, 2, 3, 4, 5, 6]}]}
  data = {"samples": [SAMPLE, other], "list": [SAMPLE, other], "dict": {"a": SAMPLE, "b": other}}[layout]
  sup = load_supervision(_write(tmp_path / "merged_mcts_samples.json", data), depth=7)
  first, second = sup.records
  assert first.question == "Solve ..." and first.gold == "\\boxed{42}"
  assert first.valid == ((0, 1, 2, 4, 5, 6), (0, 1, 2, 2, 3, 4, 5)) and first.invalid == ((0, 1, 3, 4, 5),)
  assert second.question == "Other?" and second.gold == "7" and second.initial_score == 1.0
  assert second.valid == (tuple(range(7)),)


def test_release_layout_needs_depth(tmp_path):
  with pytest.raises(SupervisionError, match="does not record the model depth; pass depth="):
    load_supervision(_write(tmp_path / "m.json", [SAMPLE]))


def test_program_index_out_of_range_names_file_and_record(tmp_path):
  path = _write(tmp_path / "m.json", {"samples": [SAMPLE, dict(SAMPLE, final_valid_transitions=[[0, 1, 7]])]})
  with pytest.raises(SupervisionError, match=r"m\.json, line 1 \(sample 1\): field final_valid_transitions\[0\]\[2\]: "
                                             r"layer id 7 is outside 0\.\.6 \(is 7 the model's depth\?\)"):
    load_supervision(path, depth=7)
  bad = _write(tmp_path / "s.jsonl", json.dumps({"question": "q", "depth": 3, "valid": [[0, "1"]]}))
  with pytest.raises(SupervisionError, match=r"s\.jsonl, line 1, valid program 0: a program must be a list of integer"):
    load_supervision(bad)


def test_empty_valid_list_is_an_error_unless_skipped_or_kept(tmp_path):
  path = _write(tmp_path / "m.json", [SAMPLE, dict(SAMPLE, question="Hard?", final_valid_transitions=[])])
  with pytest.raises(SupervisionError, match=r"m\.json, line 1 \(sample 1\): the question has no valid program"):
    load_supervision(path, depth=7)
  skipped = load_supervision(path, depth=7, empty_valid="skip")
  assert len(skipped) == 1 and skipped.skipped_empty == 1
  kept = load_supervision(path, depth=7, empty_valid="keep")
  assert len(kept) == 2 and kept.records[1].valid == ()
  train, val, test = release_splits(kept.records, train=1, validation=1)
  assert train[0].question == "Solve ..." and val[0].question == "Hard?" and test == ()


def test_malformed_json_names_file_and_line(tmp_path):
  good = json.dumps({"question": "q", "depth": 3, "valid": [[0, 1, 2]]})
  path = _write(tmp_path / "s.jsonl", good + "\n" + '{"question": "q", "valid": [[0, 1}\n')
  with pytest.raises(SupervisionError, match=r"s\.jsonl, line 2: malformed JSON"):
    load_supervision(path)
  with pytest.raises(SupervisionError, match=r"m\.json: malformed JSON .* line 1"):
    load_supervision(_write(tmp_path / "m.json", '{"samples": [}'), depth=7)
  with pytest.raises(SupervisionError, match=r"n\.json, line 1 \(sample 0\): field question: no question text"):
    load_supervision(_write(tmp_path / "n.json", [dict(SAMPLE, question="")]), depth=7)


@pytest.fixture(scope="module")
def data():
  from polar_jax.predictor.supervision import SupervisionRecord
  records = [SupervisionRecord(id=str(i), question=f"q{i}", gold="", initial_score=0.0, depth=4,
                               valid=((0, 1, 2, 3), (0, 1, 3))[: 1 + i % 2]) for i in range(7)]
  table, _ = build_examples(records, 4)  # 10 examples
  rng = np.random.default_rng(0)
  features = QuestionFeatures(rng.normal(size=(7, 5, 3)).astype(np.float32), np.ones((7, 5), bool), "toy")
  return table, features


def test_pipeline_is_epoch_major_padded_and_deterministic(data):
  table, features = data
  plan = BatchPlan(len(table), batch_size=4, seed=3)
  assert plan.steps_per_epoch == 3
  batches = list(training_batches(table, features, plan, start_step=0, stop_step=6))
  assert batches[0]["features"].shape == (4, 5, 3) and batches[0]["boundaries"].shape == (4, 4)
  assert [int(b["valid"].sum()) for b in batches] == [4, 4, 2, 4, 4, 2]
  assert batches[2]["weight"][2:].sum() == 0
  rows = [plan.rows(s)[0][plan.rows(s)[1]] for s in range(3)]
  assert sorted(np.concatenate(rows).tolist()) == list(range(10))  # every example once per epoch
  second_epoch = np.concatenate([plan.rows(s)[0][plan.rows(s)[1]] for s in range(3, 6)])
  assert not np.array_equal(np.concatenate(rows), second_epoch)
  np.testing.assert_array_equal(batches[4]["features"],
                                features.features[table.question_index[plan.rows(4)[0]]])
  resumed = list(training_batches(table, features, BatchPlan(len(table), 4, 3), start_step=4, stop_step=6))
  for a, b in zip(batches[4:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_process_slices_tile_the_global_batch(data):
  table, features = data
  plan = BatchPlan(len(table), batch_size=4, seed=0)
  whole = next(training_batches(table, features, plan, start_step=1, stop_step=2))
  parts = [next(training_batches(table, features, plan, start_step=1, stop_step=2, process_index=p, process_count=2))
           for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["op_labels"] for p in parts]), whole["op_labels"])
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    training_batches(table, features, plan, start_step=0, stop_step=1, process_count=3)
  evaluated = list(evaluation_batches(table, features, 4))
  assert [int(b["valid"].sum()) for b in evaluated] == [4, 4, 2]
