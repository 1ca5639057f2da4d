"""On a tiny random model: ShortGPT's Block Influence against numpy, the DR.LLM-style router learning a rule,
and the whole evaluation (every method, report files, resume) end to end."""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from polar_jax import testing
from polar_jax.evaluation import router, shortgpt
from polar_jax.models import transformer
from polar_jax.records import SearchRecord


@pytest.fixture(scope="module")
def model():
  return testing.tiny_model(seed=3)


@functools.partial(jax.jit, static_argnames="cfg")
def _one_layer(lp, x, *, cfg):
  """One layer on one unpadded prompt x [1, S, D] (no cache, plain causal mask)."""
  s = x.shape[1]
  rope = transformer.rope_tables(cfg, jnp.arange(s)[None])
  key_mask = transformer.causal_key_mask(jnp.ones((1, s), jnp.int32))
  empty = jnp.zeros((1, s, cfg.num_kv_heads, cfg.head_dim), x.dtype)
  return transformer.layer(lp, cfg, x, rope, empty, empty, 0, key_mask)[0]


def _hidden_states(model, ids):
  """Hidden states entering each layer and leaving the last, one unpadded prompt, layer by layer: [L + 1, S, D]."""
  cfg = model.config
  x = transformer.embed(model.params, cfg, jnp.asarray([ids]))
  states = [np.asarray(x[0], np.float64)]
  for i in range(cfg.num_layers):
    x = _one_layer(transformer.layer_slice(model.params["layers"], i), x, cfg=cfg)
    states.append(np.asarray(x[0], np.float64))
  return np.stack(states)


def test_block_influence_matches_numpy(model):
  prompts = [[5, 9, 14, 3, 22], [7, 8], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46],
             [12, 13, 14]]
  # Direct computation: cos(in, out) per token in numpy, averaged over every token of every prompt.
  cos_sum, count = np.zeros(model.config.num_layers), 0
  for ids in prompts:
    h = _hidden_states(model, ids)
    a, b = h[:-1], h[1:]  # [L, S, D]
    cos_sum += (np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).sum(axis=1)
    count += len(ids)
  expected = 1.0 - cos_sum / count
  # Batches of 3 (left padding, a fully padded row, two length buckets).
  got = shortgpt.block_influence(model, prompts, batch_size=3)
  np.testing.assert_allclose(got, expected, atol=2e-5)
  assert np.ptp(expected) > 1e-3  # the layers differ, so the ranking below means something
  n = 2
  lowest = set(np.argsort(expected)[:n].tolist())
  assert set(shortgpt.removed_layers(got, n)) == lowest
  assert shortgpt.shortgpt_program(got, n).ids == tuple(i for i in range(4) if i not in lowest)


def test_shortgpt_helpers():
  assert shortgpt.matched_removal(30, 26.4) == 4 and shortgpt.matched_removal(30, 33.0) == 0
  assert shortgpt.matched_removal(30, 0.2) == 29
  assert shortgpt.removed_layers([0.5, 0.1, 0.1, 0.9], 1) == (1,)  # ties: lower layer id first
  with pytest.raises(ValueError, match="0..3"):
    shortgpt.removed_layers([0.5, 0.1, 0.1, 0.9], 4)


def test_router_helpers():
  assert router.per_layer_counts([0, 1, 1, 3], 4).tolist() == [1, 2, 0, 1]
  assert router.per_layer_counts([0, 1, 0, 1], 4) is None  # a block repeat is not per-layer
  assert router.per_layer_counts([1, 1, 1], 4) is None  # three runs
  assert router.counts_to_program([0, 2, 1, 0], 4).ids == (1, 1, 2)
  assert router.counts_to_program([0, 0, 0, 0], 4) is None
  w = router.pooling_weights([5, 2], 8, windows=2)
  np.testing.assert_allclose(w.sum(axis=1), 1.0)
  # 5 tokens in 2 windows of 3 and 2 tokens: each window weighs 1/2.
  np.testing.assert_allclose(w[0], [0, 0, 0, 1 / 6, 1 / 6, 1 / 6, 1 / 4, 1 / 4])
  np.testing.assert_allclose(w[1], [0] * 6 + [1 / 2, 1 / 2])


