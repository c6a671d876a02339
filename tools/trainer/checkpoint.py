"""The trainer's checkpoints: orbax, Haiku-named arrays, verified on restore.

A checkpoint of step S is the orbax step directory `<directory>/S/` written
by `orbax.checkpoint.CheckpointManager` (atomic commit: a temporary
directory renamed into place) with two items:

* `arrays`: a nested dict of arrays under semantic names (see
  `checkpoint_names`): a pax module's Haiku params/state dicts
  (`model/params/<module_path>/<name>`), an optimizer's optax state under
  its fields (`optimizer/1/mu/<module_path>/<name>`). In a multi-process
  job every process writes its own shards of `jax.Array`s; nothing is
  gathered.
* `meta`: the caller's JSON metadata (data position, RNG, config hash).

After orbax commits, `pax_manifest.json` (sizes and sha256 of every file,
name/shape/dtype of every array) is added; only steps with a valid manifest
are restored (`checkpoint_manifest`). Then old steps beyond `keep` are
removed (renamed away first, so a kill mid-delete never leaves a step
that looks whole). `restore_latest` skips a damaged or unfinished step with
a warning and uses the previous one. `like` (a fresh `(model, optimizer)`)
gives the names, shapes, dtypes and, for `jax.Array` leaves, the target
shardings: a checkpoint restores onto any mesh and any process count, and a
checkpoint of another model is a `ValueError` naming the first differing
path.

Open one without pax_haiku (plain orbax + Haiku):

    tree = ocp.StandardCheckpointer().restore(f"{ckpt_dir}/{step}/arrays")
    params, state = tree["model"]["params"], tree["model"]["state"]

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

import json
import os
import shutil
import uuid
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from tools.trainer import checkpoint_legacy
from tools.trainer import checkpoint_manifest
from tools.trainer import checkpoint_names as names_lib

__all__ = [
    "ARRAYS_ITEM", "META_ITEM", "MANIFEST_FILE", "CheckpointError",
    "UnfinishedCheckpointError", "CheckpointManager", "Restored",
    "checkpoint_path", "checkpoint_steps",
    "array_files", "json_sha256", "latest_step", "load_arrays",
    "read_metadata", "restore", "restore_latest", "save", "verify",
]

ARRAYS_ITEM = "arrays"
META_ITEM = "meta"
MANIFEST_FILE = checkpoint_manifest.MANIFEST_FILE
CheckpointError = checkpoint_manifest.CheckpointError
UnfinishedCheckpointError = checkpoint_manifest.UnfinishedCheckpointError
json_sha256 = checkpoint_manifest.json_sha256
_TRASH_PREFIX = ".trash_step_"
_ABANDONED_PREFIX = "abandoned_step_"
CONVERT_COMMAND = ("python3 tools/convert_checkpoint.py --config=CONFIG "
                   "--workdir=WORKDIR")


class Restored(NamedTuple):
  """A loaded checkpoint.

  Attributes:
    step: its step.
    leaves: the arrays, in the flattening order of `like`.
    tree: `leaves` unflattened with the treedef of `like`.
    metadata: the caller's metadata dict given to `save`.
    path: the checkpoint (step) directory.
  """
  step: int
  leaves: List[Any]
  tree: Any
  metadata: Dict[str, Any]
  path: str


def checkpoint_path(directory: str, step: int) -> str:
  """The path of the checkpoint of `step` in `directory`."""
  return os.path.join(directory, str(int(step)))


def checkpoint_steps(directory: str) -> List[int]:
  """Steps of the committed step directories in `directory`, ascending.

  Names only: see `verify` / `restore_latest` for integrity.
  """
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _check_not_legacy(directory: str) -> None:
  old = checkpoint_legacy.legacy_steps(directory)
  if old and not checkpoint_steps(directory):
    workdir = os.path.dirname(os.path.abspath(directory))
    raise ValueError(
        f"{directory} holds checkpoints in the trainer's old format "
        f"(ckpt_{old[-1]}/arrays.npz, leaves by position), which this "
        "version reads only to convert them.\nFix: convert them once, with "
        "the config they were trained with: `python3 "
        f"tools/convert_checkpoint.py --config=CONFIG --workdir={workdir}` "
        "(then rerun; the old ones are kept under ckpt_<step>).")


def _as_saveable(leaf: Any) -> Any:
  if isinstance(leaf, (jax.Array, np.ndarray)):
    return leaf
  return np.asarray(leaf)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"pax_haiku.checkpoint.{name}")


class CheckpointManager:
  """Saves and restores the checkpoints of one directory (see module doc).

  Every process of a multi-process job creates one on the same directory
  and calls `save`/`restore_latest`/`close` together.

  Args:
    directory: checkpoint directory (created if missing).
    keep: how many of the newest checkpoints to keep (None: all).
    async_save: if True, `save` returns once the arrays are copied off the
      devices; files are written in the background. The manifest of a step is
      written when the next `save` (or `wait_until_finished`/`close`) finds
      its commit done; a kill before that leaves a step without manifest,
      which restore skips (the previous step is used).
  """

  def __init__(self, directory: str, *, keep: Optional[int] = 3,
               async_save: bool = False):
    if keep is not None and (isinstance(keep, bool) or
                             not isinstance(keep, int) or keep < 1):
      raise ValueError(f"keep must be a positive int or None, got {keep!r}.")
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._primary = jax.process_index() == 0
    self._async = async_save
    self._pending: Optional[tuple] = None
    self._manager: Optional[ocp.CheckpointManager] = None
    # A step that pruning keeps besides the newest `keep` (the trainer pins
    # its lowest-loss checkpoint, see lifecycle.RunGuard.pinned).
    self.pinned: Optional[int] = None

  def _orbax(self) -> ocp.CheckpointManager:
    if self._manager is None:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=None,  # Pruned by `_prune`, after the manifest.
          enable_async_checkpointing=self._async,
          cleanup_tmp_directories=True, create=True)
      self._manager = ocp.CheckpointManager(
          self.directory, options=options, item_names=(ARRAYS_ITEM, META_ITEM))
    return self._manager

  # -- saving -------------------------------------------------------------

  def save(self, step: int, tree: Any,
           metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Writes checkpoint `step` of `tree` (a pytree of arrays and pax
    modules) and `metadata` (JSON-serialisable); returns its path.

    A checkpoint of the same step is replaced; checkpoints of later steps
    (from a run that resumed from an earlier checkpoint) are renamed to
    `abandoned_step_<step>`, so nothing is lost.

    Raises:
      TypeError: for a leaf that cannot be stored or metadata that is not
        JSON-serialisable.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or (
        step < 0):
      raise ValueError(f"step must be a non-negative int, got {step!r}.")
    step = int(step)
    user = dict(metadata or {})
    try:
      user = json.loads(json.dumps(user))
    except (TypeError, ValueError) as e:
      raise TypeError(
          f"Checkpoint metadata must be JSON-serialisable: {e}. Convert arrays "
          "and NumPy scalars to Python values first (e.g. int(x), "
          "x.tolist()).") from e
    names = names_lib.leaf_names(tree)
    leaves = jax.tree_util.tree_leaves(tree)
    specs = names_lib.specs(names, leaves)
    self.wait_until_finished()
    self._make_room(step)
    nested = names_lib.add_module_dicts(tree, names_lib.nest(
        names, [_as_saveable(leaf) for leaf in leaves]))
    self._orbax().save(step, args=ocp.args.Composite(**{
        ARRAYS_ITEM: ocp.args.StandardSave(nested),
        META_ITEM: ocp.args.JsonSave(user)}), force=True)
    self._pending = (step, specs)
    if not self._async:
      self.wait_until_finished()
    return checkpoint_path(self.directory, step)

  def wait_until_finished(self) -> None:
    """Waits for a background save; writes its manifest and prunes."""
    if self._manager is not None:
      self._manager.wait_until_finished()
    if self._pending is None:
      return
    step, specs = self._pending
    self._pending = None
    if self._primary:
      checkpoint_manifest.write(checkpoint_path(self.directory, step), step,
                                specs)
      self._prune()
    _sync(f"manifest_{step}")

  def close(self) -> None:
    """Finishes a background save and releases orbax's threads."""
    self.wait_until_finished()
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def _make_room(self, step: int) -> None:
    """Moves away checkpoints of `step` and later steps (primary only)."""
    moved = False
    if self._primary:
      for other in checkpoint_steps(self.directory):
        if other < step:
          continue
        src = checkpoint_path(self.directory, other)
        if other == step:
          trash = os.path.join(self.directory,
                               f"{_TRASH_PREFIX}{other}.{uuid.uuid4().hex[:8]}")
          os.rename(src, trash)
          shutil.rmtree(trash, ignore_errors=True)
        else:
          aside = os.path.join(self.directory, f"{_ABANDONED_PREFIX}{other}")
          n = 0
          while os.path.exists(aside):
            n += 1
            aside = os.path.join(self.directory,
                                 f"{_ABANDONED_PREFIX}{other}.{n}")
          logging.warning(
              "Checkpoint %s has a step above the step %d being saved "
              "(training resumed from an earlier checkpoint); renaming it to "
              "%s.", src, step, aside)
          os.rename(src, aside)
        moved = True
    moved = bool(multihost_utils.process_allgather(np.int32(moved)).max()) if (
        jax.process_count() > 1) else moved
    if moved and self._manager is not None:
      self._manager.reload()

  def _prune(self) -> None:
    """Deletes all but the newest `keep` steps and leftover trash."""
    for name in os.listdir(self.directory):
      if name.startswith(_TRASH_PREFIX):
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    if self.keep is None:
      return
    pruned = False
    for old in checkpoint_steps(self.directory)[:-self.keep]:
      if old == self.pinned:
        continue
      trash = os.path.join(self.directory,
                           f"{_TRASH_PREFIX}{old}.{uuid.uuid4().hex[:8]}")
      os.rename(checkpoint_path(self.directory, old), trash)
      shutil.rmtree(trash, ignore_errors=True)
      pruned = True
    # orbax re-reads every step's metadata on reload: only when a step went.
    if pruned and self._manager is not None:
      self._manager.reload()

  # -- restoring ------------------------------------------------------------

  def restore(self, step: int, like: Any) -> Restored:
    """Loads checkpoint `step` into the structure of `like`.

    Args:
      step: which checkpoint.
      like: a pytree with the expected leaves (arrays, or anything with
        `.shape` and `.dtype` such as `jax.ShapeDtypeStruct`), e.g. a freshly
        built (and placed) `(model, optimizer)`. `jax.Array` leaves (and
        `ShapeDtypeStruct`s with a sharding) are restored as `jax.Array`s
        with their sharding; other leaves as NumPy arrays.

    Raises:
      CheckpointError: if the checkpoint is missing, unfinished or damaged.
      ValueError: if its arrays differ from `like` (the message names the
        first differing path, with both shapes and dtypes).
    """
    path = checkpoint_path(self.directory, step)
    try:
      return self._restore(path, step, like)
    except CheckpointError as e:
      raise type(e)(
          f"{e}\nFix: restore an intact checkpoint instead "
          "(`restore_latest` skips damaged ones), or move this one away; "
          "`verify(directory, step)` checks one without loading it.") from e

  def _restore(self, path: str, step: int, like: Any) -> Restored:
    if not os.path.isdir(path):
      raise CheckpointError(f"{path} does not exist.")
    body = checkpoint_manifest.read_verified(path, step)
    names = names_lib.leaf_names(like)
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    names_lib.check_like(body["leaves"], names, like_leaves, path)
    targets = [names_lib.restore_target(leaf) for leaf in like_leaves]
    target = names_lib.add_module_dicts(like, names_lib.nest(names, targets))
    try:
      with ocp.StandardCheckpointer() as ckptr:
        nested = ckptr.restore(os.path.join(path, ARRAYS_ITEM), target)
      with open(os.path.join(path, META_ITEM, "metadata")) as f:
        user = json.load(f)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"{path} cannot be read ({e}).") from e
    flat = names_lib.unnest(nested)
    leaves = [flat[n] for n in names]
    return Restored(step=step, leaves=leaves,
                    tree=jax.tree_util.tree_unflatten(treedef, leaves),
                    metadata=user, path=path)

  def restore_latest(self, like: Any) -> Optional[Restored]:
    """Loads the newest intact checkpoint (see `restore`).

    A damaged or unfinished checkpoint is reported with a warning (absl
    logging) and the previous one is tried. A structure mismatch is an error
    (it is not a damaged file: falling back would silently load another
    run).

    When every step is an unfinished save (a run killed during its first
    save, after orbax's commit and before the manifest), there is no
    finished work to resume: this warns and returns None, so the run starts
    afresh; saving that step again replaces the unfinished directory.

    Returns:
      The `Restored` checkpoint, or None if the directory holds none, or
      only unfinished saves.

    Raises:
      ValueError: if the newest intact checkpoint does not match `like`, or
        the directory holds only checkpoints of the old format (the message
        gives the conversion command).
      CheckpointError: if there are checkpoints but none is intact (nothing
        is deleted; move them away to start from scratch).
    """
    _check_not_legacy(self.directory)
    problems = []
    unfinished = []
    for step in reversed(checkpoint_steps(self.directory)):
      try:
        restored = self.restore(step, like)
      except CheckpointError as e:
        logging.warning("Skipping damaged checkpoint %s: %s Trying the "
                        "previous one.", checkpoint_path(self.directory, step),
                        e)
        problems.append(f"{step}: {e}")
        if isinstance(e, UnfinishedCheckpointError):
          unfinished.append(step)
        continue
      if problems:
        logging.warning("Restored checkpoint %s after skipping %d damaged "
                        "newer one(s).", restored.path, len(problems))
      return restored
    if problems and len(unfinished) == len(problems):
      logging.warning(
          "No finished checkpoint in %s: the save of step(s) %s was "
          "interrupted before its manifest was written. Starting from "
          "scratch; saving that step again replaces it.", self.directory,
          ", ".join(map(str, sorted(unfinished))))
      return None
    if problems:
      raise CheckpointError(
          f"All {len(problems)} checkpoints in {self.directory} are damaged:"
          "\n  " + "\n  ".join(problems) + "\nMove them away (or use a new "
          "workdir) to start from scratch.")
    return None


