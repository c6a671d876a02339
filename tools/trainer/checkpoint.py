"""Crash-safe checkpoints of a pytree of arrays plus JSON metadata.

A checkpoint is a directory `<directory>/ckpt_<step>/` holding

* `arrays.npz`: the pytree's leaves as `leaf_00000`, `leaf_00001`, ... in
  `jax.tree_util` flattening order (plain `.npz`, read with
  `allow_pickle=False`; no pickle anywhere);
* `metadata.json`: the step, each leaf's path/shape/dtype, the sha256 of
  `arrays.npz`, the caller's JSON-able metadata (data position, RNG,
  config hash, ...) and a sha256 of the metadata itself.

Safety (see `save`): a checkpoint is written into a hidden temporary
directory, every file and the directory are fsync'ed, and only then is the
directory renamed to `ckpt_<step>` (an atomic `rename(2)`). A process killed
at any moment therefore leaves either the complete new checkpoint or none;
leftover temporary directories never match `ckpt_<step>` and are removed by
the next `save`. On load the metadata checksum and the arrays' sha256 are
verified: `restore_latest` skips a corrupted or truncated checkpoint with a
warning and uses the previous good one. The expected structure (`like`) is
checked leaf by leaf, so a checkpoint of a different model is a clear
`ValueError`, never a silent wrong load.

Only one process may write to a checkpoint directory (in a multi-process job:
process 0, after gathering arrays that are not fully addressable).

>>> import tempfile
>>> import numpy as np
>>> from tools.trainer import checkpoint
>>> workdir = tempfile.mkdtemp()
>>> tree = {"w": np.ones((2, 3), np.float32), "count": np.int32(7)}
>>> _ = checkpoint.save(workdir, 100, tree, {"data": {"epoch": 1, "index": 4}})
>>> checkpoint.latest_step(workdir)
100
>>> restored = checkpoint.restore_latest(workdir, like=tree)
>>> restored.step, restored.metadata["data"], restored.tree["w"].shape
(100, {'epoch': 1, 'index': 4}, (2, 3))
"""

import hashlib
import json
import os
import re
import shutil
import uuid
from typing import (Any, Dict, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

from absl import logging
import jax
import numpy as np

from pax_haiku._src import atomic_write

__all__ = [
    "CheckpointError",
    "Restored",
    "checkpoint_path",
    "checkpoint_steps",
    "cleanup",
    "json_sha256",
    "latest_step",
    "restore",
    "restore_latest",
    "save",
    "verify",
]

FORMAT = "pax_haiku.trainer.checkpoint/1"
ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
_CKPT_RE = re.compile(r"^ckpt_(\d+)$")
# Names of interrupted saves' leftovers (see `atomic_write`).
_TMP_PREFIX = atomic_write.TMP_PREFIX + "ckpt_"
_TRASH_PREFIX = atomic_write.TRASH_PREFIX + "ckpt_"
_ABANDONED_PREFIX = "abandoned_ckpt_"
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
  """A checkpoint that is missing files, truncated or corrupted."""


class Restored(NamedTuple):
  """A loaded checkpoint.

  Attributes:
    step: its step.
    leaves: the arrays (NumPy), in the flattening order of `like`.
    tree: `leaves` unflattened with the treedef of `like`.
    metadata: the caller's metadata dict given to `save`.
    path: the checkpoint directory.
  """
  step: int
  leaves: List[np.ndarray]
  tree: Any
  metadata: Dict[str, Any]
  path: str


def checkpoint_path(directory: str, step: int) -> str:
  """The path of the checkpoint of `step` in `directory`."""
  return os.path.join(directory, f"ckpt_{int(step)}")


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


def _resolve_dtype(name: str) -> np.dtype:
  try:
    return np.dtype(name)
  except TypeError:
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (a jax dependency)
    if not hasattr(ml_dtypes, name):
      raise
    return np.dtype(getattr(ml_dtypes, name))


def _leaf_spec(leaf: Any) -> Tuple[Tuple[int, ...], str]:
  """(shape, dtype name) of an array-like, without copying device arrays."""
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return tuple(int(d) for d in leaf.shape), np.dtype(leaf.dtype).name
  a = np.asarray(leaf)
  return a.shape, a.dtype.name


def _check_not_key(leaf: Any, name: str) -> None:
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    raise TypeError(
        f"Checkpoint leaf {name} is a typed PRNG key array; store its raw "
        "data instead: jax.random.key_data(key) (and rebuild it with "
        "jax.random.wrap_key_data after restoring).")


def _to_storable(leaf: Any, name: str) -> np.ndarray:
  """The leaf as a NumPy array that `.npz` stores without pickle."""
  array = np.asarray(jax.device_get(leaf))
  if array.dtype.kind in "biufc":
    return array
  if array.dtype.kind == "V" and array.dtype.names is None and (
      array.dtype.itemsize in (1, 2, 4, 8)):
    # ml_dtypes (bfloat16, float8_*, int4 ...): store the raw bits.
    _resolve_dtype(array.dtype.name)  # fails if it cannot be read back
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))
  raise TypeError(
      f"Checkpoint leaf {name} has dtype {array.dtype} which a checkpoint "
      "cannot store without pickle. Leaves must be numeric arrays (bool, "
      "int, float, complex, bfloat16, ...); convert other leaves, or keep "
      "them in the JSON metadata instead.")


