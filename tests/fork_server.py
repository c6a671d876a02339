"""Starts Python scripts by forking a server that has already imported them.

A test that restarts the training binary dozens of times (tests/
crash_resume_test.py) spends most of each restart importing jax, haiku,
orbax and the trainer (about 2 s of CPU on this machine). A `ForkServer`
imports those modules once, in a server process that starts no JAX backend
and runs nothing else, and each `start()` forks it: the child runs the
script as `__main__` (`runpy.run_path`), with its output in a log file. The
child is a real process of its own: it can be killed with any signal, and
it exits the way `python script.py` would (atexit handlers, non-daemon
threads joined).

Every child gets the server's environment and working directory, fixed when
the server starts (JAX reads its `JAX_*` variables when it is imported).

Usage:

    server = ForkServer(["tools.trainer.train_lib"], env=env, cwd=root)
    proc = server.start("tests/reliability_crash_runner.py",
                        [workdir, ready, "none"], log_path)
    proc.wait(timeout=300)        # the exit code, like subprocess.Popen
    server.close()

Only one child runs at a time: `start()` while a child is running is a
`RuntimeError`. Preload what a script imports, not the script itself: the
child runs the script's file again, and a module that defines absl flags
(tools/train.py) fails when its flags are defined a second time.
"""

import json
import os
import runpy
import select
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence


class ForkedProcess:
  """One child of a `ForkServer`, with the `subprocess.Popen` calls tests use.

  Attributes:
    pid: the child's process id.
    returncode: None while it runs; then its exit code, or `-signal` if a
      signal ended it (as `subprocess.Popen.returncode`).
  """

  def __init__(self, server: "ForkServer", pid: int, args: List[str]):
    self._server = server
    self.pid = pid
    self.args = args
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None:
      self._server._await_exit(self, timeout=0.0)  # pylint: disable=protected-access
    return self.returncode

  def wait(self, timeout: Optional[float] = None) -> int:
    """Waits for the child; raises `subprocess.TimeoutExpired` on timeout."""
    if self.returncode is None:
      self._server._await_exit(self, timeout)  # pylint: disable=protected-access
    if self.returncode is None:
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, sig: int) -> None:
    # Until the server has reported the exit, the pid is this child's (a
    # finished child stays a zombie until the server reaps it).
    if self.returncode is None:
      try:
        os.kill(self.pid, sig)
      except ProcessLookupError:
        pass

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


class ForkServer:
  """A process that imports `preload` once and forks a child per script run.

  Args:
    preload: module names the server imports before forking anything.
    env: the environment of the server and of every child.
    cwd: the working directory of the server and of every child.
    log_path: where the server's own output goes (default: discarded).
  """

  def __init__(self, preload: Sequence[str], env: Optional[Dict[str, str]] = None,
               cwd: Optional[str] = None, log_path: Optional[str] = None):
    log = open(log_path or os.devnull, "w")
    try:
      self._proc = subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), "--serve", *preload],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
          cwd=cwd)
    finally:
      log.close()
    self._buffer = b""
    self._child: Optional[ForkedProcess] = None
    ready = self._reply(timeout=300)
    if ready != {"ready": True}:
      raise RuntimeError(f"fork server did not start: {ready!r}; see "
                         f"{log_path or 'its log (pass log_path=...)'}")

  def start(self, script: str, argv: Sequence[str],
            log_path: str) -> ForkedProcess:
    """Runs `python script *argv` as a forked child; output to `log_path`."""
    if self._child is not None and self._child.poll() is None:
      raise RuntimeError(f"child {self._child.pid} is still running; wait for "
                         "it (or kill it) before starting another")
    request = {"script": os.path.abspath(script), "argv": list(argv),
               "log": os.path.abspath(log_path)}
    self._proc.stdin.write((json.dumps(request) + "\n").encode())
    self._proc.stdin.flush()
    reply = self._reply(timeout=60)
    if reply is None or "pid" not in reply or "returncode" in reply:
      raise RuntimeError(f"fork server did not start {script}: {reply!r}")
    self._child = ForkedProcess(self, reply["pid"], [script, *argv])
    return self._child

  def close(self) -> None:
    """Kills a running child, then stops the server."""
    if self._child is not None and self._child.returncode is None:
      self._child.kill()
      self._child.wait(timeout=60)
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._proc.stdout.close()

  def _await_exit(self, child: ForkedProcess, timeout: Optional[float]):
    reply = self._reply(timeout)
    if reply is not None:
      if reply.get("pid") != child.pid or "returncode" not in reply:
        raise RuntimeError(f"unexpected reply from the fork server: {reply!r}")
      child.returncode = reply["returncode"]

  def _reply(self, timeout: Optional[float]) -> Optional[dict]:
    """The server's next reply line, or None if none came within `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = self._proc.stdout.fileno()
    while b"\n" not in self._buffer:
      left = None if deadline is None else max(0.0, deadline - time.monotonic())
      if not select.select([fd], [], [], left)[0]:
        return None
      data = os.read(fd, 65536)
      if not data:
        raise RuntimeError(
            f"fork server exited (code {self._proc.wait()}) before replying")
      self._buffer += data
    line, self._buffer = self._buffer.split(b"\n", 1)
    return json.loads(line)


def _run_child(request: dict, replies) -> int:
  """In the forked child: runs the script as `__main__`; its exit code."""
  replies.close()  # The child's copy: the server's stays open.
  log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(log, 1)
  os.dup2(log, 2)
  os.close(log)
  null = os.open(os.devnull, os.O_RDONLY)
  os.dup2(null, 0)
  os.close(null)
  sys.argv = [request["script"], *request["argv"]]
  sys.path[0] = os.path.dirname(request["script"])  # As `python script`.
  try:
    runpy.run_path(request["script"], run_name="__main__")
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  return 0


def _serve(preload: Sequence[str]) -> None:
  """The server loop: one JSON request per stdin line, replies on stdout."""
  import importlib  # pylint: disable=g-import-not-at-top
  for name in preload:
    importlib.import_module(name)
  replies = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)  # Stray prints of the server go to its log.
  replies.write(json.dumps({"ready": True}) + "\n")
  replies.flush()
  for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      # Leaves the server loop: the interpreter then exits as after
      # `python script.py` (atexit handlers, non-daemon threads).
      sys.exit(_run_child(request, replies))
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"pid": pid, "returncode":
                              os.waitstatus_to_exitcode(status)}) + "\n")
    replies.flush()


if __name__ == "__main__":
  if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
    _serve(sys.argv[2:])
  else:
    sys.exit("usage: fork_server.py --serve MODULE... (started by ForkServer)")
