"""`subprocess.run` / `subprocess.Popen` for Python, through fork servers.

Tests run `python3 tools/train.py ...` and the other tools as processes
dozens of times; each such process spends ~1.5-2 s of CPU importing jax,
haiku, orbax and the trainer before it does anything. `run` and `Popen`
here take the same arguments as `subprocess`'s for the calls tests make,
and start `[sys.executable, ...]` commands as children of a
`fork_server.ForkServer` that imported those modules once (see
tests/fork_server.py for what a forked child is and is not). Anything else
(another program, `stdin=`) goes to `subprocess` itself.

A child's environment is the `env=` given (default: this process's), except
for the variables read when the preloaded modules were imported: one server
is started for each distinct set of those, so a `JAX_*` setting of a run
takes effect as it would in a fresh process.

The first server of a test process is not a fresh interpreter but a fork
of the test process itself (a "zygote", forked when this module is
imported; `prefork`): a test file imports launch after jax and the
trainer, so the server keeps those imports and imports only the rest of
PRELOAD (~2.5-3.5 s of CPU per test process). A fork is safe only before
the process starts a JAX backend (XLA's thread pools do not survive it)
and while no other thread runs; after that, under pytest, and for a server
whose import environment differs from this process's (PYTHONPATH aside),
a server starts fresh. The zygote's children start as a fresh `python` in the
server's environment would: with its sys.path (the zygote declines if a
module it imported would be another file there), without this process's
open files, signal handlers, `__main__`, launch's atexit handlers and
rmtree cleanups, or the absl flags of the repository's modules. They keep
the state the imported modules had at the fork (e.g. the warnings filters
they added).

Usage (in a test):

    import launch  # tests/launch.py, beside the test: after the test's
                   # imports, before it runs anything (see above)
    proc = launch.run([sys.executable, TRAIN, "--workdir=..."],
                      capture_output=True, text=True, env=env, timeout=600)
"""

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import types
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

import fork_server  # tests/fork_server.py, beside this file

PIPE = subprocess.PIPE

# What a training run imports on first use, each forked child again unless
# its server did: the MLIR dialects JAX loads at its first lowering (~0.25 s
# of CPU: _mhlo_ops_gen defines ~280 classes), the built-in datasets and
# tensorboardX's hparams protos. Pinned jaxlib has these modules; after an
# upgrade that moves one, the server's ImportError names it: drop it here.
FIRST_USE = ("jaxlib.mlir.dialects.mhlo", "jaxlib.mlir.dialects.builtin",
             "tools.trainer.datasets", "tensorboardX.proto.api_pb2",
             "tensorboardX.proto.plugin_hparams_pb2")

# What the tools import: the trainer, its configs and checkpoints and the
# CLI helpers. Not tools/plot_metrics.py's plotting: matplotlib costs a
# server ~1 s of CPU, and only a test that runs the plot command several
# times gets that back (`also_preload(PLOTTING)`).
PRELOAD = ["ml_collections.config_flags", "tools.cli",
           "tools.trainer.train_lib", "tools.trainer.checkpoint_legacy",
           "tools.trainer.compile_cache", *FIRST_USE]
PLOTTING = "tools.trainer.plotting"

# Variables a child may set for itself: read by the programs when they run,
# not by the preloaded modules at import (XLA reads XLA_FLAGS when the
# program starts its first backend). Every other variable belongs to the
# server: a change starts another server.
RUNTIME_VARIABLES = frozenset({
    "XLA_FLAGS", "PAX_HAIKU_RUNS", "PAX_HAIKU_CACHE_DIR", "TMPDIR", "PATH",
    "PWD", "OLDPWD"})

_servers: Dict[Tuple[Tuple[str, str], ...], fork_server.ForkServer] = {}
_servers_lock = threading.Lock()
_output_dir: Optional[str] = None
_TESTS = os.path.dirname(os.path.abspath(__file__))


def also_preload(*modules: str) -> None:
  """Adds modules for the servers started from now on to import."""
  PRELOAD.extend(m for m in modules if m not in PRELOAD)


