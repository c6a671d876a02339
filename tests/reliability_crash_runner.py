"""Runs the trainer on configs/smoke.py and can SIGKILL itself inside a save.

Usage:
  python tests/reliability_crash_runner.py WORKDIR READY_FILE KILL [KEY=VALUE...]

Touches READY_FILE when the training loop is about to start (after the
imports, model building and restoring the latest checkpoint), so that a
parent can time a kill from there. KILL is `none`, or
`<k>:<phase>`: during the k-th checkpoint save of this process, die with
SIGKILL at `<phase>`, one of PHASES. KEY=VALUE pairs override config keys
(values are Python literals), e.g. `num_steps=60`.

The trainer saves asynchronously (tools/trainer/checkpoint.py): orbax writes
the files in a background thread and commits them by renaming the step's
temporary directory; the manifest of a step is written (and old steps
pruned) when the next save or the end of training finds that commit done.
"""

import ast
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import smoke  # pylint: disable=wrong-import-position
from tools.trainer import checkpoint  # pylint: disable=wrong-import-position
from tools.trainer import checkpoint_manifest  # pylint: disable=wrong-import-position
from tools.trainer import train_lib  # pylint: disable=wrong-import-position

# Moments of one checkpoint save, in the order they happen.
PHASES = (
    "mid_write",  # orbax's background thread is writing the arrays
    "before_commit",  # temporary directory written, not yet renamed
    "before_manifest",  # step committed by orbax, manifest not yet written
    "manifest_half",  # manifest half written (to its temporary file)
    "before_prune",  # manifest in place, old steps not yet pruned
    "during_prune",  # an old step moved to trash, not yet removed
)


def _die():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(save_index, phase):
  """Patches checkpoint saving to die at `phase` of save `save_index`."""
  state = {"calls": 0, "step": None}
  manager_cls = checkpoint.CheckpointManager
  original_save = manager_cls.save
  original_wait = manager_cls.wait_until_finished
  original_prune = manager_cls._prune  # pylint: disable=protected-access
  original_finalize = atomicity.AtomicRenameTemporaryPath.finalize
  original_write = checkpoint_manifest.write
  original_dump = json.dump
  original_rmtree = checkpoint.shutil.rmtree

  def armed(step):
    return step is not None and step == state["step"]

  def save(self, step, *args, **kwargs):
    state["calls"] += 1
    if state["calls"] == save_index:
      state["step"] = int(step)
    path = original_save(self, step, *args, **kwargs)
    if phase == "mid_write" and armed(step):
      _die()
    return path

  async def finalize(self, *args, **kwargs):
    name = self._final_path.name  # pylint: disable=protected-access
    if phase == "before_commit" and name.isdigit() and armed(int(name)):
      _die()
    return await original_finalize(self, *args, **kwargs)

  def write(step_dir, step, leaves):
    if armed(step):
      state["writing"] = True
      if phase == "before_manifest":
        _die()
    try:
      original_write(step_dir, step, leaves)
    finally:
      state["writing"] = False
    state["manifest"] = step

  def dump(obj, f, **kwargs):
    if (phase == "manifest_half" and state.get("writing") and
        isinstance(obj, dict) and "manifest_sha256" in obj):
      text = json.dumps(obj, **kwargs)
      f.write(text[:len(text) // 2])
      f.flush()
      _die()
    return original_dump(obj, f, **kwargs)

  def prune(self):
    if phase == "before_prune" and armed(state.get("manifest")):
      _die()
    return original_prune(self)

  def rmtree(path, *args, **kwargs):
    if phase == "during_prune" and armed(state.get("manifest")) and (
        ".trash_step_" in os.path.basename(str(path))):
      _die()
    return original_rmtree(path, *args, **kwargs)

  def wait_until_finished(self):
    original_wait(self)
    if armed(state.get("manifest")):
      _die()  # The phase did not occur in this save (e.g. nothing to prune).

  manager_cls.save = save
  manager_cls.wait_until_finished = wait_until_finished
  manager_cls._prune = prune  # pylint: disable=protected-access
  atomicity.AtomicRenameTemporaryPath.finalize = finalize
  checkpoint_manifest.write = write
  json.dump = dump
  checkpoint.shutil.rmtree = rmtree


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
  original_restore_latest = checkpoint.CheckpointManager.restore_latest

  def restore_latest(*args, **kwargs):
    restored = original_restore_latest(*args, **kwargs)
    with open(ready_file, "w") as f:
      f.write("ready")
    return restored

  checkpoint.CheckpointManager.restore_latest = restore_latest
  result = train_lib.train_and_evaluate(config, workdir)
  print(f"RUNNER_DONE step {result['step']}", flush=True)


if __name__ == "__main__":
  main()
