"""Resumable search output: restart after a kill, corrupt-line refusal and repair, shards and merging."""

import dataclasses
import json

import pytest

from polar_jax.search import (CorruptRecordsError, FunctionScorer, SearchConfig, merge_shards, parse_shard,
                              read_records, run_search, shard_path, without_timing)
from polar_jax.records import SearchRecord
from polar_jax.search.records import RecordWriter

DEPTH = 5
CONFIG = SearchConfig(num_simulations=24, seed=7, leaves_per_round=4)
EXAMPLES = [{"id": f"q{i}", "question": f"What is {i}?", "answer": str(i), "level": 1 + i % 3}
            for i in range(7)]


def _reward(index, ids):
  # Question-dependent: question i rewards programs that skip layer i % DEPTH.
  return float(index % DEPTH not in ids)


def _scorer():
  return FunctionScorer(_reward, DEPTH)


def _json_lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def _lines(path):
  return [SearchRecord.from_json(obj) for obj in _json_lines(path)]


def _tree_only(record):
  """The record without timing and without the driver's batching fields."""
  return dataclasses.replace(without_timing(record), config=SearchConfig.from_json(record.config).to_json())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  path = tmp_path_factory.mktemp("ref") / "search.jsonl"
  run = run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), max_active=3)
  assert run.written == len(EXAMPLES) and run.skipped == 0
  return [without_timing(r) for r in _lines(path)]


class Killed(Exception):
  pass


def _kill_after(n):
  count = [0]

  def on_record(record):
    count[0] += 1
    if count[0] == n:
      raise Killed

  return on_record


def test_reference_output_is_complete_and_ordered(reference):
  assert [r.id for r in reference] == [e["id"] for e in EXAMPLES]
  for rec, ex in zip(reference, EXAMPLES):
    assert rec.gold == ex["answer"] and rec.level == ex["level"] and rec.depth == DEPTH
    assert rec.simulations == 24 and rec.seed == 7
    # The tree's config and how the driver batched (FunctionScorer packs nothing: no max_batch / per_question).
    assert rec.config == {**CONFIG.to_json(), "max_batch": None, "max_active": 3, "per_question": None}
    assert rec.initial_score == 0.0  # The full program runs every layer.
    assert rec.valid and rec.seconds is None


def test_killed_run_restarts_to_the_same_output(tmp_path, reference):
  path = tmp_path / "search.jsonl"
  with pytest.raises(Killed):
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), max_active=3, on_record=_kill_after(3))
  assert len(_lines(path)) == 3
  run = run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), max_active=2)
  assert (run.skipped, run.written) == (3, 4)
  final = _lines(path)
  assert len({r.id for r in final}) == len(final) == len(EXAMPLES)
  # Each record says how it was batched; this scorer's rewards do not depend on it, so the rest is the same.
  assert [r.config["max_active"] for r in final] == [3, 3, 3, 2, 2, 2, 2]
  assert [_tree_only(r) for r in final] == [_tree_only(r) for r in reference]
  assert [without_timing(r) for r in final[:3]] == reference[:3]
  # The run's totals count every record of the file, the killed process's included.
  assert run.total_evaluations == sum(r.evaluations for r in final) > run.evaluations
  assert run.total_seconds == pytest.approx(sum(r.seconds for r in final))
  again = run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1))
  assert (again.skipped, again.written) == (len(EXAMPLES), 0)


def test_a_line_cut_short_is_refused_then_repaired(tmp_path, reference):
  path = tmp_path / "search.jsonl"
  with pytest.raises(Killed):
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), on_record=_kill_after(2))
  with open(path, "a") as f:
    f.write('{"id": "q2", "question": "What')  # A kill in the middle of a write.
  with pytest.raises(CorruptRecordsError, match=r"line 3: incomplete last line") as info:
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1))
  assert info.value.problems[0][0] == 3
  assert "--config.search.repair=True" in str(info.value) and "\n" not in str(info.value)
  run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), repair=True)
  assert [_tree_only(r) for r in _lines(path)] == [_tree_only(r) for r in reference]  # Other max_active.
  rejected = _json_lines(tmp_path / "search.jsonl.rejected")
  assert [(r["line"], r["text"]) for r in rejected] == [(3, '{"id": "q2", "question": "What')]


