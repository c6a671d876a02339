r"""Trains a pax_haiku model; configured by an ml_collections config file.

  python3 tools/train.py --config=configs/digits_mlp.py --workdir=/tmp/run
  python3 tools/train.py --config=configs/digits_mlp.py \
      --config.num_steps=500 --workdir=/tmp/run
  bazel run //tools:train -- --config=$PWD/configs/digits_mlp.py --workdir=/tmp/run

Rerunning with the same --workdir resumes from its latest checkpoint.

Data parallel over all local devices by default (`--config.num_devices`,
`--config.param_sharding`; docs/scaling.md). On CPU, simulate 8 devices:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/run

Multi-process (`jax.distributed`): start one process per host (or several on
one machine) with the same flags except --process_id, and a workdir every
process sees:

  python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/run \
      --coordinator_address=127.0.0.1:12355 --num_processes=2 --process_id=0
  python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/run \
      --coordinator_address=127.0.0.1:12355 --num_processes=2 --process_id=1

The three flags can also come from the environment: JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID.
"""

import os
import sys
from typing import Any, Sequence

# `python3 tools/train.py` puts tools/ on sys.path, not the repository root.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
from ml_collections import config_flags

import pax_haiku as pax
from tools.trainer import compile_cache
from tools.trainer import train_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "digits_mlp.py"),
    "Training config file (see configs/).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and plots.")
flags.mark_flag_as_required("workdir")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-process: HOST:PORT of process 0, the same on every process "
    "(default: $JAX_COORDINATOR_ADDRESS; unset = a single process).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None,
    "Multi-process: number of processes (default: $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None,
    "Multi-process: this process's index in [0, num_processes), 0 on the "
    "coordinator (default: $JAX_PROCESS_ID).")


def _user_path(path: str) -> str:
  # `bazel run` starts us in the runfiles tree; paths are the caller's.
  base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
  return os.path.join(base, os.path.expanduser(path))


def _load_config(argv: Sequence[str]) -> Any:
  """The config from --config and its overrides, or a clear error.

  ml_collections loads the file and applies `--config.key=value` lazily, on
  first access, and reports a missing file or an unknown key with a
  traceback; this turns those into one message with the fix.
  """
  try:
    config = _CONFIG.value
    config.keys()  # A file that failed to load raises only when used.
    return config
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    raise _config_error(argv, e) from e


def _config_error(argv: Sequence[str], e: Exception) -> ValueError:
  """The ValueError that says what is wrong with --config and its fix."""
  overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
  detail = str(e).strip().splitlines()
  if isinstance(e, (AttributeError, KeyError)):
    return ValueError(
        f"--config override: unknown key {detail[-1] if detail else e}"
        f" (overrides given: {', '.join(overrides) or 'none'}).\nFix: "
        "override only keys the config file defines (see configs/ and "
        "tools/trainer/config_schema.py), e.g. `--config.steps=200`.")
  return ValueError(
      "--config: cannot load the config file: "
      f"{' '.join(l.strip() for l in detail[-2:])}"
      "\nFix: pass an existing config file, e.g. "
      "`--config=configs/digits_mlp.py` (see configs/), optionally with "
      "`--config.key=value` overrides.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    config = _load_config(sys.argv)
    compile_cache.setup(config)
    pax.sharding.initialize_distributed(_COORDINATOR.value,
                                        _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = train_lib.train_and_evaluate(config,
                                          _user_path(_WORKDIR.value))
  except (ValueError, train_lib.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() != 0:
    return 0
  metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                      if isinstance(v, float) and k != "seconds")
  print(f"Final test metrics after {result['step']} steps: {metrics}")
  print(f"Training time: {result['seconds']:.1f} s on {result['num_devices']} "
        f"device(s), {result['process_count']} process(es)")
  print(f"Checkpoint: {result['checkpoint']}")
  print(f"Metrics:    {result['metrics']} (TensorBoard: "
        f"{os.path.join(os.path.dirname(result['metrics']), 'tensorboard')})")
  if result["plot"]:
    print(f"Plot:       {result['plot']}")
  return 0


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
  """absl's flag parsing, with config-file errors as one clear message."""
  try:
    return app.parse_flags_with_usage(argv)  # Prints flag errors itself.
  except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    print(f"error: {_config_error(argv, e)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
