"""Reads checkpoints of the trainer's first format (`ckpt_<step>/arrays.npz`).

That format stored the leaves of `(model, optimizer)` by flatten position
(`leaf_00000`, ...) next to a `metadata.json` with their key paths, shapes,
dtypes and sha256s. The trainer now writes orbax checkpoints with Haiku
names (`tools/trainer/checkpoint.py`); this module reads the old ones so
that `tools/convert_checkpoint.py` can convert them once, and writes them
for the conversion's tests and the save-time benchmark
(`tools/bench/checkpoint_bench.py`).
"""

import hashlib
import json
import os
import re
from typing import Any, Dict, List, NamedTuple

import jax
import numpy as np

from pax_haiku._src import atomic_write

__all__ = ["LegacyCheckpoint", "legacy_steps", "read", "write"]

FORMAT = "pax_haiku.trainer.checkpoint/1"
ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
_CKPT_RE = re.compile(r"^ckpt_(\d+)$")


class LegacyCheckpoint(NamedTuple):
  step: int
  leaves: List[np.ndarray]  # In the flattening order of the writer's tree.
  specs: List[Dict[str, Any]]  # {"path", "shape", "dtype"} per leaf.
  metadata: Dict[str, Any]  # The trainer's JSON metadata (data, config hash).


def legacy_steps(directory: str) -> List[int]:
  """Steps of old-format `ckpt_<step>/arrays.npz` checkpoints, ascending."""
  if not os.path.isdir(directory):
    return []
  return sorted(
      int(m.group(1)) for m in map(_CKPT_RE.match, os.listdir(directory))
      if m and os.path.isfile(os.path.join(directory, m.group(0),
                                           METADATA_FILE)))


def _json_sha256(obj: Any) -> str:
  text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dtype(name: str) -> np.dtype:
  try:
    return np.dtype(name)
  except TypeError:
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (a jax dependency)
    return np.dtype(getattr(ml_dtypes, name))


def write(directory: str, step: int, tree: Any, user: Dict[str, Any]) -> str:
  """Writes `tree` (host or device arrays) as old-format `ckpt_<step>`.

  As the old trainer did: leaves fetched to the host, one `.npz`, its
  sha256, the metadata JSON, all in a temporary directory that is fsync'ed
  and renamed into place.
  """
  path_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  arrays, specs = {}, []
  for i, (keypath, leaf) in enumerate(path_leaves):
    array = np.asarray(jax.device_get(leaf))
    specs.append({"path": jax.tree_util.keystr(keypath),
                  "shape": list(array.shape), "dtype": array.dtype.name})
    if array.dtype.kind == "V":  # bfloat16 & co: the raw bits.
      array = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    arrays[f"leaf_{i:05d}"] = array
  os.makedirs(directory, exist_ok=True)
  final = os.path.join(directory, f"ckpt_{step}")
  with atomic_write.atomic_directory(final) as tmp:
    arrays_path = os.path.join(tmp, ARRAYS_FILE)
    with open(arrays_path, "wb") as f:
      np.savez(f, **arrays)
    h = hashlib.sha256()
    with open(arrays_path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    body = {"format": FORMAT, "step": step, "arrays_file": ARRAYS_FILE,
            "arrays_sha256": h.hexdigest(),
            "arrays_bytes": os.path.getsize(arrays_path), "leaves": specs,
            "user": user}
    with open(os.path.join(tmp, METADATA_FILE), "w") as f:
      json.dump(dict(body, metadata_sha256=_json_sha256(body)), f,
                sort_keys=True)
  return final


def read(directory: str, step: int) -> LegacyCheckpoint:
  """Reads and verifies old-format checkpoint `ckpt_<step>` in `directory`.

  Raises:
    ValueError: if it is missing, damaged or not of the old format.
  """
  path = os.path.join(directory, f"ckpt_{step}")
  try:
    with open(os.path.join(path, METADATA_FILE)) as f:
      record = json.load(f)
    body = {k: v for k, v in record.items() if k != "metadata_sha256"}
    if body.get("format") != FORMAT or (
        _json_sha256(body) != record.get("metadata_sha256")):
      raise ValueError("its metadata.json fails its checksum or format")
    arrays_path = os.path.join(path, body["arrays_file"])
    with open(arrays_path, "rb") as f:
      content = f.read()
    if hashlib.sha256(content).hexdigest() != body["arrays_sha256"]:
      raise ValueError(f"{body['arrays_file']} is corrupted or truncated")
    leaves = []
    with np.load(arrays_path, allow_pickle=False) as npz:
      for i, spec in enumerate(body["leaves"]):
        array = npz[f"leaf_{i:05d}"]
        dtype = _dtype(spec["dtype"])
        leaves.append(array.view(dtype) if array.dtype != dtype else array)
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"Old-format checkpoint {path} cannot be read: {e}.") from e
  return LegacyCheckpoint(step, leaves, body["leaves"], body["user"])
