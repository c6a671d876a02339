"""Starts Python programs by forking a server that has already imported them.

Tests that run the training binary or other tools as processes spend most
of each run importing jax, haiku, orbax and the trainer (about 1.5-2 s of
CPU on a 2-core machine, more than a smoke run's training). A `ForkServer`
imports those modules once, in a server process that starts no JAX backend
and runs nothing else, and each `spawn()` forks it: the child takes the
request's environment, working directory and output files, then runs the
program as `__main__` the way `python` would (`python script.py ...`,
`python -m module ...` or `python -c code ...`). The child is a real process
of its own: it has its own pid, can be stopped or killed with any signal,
and exits the way `python` would (atexit handlers, non-daemon threads
joined, an uncaught exception printed with exit code 1). Several children
may run at once.

A child does not tear its interpreter down at exit: freeing the modules it
inherited (jax, orbax, ...) object by object costs ~1.5 s of CPU, more
than a usage error's whole run, and frees nothing that the process's exit
does not. It exits once the steps of `python`'s exit that programs see
have run: non-daemon threads joined, atexit handlers run, standard streams
and the files it left open flushed.

What a child cannot change is what its interpreter read at start-up and at
import: `sys.flags`, and the environment variables that the preloaded
modules read when they were imported (JAX reads `JAX_*` then; XLA reads
`XLA_FLAGS` only when a backend starts, so a child may set it).
`tests/launch.py` keeps one server per such environment.

A server need not start a fresh interpreter: it may be a fork of the
calling process (a `Zygote`, which tests/launch.py forks when it is
imported), which keeps what that process had already imported and imports
only the rest of `preload`. The first `ForkServer` whose environment has
the zygote's key takes it; the others start fresh.

Usage:

    server = ForkServer(["tools.trainer.train_lib"], env=env, cwd=root)
    proc = server.spawn(["tools/train.py", "--workdir=/tmp/w"],
                        stdout_path=out, stderr_path=err)
    proc.wait(timeout=300)        # the exit code, like subprocess.Popen
    server.close()

Preload what a program imports, not the program itself: the child runs the
script's file again, and a module that defines absl flags (tools/train.py)
fails when its flags are defined a second time.
"""

import atexit
import gc
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import quick_exit  # tests/quick_exit.py, beside this file

# How often the server looks for finished children while some run.
_REAP_INTERVAL_S = 0.01


