"""Metric writers for training: clu's when it can be imported, else a minimal TensorBoard event writer.

clu's `metric_writers` package imports TensorFlow at import time (its summary writer is TF's), and
TensorFlow is not a dependency of this project. When `clu.metric_writers` imports, `create_writer` returns
clu's default writer (TensorBoard events + logging). Otherwise it returns `EventFileWriter`, which writes the
same TensorBoard scalar event files by hand (TFRecord framing, masked CRC32C, and the three protobuf
messages Event / Summary / Summary.Value encoded directly), with clu's method names, so the trainer does not
care which one it got. TensorBoard reads either.
"""

from __future__ import annotations

import pathlib
import socket
import struct
import time
from typing import Any, Mapping


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord files use."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, *, file_version: str | None = None, scalars: Mapping[str, float] | None = None) -> bytes:
  """An `Event` proto: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
  out = _varint(1 << 3 | 1) + struct.pack("<d", time.time()) + _varint(2 << 3) + _varint(step)
  if file_version is not None:
    out += _length_delimited(3, file_version.encode())
  if scalars:
    values = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
        for tag, value in scalars.items())
    out += _length_delimited(5, values)
  return out


def tfrecord(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class EventFileWriter:
  """Scalars to a TensorBoard event file in `logdir` (clu MetricWriter method names)."""

  def __init__(self, logdir: str | pathlib.Path):
    path = pathlib.Path(logdir)
    path.mkdir(parents=True, exist_ok=True)
    self.path = path / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    self._file = open(self.path, "ab")
    self._file.write(tfrecord(_event(0, file_version="brain.Event:2")))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._file.write(tfrecord(_event(int(step), scalars={k: float(v) for k, v in scalars.items()})))

  def write_hparams(self, hparams: Mapping[str, Any]):
    numeric = {f"hparams/{k}": float(v) for k, v in hparams.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numeric:
      self.write_scalars(0, numeric)

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


def create_writer(logdir: str | pathlib.Path, *, just_logging: bool = False):
  """clu's default writer when clu.metric_writers imports (it needs TensorFlow), else `EventFileWriter`."""
  try:
    from clu import metric_writers
  except ImportError:
    return EventFileWriter(logdir)
  return metric_writers.create_default_writer(str(logdir), just_logging=just_logging)


def read_scalars(path: str | pathlib.Path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in an event file written by `EventFileWriter`; checks the CRCs."""
  data = pathlib.Path(path).read_bytes()
  out, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack_from("<Q", data, pos)
    if struct.unpack_from("<I", data, pos + 8)[0] != _masked_crc(data[pos:pos + 8]):
      raise ValueError(f"{path}: bad length CRC at byte {pos}.")
    record = data[pos + 12:pos + 12 + length]
    if struct.unpack_from("<I", data, pos + 12 + length)[0] != _masked_crc(record):
      raise ValueError(f"{path}: bad data CRC at byte {pos}.")
    pos += 16 + length
    out.extend(_parse_event(record))
  return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    b = buf[pos]
    result |= (b & 0x7F) << shift
    pos += 1
    if not b & 0x80:
      return result, pos
    shift += 7


def _fields(buf: bytes):
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire == 5:
      value, pos = buf[pos:pos + 4], pos + 4
    elif wire == 2:
      n, pos = _read_varint(buf, pos)
      value, pos = buf[pos:pos + n], pos + n
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    yield field, value


def _parse_event(record: bytes) -> list[tuple[int, str, float]]:
  step, out = 0, []
  for field, value in _fields(record):
    if field == 2:
      step = value
    elif field == 5:
      for _, item in _fields(value):
        parts = dict(_fields(item))
        if 1 in parts and 2 in parts:
          out.append((step, parts[1].decode(), struct.unpack("<f", parts[2])[0]))
  return out
