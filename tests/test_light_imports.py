"""The light modules import without jax, model code or ML frameworks (checked in a fresh interpreter)."""

import os
import subprocess
import sys

import pytest

import polar_jax

HEAVY = ("jax", "jaxlib", "flax", "tokenizers", "gguf", "transformers", "tensorflow", "torch")
# The subprocess imports the polar_jax under test (this checkout), whatever the installed one is.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(polar_jax.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}


def _run(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_ENV)


@pytest.mark.parametrize("module", ["polar_jax.programs", "polar_jax.programs.program", "polar_jax.programs.segments",
                                    "polar_jax.programs.schedule", "polar_jax.programs.kinds",
                                    "polar_jax.programs.batching", "polar_jax.programs.prefix_sharing",
                                    "polar_jax.search", "polar_jax.search.tree", "polar_jax.search.release",
                                    "polar_jax.predictor", "polar_jax.records", "polar_jax.options",
                                    "polar_jax.workdir", "polar_jax.errors",
                                    "polar_jax.summaries", "polar_jax.inspect", "polar_jax.predict"])
def test_module_imports_light(module):
  code = (f"import sys, {module}\n"
          f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
  out = _run(code)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "", f"importing {module} loaded: {out.stdout.strip()}"


def test_heavy_names_load_on_access():
  code = ("import sys\n"
          "from polar_jax.programs import Program\n"
          "assert 'jax' not in sys.modules\n"
          "from polar_jax.programs import Executor, GenerationResult, StopRule, executor_for, generate\n"
          "from polar_jax.programs.executor import Executor as E, StopRule as S\n"
          "assert (E, S) == (Executor, StopRule) and 'jax' in sys.modules\n"
          "import polar_jax.programs as p\n"
          "assert 'executor_for' in dir(p)\n"
          "try:\n"
          "  p.no_such_name\n"
          "except AttributeError:\n"
          "  pass\n"
          "else:\n"
          "  raise AssertionError('no AttributeError')\n")
  out = _run(code)
  assert out.returncode == 0, out.stderr