class ForkedProcess:
  """One child of a `ForkServer`, with the `subprocess.Popen` calls tests use.

  Attributes:
    pid: the child's process id.
    args: the program and its arguments, as given to `spawn`.
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
    if self.poll() is None:
      try:
        os.kill(self.pid, sig)
      except ProcessLookupError:
        pass

  def terminate(self) -> None:
    self.send_signal(signal.SIGTERM)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


class ForkServer:
  """A process that imports `preload` once and forks a child per program run.

  Args:
    preload: module names the server imports before forking anything.
    env: the environment of the server (default: this process's); also the
      default environment of its children.
    cwd: the working directory of the server; also the children's default.
    log_path: where the server's own output goes (default: discarded).
    import_root: a directory on `sys.path` while the server imports
      `preload` only (e.g. the repository root, which `python
      tools/train.py` puts there itself); children start without it.
  """

  def __init__(self, preload: Sequence[str],
               env: Optional[Mapping[str, str]] = None,
               cwd: Optional[str] = None, log_path: Optional[str] = None,
               import_root: Optional[str] = None):
    self.env = dict(os.environ if env is None else env)
    self.cwd = os.path.abspath(cwd or os.getcwd())
    self._lock = threading.Lock()  # One reader of the reply pipe at a time.
    self._buffer = b""
    self._children: Dict[int, ForkedProcess] = {}
    config = {"preload": list(preload), "env": self.env, "cwd": self.cwd,
              "log": os.path.abspath(log_path or os.devnull),
              "import_root": os.path.abspath(import_root) if import_root
                             else ""}
    self.from_zygote = False  # Whether the server is a fork of this process.
    self.zygote_declined: Optional[str] = None  # Why a zygote did not serve.
    zygote = _take_zygote(self.env)
    if zygote is not None:
      self._proc = zygote
      zygote.stdin.write((json.dumps(config) + "\n").encode())
      zygote.stdin.flush()
      self.zygote_declined = self._first_reply(config).get("declined")
      self.from_zygote = self.zygote_declined is None
      if not self.from_zygote:  # It exits.
        zygote.stdin.close()
        zygote.wait()
        zygote.stdout.close()
        self._buffer = b""
    if not self.from_zygote:
      log = open(config["log"], "w")
      try:
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve",
             config["import_root"], *config["preload"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            env=self.env, cwd=self.cwd)
      finally:
        log.close()
      self._first_reply(config)

  def _first_reply(self, config: dict) -> dict:
    """Ready, or (a zygote) declined; raises if the server did not start."""
    try:
      reply = self._next_reply(timeout=300)
      if reply != {"ready": True} and "declined" not in (reply or {}):
        raise RuntimeError(f"fork server did not start: {reply!r}")
    except RuntimeError as e:
      self._proc.kill()
      self._proc.wait()
      self._proc.stdin.close()
      self._proc.stdout.close()
      where = (config["log"] if config["log"] != os.devnull
               else "its log (pass log_path=...)")
      raise RuntimeError(f"{e}; see {where}") from None
    return reply

  def spawn(self, args: Sequence[str], *, stdout_path: str, stderr_path: str,
            env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> ForkedProcess:
    """Runs `python *args` as a forked child.

    Args:
      args: what follows `python` on a command line: `[script, *argv]`,
        `["-m", module, *argv]` or `["-c", code, *argv]`.
      stdout_path: the file the child's standard output goes to (truncated).
      stderr_path: the same for its standard error; the same path as
        `stdout_path` interleaves both in one file.
      env: the child's whole environment (default: the server's).
      cwd: the child's working directory (default: the server's).

    Returns:
      The running child.
    """
    args = list(args)
    if not args or (args[0] in ("-m", "-c") and len(args) < 2):
      raise ValueError(f"nothing to run in {args!r}: pass [script, ...], "
                       "['-m', module, ...] or ['-c', code, ...]")
    if args[0] not in ("-m", "-c"):
      args[0] = os.path.abspath(os.path.join(cwd or self.cwd, args[0]))
    request = {"args": args, "stdout": os.path.abspath(stdout_path),
               "stderr": os.path.abspath(stderr_path),
               "env": dict(self.env if env is None else env),
               "cwd": os.path.abspath(cwd or self.cwd)}
    with self._lock:
      self._proc.stdin.write((json.dumps(request) + "\n").encode())
      self._proc.stdin.flush()
      deadline = time.monotonic() + 60
      while True:
        reply = self._read_one(max(0.0, deadline - time.monotonic()))
        if reply is None or "spawned" in reply:
          break
      if reply is None:
        raise RuntimeError(f"fork server did not start {args[:2]}")
      # Registered before the lock is released: another thread reading the
      # replies may see this child's exit next.
      child = ForkedProcess(self, reply["spawned"], args)
      self._children[child.pid] = child
    return child

  def start(self, script: str, argv: Sequence[str],
            log_path: str) -> ForkedProcess:
    """Runs `python script *argv`; its stdout and stderr both to `log_path`."""
    return self.spawn([script, *argv], stdout_path=log_path,
                      stderr_path=log_path)

  def close(self) -> None:
    """Kills the children still running, then stops the server."""
    for child in list(self._children.values()):
      if child.returncode is None:
        child.kill()
        child.wait(timeout=60)
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._proc.stdout.close()

  def _await_exit(self, child: ForkedProcess, timeout: Optional[float]):
    deadline = None if timeout is None else time.monotonic() + timeout
    while child.returncode is None:
      left = None if deadline is None else deadline - time.monotonic()
      if left is not None and left < 0:
        return
      # Another thread may be reading: then poll for its result.
      if not self._lock.acquire(timeout=0.05 if left is None
                                else min(0.05, left)):
        continue
      try:
        if child.returncode is None:
          self._read_one(0.05 if left is None else min(0.05, left))
      finally:
        self._lock.release()
      if left == 0:
        return

  def _read_one(self, timeout: Optional[float]) -> Optional[dict]:
    """Reads one reply; records exits; returns it (None if none came)."""
    reply = self._next_reply(timeout)
    if reply is not None and "exited" in reply:
      child = self._children.pop(reply["exited"], None)
      if child is not None:
        child.returncode = reply["returncode"]
    return reply

  def _next_reply(self, timeout: Optional[float]) -> Optional[dict]:
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


def _redirect(fd: int, path: str, opened: Dict[str, int]) -> None:
  if path not in opened:
    opened[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(opened[path], fd)


def _become_child(request: dict, requests: int, replies: int) -> None:
  """In the forked child: takes the request's process state, runs it."""
  os.close(replies)
  if requests != 0:  # 0 (a fresh server's) is replaced below.
    os.close(requests)
  os.environ.clear()
  os.environ.update(request["env"])
  os.chdir(request["cwd"])
  opened: Dict[str, int] = {}
  _redirect(1, request["stdout"], opened)
  _redirect(2, request["stderr"], opened)
  for fd in opened.values():
    os.close(fd)
  null = os.open(os.devnull, os.O_RDONLY)
  os.dup2(null, 0)  # Replaces the server's request pipe.
  os.close(null)
  args = request["args"]
  # sys.path[0] as `python` sets it: the script's directory, else the
  # working directory.
  if args[0] == "-m":
    sys.argv = [args[1], *args[2:]]  # runpy puts the module's path first.
    sys.path[0] = request["cwd"]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
  elif args[0] == "-c":
    sys.argv = ["-c", *args[2:]]
    sys.path[0] = ""
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    exec(compile(args[1], "<string>", "exec"), main.__dict__)  # pylint: disable=exec-used
  else:
    sys.argv = list(args)
    sys.path[0] = os.path.dirname(args[0])
    runpy.run_path(args[0], run_name="__main__")


