"""Tests for program_eval: records and summary on SmolLM2, batching equivalence, log-likelihood choices, resume."""

import json

import numpy as np
import pytest

from polar_jax import data
from polar_jax.program_eval import RunRecord, TaskConfig, evaluate_program, read_run_records, run_programs
from polar_jax.programs import Program, ProgramError
from polar_jax.programs.executor import executor_for
from polar_jax.testing import tiny_model

TINY_PROMPT = data.PromptConfig("tiny", template="question", answer_format="last_number")
TINY_TASK = TaskConfig(TINY_PROMPT, max_new_tokens=5)
# Word-level prompts of different lengths (the tiny tokenizer knows w2 .. w95).
TINY_EXAMPLES = [data.Example(f"tiny/{i}", " ".join(f"w{(7 * i + 3 * j) % 90 + 2}" for j in range(3 + 2 * i)),
                              str(i)) for i in range(4)]
MC_EXAMPLES = [data.Example(f"mc/{i}", f"w{10 + i} w{20 + i} w{30 + i}", "ABCD"[i % 4],
                            choices=(f"w{40 + i}", f"w{50 + i} w{51 + i}", f"w{60 + i} w{61 + i} w{62 + i}", "w70"))
               for i in range(4)]
REPEAT = Program([0, 1, 2, 1, 2, 3], 4)
SKIP = Program([0, 2, 3], 4)


@pytest.fixture(scope="module")
def tiny():
  return tiny_model()


@pytest.fixture(scope="module")
def smollm2():
  from polar_jax.models import load_model
  return load_model("smollm2-135m-instruct")


def test_smollm2_end_to_end_records_and_summary(smollm2, tmp_path):
  """16 ladder questions at full depth: record fields, accuracy = mean of flags, layers = 30 x passes, files."""
  examples = data.load_split("arith_level1", "test", limit=16)
  task = TaskConfig.from_preset("free_prefix", max_new_tokens=8)
  records, summary = evaluate_program(smollm2, examples, task, out_dir=tmp_path, progress=False,
                                      info={"dataset": "arith_level1", "split": "test"})
  assert [r.id for r in records] == [ex.id for ex in examples]
  for record, example in zip(records, examples):
    assert record.program == tuple(range(30))
    assert record.answer_format == "last_number"
    assert 1 <= record.generated_tokens <= 8
    assert record.layers == 30 * record.generated_tokens  # One prefill pass + one pass per further token.
    assert record.seconds > 0
    assert (record.answer, record.correct) == data.score_generation(record.text, example, "last_number",
                                                                     assistant_prefix="The answer is ")
  flags = [r.correct for r in records]
  assert summary["accuracy"] == pytest.approx(np.mean(flags))
  assert 0 < summary["accuracy"]  # Level 1 has real signal on this model (about half right).
  assert summary["mean_layers"] == pytest.approx(30 * np.mean([r.generated_tokens for r in records]))
  assert summary["mean_layers_per_token"] == pytest.approx(30)
  assert summary["n"] == 16 and summary["dataset"] == "arith_level1" and summary["prompt"] == "free_prefix"
  assert summary["program"] == "0-29" and summary["model"] == "smollm2-135m-instruct"
  written = read_run_records(tmp_path / "records.jsonl")  # In finishing order: batches follow prompt length.
  assert sorted(written, key=lambda r: r.id) == sorted(records, key=lambda r: r.id)
  assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_mixed_programs_equal_each_pair_run_alone(tiny):
  pairs = [(0, Program.full(4)), (1, SKIP), (2, REPEAT), (0, REPEAT), (3, SKIP), (1, Program.full(4))]
  together = run_programs(tiny, TINY_EXAMPLES, pairs, TINY_TASK, max_batch=4)
  assert [r.id for r in together] == [TINY_EXAMPLES[i].id for i, _ in pairs]
  assert len({r.text for r in together}) > 2  # The programs change the output, so the comparison means something.
  for (i, program), record in zip(pairs, together):
    alone = run_programs(tiny, [TINY_EXAMPLES[i]], [program.ids], TINY_TASK)[0]
    assert record.program == program.ids
    assert (record.text, record.generated_tokens, record.layers) == (alone.text, alone.generated_tokens, alone.layers)
    assert record.layers == len(program) * record.generated_tokens
  per_example = run_programs(tiny, TINY_EXAMPLES, [p for _, p in pairs[:4]], TINY_TASK)
  assert [r.text for r in per_example] == [run_programs(tiny, [ex], p, TINY_TASK)[0].text
                                           for ex, (_, p) in zip(TINY_EXAMPLES, pairs[:4])]


def test_a_pairs_sample_depends_on_its_seed_question_and_program_only(tiny):
  """Sampling: the same pair gives the same record alone, in another batch size or after other pairs; repeats
  of a pair in one call and other seeds draw other samples."""
  pairs = [(0, Program.full(4)), (1, SKIP), (2, REPEAT), (0, REPEAT), (3, SKIP), (1, Program.full(4)),
           (0, Program.full(4))]
  common = dict(temperature=1.5, seed=5)
  together = run_programs(tiny, TINY_EXAMPLES, pairs, TINY_TASK, max_batch=4, **common)
  for (i, program), record in list(zip(pairs, together))[:6]:
    alone = run_programs(tiny, TINY_EXAMPLES, [(i, program)], TINY_TASK, max_batch=1, **common)[0]
    assert (record.text, record.layers) == (alone.text, alone.layers)
  other_seed = run_programs(tiny, TINY_EXAMPLES, pairs, TINY_TASK, max_batch=4, temperature=1.5, seed=6)
  assert [r.text for r in other_seed] != [r.text for r in together]
  assert together[0].text != together[6].text  # the second copy of (0, full) draws its own sample


