"""Runs the trainer on configs/smoke.py and can SIGKILL itself inside a save.

Usage:
  python tests/reliability_crash_runner.py WORKDIR READY_FILE KILL [KEY=VALUE...]

Touches READY_FILE when the training loop is about to start (after the
imports, model building and restoring the latest checkpoint), so that a
parent can time a kill from there. KILL is `none`, or
`<k>:<phase>`: during the k-th checkpoint save of this process, die with
SIGKILL at `<phase>`, one of PHASES. KEY=VALUE pairs override config keys
(values are Python literals), e.g. `num_steps=60`.
"""

import ast
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import smoke  # pylint: disable=wrong-import-position
from pax_haiku._src import atomic_write  # pylint: disable=wrong-import-position
from tools.trainer import checkpoint  # pylint: disable=wrong-import-position
from tools.trainer import train_lib  # pylint: disable=wrong-import-position

# Moments inside `checkpoint.save`, in the order they happen.
PHASES = (
    "arrays_half",  # arrays.npz half written in the temporary directory
    "metadata_empty",  # arrays.npz complete, metadata.json not yet written
    "metadata_half",  # metadata.json half written
    "before_rename",  # temporary directory complete and fsynced, not renamed
    "after_rename",  # ckpt_<step> in place, old checkpoints not yet pruned
    "during_prune",  # an old checkpoint moved to trash, not yet removed
)


def _die():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(save_index, phase):
  """Patches checkpoint saving to die at `phase` of save `save_index`."""
  state = {"calls": 0, "armed": False}
  original_save = checkpoint.save
  original_savez = np.savez
  original_dump = json.dump
  original_fsync_dir = atomic_write.fsync_directory
  original_rmtree = checkpoint.shutil.rmtree

  def savez(f, **arrays):
    if state["armed"] and phase == "arrays_half":
      names = sorted(arrays)
      original_savez(f, **{n: arrays[n] for n in names[:len(names) // 2]})
      f.flush()
      _die()
    return original_savez(f, **arrays)

  def dump(obj, f, **kwargs):
    if state["armed"] and isinstance(obj, dict) and "metadata_sha256" in obj:
      if phase == "metadata_empty":
        _die()
      if phase == "metadata_half":
        text = json.dumps(obj, **kwargs)
        f.write(text[:len(text) // 2])
        f.flush()
        _die()
    return original_dump(obj, f, **kwargs)

  def fsync_dir(path):
    original_fsync_dir(path)
    if not state["armed"]:
      return
    is_tmp = os.path.basename(path).startswith(".tmp_ckpt_")
    if (phase == "before_rename" and is_tmp) or (
        phase == "after_rename" and not is_tmp):
      _die()

  def rmtree(path, *args, **kwargs):
    if state["armed"] and phase == "during_prune" and (
        ".trash_ckpt_" in os.path.basename(str(path))):
      _die()
    return original_rmtree(path, *args, **kwargs)

  def save(*args, **kwargs):
    state["calls"] += 1
    state["armed"] = state["calls"] == save_index
    path = original_save(*args, **kwargs)
    if state["armed"]:  # The phase did not occur in this save (no pruning).
      _die()
    return path

  np.savez = savez
  json.dump = dump
  atomic_write.fsync_directory = fsync_dir
  checkpoint.shutil.rmtree = rmtree
  checkpoint.save = save


def main():
  workdir, ready_file, kill = sys.argv[1:4]
  config = smoke.get_config()
  for item in sys.argv[4:]:
    key, value = item.split("=", 1)
    config[key] = ast.literal_eval(value)
  if kill != "none":
    index, phase = kill.split(":")
    if phase not in PHASES:
      raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    _install_kill(int(index), phase)
  original_restore_latest = checkpoint.restore_latest

  def restore_latest(*args, **kwargs):
    restored = original_restore_latest(*args, **kwargs)
    with open(ready_file, "w") as f:
      f.write("ready")
    return restored

  checkpoint.restore_latest = restore_latest
  result = train_lib.train_and_evaluate(config, workdir)
  print(f"RUNNER_DONE step {result['step']}", flush=True)


if __name__ == "__main__":
  main()