def _run_child(request: dict, requests: int, replies: int) -> None:
  """In the forked child: runs the request's program, then exits like `python`.

  As `python` does: an uncaught exception is printed (exit status 1), a
  `SystemExit` gives its status, then non-daemon threads are joined and
  atexit handlers run; a failed flush of stdout/stderr exits 120, and an
  uncaught KeyboardInterrupt ends the process by SIGINT. Then the process
  exits without freeing the interpreter (see the module docstring).
  """
  code = 0
  interrupted = False
  try:
    _become_child(request, requests, replies)
  except SystemExit as e:
    code = quick_exit.system_exit_code(e)
  except BaseException as e:  # pylint: disable=broad-except
    interrupted = isinstance(e, KeyboardInterrupt)
    try:
      sys.excepthook(type(e), e, e.__traceback__)
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
    code = 1
  quick_exit.finish(code, interrupted)


def serve(import_root: str, preload: Sequence[str], requests: int,
          replies: int) -> None:
  """Imports `preload`, then serves: one JSON request per line of the file
  descriptor `requests`, replies on `replies`; returns when `requests`
  closes."""
  import importlib  # pylint: disable=g-import-not-at-top
  if import_root:
    sys.path.insert(1, import_root)
  for name in preload:
    importlib.import_module(name)
  if import_root:
    sys.path.remove(import_root)
  # The preloaded objects are the children's too: the collector of a child
  # leaves them alone instead of touching (and so copying) their pages.
  gc.freeze()

  def reply(message: dict) -> None:
    os.write(replies, (json.dumps(message) + "\n").encode())

  reply({"ready": True})
  buffer = b""
  running = set()
  while True:
    while running:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      running.discard(pid)
      reply({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})
    if b"\n" not in buffer:
      timeout = _REAP_INTERVAL_S if running else None
      if not select.select([requests], [], [], timeout)[0]:
        continue
      data = os.read(requests, 65536)
      if not data:  # The client closed the pipe: done.
        return
      buffer += data
      continue
    line, buffer = buffer.split(b"\n", 1)
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      # The child leaves the server loop: when the program returns (or
      # raises, or calls sys.exit) it exits as after `python program`.
      _run_child(request, requests, replies)
    running.add(pid)
    reply({"spawned": pid})


class Zygote:
  """A fork of this process that waits for a server's config on a pipe.

  What `ForkServer` drives of a fresh server's `subprocess.Popen`: stdin,
  stdout, poll, wait and kill. tests/launch.py makes it (`offer_zygote`).

  Args:
    pid: the zygote's process id (a child of this process).
    requests: the write end of the pipe it reads requests from.
    replies: the read end of the pipe it replies on.
    key_of: what of an environment the modules imported here have read; a
      server whose environment has the key of this process's takes it.
  """

  def __init__(self, pid: int, requests: int, replies: int,
               key_of: Callable[[Mapping[str, str]], object]):
    self.pid = pid
    self.stdin = os.fdopen(requests, "wb")
    self.stdout = os.fdopen(replies, "rb")
    self.key_of = key_of
    self.key = key_of(os.environ)
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None:
      pid, status = os.waitpid(self.pid, os.WNOHANG)
      if pid:
        self.returncode = os.waitstatus_to_exitcode(status)
    return self.returncode

  def wait(self, timeout: Optional[float] = None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    while self.poll() is None:
      if deadline is not None and time.monotonic() > deadline:
        raise subprocess.TimeoutExpired(["zygote"], timeout)
      time.sleep(_REAP_INTERVAL_S)
    return self.returncode

  def kill(self) -> None:
    if self.poll() is None:
      os.kill(self.pid, signal.SIGKILL)


_zygote: Optional[Zygote] = None


def zygote_waiting() -> bool:
  """Whether a zygote waits for a server to take it."""
  return _zygote is not None


def offer_zygote(zygote: Zygote) -> None:
  """Makes `zygote` the server of the next `ForkServer` with its key."""
  global _zygote
  discard_zygote()
  _zygote = zygote


def _take_zygote(env: Mapping[str, str]) -> Optional[Zygote]:
  global _zygote
  zygote = _zygote
  if zygote is None or zygote.key_of(env) != zygote.key:
    return None
  _zygote = None
  return zygote


@atexit.register
def discard_zygote() -> None:
  """Ends a zygote that no server took (it exits when its pipe closes)."""
  global _zygote
  zygote, _zygote = _zygote, None
  if zygote is not None:
    zygote.stdin.close()
    zygote.wait()
    zygote.stdout.close()


if __name__ == "__main__":
  if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
    server_replies = os.dup(1)
    os.dup2(2, 1)  # Stray prints of the server go to its log.
    serve(sys.argv[2], sys.argv[3:], sys.stdin.fileno(), server_replies)
    # The client is done with it: exits as a child does (`_run_child`),
    # without freeing the preloaded modules.
    quick_exit.finish(0)
  else:
    sys.exit("usage: fork_server.py --serve IMPORT_ROOT MODULE... (started by "
             "ForkServer)")