# -- one-call helpers (a manager per call; synchronous) ------------------------


def save(directory: str, step: int, tree: Any,
         metadata: Optional[Mapping[str, Any]] = None, *,
         keep: Optional[int] = 3) -> str:
  """`CheckpointManager(directory, keep=keep).save(step, tree, metadata)`."""
  manager = CheckpointManager(directory, keep=keep)
  try:
    return manager.save(step, tree, metadata)
  finally:
    manager.close()


def restore(directory: str, step: int, like: Any) -> Restored:
  """`CheckpointManager(directory).restore(step, like)`."""
  return CheckpointManager(directory).restore(step, like)


def restore_latest(directory: str, like: Any) -> Optional[Restored]:
  """`CheckpointManager(directory).restore_latest(like)`."""
  return CheckpointManager(directory).restore_latest(like)


def verify(directory: str, step: int) -> Dict[str, Any]:
  """Checks the integrity of checkpoint `step`; returns its manifest.

  Raises:
    CheckpointError: if it is missing, unfinished, truncated or corrupted.
  """
  path = checkpoint_path(directory, step)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path} does not exist.")
  return checkpoint_manifest.read_verified(path, step)


def latest_step(directory: str, verify_integrity: bool = False
                ) -> Optional[int]:
  """The newest checkpoint step in `directory`, or None if there is none.

  Args:
    directory: checkpoint directory (may not exist).
    verify_integrity: if True, skip checkpoints that fail `verify`.
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


def load_arrays(directory: str, step: int) -> Dict[str, np.ndarray]:
  """`{name: array}` of verified checkpoint `step`, as stored (NumPy)."""
  verify(directory, step)
  path = os.path.join(checkpoint_path(directory, step), ARRAYS_ITEM)
  with ocp.StandardCheckpointer() as ckptr:
    # The stored tree (empty dicts included) as NumPy targets: readable in
    # any process, whatever devices the checkpoint was written from.
    stored = ckptr.metadata(path).item_metadata.tree
    target = jax.tree_util.tree_map(
        lambda m: np.zeros(m.shape, np.dtype(m.dtype)), stored)
    nested = ckptr.restore(path, target)
  return {names_lib.name_str(n): np.asarray(v)
          for n, v in names_lib.unnest(nested).items()}


def read_metadata(directory: str, step: int) -> Dict[str, Any]:
  """The caller's JSON metadata of checkpoint `step` (not verified)."""
  with open(os.path.join(checkpoint_path(directory, step), META_ITEM,
                         "metadata")) as f:
    return json.load(f)


def array_files(path: str) -> List[str]:
  """The array data files of the step directory `path`, largest first."""
  out = []
  for root, _, files in os.walk(os.path.join(path, ARRAYS_ITEM)):
    out.extend(os.path.join(root, f) for f in files
               if os.sep + "d" + os.sep in os.path.join(root, f))
  return sorted(out, key=lambda f: (-os.path.getsize(f), f))
