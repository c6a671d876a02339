"""The integrity manifest of one orbax checkpoint step directory.

orbax commits a step atomically (temporary directory, then rename) but does
not checksum what it wrote, so a file truncated or flipped later (a full
disk, a bad copy, bit rot) would be read back silently. After orbax has
committed step `S`, the writer adds `S/pax_manifest.json`: the size and
sha256 of every file of the step, the name, shape and dtype of every array,
and a sha256 of the manifest itself. A step without a valid manifest, or
whose files differ from it, is never restored: a step without a manifest is
an unfinished save (interrupted between orbax's commit and the manifest,
`UnfinishedCheckpointError`), any other mismatch is damage
(`CheckpointError`).
"""

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Tuple

from pax_haiku._src import atomic_write

__all__ = ["MANIFEST_FILE", "CheckpointError", "UnfinishedCheckpointError",
           "json_sha256", "read_verified", "write"]

FORMAT = "pax_haiku.trainer.checkpoint/2"
MANIFEST_FILE = "pax_manifest.json"
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
  """A checkpoint that is missing files, truncated or corrupted."""


class UnfinishedCheckpointError(CheckpointError):
  """A committed step without its manifest: its save was interrupted.

  The manifest is the last file a save writes, so a step directory without
  one is a save that a kill or crash cut short after orbax's commit.
  """


def json_sha256(obj: Any) -> str:
  """sha256 hex digest of `obj` as canonical JSON (sorted keys).

  Handy for a config hash: `json_sha256(config.to_dict())`.

  >>> json_sha256({"b": 1, "a": [2]}) == json_sha256({"a": [2], "b": 1})
  True
  """
  text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: str) -> Tuple[str, int]:
  h = hashlib.sha256()
  size = 0
  with open(path, "rb") as f:
    while True:
      chunk = f.read(_HASH_CHUNK)
      if not chunk:
        break
      h.update(chunk)
      size += len(chunk)
  return h.hexdigest(), size


def _files(step_dir: str) -> List[str]:
  out = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != MANIFEST_FILE:
        out.append(rel)
  return sorted(out)


def write(step_dir: str, step: int, leaves: Mapping[str, Any]) -> None:
  """Writes the manifest of the committed step directory `step_dir`.

  Args:
    step_dir: the step directory orbax committed.
    step: its step.
    leaves: `{name: {"shape": [...], "dtype": "..."}}` of every array.
  """
  files = {}
  for rel in _files(step_dir):
    digest, size = _file_sha256(os.path.join(step_dir, rel))
    files[rel] = {"bytes": size, "sha256": digest}
  body = {"format": FORMAT, "step": step, "files": files,
          "leaves": dict(leaves)}
  record = dict(body, manifest_sha256=json_sha256(body))
  with atomic_write.atomic_file(os.path.join(step_dir, MANIFEST_FILE)) as f:
    json.dump(record, f, sort_keys=True)


def read_verified(step_dir: str, step: int) -> Dict[str, Any]:
  """The manifest of `step_dir` after checking every file against it.

  Raises:
    CheckpointError: if the manifest is missing, damaged or a file differs.
  """
  path = os.path.join(step_dir, MANIFEST_FILE)
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError as e:
    raise UnfinishedCheckpointError(
        f"{path} is missing: the save was interrupted before it completed, "
        "or the checkpoint was damaged.") from e
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not readable JSON ({e}).") from e
  if not isinstance(record, dict) or "manifest_sha256" not in record:
    raise CheckpointError(f"{path} is not a checkpoint manifest.")
  body = {k: v for k, v in record.items() if k != "manifest_sha256"}
  if json_sha256(body) != record["manifest_sha256"]:
    raise CheckpointError(f"{path} fails its checksum (corrupted).")
  if body.get("format") != FORMAT or body.get("step") != step:
    raise CheckpointError(f"{path} has format {body.get('format')!r} and "
                          f"step {body.get('step')!r}, expected {FORMAT!r} "
                          f"and {step}.")
  for rel, want in sorted(body["files"].items()):
    full = os.path.join(step_dir, rel)
    try:
      digest, size = _file_sha256(full)
    except OSError as e:
      raise CheckpointError(f"{full} is missing or unreadable ({e}).") from e
    if size != want["bytes"] or digest != want["sha256"]:
      raise CheckpointError(
          f"{full} is corrupted or truncated: {size} bytes with sha256 "
          f"{digest[:12]}..., expected {want['bytes']} bytes with sha256 "
          f"{want['sha256'][:12]}....")
  return body
