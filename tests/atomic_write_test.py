"""Tests for pax_haiku/_src/atomic_write.py."""

import os
import signal
import traceback
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from pax_haiku._src import atomic_write
import quick_exit  # tests/quick_exit.py, beside this file


def _write_then_get_killed(kind, path):
  """Starts an atomic write of `path` and SIGKILLs this process midway."""
  if kind == "file":
    with atomic_write.atomic_file(path) as f:
      f.write("new, half written")
      f.flush()
      os.kill(os.getpid(), signal.SIGKILL)
  else:
    with atomic_write.atomic_directory(path) as tmp:
      with open(os.path.join(tmp, "a.txt"), "w") as f:
        f.write("new, half written")
      os.kill(os.getpid(), signal.SIGKILL)


def _read(path, mode="r"):
  with open(path, mode) as f:
    return f.read()


def _tree(root):
  """{relative path: content} of every file under `root`."""
  out = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = _read(path)
  return out


class Crash(Exception):
  pass


class AtomicFileTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.path = os.path.join(self.dir, "target.txt")

  @parameterized.named_parameters(
      ("text", "w", "héllo\nwörld\n", "utf-8"),
      ("binary", "wb", b"\x00\x01\xff" * 1000, None),
  )
  def test_content_exact_and_no_temp_left(self, mode, content, encoding):
    with atomic_write.atomic_file(self.path, mode, encoding=encoding) as f:
      f.write(content)
    read_mode = "rb" if mode == "wb" else "r"
    with open(self.path, read_mode, encoding=encoding) as f:
      self.assertEqual(f.read(), content)
    self.assertEqual(os.listdir(self.dir), ["target.txt"])

  @parameterized.named_parameters(("absent", None), ("existing", "old\n"))
  def test_writer_raising_midway_keeps_old_state(self, old):
    if old is not None:
      with open(self.path, "w") as f:
        f.write(old)
    with self.assertRaises(Crash):
      with atomic_write.atomic_file(self.path) as f:
        f.write("new, half written")
        f.flush()
        raise Crash()
    if old is None:
      self.assertEqual(os.listdir(self.dir), [])
    else:
      self.assertEqual(_read(self.path), old)
      self.assertEqual(os.listdir(self.dir), ["target.txt"])

  def test_overwrites(self):
    for content in ("first, longer content\n", "second\n"):
      with atomic_write.atomic_file(self.path) as f:
        f.write(content)
      self.assertEqual(_read(self.path), content)
    self.assertEqual(os.listdir(self.dir), ["target.txt"])

  def test_relative_path(self):
    old_cwd = os.getcwd()
    os.chdir(self.dir)
    self.addCleanup(os.chdir, old_cwd)
    with atomic_write.atomic_file("rel.txt") as f:
      f.write("x")
    self.assertEqual(_read(os.path.join(self.dir, "rel.txt")), "x")

  def test_permissions_match_plain_open(self):
    plain = os.path.join(self.dir, "plain.txt")
    with open(plain, "w") as f:
      f.write("x")
    with atomic_write.atomic_file(self.path) as f:
      f.write("x")
    self.assertEqual(os.stat(self.path).st_mode, os.stat(plain).st_mode)

  def test_fsyncs_file_before_rename_then_directory(self):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
      events.append(("fsync", os.fstat(fd).st_ino))
      return real_fsync(fd)

    def replace(src, dst):
      events.append(("replace", os.stat(src).st_ino))
      return real_replace(src, dst)

    with mock.patch.object(atomic_write.os, "fsync", fsync), \
        mock.patch.object(atomic_write.os, "replace", replace):
      with atomic_write.atomic_file(self.path) as f:
        f.write("x")
    file_ino = os.stat(self.path).st_ino
    self.assertEqual(events, [("fsync", file_ino), ("replace", file_ino),
                              ("fsync", os.stat(self.dir).st_ino)])

  def test_bad_mode_and_missing_directory(self):
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      with atomic_write.atomic_file(self.path, "a"):
        pass
    with self.assertRaises(FileNotFoundError):
      with atomic_write.atomic_file(os.path.join(self.dir, "no", "x.txt")):
        pass
    self.assertEqual(os.listdir(self.dir), [])


class AtomicDirectoryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.path = os.path.join(self.dir, "ckpt")

  def _write(self, files):
    with atomic_write.atomic_directory(self.path) as tmp:
      self.assertTrue(os.path.isdir(tmp))
      self.assertEqual(os.listdir(tmp), [])
      # Same directory as the target, so the final rename is atomic.
      self.assertEqual(os.path.dirname(tmp), self.dir)
      self.assertNotEqual(tmp, self.path)
      for rel, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        with open(os.path.join(tmp, rel), "w") as f:
          f.write(content)

  def test_content_exact_and_no_temp_left(self):
    files = {"a.txt": "a", os.path.join("sub", "b.txt"): "b" * 5000}
    self._write(files)
    self.assertEqual(_tree(self.path), files)
    self.assertEqual(os.listdir(self.dir), ["ckpt"])

  def test_overwrites_and_drops_old_files(self):
    self._write({"old.txt": "old", "same.txt": "1"})
    self._write({"same.txt": "2"})
    self.assertEqual(_tree(self.path), {"same.txt": "2"})
    self.assertEqual(os.listdir(self.dir), ["ckpt"])

  def test_writer_raising_midway_keeps_old_directory(self):
    self._write({"a.txt": "old"})
    with self.assertRaises(Crash):
      with atomic_write.atomic_directory(self.path) as tmp:
        with open(os.path.join(tmp, "a.txt"), "w") as f:
          f.write("new")
        raise Crash()
    self.assertEqual(_tree(self.path), {"a.txt": "old"})
    self.assertEqual(os.listdir(self.dir), ["ckpt"])

  def test_failed_final_rename_puts_old_directory_back(self):
    self._write({"a.txt": "old"})
    real_rename = os.rename

    def rename(src, dst):
      if os.path.basename(src).startswith(atomic_write.TMP_PREFIX):
        raise OSError("simulated failure")
      return real_rename(src, dst)

    with mock.patch.object(atomic_write.os, "rename", rename):
      with self.assertRaisesRegex(OSError, "simulated failure"):
        self._write({"a.txt": "new"})
    self.assertEqual(_tree(self.path), {"a.txt": "old"})
    self.assertEqual(os.listdir(self.dir), ["ckpt"])

  def test_fsyncs_everything_before_rename(self):
    synced = set()
    real_fsync, real_rename = os.fsync, os.rename
    unsynced_at_rename = []

    def fsync(fd):
      synced.add(os.fstat(fd).st_ino)
      return real_fsync(fd)

    def rename(src, dst):
      if os.path.basename(src).startswith(atomic_write.TMP_PREFIX):
        for dirpath, dirnames, filenames in os.walk(src):
          for name in dirnames + filenames + [""]:
            path = os.path.join(dirpath, name)
            if os.stat(path).st_ino not in synced:
              unsynced_at_rename.append(path)
        synced.clear()
      return real_rename(src, dst)

    with mock.patch.object(atomic_write.os, "fsync", fsync), \
        mock.patch.object(atomic_write.os, "rename", rename):
      self._write({"a.txt": "a", os.path.join("sub", "b.txt"): "b"})
    self.assertEqual(unsynced_at_rename, [])
    self.assertIn(os.stat(self.dir).st_ino, synced)  # after the rename


class KilledWriterTest(parameterized.TestCase):
  """A writer SIGKILLed mid-write leaves the target as it was."""

  @parameterized.parameters("file", "directory")
  def test_sigkill_midway(self, kind):
    directory = self.create_tempdir().full_path
    path = os.path.join(directory, "target")
    if kind == "file":
      with open(path, "w") as f:
        f.write("old")
    else:
      os.mkdir(path)
      with open(os.path.join(path, "a.txt"), "w") as f:
        f.write("old")
    # The writer is a fork of this process: it has the module imported, and
    # no thread or JAX backend runs here that a fork could break.
    pid = os.fork()
    if pid == 0:
      try:
        _write_then_get_killed(kind, path)
      finally:
        traceback.print_exc()
        os._exit(1)  # Only if the kill did not happen.
    _, status = os.waitpid(pid, 0)
    self.assertTrue(os.WIFSIGNALED(status), f"writer exit status {status}")
    self.assertEqual(os.WTERMSIG(status), signal.SIGKILL)
    if kind == "file":
      self.assertEqual(_read(path), "old")
    else:
      self.assertEqual(_tree(path), {"a.txt": "old"})
    leftovers = [n for n in os.listdir(directory) if n != "target"]
    self.assertLen(leftovers, 1)
    self.assertTrue(leftovers[0].startswith(atomic_write.TMP_PREFIX +
                                            "target."), leftovers)


if __name__ == "__main__":
  quick_exit.main()
