"""Real multi-process runs: two JAX processes on this machine (`jax.distributed.initialize` over localhost, CPU,
gloo collectives), each a subprocess, against the same work done by one process.

- The sharded search: each process searches questions i, i+2, ... into its own shard file; every question is
  written exactly once, `python -m polar_jax.search merge` of the shards equals a one-process run, and a
  process killed (SIGKILL) after its first record, rerun with the same command, completes its shard without
  redoing or losing a question.
- The trainer: two processes (one CPU device each, a ('data'=2) mesh across them) end with the parameters of
  one process on a two-device mesh, bitwise, and within rounding of one process on one device.
- The pipeline entry point: `python -m polar_jax.main --num_processes=2 ...` on the embedded SmolLM2 searches
  in shards and merges them into the workdir's records.

Nothing here can hang: every wait on a subprocess has a timeout, after which all of the job's processes are
killed and the test fails with their logs. The search needs no collective (a process only reads its own
`jax.process_index()`), so a dead peer cannot block one mid-shard; JAX's coordination service itself stops the
survivors once a peer misses its heartbeats (set to 10 s here; 100 s by default).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
ENV.pop("XLA_FLAGS", None)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class Job:
  """The processes of one launch and their log files."""
  procs: list
  logs: list

  def tail(self, chars: int = 2500) -> str:
    return "\n".join(f"--- process {i} (rc {p.returncode}) ---\n{pathlib.Path(log).read_text()[-chars:]}"
                     for i, (p, log) in enumerate(zip(self.procs, self.logs)))

  def wait(self, timeout: float) -> list[int]:
    """Return codes; on a timeout every process is killed and the test fails with the logs."""
    deadline = time.time() + timeout
    for p in self.procs:
      try:
        p.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        self.kill()
        pytest.fail(f"a process did not finish within {timeout:.0f} s\n{self.tail()}")
    return [p.returncode for p in self.procs]

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def launch(argv_for, n: int, tmp: pathlib.Path, name: str, env: dict | None = None) -> Job:
  """Starts `argv_for(process_id, coordinator_address)` for each of n processes (n=1: no address)."""
  address = f"localhost:{_free_port()}" if n > 1 else None
  procs, logs = [], []
  for i in range(n):
    log = tmp / f"{name}.{i}.log"
    with open(log, "w") as out:
      procs.append(subprocess.Popen(argv_for(i, address), cwd=ROOT, env=env or ENV, stdout=out,
                                    stderr=subprocess.STDOUT))
    logs.append(log)
  return Job(procs, logs)


def _python(script: str, **args):
  """argv_for: `python -c script '{json args}'` with the process's id and the coordinator address added."""
  return lambda i, address: [sys.executable, "-c", script, json.dumps(dict(args, process_id=i, address=address))]


def _result(log: pathlib.Path) -> dict:
  lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
  assert lines, log.read_text()[-3000:]
  return json.loads(lines[-1][len("RESULT "):])


# --- the sharded search -----------------------------------------------------------------------------------------

SEARCH = textwrap.dedent("""
    import json, os, signal, sys
    args = json.loads(sys.argv[1])
    from polar_jax import sharding
    multi = sharding.initialize_distributed(args["address"], args["num_processes"] if args["address"] else None,
                                            args["process_id"] if args["address"] else None,
                                            heartbeat_timeout_s=10)
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    from polar_jax import data
    from polar_jax.program_eval import TaskConfig, run_programs
    from polar_jax.programs import Program
    from polar_jax.search import SearchConfig, run_search
    from polar_jax.search.scoring import TaskScorer
    from polar_jax.testing import tiny_model

    depth = 6
    boxed = data.PromptConfig("tiny_boxed", template="question", assistant_prefix="\\\\boxed{", answer_format="boxed")
    task = TaskConfig(boxed, max_new_tokens=3)
    model = tiny_model(num_layers=depth, seed=0)
    questions = [data.Example(f"q{q}", " ".join(f"w{(11 * q + 3 * j) % 90 + 2}" for j in range(5 + q % 4)), "?")
                 for q in range(args["questions"])]
    # Gold: the full program's reply to half the questions, another word to the rest (full depth is wrong there).
    full = run_programs(model, questions, Program.full(depth), task)
    examples = [data.Example(e.id, e.question, r.answer if q % 2 == 0 else "w7")
                for q, (e, r) in enumerate(zip(questions, full))]
    scorer = TaskScorer(model, examples, task, max_batch=8, per_question=True)

    def on_record(rec):
      print("RECORD", rec.id, flush=True)
      if args["process_id"] == args.get("kill_process") and jax.process_count() > 1:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9, right after its first record is on disk

    run = run_search(examples, scorer, SearchConfig(num_simulations=12, space="predictor", leaves_per_round=4),
                     args["out"], max_active=2, on_record=on_record)
    print("RESULT " + json.dumps({"multi": multi, "process": jax.process_index(), "count": jax.process_count(),
                                  "path": run.output_path, "written": run.written, "skipped": run.skipped}),
          flush=True)
""")


