r"""Your own training binary: the trainer as a library.

  python3 examples/custom_model/train.py --workdir=/tmp/custom_model_lib
  bazel run //examples/custom_model:train -- --workdir=/tmp/custom_model_lib

It trains what examples/custom_model/config.py describes with
`train_lib.train_and_evaluate`, so it gets the binary's checkpoints, resume,
metrics, preemption handling and sharding; put your own set-up (flags,
logging, sweeps) around that one call.
"""

import os
import sys

# `python3 examples/custom_model/train.py` puts this directory on sys.path,
# not the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from examples.custom_model import config as config_lib
from tools.trainer import train_lib

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/custom_model_lib",
                               "Checkpoints, metrics and plots go here.")
_STEPS = flags.DEFINE_integer("num_steps", None,
                              "Override the config's num_steps.")


def main(argv):
  del argv
  config = config_lib.get_config()
  if _STEPS.value is not None:
    config.num_steps = _STEPS.value
  result = train_lib.train_and_evaluate(config, _WORKDIR.value)
  print(f"step {result['step']}: test accuracy {result['accuracy']:.4f}, "
        f"loss {result['loss']:.4f}; checkpoint {result['checkpoint']}")


if __name__ == "__main__":
  app.run(main)
