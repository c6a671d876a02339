"""Command-line conventions shared by the `tools/` commands.

absl's own flag parsing exits with status 1 for `--help` and for every flag
error; these commands instead print their help with status 0, and report a
usage error (bad flag, missing required flag, bad value) as one `error:`
line plus a `Fix:` line, with status 2:

>>> import contextlib, sys
>>> from absl import flags
>>> fv = flags.FlagValues()
>>> _ = flags.DEFINE_integer("steps", 1, "Steps.", flag_values=fv)
>>> parse_flags(["prog", "--steps=3"], lambda full: "help", flag_values=fv)
['prog']
>>> try:
...   with contextlib.redirect_stderr(sys.stdout):  # (to show it here)
...     parse_flags(["prog", "--steps=x"], lambda full: "", flag_values=fv)
... except SystemExit as e:
...   print("exit", e.code)
error: flag --steps=x: invalid literal for int() with base 10: 'x'
Fix: see `--help` for the flags.
exit 2
"""

import glob
import os
import sys
from typing import Callable, List, Mapping, NoReturn, Optional, Sequence

from absl import flags

__all__ = ["EXIT_USAGE", "HELP_FLAGS", "default_workdir", "parse_flags",
           "runs", "runs_root", "usage_error", "wants_help"]

EXIT_USAGE = 2
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def runs_root() -> str:
  """Where tools/train.sh puts runs: $PAX_HAIKU_RUNS or /tmp/pax_haiku_runs.

  Not /tmp/pax_haiku: that would be an importable `pax_haiku` namespace
  package for every script run from /tmp, shadowing the library.
  """
  return os.environ.get("PAX_HAIKU_RUNS") or "/tmp/pax_haiku_runs"


def default_workdir(config_path: str) -> str:
  """`<runs_root()>/<config file name>`, the workdir tools/train.sh uses."""
  name = os.path.splitext(os.path.basename(config_path))[0]
  return os.path.join(runs_root(), name)


def runs() -> List[str]:
  """The workdirs under `runs_root()` that hold a metrics.jsonl."""
  return sorted(os.path.dirname(p) for p in
                glob.glob(os.path.join(runs_root(), "*", "metrics.jsonl")))


def usage_error(message: str) -> NoReturn:
  """Prints `error: <message>` to stderr and exits with status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def wants_help(argv: Sequence[str]) -> bool:
  """Whether argv (program name first) asks for help (before any `--`)."""
  args = list(argv[1:])
  if "--" in args:
    args = args[:args.index("--")]
  return any(a in HELP_FLAGS for a in args)


def parse_flags(argv: Sequence[str], help_text: Callable[[bool], str], *,
                required: Optional[Mapping[str, str]] = None,
                flag_values: flags.FlagValues = flags.FLAGS,
                on_error: Optional[Callable[[Exception], str]] = None
                ) -> Sequence[str]:
  """Parses flags like absl, with help and usage errors as described above.

  Args:
    argv: the command line, program name first.
    help_text: `help_text(full)` is printed for `--help` (`full` for
      `--helpfull`), then the program exits with status 0.
    required: flag name -> the fix to print when that required flag is
      missing (e.g. "add e.g. `--workdir=/tmp/run`.").
    flag_values: the flags to parse into.
    on_error: turns any other exception raised while parsing (e.g. by a
      config-file flag) into the usage error's message.

  Returns:
    The remaining arguments (the program name only: any other positional
    argument is a usage error).
  """
  if wants_help(argv):
    print(help_text("--helpfull" in argv))
    sys.exit(0)
  try:
    rest = flag_values(list(argv))
  except flags.Error as e:
    for name, fix in (required or {}).items():
      if f"--{name} must have a value" in str(e):
        usage_error(f"--{name} is required.\nFix: {fix}")
    usage_error(f"{e}\nFix: see `--help` for the flags.")
  except Exception as e:  # pylint: disable=broad-except
    if on_error is None:
      raise
    usage_error(on_error(e))
  if len(rest) > 1:
    usage_error(f"unexpected arguments: {' '.join(rest[1:])}\nFix: pass "
                "options as --flag=value; see `--help` for the flags.")
  return rest