def _names(paths: Sequence[Any]) -> List[str]:
  return [jax.tree_util.keystr(p) if p else "<root>" for p in paths]


def cleanup(directory: str) -> List[str]:
  """Removes leftover temporary/trash directories of interrupted saves.

  `save` calls this first. Only call it while no other process is saving
  into `directory`.

  Returns:
    The names of the removed entries.
  """
  removed = []
  if not os.path.isdir(directory):
    return removed
  for name in sorted(os.listdir(directory)):
    if name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
      removed.append(name)
  return removed


def checkpoint_steps(directory: str) -> List[int]:
  """Steps of the `ckpt_<step>` directories in `directory`, ascending.

  Names only: see `verify` / `restore_latest` for integrity.
  """
  if not os.path.isdir(directory):
    return []
  steps = []
  for name in os.listdir(directory):
    match = _CKPT_RE.match(name)
    if match and os.path.isdir(os.path.join(directory, name)):
      steps.append(int(match.group(1)))
  return sorted(steps)


def _move_aside(directory: str, name: str, prefix: str) -> str:
  """Renames `directory/name` to a fresh `prefix...` name; returns it."""
  target = os.path.join(directory, f"{prefix}{name}.{uuid.uuid4().hex[:8]}")
  os.rename(os.path.join(directory, name), target)
  return target


def save(directory: str, step: int, tree: Any,
         metadata: Optional[Mapping[str, Any]] = None, *,
         keep: Optional[int] = 3) -> str:
  """Atomically writes checkpoint `ckpt_<step>` of `tree` and `metadata`.

  Steps: remove leftovers of interrupted saves; write `arrays.npz` and
  `metadata.json` into a hidden temporary directory; fsync both files and
  the directory; rename it to `ckpt_<step>` (replacing an existing
  checkpoint of the same step); fsync `directory`; delete all but the
  newest `keep` checkpoints. Checkpoints with a step *above* `step` belong to
  a run that was abandoned (training resumed from an earlier checkpoint, e.g.
  because a newer one was corrupted): they are renamed to
  `abandoned_ckpt_<step>` so that they neither shadow nor get counted as the
  newest, and nothing is lost.

  Args:
    directory: checkpoint directory (created if missing).
    step: non-negative training step.
    tree: any pytree of arrays (e.g. `{"model": model, "optimizer": opt}`).
      Leaves are fetched with `jax.device_get`; they must be numeric.
    metadata: JSON-serialisable dict returned by `restore*` as is.
    keep: how many of the newest checkpoints to keep (None: all).

  Returns:
    The path of the written checkpoint.

  Raises:
    TypeError: for a leaf that cannot be stored or metadata that is not
      JSON-serialisable.
  """
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or (
      step < 0):
    raise ValueError(f"step must be a non-negative int, got {step!r}.")
  step = int(step)
  if keep is not None and (not isinstance(keep, int) or keep < 1):
    raise ValueError(f"keep must be a positive int or None, got {keep!r}.")
  user = dict(metadata or {})
  try:
    json.dumps(user)
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"Checkpoint metadata must be JSON-serialisable: {e}. Convert arrays "
        "and NumPy scalars to Python values first (e.g. int(x), "
        "x.tolist()).") from e
  path_leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  names = _names([p for p, _ in path_leaves])
  arrays = {}
  specs = []
  for i, ((_, leaf), name) in enumerate(zip(path_leaves, names)):
    _check_not_key(leaf, f"{i} ({name})")
    shape, dtype = _leaf_spec(leaf)
    stored = _to_storable(leaf, f"{i} ({name})")
    arrays[f"leaf_{i:05d}"] = stored
    specs.append({"path": name, "shape": list(shape), "dtype": dtype})

  os.makedirs(directory, exist_ok=True)
  cleanup(directory)
  final = checkpoint_path(directory, step)
  # No fsync below: atomic_directory fsyncs both files and the temporary
  # directory before renaming it to `final`, then fsyncs `directory`.
  with atomic_write.atomic_directory(final) as tmp:
    arrays_path = os.path.join(tmp, ARRAYS_FILE)
    with open(arrays_path, "wb") as f:
      np.savez(f, **arrays)
    digest, size = _file_sha256(arrays_path)
    body = {"format": FORMAT, "step": step, "arrays_file": ARRAYS_FILE,
            "arrays_sha256": digest, "arrays_bytes": size, "leaves": specs,
            "user": user}
    record = dict(body, metadata_sha256=json_sha256(body))
    with open(os.path.join(tmp, METADATA_FILE), "w") as f:
      json.dump(record, f, sort_keys=True)
    # Newer checkpoints are from an abandoned timeline; replacing one of the
    # same step keeps the others intact at every moment.
    for other in checkpoint_steps(directory):
      if other > step:
        aside = os.path.join(directory, f"{_ABANDONED_PREFIX}{other}")
        n = 0
        while os.path.exists(aside):
          n += 1
          aside = os.path.join(directory, f"{_ABANDONED_PREFIX}{other}.{n}")
        logging.warning(
            "Checkpoint %s has a step above the step %d being saved (training "
            "resumed from an earlier checkpoint); renaming it to %s.",
            checkpoint_path(directory, other), step, aside)
        os.rename(checkpoint_path(directory, other), aside)
  if keep is not None:
    for old in checkpoint_steps(directory)[:-keep]:
      shutil.rmtree(_move_aside(directory, f"ckpt_{old}",
                                atomic_write.TRASH_PREFIX),
                    ignore_errors=True)
  return final


