"""Atomic writes: a file or directory is never seen half written.

A crash (SIGKILL, power loss) at any moment of a write leaves `path` with its
old content, or absent if it was absent, or complete with the new content,
never half written. (Replacing an existing directory takes two renames; a
crash between them leaves `path` absent and the old directory under a trash
name, see below.) The new
content is written under a temporary name in the same directory as `path`
(so the final rename stays within one file system), flushed and fsync'ed,
renamed over `path` with one `rename(2)`, and the directory is fsync'ed so
the rename itself is durable. If the writer raises, the temporary is removed
and `path` is left untouched.

Temporary names start with `TMP_PREFIX + basename(path)`; a directory being
replaced is first renamed to a name starting with `TRASH_PREFIX +
basename(path)`. A process killed mid-write can leave such entries behind
(never at `path` itself); their owner removes them (see
`tools/trainer/checkpoint.cleanup`).

>>> import os, tempfile
>>> from pax_haiku._src import atomic_write
>>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
>>> with atomic_write.atomic_file(path) as f:
...   _ = f.write("step 1\\n")
>>> open(path).read()
'step 1\\n'
>>> with atomic_write.atomic_directory(path + ".d") as tmp:
...   with open(os.path.join(tmp, "a.txt"), "w") as f:
...     _ = f.write("a")
>>> sorted(os.listdir(os.path.dirname(path)))
['notes.txt', 'notes.txt.d']
"""

import contextlib
import os
import shutil
import uuid
from typing import IO, Any, Iterator, Optional, Tuple

TMP_PREFIX = ".tmp_"
TRASH_PREFIX = ".trash_"

_MODES = ("w", "wb")


def fsync_directory(path: str) -> None:
  """fsyncs directory `path`, making renames and creations in it durable."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _unique_suffix() -> str:
  # The pid tells apart concurrent writers of the same target; the random
  # part tells apart two writes of one process.
  return f".{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _split(path: str) -> Tuple[str, str]:
  directory, name = os.path.split(os.path.abspath(path))
  if not name:
    raise ValueError(f"{path!r} names no file: it ends with a separator.")
  return directory, name


def _remove(path: str) -> None:
  """Removes a file or directory tree; a missing one is not an error."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w", *,
                encoding: Optional[str] = None) -> Iterator[IO[Any]]:
  """Opens a temporary file that replaces `path` when the block ends cleanly.

  The file is created next to `path` with the permissions `open()` would
  give a new file (0o666 minus the umask). On a clean exit it is flushed,
  fsync'ed and renamed over `path` (which may exist), then the directory is
  fsync'ed. If the block raises, the temporary is removed and `path` keeps
  its old content (or stays absent).

  Args:
    path: the file to write; its directory must exist.
    mode: "w" (text) or "wb" (binary).
    encoding: the text encoding for mode "w" (None: the locale's).

  Yields:
    The open temporary file.

  Raises:
    ValueError: for another mode.
    FileNotFoundError: if the directory of `path` does not exist.
  """
  if mode not in _MODES:
    raise ValueError(f"atomic_file mode must be one of {_MODES}, got "
                     f"{mode!r}.")
  directory, name = _split(path)
  tmp = os.path.join(directory, TMP_PREFIX + name + _unique_suffix())
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, mode, encoding=encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    _remove(tmp)
    raise
  fsync_directory(directory)


def _fsync_tree(root: str) -> None:
  """fsyncs every file and directory under `root`, `root` last."""
  # Bottom-up, so a directory is fsync'ed after everything inside it.
  for dirpath, _, filenames in os.walk(root, topdown=False):
    for name in filenames:
      file_path = os.path.join(dirpath, name)
      if os.path.islink(file_path):
        continue
      fd = os.open(file_path, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    fsync_directory(dirpath)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields an empty temporary directory that becomes `path` on a clean exit.

  Write the directory's content into the yielded path. On a clean exit every
  file and directory in it is fsync'ed, an existing `path` is renamed aside,
  the temporary is renamed to `path`, the parent directory is fsync'ed and
  the old `path` is deleted. If the block raises, or the final rename fails,
  the temporary is deleted and an existing `path` stays in place.

  Args:
    path: the directory to write; its parent must exist.

  Yields:
    The temporary directory's path.

  Raises:
    FileNotFoundError: if the parent of `path` does not exist.
  """
  directory, name = _split(path)
  target = os.path.join(directory, name)
  tmp = os.path.join(directory, TMP_PREFIX + name + _unique_suffix())
  os.mkdir(tmp)
  trash = None
  try:
    yield tmp
    _fsync_tree(tmp)
    # rename(2) cannot replace a non-empty directory, so the old one moves
    # aside first; `target` is missing only between the two renames.
    if os.path.lexists(target):
      trash = os.path.join(directory, TRASH_PREFIX + name + _unique_suffix())
      os.rename(target, trash)
    try:
      os.rename(tmp, target)
    except BaseException:
      if trash is not None:
        with contextlib.suppress(OSError):
          os.rename(trash, target)
          trash = None
      raise
  except BaseException:
    _remove(tmp)
    raise
  try:
    fsync_directory(directory)
  finally:
    if trash is not None:
      _remove(trash)
