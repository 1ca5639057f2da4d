"""The sweep launchers: pasteable dry runs, a log that records its command, the table across sweep points."""

import json
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launch import local, summary, sweeps  # pylint: disable=wrong-import-position


def _commands(text: str) -> list[tuple[str, list[str]]]:
  """(name, argv) of a dry run's output: a `# name` comment line, then the command on its own line."""
  lines = text.strip().splitlines()
  assert len(lines) % 2 == 0, text
  out = []
  for comment, command in zip(lines[::2], lines[1::2]):
    assert comment.startswith("# ") and not command.startswith("#"), (comment, command)
    out.append((comment[2:], shlex.split(command)))
  return out


def test_local_dry_run_prints_pasteable_commands(capsys, tmp_path):
  points = sweeps.get_sweep("length_penalty")
  assert local.run_points(points, str(tmp_path), 1, dry_run=True) == {p.name: 0 for p in points}
  printed = _commands(capsys.readouterr().out)
  assert [name for name, _ in printed] == [p.name for p in points]
  for (name, argv), p in zip(printed, points):
    assert argv[:3] == ["python", "-m", "polar_jax.main"] and f"--workdir={tmp_path}/{name}" in argv
    assert argv[3:] == p.args(str(tmp_path))
  # bash reads the whole output as comments and commands (nothing to edit before pasting it)
  assert subprocess.run(["bash", "-n"], input="\n".join(f"# {n}\n{shlex.join(a)}" for n, a in printed),
                        text=True).returncode == 0


def test_xm_dry_run_prints_pasteable_commands():
  dry = subprocess.run([sys.executable, "-m", "launch.xm_launch", "--sweep=paper_models", "--param=model_root=/ckpt",
                        "--dry_run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert dry.returncode == 0, dry.stderr
  printed = dict(_commands(dry.stdout))
  assert list(printed) == ["llama3_2_3b", "qwen2_5_3b", "qwen3_8b"]
  assert "--config.model.path=/ckpt/Qwen3-8B" in printed["qwen3_8b"]
  assert printed["qwen3_8b"][:3] == ["python", "-m", "polar_jax.main"]


def test_sweep_docs_name_the_real_flag():
  for path in ("launch/sweeps.py", "launch/local.py", "launch/xm_launch.py", "README.md"):
    assert "--override" not in (ROOT / path).read_text(), path


def test_log_starts_with_the_command(tmp_path):
  """A point whose config file does not exist fails in a second; its log.txt still says what ran."""
  point = sweeps.SweepPoint("broken", "configs/no_such_config.py")
  codes = local.run_points([point], str(tmp_path), 1, dry_run=False)
  assert codes["broken"] != 0
  lines = (tmp_path / "broken" / "log.txt").read_text().splitlines()
  assert lines[0].startswith("# broken, started ")
  assert shlex.split(lines[1]) == point.command(str(tmp_path))
  assert any(line.startswith("polar_jax: error:") for line in lines[2:])  # then the run's own output


def _results(pass1: float, layers: float, n: int = 200) -> dict:
  """A results.json made by the evaluation's own metrics code (two methods, one oracle)."""
  from polar_jax.data import Example
  from polar_jax.evaluation import metrics
  from polar_jax.evaluation.outcomes import Candidate, MethodRun, QuestionOutcome

  def run(method, label, hits, program, kind="deployable"):
    outcomes = tuple(QuestionOutcome(f"q{i}", 1, (Candidate(program=program, answer="1", correct=i < hits,
                                                             layers=3 * len(program), generated_tokens=3),))
                     for i in range(n))
    return MethodRun(method=method, label=label, kind=kind, test_set="arith_level11", outcomes=outcomes)

  runs = [run("full_depth_greedy", "Full depth, greedy (T=0)", n // 2, tuple(range(30))),
          run("polar", "PoLar (top-5 predicted programs)", round(pass1 * n), tuple(range(round(layers)))),
          run("search_oracle_joint", "Search oracle (ORACLE)", n - 10, tuple(range(28)), kind="oracle")]
  rows = [row for r in runs for row in metrics.method_rows(r, 30, (1,))]
  metrics.add_intervals(rows, runs, {"arith_level11": [Example(id=f"q{i}", question="?", answer="1")
                                                       for i in range(n)]})
  return {"k": 1, "model": {"name": "m", "depth": 30}, "rows": rows}


def test_summarize_tables_the_points_with_results(tmp_path):
  points = sweeps.get_sweep("length_penalty")
  for p, (pass1, layers) in zip(points[:2], [(0.55, 29), (0.6, 27)]):
    (tmp_path / p.name).mkdir()
    (tmp_path / p.name / "results.json").write_text(json.dumps(_results(pass1, layers)))
  (tmp_path / points[2].name).mkdir()  # started, no results yet
  res = subprocess.run([sys.executable, "-m", "launch.local", "--sweep=length_penalty",
                        f"--workdir_root={tmp_path}", "--summarize"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 0, res.stderr
  text = res.stdout
  assert "2 of 4 points with results" in text and "search.length_penalty=0.0" in text
  assert "## arith_level11 (n = 200)" in text
  header = f"| method | {points[0].name} | {points[1].name} |"
  assert text.count(header) == 2  # pass@1, then layers per token
  polar = [line for line in text.splitlines() if line.startswith("| PoLar")]
  assert polar[0].startswith("| PoLar (top-5 predicted programs) | 55.0 [") and "| 60.0 [" in polar[0]
  assert polar[1] == "| PoLar (top-5 predicted programs) | 29.0 | 27.0 |"
  assert "| Search oracle (ORACLE) | 95.0 [" in text
  assert f"`{points[2].name}` (no results.json yet)" in text and f"`{points[3].name}` (not started)" in text


@pytest.mark.parametrize("content, message", [(None, "has a results.json yet; run it first"),
                                              ("{not json", "is not a results file of polar_jax.main")])
def test_summarize_without_results_is_one_line(tmp_path, content, message):
  points = sweeps.get_sweep("length_penalty")
  if content is not None:
    (tmp_path / points[0].name).mkdir()
    (tmp_path / points[0].name / "results.json").write_text(content)
  res = subprocess.run([sys.executable, "-m", "launch.local", "--sweep=length_penalty",
                        f"--workdir_root={tmp_path}", "--summarize"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 2
  assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_summary_module_reads_results_directly(tmp_path):
  points = sweeps.get_sweep("simulations")[:1]
  (tmp_path / points[0].name).mkdir()
  (tmp_path / points[0].name / "results.json").write_text(json.dumps(_results(0.5, 30)))
  found, missing = summary.load_point_results(points, str(tmp_path))
  assert list(found) == [points[0].name] and not missing
  assert "| Full depth, greedy (T=0) | 50.0 [" in summary.sweep_table("simulations", points, str(tmp_path))