def _read_metadata(path: str) -> Dict[str, Any]:
  meta_path = os.path.join(path, METADATA_FILE)
  try:
    with open(meta_path, "r") as f:
      record = json.load(f)
  except FileNotFoundError as e:
    raise CheckpointError(f"{meta_path} is missing.") from e
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{meta_path} is not readable JSON ({e}).") from e
  if not isinstance(record, dict) or "metadata_sha256" not in record:
    raise CheckpointError(f"{meta_path} is not checkpoint metadata.")
  body = {k: v for k, v in record.items() if k != "metadata_sha256"}
  if json_sha256(body) != record["metadata_sha256"]:
    raise CheckpointError(f"{meta_path} fails its checksum (corrupted).")
  if body.get("format") != FORMAT:
    raise CheckpointError(f"{meta_path} has format {body.get('format')!r}, "
                          f"expected {FORMAT!r}.")
  return body


def verify(directory: str, step: int) -> Dict[str, Any]:
  """Checks the integrity of checkpoint `step`; returns its metadata record.

  Raises:
    CheckpointError: if a file is missing, truncated or corrupted.
  """
  path = checkpoint_path(directory, step)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path} does not exist.")
  body = _read_metadata(path)
  if body.get("step") != step:
    raise CheckpointError(f"{path} holds metadata of step {body.get('step')}.")
  arrays_path = os.path.join(path, body["arrays_file"])
  try:
    digest, size = _file_sha256(arrays_path)
  except OSError as e:
    raise CheckpointError(f"{arrays_path} is not readable ({e}).") from e
  if size != body["arrays_bytes"] or digest != body["arrays_sha256"]:
    raise CheckpointError(
        f"{arrays_path} is corrupted or truncated: {size} bytes with sha256 "
        f"{digest[:12]}..., expected {body['arrays_bytes']} bytes with sha256 "
        f"{body['arrays_sha256'][:12]}....")
  return body


def latest_step(directory: str, verify_integrity: bool = False
                ) -> Optional[int]:
  """The newest checkpoint step in `directory`, or None if there is none.

  Args:
    directory: checkpoint directory (may not exist).
    verify_integrity: if True, skip checkpoints that fail `verify` (reads
      every skipped checkpoint and the returned one in full).
  """
  for step in reversed(checkpoint_steps(directory)):
    if not verify_integrity:
      return step
    try:
      verify(directory, step)
      return step
    except CheckpointError:
      continue
  return None


