"""Checks that a run can store its checkpoints, before and while it trains.

`preflight` runs before the first step: the checkpoint directory must be
writable and its filesystem must have room for `keep + 1` checkpoints (the
kept ones plus the one being written), estimated from the bytes of the
arrays to save. A full disk or a read-only mount then fails in a second with
what to do, not after an hour of training.

`StorageError` is what a failed save becomes mid-run: one line that names
the path, the operating system's reason and the fix; the checkpoints
already written stay as they are.

>>> import tempfile
>>> import numpy as np
>>> tree = {"w": np.zeros((1000,), np.float32)}
>>> preflight(tempfile.mkdtemp(), tree, keep=3)
16000
"""

import errno
import os
import shutil
import uuid
from typing import Any

import jax
import numpy as np

__all__ = ["StorageError", "checkpoint_bytes", "preflight", "save_failed"]


class StorageError(ValueError):
  """The checkpoint directory can't be written or is too full."""


def checkpoint_bytes(tree: Any) -> int:
  """Bytes of the arrays in `tree` (a checkpoint's size, near enough)."""
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
                 for x in jax.tree_util.tree_leaves(tree)
                 if hasattr(x, "shape") and hasattr(x, "dtype")))


def _fix(err: int) -> str:
  if err in (errno.ENOSPC, errno.EDQUOT):
    return ("free space there, lower `keep_checkpoints`, or pass a --workdir "
            "on a larger filesystem")
  if err in (errno.EACCES, errno.EPERM, errno.EROFS):
    return ("make it writable (check its owner and mode, and that the "
            "filesystem is not read-only), or pass another --workdir")
  return "check the path and the filesystem, or pass another --workdir"


def save_failed(path: str, e: OSError) -> StorageError:
  """The one-line error for a checkpoint write that failed with `e`."""
  reason = e.strerror or str(e)
  return StorageError(
      f"Cannot write a checkpoint in {path}: {reason}.\nFix: "
      f"{_fix(e.errno or 0)}; then rerun to resume from the last checkpoint "
      "(the ones already written are intact).")


def preflight(directory: str, tree: Any, keep: int) -> int:
  """Checks `directory` is writable with room for `keep + 1` checkpoints.

  Args:
    directory: the checkpoint directory (created if missing).
    tree: what each checkpoint saves (arrays or shape/dtype structs).
    keep: checkpoints kept at once.

  Returns:
    The bytes needed.

  Raises:
    StorageError: naming what is wrong and the fix.
  """
  probe = os.path.join(directory, f".probe_{uuid.uuid4().hex}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"0")
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise save_failed(directory, e) from e
  need = checkpoint_bytes(tree) * (keep + 1)
  free = shutil.disk_usage(directory).free
  if free < need:
    raise StorageError(
        f"Not enough space for checkpoints in {directory}: {keep + 1} "
        f"checkpoints of this model need about {need / 2**20:.1f} MiB, "
        f"{free / 2**20:.1f} MiB are free.\nFix: {_fix(errno.ENOSPC)}.")
  return need