def test_corrupt_middle_lines_are_reported_by_number_and_moved_aside(tmp_path, reference):
  path = tmp_path / "search.jsonl"
  good = [json.dumps({**r.to_json(), "seconds": 0.5}) for r in reference[:4]]
  broken = json.dumps({k: v for k, v in reference[4].to_json().items() if k != "valid"} | {"seconds": 0.5})
  path.write_text("\n".join([good[0], "{not json", good[1], broken, good[2], good[1]]) + "\n")
  with pytest.raises(CorruptRecordsError) as info:
    read_records(path)
  numbers = [n for n, _ in info.value.problems]
  assert numbers == [2, 4, 6]
  reasons = dict(info.value.problems)
  assert "not valid JSON" in reasons[2] and "missing keys ['valid']" in reasons[4]
  assert "already recorded on line 3" in reasons[6]
  before = path.read_text()
  with pytest.raises(CorruptRecordsError):
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1))
  assert path.read_text() == before  # Refusal changes nothing.
  kept = read_records(path, repair=True)
  assert [r.id for r in kept] == ["q0", "q1", "q2"]
  rejected = _json_lines(tmp_path / "search.jsonl.rejected")
  assert [r["line"] for r in rejected] == [2, 4, 6] and rejected[0]["text"] == "{not json"
  # The repaired file resumes: the missing questions are searched again, in input order after the kept ones.
  run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1))
  assert sorted(r.id for r in _lines(path)) == sorted(e["id"] for e in EXAMPLES)
  by_id = {r.id: r for r in reference}
  assert all(_tree_only(r) == _tree_only(by_id[r.id]) for r in _lines(path))


def test_restart_with_another_config_is_refused(tmp_path):
  path = tmp_path / "search.jsonl"
  with pytest.raises(Killed):
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), on_record=_kill_after(1))
  other = SearchConfig(num_simulations=24, seed=8, leaves_per_round=4)
  with pytest.raises(ValueError, match="same settings or write to a new output path"):
    run_search(EXAMPLES, _scorer(), other, path, shard=(0, 1))


def test_shards_merge_to_the_unsharded_output(tmp_path, reference):
  base = tmp_path / "search.jsonl"
  paths = []
  for i in range(3):
    run = run_search(EXAMPLES, _scorer(), CONFIG, base, shard=(i, 3))
    assert run.output_path == str(shard_path(base, i, 3))
    paths.append(shard_path(base, i, 3))
  assert [r.id for r in _lines(paths[1])] == ["q1", "q4"]
  merged = merge_shards(paths, tmp_path / "merged.jsonl")
  assert [_tree_only(r) for r in merged] == [_tree_only(r) for r in reference]
  assert [_tree_only(r) for r in _lines(tmp_path / "merged.jsonl")] == [_tree_only(r) for r in reference]
  with pytest.raises(ValueError, match=r"1 question id\(s\) appear in more than one shard: 'q1'"):
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(_json_lines(paths[1])[0]) + "\n")
    merge_shards([paths[0], paths[1], dup], tmp_path / "bad.jsonl")


def test_default_shard_is_the_jax_process():
  pytest.importorskip("jax")
  from polar_jax.search.mcts import default_shard
  assert default_shard() == (0, 1)


def test_shard_flags_and_paths():
  assert parse_shard("2/8") == (2, 8)
  with pytest.raises(ValueError, match="0 <= index < count"):
    parse_shard("8/8")
  with pytest.raises(ValueError, match="i/n"):
    parse_shard("2 of 8")
  assert shard_path("out/s.jsonl", 2, 8).name == "s.shard-00002-of-00008.jsonl"
  assert str(shard_path("out/s.jsonl", 0, 1)) == "out/s.jsonl"


def test_writer_refuses_invalid_records(tmp_path):
  with RecordWriter(tmp_path / "x.jsonl") as writer:
    with pytest.raises(ValueError, match="missing keys"):
      writer.write({"id": "a"})
  assert (tmp_path / "x.jsonl").read_text() == ""


def test_duplicate_example_ids_are_refused(tmp_path):
  with pytest.raises(ValueError, match=r"repeated: \['q0'\]"):
    run_search(EXAMPLES + EXAMPLES[:1], _scorer(), CONFIG, tmp_path / "s.jsonl", shard=(0, 1))


def test_records_written_by_the_search_round_trip_exactly(tmp_path):
  path = tmp_path / "s.jsonl"
  run_search(EXAMPLES[:3], _scorer(), CONFIG, path, shard=(0, 1))
  lines = path.read_text().splitlines()
  for line, rec in zip(lines, read_records(path), strict=True):
    obj = json.loads(line)
    assert rec.to_json() == obj and list(rec.to_json()) == list(obj)  # Key order too.
    assert json.dumps(SearchRecord.from_json(obj).to_json(), ensure_ascii=False, separators=(",", ":")) == line
    assert rec.valid_programs == tuple(tuple(e["program"]) for e in obj["valid"])