def test_router_learns_a_rule_from_search_records(model):
  # Questions with w50 have "skip layer 2" as their only valid per-layer program; the others "repeat layer 1".
  records = []
  rng = np.random.default_rng(0)
  for i in range(16):
    words = [f"w{x}" for x in rng.integers(2, 40, size=5)]
    marked = i % 2 == 0
    if marked:
      words[int(rng.integers(0, 5))] = "w50"
    valid = [[0, 1, 3]] if marked else [[0, 1, 1, 2, 3]]
    records.append(SearchRecord(id=f"syn/train/{i}", question=" ".join(words), gold="1", depth=4,
                                valid=valid + [[0, 1, 0, 1, 2, 3]]))
  rows, targets, weights, report = router.supervision(records, 4, max_programs=4)
  assert report["programs_not_per_layer"] == 16 and report["programs_used"] == 16
  cfg = ml_collections.ConfigDict(router.default_router_config().to_dict())
  cfg.update(steps=150, windows=2, batch_size=8)
  from polar_jax.program_eval import TaskConfig
  task = TaskConfig.from_preset("free", max_new_tokens=2)
  trained = router.train_router(cfg, model, task, records)
  assert trained.info["train_decision_accuracy"] == 1.0
  from polar_jax.program_eval import prompt_ids
  from polar_jax.data import Example
  exs = [Example(id=r.id, question=r.question, answer="1") for r in records]
  decisions = router.route(model, trained, prompt_ids(model, exs, task))
  expected = np.stack([targets[i] for i in np.argsort(rows)])
  np.testing.assert_array_equal(decisions, expected)


# --- the whole evaluation ------------------------------------------------------------------------------------

K = 2


def _examples(split, n, rng):
  from polar_jax.data import Example
  return [Example(id=f"syn/{split}/{i}", question=" ".join(f"w{x}" for x in rng.integers(2, 90, size=4 + i % 3)),
                  answer=str(i), level=1 + i % 2) for i in range(n)]


def _search_records(examples, depth):
  return [SearchRecord.from_json(
      {"id": e.id, "question": e.question, "gold": e.answer, "level": e.level, "subject": None, "depth": depth,
       "initial_score": 0.0, "initial_answer": None,
       "valid": [{"program": [0, 1, 3], "visits": 1, "answer": e.answer},
                 {"program": [0, 0, 1, 2, 3], "visits": 1, "answer": e.answer}],
       "invalid": [{"program": list(range(depth)), "visits": 1, "answer": None}],
       "simulations": 4, "evaluations": 3, "layers": 30, "seconds": 0.25, "seed": 0, "config": None})
      for e in examples]


@pytest.fixture(scope="module")
def setup(model, tmp_path_factory):
  from polar_jax import evaluation as evaluate
  from polar_jax.predictor import DecodeOptions, PredictorConfig, ProgramPredictor, TokenEmbeddingEncoder, init_params
  from polar_jax.program_eval import TaskConfig
  rng = np.random.default_rng(0)
  test, calibration = _examples("test", 5, rng), _examples("train", 3, rng)
  depth = model.config.num_layers
  encoder = TokenEmbeddingEncoder.from_model(model)
  pc = PredictorConfig(depth=depth, d_model=16, num_heads=2, num_blocks=1, dropout=0.0)
  predictor = ProgramPredictor(pc, init_params(pc, encoder.feature_dim, jax.random.PRNGKey(1)), encoder,
                               decode=DecodeOptions(top_k=K))
  config = evaluate.default_eval_config()
  config.update(k=K, temperatures=(0.7,), shortgpt_sweep=(1,), trust_search_cache=True, max_batch=8, title="tiny")
  config.router.update(steps=20, batch_size=4)
  kwargs = dict(model=model, task=TaskConfig.from_preset("free_prefix", max_new_tokens=3), test_sets={"syn": test},
                predictor=predictor, dense_predictor=predictor,  # polar_dense runs any predictor's top-1
                search_records=_search_records(calibration, depth), calibration=calibration,
                out_dir=tmp_path_factory.mktemp("eval"))
  results = evaluate.run_evaluation(config, **kwargs)
  return results, config, kwargs


