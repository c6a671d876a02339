"""Ending a test process as `python` would, without freeing the interpreter.

At exit CPython frees every module and object one by one. A process that
imported jax, haiku, optax and orbax spends ~0.5-1.5 s of CPU on this on two
slow cores, and the operating system frees the same memory at once when the
process ends. `finish` runs the steps of an exit that a program can see
(non-daemon threads joined, atexit handlers run, standard streams and the
files it left open flushed, the exit status) and then ends the process
without that teardown. `main` is `absltest.main()` ending that way: the test
files' `__main__` calls it (under pytest the file is imported and this is
not used).
"""

import atexit
import gc
import io
import os
import signal
import sys
import threading
import traceback
from typing import NoReturn


def system_exit_code(error: SystemExit) -> int:
  """The exit status `python` gives an uncaught `SystemExit` (a message
  other than an int is printed to stderr: status 1)."""
  if error.code is None:
    return 0
  if isinstance(error.code, int):
    return error.code
  try:
    print(error.code, file=sys.stderr)
  except Exception:  # pylint: disable=broad-except
    pass
  return 1


def _flush_open_files() -> None:
  """Flushes the files the program left open, as freeing them would (the
  objects a fork server froze with `gc.freeze` are not looked at)."""
  for obj in gc.get_objects():
    if issubclass(type(obj), (io.BufferedWriter, io.BufferedRandom,
                              io.TextIOWrapper)):
      try:
        if not obj.closed:
          obj.flush()
      except Exception:  # pylint: disable=broad-except
        pass


def finish(code: int, interrupted: bool = False) -> NoReturn:
  """Ends the process with status `code` after the visible steps of exit.

  As `python` does: non-daemon threads are joined, atexit handlers run, and
  a failed flush of stdout/stderr makes the status 120. `interrupted` (an
  uncaught KeyboardInterrupt) ends the process by SIGINT instead.
  Private stdlib calls: `threading._shutdown` and `atexit._run_exitfuncs`
  are what the interpreter itself calls at exit (CPython 3.11 here); a
  rename would fail here with an AttributeError, in every test.
  """
  # Looked up outside the `try`: a missing name fails loudly.
  join_threads = threading._shutdown  # pylint: disable=protected-access
  run_atexit = atexit._run_exitfuncs  # pylint: disable=protected-access
  try:
    join_threads()
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  run_atexit()
  for stream in (sys.stdout, sys.stderr):
    try:
      if stream is not None:
        stream.flush()
    except Exception:  # pylint: disable=broad-except
      code = 120
  _flush_open_files()
  if interrupted:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
  os._exit(code & 0xFF)  # pylint: disable=protected-access


def main() -> NoReturn:
  """`absltest.main()`, ending the process through `finish`."""
  from absl.testing import absltest  # pylint: disable=g-import-not-at-top
  try:
    absltest.main()
  except SystemExit as e:
    finish(system_exit_code(e))
  except KeyboardInterrupt:
    traceback.print_exc()
    finish(1, interrupted=True)
  finish(0)
