r"""Plots the training/eval curves of a run: <workdir>/metrics.jsonl -> PNG.

Usage (from the repository root):

  python3 tools/plot_metrics.py --workdir /tmp/mnist_run
  python3 -m tools.plot_metrics --workdir /tmp/run --output /tmp/run.png \
      --panels loss,bits_per_char

Writes `<workdir>/curves.png` unless --output is given.
"""

import os
import sys

if __package__ in (None, ""):  # run as a script: make `tools` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from tools.trainer import plotting

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Run directory holding metrics.jsonl.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG to write (default: <workdir>/curves.png).")
_PANELS = flags.DEFINE_list(
    "panels", None, "Metric names to draw, one panel each (default: those of "
    f"{','.join(plotting.DEFAULT_PANELS)} that are present).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  path = plotting.plot_workdir(_WORKDIR.value, _OUTPUT.value,
                               panels=_PANELS.value)
  logging.info("Wrote %s", path)
  print(path)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
