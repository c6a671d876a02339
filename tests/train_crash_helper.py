"""Runs the trainer in a subprocess and SIGKILLs itself at a chosen moment.

Usage: python tests/train_crash_helper.py CONFIG WORKDIR MODE STEP
MODE: `after_save` kills right after checkpoint STEP is complete (committed
by orbax and its manifest written); `during_save` kills while checkpoint
STEP is written but not committed (its temporary directory is complete, the
atomic rename has not happened).
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# As in tools/train.py: a config's model and dataset modules (e.g.
# `--config.model=mytask.models:build`) import from the current directory.
if os.getcwd() not in sys.path:
  sys.path.append(os.getcwd())

from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from orbax.checkpoint._src.path import atomicity  # pylint: disable=wrong-import-position

from tools.trainer import checkpoint_manifest  # pylint: disable=wrong-import-position
from tools.trainer import train_lib  # pylint: disable=wrong-import-position


def _die():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def main():
  config_path, workdir, mode, kill_step = sys.argv[1:5]
  kill_step = int(kill_step)
  config = config_flags.config_flags._ConfigFileParser("config").parse(  # pylint: disable=protected-access
      config_path)
  original_write = checkpoint_manifest.write
  original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

  def write(step_dir, step, leaves):
    original_write(step_dir, step, leaves)
    if mode == "after_save" and step == kill_step:
      _die()

  async def finalize(self, *args, **kwargs):
    # Runs in orbax's background thread; SIGKILL ends the whole process.
    if mode == "during_save" and self._final_path.name == str(kill_step):  # pylint: disable=protected-access
      _die()
    return await original_finalize(self, *args, **kwargs)

  checkpoint_manifest.write = write
  atomicity.AtomicRenameTemporaryPath.finalize = finalize
  train_lib.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  main()
