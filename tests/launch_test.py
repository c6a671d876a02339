"""tests/launch.py: forked runs answer as `subprocess` runs of python do."""

import io
import os
import signal
import subprocess
import sys
from unittest import mock

from absl.testing import absltest

import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

# The servers import matplotlib, as hints_test's do: the test of a server
# without a writable home needs it.
launch.also_preload(launch.PLOTTING)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")

# Prints what a JAX program sees of its start-up: x64 (read by JAX at
# import) and the number of CPU devices (XLA_FLAGS, read at backend start).
_JAX_STATE = ("import sys, jax, jax.numpy as jnp; print(jnp.ones(1).dtype, "
              "jax.local_device_count(), sys.argv[1:]); "
              "print('to stderr', file=sys.stderr)")


class LaunchTest(absltest.TestCase):

  def test_same_output_and_exit_code_as_a_real_process(self):
    argv = [sys.executable, TRAIN, "--config.steps=1", "--workdir=/tmp/x"]
    real = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=300)
    forked = launch.run(argv, capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
    self.assertEqual(real.returncode, 2, real.stderr)
    self.assertEqual(forked.returncode, real.returncode)
    self.assertEqual(forked.stdout, real.stdout)
    self.assertEqual(forked.stderr.splitlines()[-2:],
                     real.stderr.splitlines()[-2:])  # error + Fix lines.
    self.assertIsInstance(forked, subprocess.CompletedProcess)
    # Forked from a server, not started by this process.
    parent = launch.run([sys.executable, "-c", "import os; print(os.getppid())"],
                        capture_output=True, text=True, timeout=60)
    self.assertNotEqual(int(parent.stdout), os.getpid())

  def test_environment_read_at_import_and_at_run_time(self):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3")
    env.pop("JAX_ENABLE_X64", None)
    plain = launch.run([sys.executable, "-c", _JAX_STATE, "a"],
                       capture_output=True, text=True, env=env, timeout=300)
    self.assertEqual(plain.stdout, "float32 3 ['a']\n", plain.stderr)
    self.assertEqual(plain.stderr, "to stderr\n")
    # JAX reads JAX_ENABLE_X64 at import: the run gets a server of its own.
    # With no writable home there, matplotlib (preloaded, see the top of
    # this file) would make a temporary config directory in that server and
    # delete it at every child's exit: two runs show that the children leave
    # it alone.
    not_a_dir = self.create_tempfile().full_path
    x64_env = dict(env, JAX_ENABLE_X64="1", HOME=not_a_dir,
                   XDG_CONFIG_HOME=not_a_dir, XDG_CACHE_HOME=not_a_dir)
    x64_env.pop("MPLCONFIGDIR", None)
    for _ in range(2):
      x64 = launch.run([sys.executable, "-c", _JAX_STATE],
                       capture_output=True, text=True, timeout=300,
                       env=x64_env)
      self.assertEqual((x64.stdout, x64.stderr),
                       ("float64 3 []\n", "to stderr\n"))

  def test_popen_signals_bytes_and_merged_stderr(self):
    proc = launch.Popen([sys.executable, "-c",
                         "import time; print('up', flush=True); "
                         "time.sleep(600)"],
                        stdout=launch.PIPE, stderr=subprocess.STDOUT)
    self.assertIsNone(proc.poll())
    with self.assertRaises(subprocess.TimeoutExpired):
      proc.wait(timeout=0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    self.assertEqual(proc.returncode, -signal.SIGTERM)
    self.assertEqual((out, err), (b"up\n", None))

  def test_timeout_kills_and_check_raises(self):
    with self.assertRaises(subprocess.TimeoutExpired):
      launch.run([sys.executable, "-c", "import time; time.sleep(600)"],
                 timeout=0.5)
    with self.assertRaises(subprocess.CalledProcessError) as raised:
      launch.run([sys.executable, "-c", "import sys; sys.exit(3)"],
                 check=True, timeout=60)
    self.assertEqual(raised.exception.returncode, 3)

  def test_uncaptured_output_is_copied_here(self):
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "stdout", out), \
        mock.patch.object(sys, "stderr", err):
      proc = launch.run([sys.executable, "-c", _JAX_STATE], timeout=300,
                        stdout=launch.PIPE)
    self.assertEqual(proc.stdout, b"float32 1 []\n")
    self.assertEqual((out.getvalue(), err.getvalue()), ("", "to stderr\n"))

  def test_other_programs_and_stdin_run_as_plain_subprocesses(self):
    proc = launch.run(["sh", "-c", "echo $$"], capture_output=True,
                      text=True, timeout=60)
    self.assertEqual(proc.returncode, 0)
    piped = launch.run([sys.executable, "-c", "print(input())"],
                       input="hello", capture_output=True, text=True,
                       timeout=60)
    self.assertEqual(piped.stdout, "hello\n")
    # Output to a file object: subprocess writes it there.
    path = self.create_tempfile().full_path
    with open(path, "w") as f:
      launch.run([sys.executable, "-c", "print('to the file')"], stdout=f,
                 timeout=60)
    with open(path) as f:
      self.assertEqual(f.read(), "to the file\n")


if __name__ == "__main__":
  quick_exit.main()
