r"""Trains a pax_haiku model; configured by an ml_collections config file.

  python3 tools/train.py --config=configs/digits_mlp.py --workdir=/tmp/run
  python3 tools/train.py --config=configs/digits_mlp.py \
      --config.num_steps=500 --workdir=/tmp/run
  bazel run //tools:train -- --config=$PWD/configs/digits_mlp.py --workdir=/tmp/run

Rerunning with the same --workdir resumes from its latest checkpoint.
"""

import os
import sys

# `python3 tools/train.py` puts tools/ on sys.path, not the repository root.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from ml_collections import config_flags

from tools.trainer import train_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "digits_mlp.py"),
    "Training config file (see configs/).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and plots.")
flags.mark_flag_as_required("workdir")


def _user_path(path: str) -> str:
  # `bazel run` starts us in the runfiles tree; paths are the caller's.
  base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
  return os.path.join(base, os.path.expanduser(path))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    result = train_lib.train_and_evaluate(_CONFIG.value,
                                          _user_path(_WORKDIR.value))
  except (ValueError, train_lib.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                      if isinstance(v, float) and k != "seconds")
  print(f"Final test metrics after {result['step']} steps: {metrics}")
  print(f"Training time: {result['seconds']:.1f} s")
  print(f"Checkpoint: {result['checkpoint']}")
  print(f"Metrics:    {result['metrics']} (TensorBoard: "
        f"{os.path.join(os.path.dirname(result['metrics']), 'tensorboard')})")
  if result["plot"]:
    print(f"Plot:       {result['plot']}")
  return 0


if __name__ == "__main__":
  app.run(main)