def _row(results, method, test_set="syn"):
  return next(r for r in results["rows"] if r["method"] == method and r["test_set"] == test_set and r["level"] == "all")


def test_polar_dense_is_the_top1_of_its_predictor(setup):
  results, _, _ = setup
  polar, dense = _row(results, "polar"), _row(results, "polar_dense")
  assert dense["pass@1"] == polar["pass@1"] and dense["layers_per_token"] == polar["layers_per_token"]
  assert dense["candidates_mean"] == 1


def test_every_method_and_the_report_files(setup):
  results, _, kwargs = setup
  out = kwargs["out_dir"]
  assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
  methods = {r["method"] for r in results["rows"] if r["test_set"] == "syn" and r["level"] == "all"}
  matched = _row(results, "shortgpt_matched")["info"]["n"]
  assert methods == {"full_depth_greedy", "full_depth_sampling_t0.7", "polar", "polar_dense", "polar_trust_search_cache",
                     "shortgpt_matched", "random_programs", "router"} | ({"shortgpt_n1"} - {f"shortgpt_n{matched}"})
  assert {r["method"] for r in results["rows"] if r["test_set"] == "search records"} == {
      "search_oracle_joint", "search_oracle_skip_only", "search_oracle_repeat_only"}
  assert {r["level"] for r in results["rows"] if r["method"] == "polar"} == {"all", 1, 2}
  md = (out / "results.md").read_text()
  for r in results["rows"]:
    assert r["label"] in md
  for name in ("tradeoff.png", "layer_usage.png"):
    assert (out / name).stat().st_size > 1000
  assert results["model"] == {"name": "tiny-llama", "depth": 4} and results["task"]["prompt"] == "free_prefix"
  assert _row(results, "search_oracle_skip_only", "search records")["oracle"] == 1.0
  assert _row(results, "polar_trust_search_cache")["info"]["searched_questions"] == 0  # test set never searched


def test_layers_and_candidates_are_accounted(setup):
  from polar_jax.evaluation.outcomes import MethodRun
  results, _, kwargs = setup
  runs = {p.stem: MethodRun.load(p) for p in (kwargs["out_dir"] / "runs" / "syn").glob("*.json")}
  full = _row(results, "full_depth_greedy")
  assert full["layers_per_token"] == 4.0
  assert full["layers_per_question"] == pytest.approx(4 * full["generated_tokens"])
  assert _row(results, "full_depth_sampling_t0.7")["candidates_mean"] == K
  assert all(len(o.candidates) == K for o in runs["full_depth_sampling_t0.7"].outcomes)
  n = _row(results, "shortgpt_matched")["info"]["n"]
  assert _row(results, "shortgpt_matched")["layers_per_token"] == 4 - n
  assert {len(o.candidates[0].program) for o in runs["shortgpt_n1"].outcomes} == {3}
  # PoLar ran exactly the predictor's ranked top-k programs; random programs copy its top-1 lengths.
  decoded = kwargs["predictor"].predict([e.question for e in kwargs["test_sets"]["syn"]])
  polar = runs["polar"]
  assert [[c.program for c in o.candidates] for o in polar.outcomes] == [
      [c.program.ids for c in d.candidates] for d in decoded]
  assert [o.candidates[0].score for o in polar.outcomes] == pytest.approx([d.candidates[0].score for d in decoded])
  assert [len(o.candidates[0].program) for o in runs["random_programs"].outcomes] == [
      len(o.candidates[0].program) for o in polar.outcomes]
  assert polar.overhead_seconds > 0 and polar.top1_seconds > 0
  row = _row(results, "polar")
  assert row["layers_per_token"] == pytest.approx(np.mean([len(d.candidates[0].program) for d in decoded]))
  assert all(row["pass@k"][str(i)] <= row["pass@k"][str(i + 1)] for i in range(1, K))
  assert row["vote@k"]["1"] == row["pass@1"]
  usage = results["polar_layer_usage"]["syn"]
  assert [sum(u) for u in usage] == [5] * 4


