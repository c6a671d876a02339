"""`subprocess.run` / `subprocess.Popen` for Python programs, through fork servers.

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

Usage (in a test):

    import launch  # tests/launch.py, beside the test
    proc = launch.run([sys.executable, TRAIN, "--workdir=..."],
                      capture_output=True, text=True, env=env, timeout=600)
"""

import atexit
import os
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

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
