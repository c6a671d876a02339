"""One training run per workdir: an exclusive, crash-proof lock.

Two runs writing one workdir (a requeued job beside a still-running one, a
double submit) would delete each other's temporary checkpoints and
interleave their metrics. `WorkdirLock` holds `fcntl.flock` on
`<workdir>/.lock` for the run's lifetime. The kernel drops a `flock` when its
process dies, however it dies, so a lock left by a killed run never blocks
the next one; the file's contents (pid, host, start time) only serve the
error message of a second run.

`flock` locks work across hosts on NFSv4 and Lustre/GPFS mounted with
locking; on a filesystem without it `flock` fails, and `acquire` says so
instead of running unlocked.

>>> import tempfile
>>> workdir = tempfile.mkdtemp()
>>> with WorkdirLock(workdir) as lock:
...   other = WorkdirLock(workdir)
...   try:
...     other.acquire()
...   except WorkdirLockedError as e:
...     print("refused:", "held by pid" in str(e))
refused: True
>>> WorkdirLock(workdir).acquire().release()  # Free again.
"""

import datetime
import errno
import fcntl
import json
import os
import socket
from typing import Any, Dict, Optional

__all__ = ["LOCK_FILE", "WorkdirLock", "WorkdirLockedError"]

LOCK_FILE = ".lock"


class WorkdirLockedError(ValueError):
  """Another live process holds the workdir's lock."""


def _holder(path: str) -> Dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


class WorkdirLock:
  """An exclusive lock on a workdir, held until `release` or process exit.

  Use as a context manager, or `acquire()` / `release()`.

  Args:
    workdir: the run's directory (created if missing).
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock, or raises `WorkdirLockedError` naming its holder."""
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise ValueError(
            f"Cannot lock the workdir {self.workdir}: {e.strerror} (its "
            "filesystem may not support file locks).\nFix: use a workdir on "
            "a filesystem with locking (local disk, NFSv4, Lustre/GPFS with "
            "locks enabled).") from e
      h = _holder(self.path)
      raise WorkdirLockedError(
          f"The workdir {self.workdir} is in use by another run: held by pid "
          f"{h.get('pid', '?')} on host {h.get('host', '?')} since "
          f"{h.get('since', '?')}.\nFix: wait for that run to finish (or stop "
          "it), or pass another --workdir.") from e
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode("utf-8"))
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    """Drops the lock (the file stays; it holds no state)."""
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