def _lines(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _without_seconds(records: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_two_process_search_shards_once_merges_to_one_process_and_survives_a_kill(tmp_path):
  n_questions = 8
  out = tmp_path / "s.jsonl"
  shards = [tmp_path / f"s.shard-0000{i}-of-00002.jsonl" for i in range(2)]
  ids = [f"q{q}" for q in range(n_questions)]

  one = launch(_python(SEARCH, questions=n_questions, out=str(tmp_path / "one.jsonl"), num_processes=1), 1,
               tmp_path, "one")
  # First launch: process 1 is killed by SIGKILL right after its first record is written.
  first = launch(_python(SEARCH, questions=n_questions, out=str(out), num_processes=2, kill_process=1), 2,
                 tmp_path, "first")
  rc_one = one.wait(300)
  rc_first = first.wait(300)  # the survivor: its shard, then JAX stops it when process 1's heartbeats stop
  assert rc_one == [0], one.tail()
  reference = _lines(tmp_path / "one.jsonl")
  assert [r["id"] for r in reference] == ids
  assert _result(one.logs[0])["multi"] is False
  assert rc_first[1] == -signal.SIGKILL, first.tail()
  assert rc_first[0] != 0, first.tail()  # JAX's coordination service took the survivor down
  killed = _lines(shards[1])
  assert [r["id"] for r in killed] == ["q1"], first.tail()  # killed after its first record, before the second
  survivor = _lines(shards[0])
  assert [r["id"] for r in survivor] == ids[0::2][:len(survivor)]

  # The same command again: process 1 resumes its shard, process 0 skips what it finished.
  second = launch(_python(SEARCH, questions=n_questions, out=str(out), num_processes=2), 2, tmp_path, "second")
  assert second.wait(300) == [0, 0], second.tail()
  results = [_result(log) for log in second.logs]
  assert [(r["multi"], r["process"], r["count"]) for r in results] == [(True, 0, 2), (True, 1, 2)]
  assert [r["path"] for r in results] == [str(s) for s in shards]
  assert results[1]["skipped"] == 1 and results[1]["written"] == n_questions // 2 - 1
  assert results[0]["skipped"] == len(survivor) and results[0]["written"] == n_questions // 2 - len(survivor)
  assert not out.exists()  # the library writes shards only; merging is a separate step

  for i, shard in enumerate(shards):  # each question exactly once, in its shard, in order
    assert [r["id"] for r in _lines(shard)] == ids[i::2]
  assert _lines(shards[1])[0] == killed[0]  # the record written before the kill was kept, not redone
  merge = subprocess.run([sys.executable, "-m", "polar_jax.search", "merge", str(out), *map(str, shards)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
  assert merge.returncode == 0, merge.stderr[-2000:]
  merged = _lines(out)
  assert [r["id"] for r in merged] == ids
  # Bitwise the one-process records (programs, visits, answers, rewards, log-probs), apart from wall time:
  # per_question batches never mix questions, so every pair ran in the same batch shapes in both runs.
  assert _without_seconds(merged) == _without_seconds(reference)
  assert {len(r["valid"]) for r in merged} != {0} and {len(r["invalid"]) for r in merged} != {0}
  assert {r["initial_score"] for r in merged} == {0.0, 1.0}


# --- the trainer ------------------------------------------------------------------------------------------------

TRAIN = textwrap.dedent("""
    import json, sys, zlib
    import numpy as np
    args = json.loads(sys.argv[1])
    from polar_jax import sharding
    sharding.initialize_distributed(args["address"], 2 if args["address"] else None,
                                    args["process_id"] if args["address"] else None)
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    from polar_jax import train
    from polar_jax.predictor.encoder import TokenEmbeddingEncoder
    from polar_jax.predictor.supervision import SupervisionRecord

    depth = 6
    table = np.random.default_rng(0).normal(size=(64, 12)).astype(np.float32)
    # A tokenizer that is the same in every process (str hashes are salted per process).
    tok = type("Tok", (), {"encode": staticmethod(lambda text: [zlib.crc32(w.encode()) % 64 for w in text.split()])})()
    encoder = TokenEmbeddingEncoder(table, tok)
    full = tuple(range(depth))
    rule = lambda q: full[:2] + full[3:] if "odd" in q else full + full[-1:]
    questions = [f"question {i} is {'odd' if i % 2 else 'even'}" for i in range(20)]
    records = [SupervisionRecord(id=str(i), question=q, gold="", initial_score=0.0, depth=depth, valid=(rule(q),))
               for i, q in enumerate(questions)]
    config = train.default_config()
    config.predictor.update(d_model=16, num_heads=2, num_blocks=1)  # dropout 0.1 stays on
    config.train.update(batch_size=8, num_steps=12, learning_rate=1e-2, warmup_steps=2)
    config.eval.update(every_steps=6, batch_size=8)
    config.checkpoint.every_steps = 5
    config.progress = False
    result = train.train_predictor(config, args["workdir"], records[:16], encoder, validation=records[16:])
    if jax.process_index() == 0:
      leaves = jax.tree_util.tree_leaves_with_path(result.params)
      np.savez(args["params"], **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print("RESULT " + json.dumps({"count": jax.process_count(), "devices": jax.device_count(),
                                  "local": jax.local_device_count(), "step": result.step,
                                  "history": result.history, "best_step": result.best_step}), flush=True)
""")


def test_two_process_training_equals_one_process(tmp_path):
  jobs = {  # all at once: 4 processes, mostly compiling
      "two_processes": launch(_python(TRAIN, workdir=str(tmp_path / "w2"), params=str(tmp_path / "p2.npz")), 2,
                              tmp_path, "two"),
      "one_process_two_devices": launch(
          _python(TRAIN, workdir=str(tmp_path / "w1d2"), params=str(tmp_path / "p1d2.npz")), 1, tmp_path, "onetwo",
          env=dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=2")),
      "one_process_one_device": launch(
          _python(TRAIN, workdir=str(tmp_path / "w1"), params=str(tmp_path / "p1.npz")), 1, tmp_path, "one"),
  }
  runs = {}
  for name, job in jobs.items():
    assert job.wait(300) == [0] * len(job.procs), job.tail()
    runs[name] = _result(job.logs[0])
  assert [(r["count"], r["devices"], r["local"]) for r in runs.values()] == [(2, 2, 1), (1, 2, 2), (1, 1, 1)]
  assert {r["step"] for r in runs.values()} == {12}
  # Process 1's result is the same training (its own copy of the replicated parameters, its own history).
  assert _result(jobs["two_processes"].logs[1])["history"] == runs["two_processes"]["history"]
  params = {name: dict(np.load(tmp_path / f"{p}.npz"))
            for name, p in [("two", "p2"), ("one_two", "p1d2"), ("one", "p1")]}
  assert params["two"].keys() == params["one"].keys() and len(params["two"]) > 5
  # Two processes = one process with the same two-device mesh, bitwise: each device computes the same
  # partition, and the all-reduce of two partial gradients is a single float addition, which does not depend on
  # the order (gloo across processes, in-process otherwise).
  for key in params["two"]:
    np.testing.assert_array_equal(params["two"][key], params["one_two"][key], err_msg=key)
  assert runs["two_processes"]["history"] == runs["one_process_two_devices"]["history"]
  assert runs["two_processes"]["best_step"] == runs["one_process_two_devices"]["best_step"]
  # Against one device the loss is summed over 8 rows at once instead of 4 + 4, which rounds differently
  # (float32). The parameters agree to a few ulps (measured: <= 1.2e-7) except the attention key biases: their
  # exact gradient is zero (a bias on every key of a query shifts its logits alike, which softmax ignores), so
  # what they get is rounding noise, which Adam scales up to about lr per step (measured: up to 6e-3). They
  # change no output, so the validation losses agree.
  noise = [k for k in params["two"] if "['key']['bias']" in k]
  assert len(noise) == 2
  for key in params["two"]:
    if key not in noise:
      np.testing.assert_allclose(params["two"][key], params["one"][key], rtol=0, atol=1e-6, err_msg=key)
  for a, b in zip(runs["two_processes"]["history"], runs["one_process_one_device"]["history"], strict=True):
    assert a["step"] == b["step"] and abs(a["val_loss"] - b["val_loss"]) < 1e-5
    assert a["val_top1_match"] == b["val_top1_match"]


# --- the pipeline entry point on the embedded model -------------------------------------------------------------

# One train and one validation question (one per shard), two simulations each.
QUICK = ["--config=configs/default.py:quick", "--config.data.num_search=1", "--config.data.num_validation=1",
         "--config.search.num_simulations=2"]


def _quick_config():
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("config_default", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("quick")
  config.data.num_search = config.data.num_validation = 1
  config.search.num_simulations = 2
  return config


def test_two_process_main_searches_in_shards_merges_them_and_trains(tmp_path):
  """`python -m polar_jax.main --coordinator_address=... --num_processes=2 --process_id=i` on SmolLM2."""
  from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  argv = lambda i, address: [sys.executable, "-m", "polar_jax.main", *QUICK, f"--workdir={workdir}",
                             "--config.stages=convert,search,train", f"--coordinator_address={address}",
                             "--num_processes=2", f"--process_id={i}"]
  job = launch(argv, 2, tmp_path, "main")
  assert job.wait(600) == [0, 0], job.tail()
  search = workdir / "search"
  merged = _lines(search / "records.jsonl")
  ids = [e.id for e in pipeline.load_splits(_quick_config()).searched()]
  assert [r["id"] for r in merged] == ids and len(ids) == 2
  shards = [_lines(search / f"records.shard-0000{i}-of-00002.jsonl") for i in range(2)]
  assert [[r["id"] for r in s] for s in shards] == [ids[0::2], ids[1::2]]  # each question once, in its shard
  assert merged == [shards[0][0], shards[1][0]]  # the merge is the shards' records, unchanged
  marker = json.loads((search / "done.json").read_text())
  assert marker["questions"] == 2 and marker["processes"] == 2
  assert marker["evaluations"] == sum(r["evaluations"] for r in merged)
  assert (search / "summary.json").exists()
  assert json.loads((workdir / "train" / "done.json").read_text())["step"] > 0
  assert any((workdir / "predictor" / "checkpoints").iterdir())
  lead, other = (pathlib.Path(log).read_text() for log in job.logs)
  assert "2 processes: the search in 2 shards, training over 2 devices" in lead
  assert "search: 2 questions from 2 shards" in lead and "[polar_jax]" not in other  # process 0 speaks


def test_a_multi_process_run_refuses_what_it_cannot_do(monkeypatch, tmp_path):
  from polar_jax import pipeline  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(pipeline, "_processes", lambda: (0, 2))
  config = _quick_config()
  with pytest.raises(pipeline.MultiProcessError, match=r"--config.stages=convert,search,train, then rerun without "
                                                        r"the multi-process flags with --config.stages=menu,evaluate"):
    pipeline.run_pipeline(config, tmp_path / "w")
  config.stages = "convert,search"
  config.search.shard = "0/2"
  with pytest.raises(pipeline.MultiProcessError, match=r"config.search.shard=0/2 in a 2-process run: leave it unset"):
    pipeline.run_pipeline(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()  # refused before the workdir is touched


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=0), "--num_processes must be at least 1, got 0"),
    (dict(num_processes=2, process_id=2), r"--process_id must be in 0..1 \(one id per process\), got 2"),
    (dict(process_id=1), "--process_id=1 without --num_processes"),
])
def test_bad_multi_process_settings_are_one_line(kwargs, message):
  from polar_jax import sharding  # pylint: disable=import-outside-toplevel
  with pytest.raises(sharding.DistributedError, match=message):
    sharding.initialize_distributed(**kwargs)
  assert sharding.initialize_distributed() is False and sharding.initialize_distributed(num_processes=1) is False


def test_entry_points_say_what_is_missing_in_one_line(tmp_path):
  for command in (["polar_jax.main", "--config=configs/default.py:quick", f"--workdir={tmp_path / 'w'}"],
                  ["polar_jax.search", "run", "--config=configs/default.py:quick", f"--out={tmp_path / 's.jsonl'}"]):
    res = subprocess.run([sys.executable, "-m", *command, "--num_processes=2", "--process_id=0"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].endswith(
        "coordinator_address should be defined. Pass --coordinator_address=HOST:PORT (process 0's address), "
        "--num_processes=N and --process_id=I on every process, or --distributed alone where JAX detects the "
        "cluster (Cloud TPU VM, SLURM, Open MPI)."), res.stderr[-2000:]
  assert not (tmp_path / "w").exists()