def _import_environment(env: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
  return tuple(sorted((k, v) for k, v in env.items()
                      if k not in RUNTIME_VARIABLES))


def _server_for(env: Mapping[str, str]) -> fork_server.ForkServer:
  key = _import_environment(env)
  with _servers_lock:
    if key not in _servers:
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      server_env = dict(env)
      # Without a writable config directory (~/.config under Bazel's
      # sandbox) matplotlib makes a temporary one at import and deletes it
      # at exit: every forked child would try to delete the server's. A
      # directory of the server's own avoids both; children read nothing
      # from it that a fresh process would not make itself.
      server_env.setdefault("MPLCONFIGDIR", os.path.join(_outputs(),
                                                         "matplotlib"))
      _servers[key] = fork_server.ForkServer(
          tuple(PRELOAD), env=server_env, cwd=root, import_root=root,
          log_path=os.path.join(_outputs(), f"server_{len(_servers)}.log"))
    return _servers[key]


def _outputs() -> str:
  global _output_dir
  if _output_dir is None:
    _output_dir = tempfile.mkdtemp(prefix="launch_",
                                   dir=os.environ.get("TEST_TMPDIR"))
  return _output_dir


@atexit.register
def close_servers() -> None:
  """Stops every server (and kills their running children)."""
  with _servers_lock:
    for server in _servers.values():
      server.close()
    _servers.clear()


def _forkable(args: Sequence[str], kwargs: Mapping[str, Any]) -> bool:
  """A python command whose options a forked child can honour."""
  return (len(args) >= 2 and args[0] == sys.executable
          and not set(kwargs) - {"env", "cwd", "stdout", "stderr", "text",
                                 "universal_newlines"}
          and kwargs.get("stdout") in (None, PIPE)
          and kwargs.get("stderr") in (None, PIPE, subprocess.STDOUT))


class Popen:
  """`subprocess.Popen` for `[sys.executable, ...]`, forked from a server.

  Output given as `stdout=PIPE` / `stderr=PIPE` (or `stderr=STDOUT`) is
  collected in files and returned by `communicate()`; output not captured
  is copied to this process's own stdout/stderr when the child is waited
  for.
  """

  def __init__(self, args: Sequence[str], **kwargs: Any):
    self.args = list(args)
    self._text = bool(kwargs.get("text") or kwargs.get("universal_newlines"))
    self._fallback = None
    self._copied = False
    if not _forkable(self.args, kwargs):
      self._fallback = subprocess.Popen(self.args, **kwargs)
      self.pid = self._fallback.pid
      return
    env = kwargs.get("env")
    env = dict(os.environ if env is None else env)
    base = tempfile.mkstemp(dir=_outputs())
    os.close(base[0])
    self._stdout_path = base[1] + ".out"
    stderr = kwargs.get("stderr")
    self._stderr_path = (self._stdout_path if stderr == subprocess.STDOUT
                         else base[1] + ".err")
    self._capture = (kwargs.get("stdout") == PIPE,
                     stderr == PIPE)
    self._child = _server_for(env).spawn(
        self.args[1:], stdout_path=self._stdout_path,
        stderr_path=self._stderr_path, env=env, cwd=kwargs.get("cwd"))
    self.pid = self._child.pid

  @property
  def returncode(self) -> Optional[int]:
    return (self._fallback or self._child).returncode

  def poll(self) -> Optional[int]:
    return (self._fallback or self._child).poll()

  def wait(self, timeout: Optional[float] = None) -> int:
    code = (self._fallback or self._child).wait(timeout)
    if self._fallback is None:
      self._copy_uncaptured()
    return code

  def communicate(self, timeout: Optional[float] = None):
    """Waits; returns (stdout, stderr), None for a stream not captured."""
    if self._fallback is not None:
      return self._fallback.communicate(timeout=timeout)
    self.wait(timeout)
    out = self._read(self._stdout_path) if self._capture[0] else None
    err = self._read(self._stderr_path) if self._capture[1] else None
    return out, err

  def send_signal(self, sig: int) -> None:
    (self._fallback or self._child).send_signal(sig)

  def terminate(self) -> None:
    (self._fallback or self._child).terminate()

  def kill(self) -> None:
    (self._fallback or self._child).kill()

  def _read(self, path: str):
    with open(path, "rb") as f:
      data = f.read()
    return data.decode() if self._text else data

  def _copy_uncaptured(self) -> None:
    if self._copied:
      return
    self._copied = True
    for captured, path, stream in (
        (self._capture[0], self._stdout_path, sys.stdout),
        (self._capture[1] or self._stderr_path == self._stdout_path,
         self._stderr_path, sys.stderr)):
      if not captured:
        with open(path, errors="replace") as f:
          stream.write(f.read())
        stream.flush()


def run(args: Sequence[str], *, capture_output: bool = False,
        timeout: Optional[float] = None, check: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess:
  """`subprocess.run` for `[sys.executable, ...]`, forked from a server."""
  if capture_output:
    kwargs.update(stdout=PIPE, stderr=PIPE)
  if not _forkable(args, kwargs):
    return subprocess.run(args, timeout=timeout, check=check, **kwargs)
  proc = Popen(args, **kwargs)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise
  if check and proc.returncode:
    raise subprocess.CalledProcessError(proc.returncode, list(args), out, err)
  return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


# The zygote: the first server of this process is a fork of it, made when
# it imports this module (see the module docstring).

def backend_started() -> bool:
  """Whether this process has started a JAX backend.

  XLA's C++ thread pools do not survive a fork. JAX has no public way to
  ask without starting a backend: pax_haiku's compat module holds the
  private call (tests/haiku_compat_test.py guards it).
  """
  if "jax" not in sys.modules:
    return False
  from pax_haiku._src import haiku_compat  # pylint: disable=g-import-not-at-top
  return haiku_compat.backends_started()


def _zygote_key(env: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
  """What a server must share with this process's environment to fork it.

  The import environment, but for PYTHONPATH (the zygote's children get
  the server's sys.path, see `_be_zygote`) and, unless this process had
  imported matplotlib, MPLCONFIGDIR (the zygote imports it under the
  server's environment).
  """
  return tuple(kv for kv in _import_environment(env)
               if kv[0] != "PYTHONPATH" and (kv[0] != "MPLCONFIGDIR"
                                             or _MATPLOTLIB_IMPORTED))


def prefork(key_of: Callable[[Mapping[str, str]], object],
            forget: Sequence[Callable[[], object]] = ()) -> bool:
  """Forks this process into a zygote for the next `ForkServer` to take.

  Only while that is safe: it does nothing (False) once a JAX backend has
  started, while another Python thread runs or while a zygote waits; nor
  under pytest, which imports test files with its own output captures,
  warnings filters and conftest modules, none of them a fresh `python`'s.

  Args:
    key_of: the part of an environment that the modules imported so far
      read at import (`fork_server.Zygote`).
    forget: atexit handlers of this process that its forks must not run
      (besides this module's).

  Returns:
    Whether a zygote now waits.
  """
  # Threads are counted after `backend_started`, whose import could start
  # one.
  if (fork_server.zygote_waiting() or "_pytest" in sys.modules
      or backend_started() or threading.active_count() != 1):
    return False
  requests_r, requests_w = os.pipe()
  replies_r, replies_w = os.pipe()
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    if stream is not None:
      stream.flush()
  pid = os.fork()
  if pid == 0:
    code = 1  # The zygote never returns into the caller's code.
    try:
      os.close(requests_w)
      os.close(replies_r)
      _be_zygote(requests_r, replies_w, forget)
      code = 0
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
    finally:
      for stream in (sys.stdout, sys.stderr):
        try:
          stream.flush()
        except Exception:  # pylint: disable=broad-except
          pass
      os._exit(code)  # pylint: disable=protected-access
  os.close(requests_r)
  os.close(replies_w)
  fork_server.offer_zygote(
      fork_server.Zygote(pid, requests_w, replies_r, key_of))
  return True


def _be_zygote(requests: int, replies: int,
               forget: Sequence[Callable[[], object]]) -> None:
  """In the zygote: drops what is this process's own, waits, serves.

  This process's open files (its pipes, its test output), the streams a
  test runner put in sys.stdout and sys.stderr, `__main__`, the signal
  handlers it set and the atexit handlers in `forget` are not a
  fresh `python`'s; nor its sys.path (this process's PYTHONPATH, the
  server's may differ) and the absl flags of its own modules.
  """
  for func in (*forget, close_servers, fork_server.discard_zygote):
    atexit.unregister(func)
  # An rmtree at exit deletes a temporary directory of this process (as
  # matplotlib's config directory when the home is not writable): its forks
  # leave that to it.
  atexit.unregister(shutil.rmtree)
  null = os.open(os.devnull, os.O_RDWR)
  for fd in (0, 1, 2):
    os.dup2(null, fd)
  low = 3
  for fd in sorted({null, requests, replies}):
    os.closerange(low, fd)
    low = fd + 1
  os.closerange(low, os.sysconf("SC_OPEN_MAX"))
  os.close(null)
  # Python's own streams on 0, 1 and 2 (a test runner may have replaced
  # them with its captures, on files closed above).
  sys.stdin, sys.stdout, sys.stderr = (sys.__stdin__, sys.__stdout__,
                                       sys.__stderr__)
  sys.modules["__main__"] = types.ModuleType("__main__")
  for sig in signal.valid_signals():
    if callable(signal.getsignal(sig)):
      signal.signal(sig, signal.SIG_DFL)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  line = b""
  while not line.endswith(b"\n"):
    data = os.read(requests, 65536)
    if not data:  # No server took it.
      return
    line += data
  config = json.loads(line)
  os.environ.clear()
  os.environ.update(config["env"])
  os.chdir(config["cwd"])
  log = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(log, 1)
  os.dup2(log, 2)
  os.close(log)
  path = _fresh_sys_path(config)
  elsewhere = _not_on(path)
  if elsewhere:
    os.write(replies, (json.dumps(
        {"declined": f"{elsewhere} is not on {path}"}) + "\n").encode())
    return
  sys.path[:] = [os.path.dirname(fork_server.__file__), *path]
  _forget_flags(config["import_root"])
  fork_server.serve(config["import_root"], config["preload"], requests,
                    replies)


def _fresh_sys_path(config: dict) -> List[str]:
  """`sys.path[1:]` of a fresh `python` in the server's environment."""
  return json.loads(subprocess.run(
      [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
      env=config["env"], cwd=config["cwd"], stdout=subprocess.PIPE,
      check=True).stdout)[1:]


def _not_on(path: Sequence[str]) -> Optional[str]:
  """A module imported here that `path` would not find as the same file.

  Modules from a directory on both paths, or from this one (the test and
  its helpers), are left alone; the others must be the same real file in
  some directory of `path` (under Bazel: this process imports the
  repository from runfiles, whose files link to the source tree).
  """
  kept = {os.path.abspath(p) for p in path} | {_TESTS}
  here = [os.path.abspath(p) for p in sys.path if p]
  for name, module in list(sys.modules.items()):
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
      continue
    # The directories this process may have found it in: those holding it
    # under its name (one may hold another: Bazel's runfiles, and the
    # workspace in them).
    found = [d for d in here if file.startswith(d + os.sep) and
             os.path.relpath(file, d).split(os.sep)[0].split(".")[0]
             == name.split(".")[0]]
    if not found or any(d in kept for d in found):
      continue
    real = os.path.realpath(file)
    if not any(os.path.realpath(os.path.join(p, os.path.relpath(file, d)))
               == real for d in found for p in path):
      return f"{name} from {file}"
  return None


def _forget_flags(root: str) -> None:
  """Drops the absl flags of the modules under `root`, and the modules.

  Those of the repository's modules (e.g. tools/bench/scaling.py, which a
  test imports) and of the test file: a child that imports such a module
  again must not find its flags defined twice, and the preloaded modules
  define none (see "Preload what a program imports" in fork_server.py).
  """
  flags = sys.modules.get("absl.flags")
  if flags is None or not root:
    return
  roots = (os.path.abspath(root) + os.sep, os.path.realpath(root) + os.sep)
  for name, defined in list(flags.FLAGS.flags_by_module_dict().items()):
    file = getattr(sys.modules.get(name), "__file__", None) or name
    if not (file.startswith(roots)
            or os.path.realpath(file).startswith(roots)):
      continue
    for flag in defined:
      for flag_name in {flag.name, flag.short_name} - {None}:
        if flag_name in flags.FLAGS:
          delattr(flags.FLAGS, flag_name)
    sys.modules.pop(name, None)


def start_zygote() -> bool:
  """Forks this process for its next server, if that is still safe."""
  return prefork(_zygote_key)


_MATPLOTLIB_IMPORTED = "matplotlib" in sys.modules
start_zygote()