def test_resume_loads_finished_methods(setup, monkeypatch):
  from polar_jax import evaluation as evaluate
  from polar_jax import program_eval
  from polar_jax.evaluation import router as router_lib
  results, config, kwargs = setup

  def fail(*args, **kw):
    raise AssertionError("a finished method was recomputed")

  monkeypatch.setattr(program_eval, "run_programs", fail)
  monkeypatch.setattr(router_lib, "train_router", fail)
  monkeypatch.setattr(shortgpt, "block_influence", fail)
  monkeypatch.setattr(kwargs["predictor"], "predict", fail)
  again = evaluate.run_evaluation(config, **kwargs)
  assert again["rows"] == results["rows"]
  other = dict(kwargs, test_sets={"syn": kwargs["test_sets"]["syn"][:3]})
  with pytest.raises(ValueError, match="other questions"):
    evaluate.run_evaluation(config, **other)


def test_method_progress_bars_are_named_by_method_and_test_set(tmp_path):
  from polar_jax import evaluation
  from polar_jax.evaluation import protocol
  from polar_jax.options import EvalOptions
  ctx = protocol.EvalContext(config=EvalOptions(progress=True, warmup=False), model=None, task=None, predictor=None,
                             search_records=(), calibration=(), out=tmp_path, depth=4, k=1,
                             common={"progress": True}, store=protocol._RunStore(tmp_path))
  seen = []
  examples = [type("Ex", (), {"id": "q/0"})()]

  def compute():
    seen.append(ctx.common["progress"])
    return evaluation.MethodRun("m", "M", "deployable", "syn", (evaluation.QuestionOutcome("q/0", 1, ()),))
  ctx.run("syn", examples, "full_depth_greedy", compute)
  assert seen == ["full_depth_greedy on syn"] and ctx.common["progress"] is True


def test_selection_live_runs_name_their_progress_bars(monkeypatch):
  # The selection method's live runs show "<method> on <test set>: menu program j", not "run_programs".
  import types
  from polar_jax import program_eval
  from polar_jax.evaluation import selection
  seen = []
  def fake(model, examples, pairs, task, **kw):
    seen.append(kw.get("progress"))
    return [types.SimpleNamespace(answer="1", answer_logprob=-0.5, program=p.ids, correct=True, layers=len(p),
                                  generated_tokens=1, text="1", seconds=0.1) for _, p in pairs]
  monkeypatch.setattr(program_eval, "run_programs", fake)
  live = selection.LiveAnswers(None, None, ["a", "b"], [(0, 1), (1,)], 2, progress="selection on syn")
  assert live.run(1)["answer"].tolist() == ["1", "1"]
  live.run(1)  # already run: no second call
  quiet = selection.LiveAnswers(None, None, ["a"], [(0, 1)], 2, progress=False)
  quiet.run(0)
  assert seen == ["selection on syn: menu program 1", False]
  # A multi-run method names its bars by itself while it reads (vote, confidence, gated fallback).
  seen.clear()
  picker = types.SimpleNamespace(name="program_vote[k=3]", describe=lambda: {},
                                 choose=lambda questions, view: (view.run(0, [0]), [0])[1])
  selection.multi_run(live, picker, ["q"], [types.SimpleNamespace(id="a", level=1)], test_set="syn", label="vote",
                      overhead_seconds=0.0)
  assert seen == ["program_vote[k=3] on syn: menu program 0"] and live.label is None
