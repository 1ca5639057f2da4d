"""The stages' options: one set of defaults, strict reading of configs, big_vision-style config arguments."""

import dataclasses
import importlib.util
import pathlib

import pytest

from polar_jax import options
from polar_jax.errors import ConfigError
from polar_jax.search.tree import SearchConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _default_config(arg=None):
  spec = importlib.util.spec_from_file_location("config_default", ROOT / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_base_config_is_derived_from_the_options_defaults():
  c = options.base_config()
  assert c.search.num_simulations == SearchConfig().num_simulations == 200
  assert c.search.max_len is None and c.search.max_batch == options.SearchOptions().max_batch
  assert c.predictor.decode.beam_size == options.TrainOptions().decode.beam_size
  assert tuple(c.evaluate.temperatures) == options.EvalOptions().temperatures
  assert options.pipeline_options(c) == options.PipelineOptions()
  # the stage-level ConfigDict views are the same defaults
  from polar_jax import evaluation, train
  assert options.coerce(options.TrainOptions, train.default_config()) == options.TrainOptions()
  assert options.coerce(options.EvalOptions, evaluation.default_eval_config()) == options.EvalOptions()


def test_reading_a_config_is_strict_and_names_the_key():
  c = options.base_config()
  c.search.num_simulation = 3  # a typo: ConfigDict accepts it when unlocked, the options do not
  with pytest.raises(ConfigError, match=r"config\.search\.num_simulation is not a known field \(did you mean "
                                        r"'num_simulations'\?\)"):
    options.pipeline_options(c)
  with pytest.raises(ConfigError, match=r"config\.data\.num_test must be int, got 'many'"):
    options.pipeline_options({"data": {"num_test": "many"}})  # a plain dict has no ConfigDict type checks
  c = options.base_config()
  c.search.space = "everything"  # SearchConfig's own check, reported with its section
  with pytest.raises(ConfigError, match=r"config\.search: SearchConfig\.space must be one of"):
    options.pipeline_options(c)


def test_values_are_converted_to_their_declared_types():
  c = options.base_config()
  c.evaluate.temperatures = [0.5]  # a list from the command line -> tuple
  c.predictor.train.learning_rate = 1  # int where a float is declared
  opts = options.pipeline_options(c)
  assert opts.evaluate.temperatures == (0.5,) and opts.predictor.train.learning_rate == 1.0
  assert isinstance(opts.predictor.train.learning_rate, float)
  assert opts.search.tree() == SearchConfig()  # the per-question part alone


def test_config_arguments_big_vision_style():
  arg = options.parse_arg("quick,n_test=500,preset=raw_qa", quick=False, n_test=None, preset=None, lr=0.1)
  assert (arg.quick, arg.n_test, arg.preset, arg.lr) == (True, 500, "raw_qa", 0.1)
  with pytest.raises(ConfigError, match=r"Unknown config argument 'quik' \(did you mean 'quick'\?\)"):
    options.parse_arg("quik", quick=False)
  with pytest.raises(ConfigError, match="needs a value"):
    options.parse_arg("n_test", n_test=0)
  with pytest.raises(ConfigError, match="expected a int"):
    options.parse_arg("n_test=lots", n_test=0)


def test_default_config_arguments_apply_after_the_variants():
  quick = options.pipeline_options(_default_config("quick"))
  more = options.pipeline_options(_default_config("quick,n_test=500,sims=64,leaves=16"))
  assert more.data.num_test == 500 and more.search.num_simulations == 64 and more.search.leaves_per_round == 16
  assert dataclasses.replace(more, data=quick.data, search=quick.search) == quick