def _check_like(body: Mapping[str, Any], like: Any, path: str
                ) -> Tuple[Any, List[Tuple[Tuple[int, ...], np.dtype]]]:
  """Compares the saved leaves with `like`; returns (treedef, specs)."""
  path_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  want_names = _names([p for p, _ in path_leaves])
  saved = body["leaves"]
  hint = ("The checkpoint was probably written for a different model or "
          "config, or by another version of the code (leaf order is part of "
          "the layout). Resume with the config it was written with, or use a "
          "new workdir (or move the checkpoints away) to start from scratch.")
  specs = []
  for i, ((_, leaf), name) in enumerate(zip(path_leaves, want_names)):
    _check_not_key(leaf, f"{i} ({name})")
    if i >= len(saved):
      raise ValueError(
          f"Checkpoint {path} has {len(saved)} leaves but {len(path_leaves)} "
          f"are expected; the first missing one is leaf {i} ({name}). {hint}")
    shape, dtype = _leaf_spec(leaf)
    s = saved[i]
    if tuple(s["shape"]) != shape or s["dtype"] != dtype:
      raise ValueError(
          f"Checkpoint {path} does not match the expected structure at leaf "
          f"{i} ({name}): the checkpoint has shape {tuple(s['shape'])} dtype "
          f"{s['dtype']} (saved as {s['path']}), expected shape {shape} dtype "
          f"{dtype}. {hint}")
    specs.append((shape, _resolve_dtype(dtype)))
  if len(saved) != len(path_leaves):
    raise ValueError(
        f"Checkpoint {path} has {len(saved)} leaves but {len(path_leaves)} "
        f"are expected; the first extra one is leaf {len(path_leaves)} (saved "
        f"as {saved[len(path_leaves)]['path']}). {hint}")
  return treedef, specs


def restore(directory: str, step: int, like: Any) -> Restored:
  """Loads checkpoint `step`, checked against the expected structure `like`.

  Args:
    directory: checkpoint directory.
    step: which checkpoint.
    like: a pytree with the expected leaves (arrays, or anything with
      `.shape` and `.dtype` such as `jax.ShapeDtypeStruct`), e.g. a freshly
      built `{"model": model, "optimizer": opt}`, or a list of its leaves.
      Only shapes and dtypes are read.

  Returns:
    A `Restored`.

  Raises:
    CheckpointError: if the checkpoint is missing, truncated or corrupted.
    ValueError: if its leaf count, shapes or dtypes differ from `like`
      (the message names the first mismatching leaf).
  """
  path = checkpoint_path(directory, step)
  try:
    return _restore(path, directory, step, like)
  except CheckpointError as e:
    raise CheckpointError(
        f"{e}\nFix: restore an intact checkpoint instead "
        "(`restore_latest` skips damaged ones), or move this one away; "
        "`verify(directory, step)` checks one without loading it.") from e


def _restore(path: str, directory: str, step: int, like: Any) -> Restored:
  body = verify(directory, step)
  treedef, specs = _check_like(body, like, path)
  arrays_path = os.path.join(path, body["arrays_file"])
  leaves = []
  try:
    with np.load(arrays_path, allow_pickle=False) as npz:
      expected_keys = {f"leaf_{i:05d}" for i in range(len(specs))}
      if set(npz.files) != expected_keys:
        raise CheckpointError(f"{arrays_path} holds entries "
                              f"{sorted(npz.files)[:5]}..., not the expected "
                              f"{len(specs)} leaves.")
      for i, (shape, dtype) in enumerate(specs):
        array = npz[f"leaf_{i:05d}"]
        if array.dtype != dtype:
          array = array.view(dtype)
        if array.shape != shape:
          raise CheckpointError(f"{arrays_path}: leaf {i} has shape "
                                f"{array.shape}, metadata says {shape}.")
        leaves.append(array)
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{arrays_path} cannot be read ({e}).") from e
  tree = jax.tree_util.tree_unflatten(treedef, leaves)
  return Restored(step=step, leaves=leaves, tree=tree, metadata=body["user"],
                  path=path)


def restore_latest(directory: str, like: Any) -> Optional[Restored]:
  """Loads the newest intact checkpoint in `directory` (see `restore`).

  A corrupted or truncated checkpoint is reported with a warning (absl
  logging) and the previous one is tried. A structure mismatch is an error
  (it is not a damaged file: falling back would silently load another run).

  Returns:
    The `Restored` checkpoint, or None if `directory` holds no checkpoint.

  Raises:
    ValueError: if the newest intact checkpoint does not match `like`.
    CheckpointError: if there are checkpoints but none is intact (nothing is
      deleted; move them away to start from scratch).
  """
  steps = checkpoint_steps(directory)
  problems = []
  for step in reversed(steps):
    try:
      restored = restore(directory, step, like)
    except CheckpointError as e:
      logging.warning("Skipping damaged checkpoint %s: %s Trying the previous "
                      "one.", checkpoint_path(directory, step), e)
      problems.append(f"ckpt_{step}: {e}")
      continue
    if problems:
      logging.warning("Restored checkpoint %s after skipping %d damaged "
                      "newer one(s).", restored.path, len(problems))
    return restored
  if problems:
    raise CheckpointError(
        f"All {len(problems)} checkpoints in {directory} are damaged:\n  "
        + "\n  ".join(problems) + "\nMove them away (or use a new workdir) "
        "to start from scratch.")
  return None