def test_unknown_keys_and_nulls_are_kept(tmp_path):
  obj = {"id": "x", "question": "q", "gold": 3, "level": None, "subject": None, "depth": 3, "initial_score": 1,
         "initial_answer": None, "valid": [{"program": [0, 1, 2], "visits": None, "answer": None, "note": "hand"}],
         "invalid": [], "simulations": None, "evaluations": 1, "layers": None, "seconds": None, "seed": None,
         "config": None, "source": "another tool"}
  rec = SearchRecord.from_json(obj)
  assert rec.extra == {"source": "another tool"} and rec.valid[0].extra == {"note": "hand"}
  assert json.dumps(rec.to_json()) == json.dumps(obj)
  with RecordWriter(tmp_path / "x.jsonl") as writer:
    writer.write(rec)
    writer.write({**obj, "id": "y"})
  assert read_records(tmp_path / "x.jsonl") == [rec, SearchRecord.from_json({**obj, "id": "y"})]
  with pytest.raises(ValueError, match=r"valid\[0\].program must be a non-empty list of layer ids in 0..2"):
    SearchRecord.from_json({**obj, "valid": [{"program": [3]}]})
  with RecordWriter(tmp_path / "z.jsonl") as writer:
    with pytest.raises(ValueError, match="Refusing to write"):
      writer.write(SearchRecord(id="z", question="q", depth=2, valid=[(0, 5)]))


class _ClockedScorer(FunctionScorer):
  """Advances a fake clock by 1 ms per layer execution it scores: a search whose wall time is known exactly."""

  def __init__(self, clock):
    super().__init__(_reward, DEPTH)
    self.clock = clock

  def score(self, pairs):
    self.clock[0] += 0.001 * sum(len(p) for _, p in pairs)
    return super().score(pairs)


def test_each_record_gets_its_share_of_the_rounds_not_the_waves_wall_time(tmp_path, monkeypatch):
  from polar_jax.search import mcts
  clock = [100.0]
  monkeypatch.setattr(mcts.time, "perf_counter", lambda: clock[0])
  path = tmp_path / "s.jsonl"
  run = run_search(EXAMPLES, _ClockedScorer(clock), CONFIG, path, shard=(0, 1), max_active=4)
  recs = read_records(path)
  # Seven questions share rounds four at a time; each is charged the time of its own layer executions only.
  for rec in recs:
    assert rec.seconds == pytest.approx(0.001 * rec.layers, abs=1e-3)
  assert sum(r.seconds for r in recs) == pytest.approx(clock[0] - 100.0, abs=1e-2) == pytest.approx(run.seconds)
  assert len({r.seconds for r in recs}) > 1


def test_records_without_the_batching_fields_still_load_and_resume(tmp_path, caplog):
  path = tmp_path / "s.jsonl"
  with pytest.raises(Killed):
    run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), max_active=3, on_record=_kill_after(2))
  old = _json_lines(path)
  for obj in old:  # As written before the config recorded how the driver batched.
    for key in ("max_batch", "max_active", "per_question"):
      del obj["config"][key]
  path.write_text("".join(json.dumps(o) + "\n" for o in old))
  assert [r.config for r in read_records(path)] == [CONFIG.to_json()] * 2
  with caplog.at_level("WARNING", logger="polar_jax.search.mcts"):
    run = run_search(EXAMPLES, _scorer(), CONFIG, path, shard=(0, 1), max_active=3)
  assert (run.skipped, run.written) == (2, 5)
  assert not [r for r in caplog.records if r.levelname == "WARNING"]  # Nothing to compare: no warning.
  # Resuming with other batching is allowed (it is not the tree's identity) but logged.
  path2 = tmp_path / "t.jsonl"
  with pytest.raises(Killed):
    run_search(EXAMPLES, _scorer(), CONFIG, path2, shard=(0, 1), max_active=3, on_record=_kill_after(2))
  with caplog.at_level("WARNING", logger="polar_jax.search.mcts"):
    run_search(EXAMPLES, _scorer(), CONFIG, path2, shard=(0, 1), max_active=5)
  assert "searched with batching {'max_batch': None, 'max_active': 3, 'per_question': None}" in caplog.text
  assert [r.config["max_active"] for r in read_records(path2)] == [3, 3, 5, 5, 5, 5, 5]
