"""Sweeps as plain Python: each is a list of points (a config file plus `--config.*` overrides).

Add a sweep by adding a function to `SWEEPS`. A point's name becomes its workdir under the sweep's root, so
every point resumes independently when the sweep is launched again. An override value may hold `{key}`
placeholders, filled from the launchers' `--param=key=value` flags (`paper_models` needs `--param=model_root=/ckpt`).
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex
import sys
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class SweepPoint:
  name: str
  config: str  # "configs/default.py:quick"
  overrides: tuple[tuple[str, Any], ...] = ()

  def args(self, workdir_root: str) -> list[str]:
    """Command-line arguments of `python -m polar_jax.main` for this point."""
    out = [f"--config={self.config}", f"--workdir={workdir_root.rstrip('/')}/{self.name}"]
    out += [f"--config.{key}={_flag_value(value)}" for key, value in self.overrides]
    return out

  def command(self, workdir_root: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "polar_jax.main", *self.args(workdir_root)]

  def shell(self, workdir_root: str) -> str:
    return shlex.join(self.command(workdir_root, python="python"))


def _flag_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return ",".join(str(v) for v in value)
  return str(value)


def grid(name: str, config: str, **axes: list) -> list[SweepPoint]:
  """The product of override lists: grid("lam", "configs/default.py", **{"search.length_penalty": [1, 5]})."""
  keys = list(axes)
  points = []
  for values in itertools.product(*(axes[k] for k in keys)):
    suffix = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in zip(keys, values))
    points.append(SweepPoint(f"{name}_{suffix}", config, tuple(zip(keys, values))))
  return points


def length_penalty() -> list[SweepPoint]:
  """The search's length penalty lambda (the paper uses 5.0) on the embedded default."""
  return grid("lambda", "configs/default.py", **{"search.length_penalty": [0.0, 2.5, 5.0, 10.0]})


def simulations() -> list[SweepPoint]:
  """How much supervision quality the search budget buys."""
  return grid("sims", "configs/default.py", **{"search.num_simulations": [16, 32, 64, 128]})


def predictor_width() -> list[SweepPoint]:
  return grid("width", "configs/default.py", **{"predictor.predictor.d_model": [64, 128, 256],
                                                 "predictor.train.learning_rate": [5e-4, 1e-3]})


def paper_models() -> list[SweepPoint]:
  """The paper's three dense models; pass the snapshot root with --param=model_root=/ckpt."""
  return [SweepPoint("llama3_2_3b", "configs/llama3_2_3b.py:gpu",
                     (("model.path", "{model_root}/Llama-3.2-3B-Instruct"),)),
          SweepPoint("qwen2_5_3b", "configs/qwen2_5_3b.py:gpu",
                     (("model.path", "{model_root}/Qwen2.5-3B-Instruct"),)),
          SweepPoint("qwen3_8b", "configs/qwen3_8b.py:gpu", (("model.path", "{model_root}/Qwen3-8B"),))]


def quick_smoke() -> list[SweepPoint]:
  """Two tiny points of the quick variant that only load the model (used by the launcher tests)."""
  return grid("smoke", "configs/default.py:quick", **{"stages": ["convert"], "seed": [0, 1]})


SWEEPS: dict[str, Callable[[], list[SweepPoint]]] = {
    "length_penalty": length_penalty, "simulations": simulations, "predictor_width": predictor_width,
    "paper_models": paper_models, "quick_smoke": quick_smoke,
}


def parse_params(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--param expects key=value, got {item!r}.")
    key, value = item.split("=", 1)
    out[key] = value
  return out


def get_sweep(name: str, **params: str) -> list[SweepPoint]:
  """The points of a named sweep, with `{param}` placeholders in override values filled from params."""
  if name not in SWEEPS:
    raise KeyError(f"Unknown sweep {name!r}; known: {sorted(SWEEPS)}.")
  points = SWEEPS[name]()
  out = []
  for p in points:
    overrides = []
    for key, value in p.overrides:
      if isinstance(value, str) and "{" in value:
        try:
          value = value.format(**params)
        except KeyError as e:
          raise KeyError(f"Sweep {name!r} needs --param {e.args[0]}=... (for {key}).") from None
      overrides.append((key, value))
    out.append(dataclasses.replace(p, overrides=tuple(overrides)))
  return out


def points_from_flags(argv: list[str], name: str | None, params: list[str]) -> list[SweepPoint]:
  """The launchers' shared flag handling: the named sweep's points, or an absl usage error saying what to fix."""
  from absl import app  # Deferred: the sweep definitions themselves need nothing but the standard library.
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not name:
    raise app.UsageError(f"--sweep is required; one of {sorted(SWEEPS)}.")
  try:
    return get_sweep(name, **parse_params(params))
  except (KeyError, ValueError) as e:
    raise app.UsageError(str(e.args[0]) if e.args else str(e)) from None
