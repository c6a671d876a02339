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

import ast
import importlib.util
import logging
import os
import re
import shlex
import sys
from typing import Any, List, Optional, Sequence

# `python3 tools/train.py` puts tools/ on sys.path, not the repository root.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
# Your own `--config.model=pkg.module:factory` / `--config.dataset=...`
# import from the current directory too, as with `python3 -m` (after the
# repository and the installed packages, so nothing of theirs is shadowed).
if os.getcwd() not in sys.path:
  sys.path.append(os.getcwd())

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections import config_flags

import pax_haiku as pax
from tools import cli
from tools.trainer import compile_cache
from tools.trainer import config_schema
from tools.trainer import train_lib

_DEFAULT_CONFIG = os.path.join(_ROOT, "configs", "digits_mlp.py")
# Exit statuses: 2 for a usage error (bad flag, config key or value, config
# file, workdir in use: an "error:" line and a "Fix:"), 1 when training
# itself failed (it diverged; a checkpoint from before is kept), 75
# (EX_TEMPFAIL) when a SIGTERM/SIGINT stopped it after a checkpoint: rerun
# to resume.
EXIT_USAGE = cli.EXIT_USAGE
EXIT_TRAINING_FAILED = 1
EXIT_PREEMPTED = train_lib.lifecycle.PREEMPTED_EXIT_CODE


def _overrides(argv: Sequence[str]) -> List[tuple]:
  """The `--config.KEY=VALUE` (or `--config.KEY VALUE`) overrides in argv."""
  out = []
  for i, arg in enumerate(argv):
    m = re.fullmatch(r"--config\.([^=]+)(?:=(.*))?", arg, re.S)
    if m:
      value = m.group(2)
      if value is None and i + 1 < len(argv):
        value = argv[i + 1]
      out.append((m.group(1), value))
  return out


def _config_path(argv: Sequence[str]) -> str:
  path = _DEFAULT_CONFIG
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _config_file(path: str) -> Optional[Any]:
  """The config `path`'s get_config() returns, without overrides, or None."""
  try:
    spec = importlib.util.spec_from_file_location("_pax_train_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None  # Diagnosis only: the caller falls back to the schema.


def _has_key(config: Any, key: str) -> bool:
  node = config
  for part in key.split("."):
    try:
      if part not in node:
        return False
      node = node[part]
    except TypeError:
      return False
  return True


def _get(config: Any, key: str) -> Any:
  for part in key.split("."):
    config = config[part]
  return config


def _example_value(value: Optional[str], default: Any) -> str:
  """`value` if it parses as the key's type (as ml_collections would parse
  it), else the key's current value."""
  try:
    if isinstance(default, bool):
      ok = value.lower() in ("true", "false", "1", "0")
    elif isinstance(default, (int, float)):
      ok = isinstance(ast.literal_eval(value), (int, float))
      ok = ok and (isinstance(default, float) or
                   isinstance(ast.literal_eval(value), int))
    elif isinstance(default, (tuple, list)):
      ok = isinstance(ast.literal_eval(value), (tuple, list))
    else:
      ok = isinstance(default, str)
  except (AttributeError, SyntaxError, TypeError, ValueError):
    ok = False
  if ok:
    return value
  if isinstance(default, (tuple, list)):
    return repr(tuple(default)).replace(" ", "")
  return str(default)


def _config_error(argv: Sequence[str], e: BaseException) -> str:
  """The message (with its fix) for a --config file or override failure."""
  config = _config_file(_config_path(argv))
  if isinstance(e, (AttributeError, KeyError)):
    known = config if config is not None else config_schema.base_config()
    for key, value in _overrides(argv):
      if _has_key(known, key):
        continue
      close = config_schema.nearest_keys(key, config)
      if close:
        arg = (f"--config.{close[0]}="
               f"{_example_value(value, _get(known, close[0]))}")
        fix = f"use a key the config has, e.g. `{shlex.quote(arg)}`"
      else:
        fix = "use a key the config has"
      return (f"unknown config key `{key}` (in --config.{key}={value})"
              + (f"; nearest keys: {', '.join(close)}" if close else "")
              + f".\nFix: {fix}; `--help` lists every key.")
  detail = " ".join(line.strip() for line in
                    str(e).strip().splitlines()[-2:]) or type(e).__name__
  return ("--config: cannot load the config file "
          f"{_config_path(argv)!r}: {detail}\nFix: pass an existing config "
          f"file, e.g. `--config={_DEFAULT_CONFIG}` (see configs/), "
          "optionally with `--config.key=value` overrides.")


try:
  _CONFIG = config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG,
      "Training config file (see configs/); `--config.KEY=VALUE` overrides "
      "one of its keys (listed below).", lock_config=True)