def _hand_loglik(tiny, example, program, task):
  """Sum of log-softmax scores of each option's tokens after the prompt, one option alone per prefill."""
  tok = tiny.tokenizer
  prompt = tok.encode(data.render_prompt(example, task.prompt, tok))
  scores = []
  for choice in example.choices:
    option = tok.encode(choice)
    logits = executor_for(tiny).prefill_logits([prompt + option], program)[0].astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    scores.append(sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(option)))
  return scores


def test_choice_loglik_picks_the_hand_computed_option(tiny):
  task = TaskConfig(TINY_PROMPT, max_new_tokens=3, choice_scoring="loglik")
  examples = MC_EXAMPLES + [TINY_EXAMPLES[0]]  # A free-form question in the same task still generates.
  picks = []
  for program in (Program.full(4), REPEAT):
    records = run_programs(tiny, examples, program, task, max_batch=2)
    for record, example in zip(records[:4], examples):
      scores = _hand_loglik(tiny, example, program, task)
      letter = "ABCD"[int(np.argmax(scores))]
      picks.append(letter)
      assert record.answer == letter and record.correct == (letter == example.answer)
      assert record.text == example.choices["ABCD".index(letter)]
      assert record.answer_format == "choice_loglik" and record.generated_tokens == 0
      assert record.layers == len(program) * 4
    assert records[4].answer_format == "last_number" and records[4].generated_tokens >= 1
  assert len(set(picks)) > 1  # Different options win, so the comparison is not trivially one letter.


def test_resume_skips_finished_ids(tiny, tmp_path):
  first, _ = evaluate_program(tiny, TINY_EXAMPLES[:2], TINY_TASK, out_dir=tmp_path, progress=False)
  records, summary = evaluate_program(tiny, TINY_EXAMPLES, TINY_TASK, out_dir=tmp_path, progress=False)
  assert summary["resumed"] == 2 and summary["n"] == 4
  assert records[:2] == first  # Read back, not run again: even the timings are the old ones.
  lines = (tmp_path / "records.jsonl").read_text().splitlines()
  assert sorted(json.loads(line)["id"] for line in lines) == [ex.id for ex in TINY_EXAMPLES]
  with pytest.raises(ValueError, match="use another out_dir"):
    evaluate_program(tiny, TINY_EXAMPLES, TINY_TASK, SKIP, out_dir=tmp_path, progress=False)
  with open(tmp_path / "records.jsonl", "a") as fh:
    fh.write('{"id": "tiny/9", "program": [0, 1\n')
  with pytest.raises(ValueError, match=r"records\.jsonl:5: not a valid run record"):
    evaluate_program(tiny, TINY_EXAMPLES, TINY_TASK, out_dir=tmp_path, progress=False)


def test_bad_input_gives_clear_errors(tiny):
  compiles = executor_for(tiny).compiles
  with pytest.raises(ValueError, match="No examples given"):
    run_programs(tiny, [], Program.full(4), TINY_TASK)
  with pytest.raises(ValueError, match="No examples given"):
    evaluate_program(tiny, [], TINY_TASK, progress=False)
  with pytest.raises(ProgramError, match="is for a 30-layer model, but this model has 4 layers"):
    run_programs(tiny, TINY_EXAMPLES, Program.full(30), TINY_TASK)
  with pytest.raises(ProgramError, match="program 1 .*Program index 7 out of range for a 4-layer model"):
    run_programs(tiny, TINY_EXAMPLES[:2], [[0, 1], [0, 7]], TINY_TASK)
  with pytest.raises(ValueError, match="refers to example 9"):
    run_programs(tiny, TINY_EXAMPLES, [(9, SKIP)], TINY_TASK)
  with pytest.raises(ValueError, match="3 programs for 4 examples"):
    run_programs(tiny, TINY_EXAMPLES, [SKIP, SKIP, SKIP], TINY_TASK)
  with pytest.raises(ValueError, match="Unknown prompt preset 'fancy'"):
    TaskConfig.from_preset("fancy")
  with pytest.raises(ValueError, match="Unknown choice_scoring"):
    TaskConfig.from_preset("paper", choice_scoring="vote")
  with pytest.raises(ValueError, match="few_shot_split"):
    TaskConfig.from_preset("paper", few_shot=2)
  assert executor_for(tiny).compiles == compiles  # Refused before anything was traced.


def test_json_round_trips():
  task = TaskConfig.from_preset("paper_qwen3", max_new_tokens=16, few_shot=2, dataset="svamp")
  assert task.few_shot_split == "gsm8k:train"
  assert TaskConfig.from_json(json.loads(json.dumps(task.to_json()))) == task
  record = RunRecord("a/1", (0, 2, 2), "42}", "42", True, 12, 4, 0.5, "boxed")
  assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
  with pytest.raises(ValueError, match="wrong type"):
    RunRecord.from_json({**record.to_json(), "correct": "yes"})
