"""Runs the trainer in a subprocess and SIGKILLs itself at a chosen moment.

Usage: python tests/train_crash_helper.py CONFIG WORKDIR MODE STEP
MODE: `after_save` kills right after checkpoint STEP is complete;
`during_save` kills while checkpoint STEP's arrays are half written.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from ml_collections import config_flags  # pylint: disable=wrong-import-position
from tools.trainer import checkpoint  # pylint: disable=wrong-import-position
from tools.trainer import train_lib  # pylint: disable=wrong-import-position


def main():
  config_path, workdir, mode, kill_step = sys.argv[1:5]
  kill_step = int(kill_step)
  config = config_flags.config_flags._ConfigFileParser("config").parse(  # pylint: disable=protected-access
      config_path)
  original_save = checkpoint.save
  original_savez = np.savez

  def save(directory, step, tree, metadata=None, **kwargs):
    if mode == "during_save" and step == kill_step:
      def savez_and_die(f, **arrays):
        names = sorted(arrays)
        original_savez(f, **{n: arrays[n] for n in names[:len(names) // 2]})
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
      np.savez = savez_and_die
    path = original_save(directory, step, tree, metadata, **kwargs)
    if mode == "after_save" and step == kill_step:
      os.kill(os.getpid(), signal.SIGKILL)
    return path

  checkpoint.save = save
  train_lib.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  main()