except Exception as e:  # pylint: disable=broad-except
  # ml_collections loads the config file and applies the overrides in sys.argv
  # when the flag is defined.
  if __name__ != "__main__":
    raise
  cli.usage_error(_config_error(sys.argv, e))
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and plots "
    "(required); rerunning with the same one resumes.")
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
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir whose checkpoints were trained with another optimizer, "
    "learning rate, schedule, batch size, model or data (the old config is "
    "kept as config.<step>.json).")


def _user_path(path: str) -> str:
  # `bazel run` starts us in the runfiles tree; paths are the caller's.
  base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
  return os.path.join(base, os.path.expanduser(path))


def help_text(full: bool = False) -> str:
  """What `--help` prints: usage, the flags and every config key."""
  flag_help = (flags.FLAGS.get_help() if full
               else flags.FLAGS.main_module_help())
  return "\n".join([
      __doc__.strip(), "", "Flags:", flag_help, "",
      "Config keys (`--config.KEY=VALUE`; the schema's defaults, which the "
      "config file may change; tools/trainer/config_schema.py):",
      *config_schema.describe(), "",
      f"Exit status: 0 done, {EXIT_USAGE} usage error (bad flag, config "
      f"key or value, config file, workdir or workdir in use by another "
      f"run), {EXIT_TRAINING_FAILED} training diverged (non-finite or "
      f"exploding loss), {EXIT_PREEMPTED} stopped by SIGTERM/SIGINT after a "
      "checkpoint (rerun to resume).",
      "" if full else "--helpfull also lists the flags of every library."])


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
  """absl's flag parsing, with every usage error as one clear message."""
  workdir = cli.default_workdir(_config_path(argv))
  rest = cli.parse_flags(
      argv, help_text,
      required={"workdir": f"add e.g. `--workdir={workdir}` (checkpoints, "
                           "metrics and plots go there)."},
      on_error=lambda e: _config_error(argv, e))
  try:
    _CONFIG.value.keys()  # A file that failed to load raises only when used.
  except Exception as e:  # pylint: disable=broad-except
    cli.usage_error(_config_error(argv, e))
  return rest


class _DropOrbaxInfo(logging.Filter):
  """Drops orbax's INFO lines (~10 per checkpoint, from its save threads);
  its warnings and errors still show."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or
            f"{os.sep}orbax{os.sep}" not in record.pathname)


def main(argv):
  del argv  # Checked by _parse_flags.
  # On the handlers, so records from every logger and thread are filtered.
  for handler in [absl_logging.get_absl_handler(),
                  *logging.getLogger().handlers]:
    handler.addFilter(_DropOrbaxInfo())
  config = _CONFIG.value
  if not config.name:
    config.name = os.path.splitext(os.path.basename(
        config_flags.get_config_filename(flags.FLAGS["config"])))[0]
  try:
    config_schema.validate(config)
    compile_cache.setup(config)
    pax.sharding.initialize_distributed(_COORDINATOR.value,
                                        _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = train_lib.train_and_evaluate(
        config, _user_path(_WORKDIR.value),
        allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except train_lib.Preempted as e:
    print(f"{e}", file=sys.stderr)
    return EXIT_PREEMPTED
  except (ValueError, train_lib.registry.FactoryResultError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except train_lib.DivergedError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_TRAINING_FAILED
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


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
