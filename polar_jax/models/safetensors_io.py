"""Zero-copy reading of (possibly sharded) safetensors checkpoints into numpy, bfloat16 included.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping tensor names to
`{dtype, shape, data_offsets}`, then raw little-endian data. Reading it through `np.memmap` keeps an 8B
checkpoint off the heap until each tensor is converted, and supports bfloat16 via ml_dtypes (numpy itself has
no bfloat16, which is why `safetensors.numpy` cannot load bf16 checkpoints).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator

import ml_dtypes
import numpy as np

from polar_jax.errors import UserError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointFormatError(UserError, ValueError):
  """A checkpoint file is malformed, or its tensors do not match what the config implies."""


def read_header(path: str) -> dict:
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointFormatError(f"{path} is too short to be a safetensors file.")
    (n,) = struct.unpack("<Q", raw)
    if n > 100 * 2**20:
      raise CheckpointFormatError(f"{path}: header length {n} is implausible; is this a safetensors file?")
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CheckpointFormatError(f"{path}: the safetensors header is not valid JSON ({e}).") from None
  header.pop("__metadata__", None)
  return header


def iter_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) for every tensor of one safetensors file, as read-only memory maps."""
  header = read_header(path)
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
  base = 8 + n
  size = os.path.getsize(path)
  for name, info in header.items():
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
      raise CheckpointFormatError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}.")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    count = int(np.prod(shape)) if shape else 1
    if end - start != count * np.dtype(dtype).itemsize or base + end > size:
      raise CheckpointFormatError(
          f"{path}: tensor {name!r} declares shape {shape} {info['dtype']} but its byte range "
          f"[{start}, {end}) does not fit; the file is truncated or corrupt.")
    yield name, np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape)


def checkpoint_files(directory: str) -> list[str]:
  """The safetensors files of an HF snapshot: sharded (via the index) or a single model.safetensors."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise CheckpointFormatError(f"{index} has no 'weight_map' object.")
    files = sorted(set(weight_map.values()))
    missing = [fn for fn in files if not os.path.isfile(os.path.join(directory, fn))]
    if missing:
      raise FileNotFoundError(f"{index} lists shard(s) {missing} that are not in {directory}; the snapshot is "
                              "incomplete: download the missing files.")
    return [os.path.join(directory, fn) for fn in files]
  single = os.path.join(directory, "model.safetensors")
  if os.path.isfile(single):
    return [single]
  others = sorted(fn for fn in os.listdir(directory) if fn.endswith(".safetensors"))
  if others:
    return [os.path.join(directory, fn) for fn in others]
  raise FileNotFoundError(
      f"No weights in {directory}: expected model.safetensors or model.safetensors.index.json with its shards "
      "(.bin / pickle checkpoints are not read; convert them to safetensors first).")
