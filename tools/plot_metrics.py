r"""Plots the training/eval curves of a run: <workdir>/metrics.jsonl -> PNG.

Usage (from the repository root):

  python3 tools/plot_metrics.py --workdir=/tmp/pax_haiku_runs/digits_mlp
      (the run `bash tools/train.sh` trains; $PAX_HAIKU_RUNS/... if set)
  python3 -m tools.plot_metrics --workdir=/tmp/run --output=/tmp/run.png \
      --panels=loss,bits_per_char

Writes `<workdir>/curves.png` unless --output is given, titled with the
run's config name, and prints the PNG's path. Exit status: 0 done, 2 usage
error (bad flag, a workdir without metrics.jsonl, no such metric).
"""

import os
import sys

if __package__ in (None, ""):  # run as a script: make `tools` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tools import cli
from tools.trainer import plotting

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory holding metrics.jsonl (the --workdir of "
    "tools/train.py; required).")
flags.mark_flag_as_required("workdir")
_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG to write (default: <workdir>/curves.png).")
_PANELS = flags.DEFINE_list(
    "panels", None, "Metric names to draw, one panel each (default: those of "
    f"{','.join(plotting.DEFAULT_PANELS)} that are present).")


def help_text(full: bool = False) -> str:
  flag_help = (flags.FLAGS.get_help() if full
               else flags.FLAGS.main_module_help())
  return f"{__doc__.strip()}\n\nFlags:\n{flag_help}"


def main(argv):
  del argv  # Checked by cli.parse_flags.
  try:
    path = plotting.plot_workdir(_WORKDIR.value, _OUTPUT.value,
                                 panels=_PANELS.value)
  except FileNotFoundError as e:
    cli.usage_error(f"{e}\nFix: {_workdir_fix()}")
  except ValueError as e:  # None of the --panels is in the records.
    message = str(e).split(" Pass panels=")[0]
    cli.usage_error(f"{message}\nFix: pass --panels with names that are "
                    "present, e.g. `--panels=loss`, or leave it out.")
  print(path)


def _workdir_fix() -> str:
  found = cli.runs()
  if found:
    return (f"pass the --workdir of a training run, e.g. "
            f"`--workdir={found[-1]}` (runs in {cli.runs_root()}: "
            f"{', '.join(os.path.basename(r) for r in found)}).")
  workdir = os.path.join(cli.runs_root(), "smoke")
  return (f"pass the --workdir of a training run; there is none in "
          f"{cli.runs_root()} yet: train one, e.g. `python3 tools/train.py "
          f"--config=configs/smoke.py --workdir={workdir}` (from the "
          "repository root; `bash tools/train.sh` trains the default one).")


def _parse_flags(argv):
  return cli.parse_flags(argv, help_text,
                         required={"workdir": _workdir_fix()})


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
