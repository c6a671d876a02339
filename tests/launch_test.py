"""tests/launch.py: forked runs answer as `subprocess` runs of python do."""

import atexit
import io
import json
import os
import signal
import subprocess
import sys
from unittest import mock

from absl.testing import absltest

import fork_server  # tests/fork_server.py, beside this file
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


# What a program sees of its process at start: its arguments, paths, open
# files, signal handlers, threads, interpreter flags, and the warnings
# filters that Python and test runners set (the preloaded libraries add
# their own, on messages or on their own classes).
_PROCESS_STATE = (
    "import json, os, signal, sys, threading, warnings; print(json.dumps({"
    "'argv': sys.argv, 'path': sys.path, 'cwd': os.getcwd(), "
    "'fds': sorted(os.listdir('/proc/self/fd')), "
    "'signals': [str(signal.getsignal(s)) for s in signal.valid_signals()], "
    "'warnings': [repr(f) for f in warnings.filters if f[1] is None "
    "             and f[2].__module__ == 'builtins'], "
    "'threads': threading.active_count(), 'flags': repr(sys.flags)}))")

# In a forked child: `launch.backend_started` (pax_haiku's compat call)
# before and after a computation, and `launch.start_zygote` refusing to fork
# once a backend runs.
_BACKEND_CHECK = (
    "import sys; sys.path.insert(0, sys.argv[1]); import launch; "
    "import jax.numpy as jnp; print(launch.backend_started()); "
    "jnp.ones(1).block_until_ready(); "
    "print(launch.backend_started(), launch.start_zygote())")


def _test_key(env):
  """The key of the zygotes that tests here fork (`launch.prefork`)."""
  return env.get("LAUNCH_TEST_ZYGOTE")


class LaunchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The server of this process's environment: a fork of this process,
    # made when it imported launch (before any other import).
    cls.server = launch._server_for(dict(os.environ))  # pylint: disable=protected-access

  def setUp(self):
    super().setUp()
    if "_pytest" in sys.modules and self._testMethodName.startswith(
        "test_zygote"):
      self.skipTest("under pytest, launch forks no zygote (launch.prefork)")

  def zygote_server(self, env=None, forget=()):
    """A `ForkServer` forked from this process now, preloading json.tool."""
    with mock.patch.dict(os.environ, LAUNCH_TEST_ZYGOTE="1"):
      self.assertTrue(launch.prefork(_test_key, forget))
    self.addCleanup(fork_server.discard_zygote)
    server = fork_server.ForkServer(
        ["json.tool"], env=dict(env or os.environ, LAUNCH_TEST_ZYGOTE="1"),
        cwd=self.create_tempdir().full_path,
        log_path=self.create_tempfile().full_path)
    self.addCleanup(server.close)
    return server

  def spawn_and_read(self, server, args, **kwargs):
    out = self.create_tempfile().full_path
    proc = server.spawn(args, stdout_path=out, stderr_path=out, **kwargs)
    code = proc.wait(timeout=60)
    with open(out) as f:
      return code, f.read()

  def test_zygote_children_start_as_fresh_python_does(self):
    self.assertTrue(self.server.from_zygote, self.server.zygote_declined)
    env = dict(os.environ)  # The environment of every test here.
    script = self.create_tempfile("state.py", _PROCESS_STATE).full_path
    forked = launch.run([sys.executable, script, "a"], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=300)
    fresh = subprocess.run([sys.executable, script, "a"], capture_output=True,
                           text=True, env=env, cwd=ROOT, check=True)
    self.assertEqual(json.loads(forked.stdout), json.loads(fresh.stdout))

  def test_zygote_children_start_as_fresh_server_children_do(self):
    # Written by an atexit handler of this process, which the zygote's
    # children must not run (`forget`).
    ran = self.create_tempdir().full_path + "/atexit_ran"

    def handler():
      with open(ran, "a") as f:
        f.write(f"{os.getpid()}\n")

    atexit.register(handler)
    self.addCleanup(atexit.unregister, handler)
    script = self.create_tempfile("state.py", _PROCESS_STATE +
                                  "; import sys; print(sorted(vars("
                                  "sys.modules['__main__'])))").full_path
    zygote = self.zygote_server(forget=[handler])
    self.assertTrue(zygote.from_zygote, zygote.zygote_declined)
    fresh = fork_server.ForkServer(["json.tool"], cwd=zygote.cwd)
    self.addCleanup(fresh.close)
    self.assertFalse(fresh.from_zygote)
    states = []
    for server in (zygote, fresh):
      code, out = self.spawn_and_read(server, [script, "x"], env=os.environ)
      self.assertEqual(code, 0, out)
      state, main = out.splitlines()
      states.append((json.loads(state), main))
      # The zygote keeps the filters of this process when it forked: here
      # the test runner's; launch forks before the runner starts (see
      # test_zygote_children_start_as_fresh_python_does).
      del states[-1][0]["warnings"]
    self.assertEqual(states[0], states[1])
    state = states[0][0]
    self.assertEqual(state["argv"], [script, "x"])
    self.assertEqual(state["fds"], ["0", "1", "2", "3"])  # 3: the listing.
    zygote.close()
    self.assertFalse(os.path.exists(ran))

  def test_zygote_not_taken_ends_at_exit(self):
    with mock.patch.dict(os.environ, LAUNCH_TEST_ZYGOTE="1"):
      self.assertTrue(launch.prefork(_test_key))
      self.assertFalse(launch.prefork(_test_key))  # One at a time.
    zygote = fork_server._zygote  # pylint: disable=protected-access
    fork_server.discard_zygote()  # What atexit calls.
    self.assertEqual(zygote.returncode, 0)

  def test_zygote_declines_if_children_would_import_other_files(self):
    # A module this process imported from a directory that the server's
    # PYTHONPATH lacks: a fresh server's children would not find it.
    lib = self.create_tempdir().full_path
    with open(os.path.join(lib, "zygote_probe_module.py"), "w") as f:
      f.write("")
    sys.path.insert(0, lib)
    self.addCleanup(sys.path.remove, lib)
    import zygote_probe_module  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
    self.addCleanup(sys.modules.pop, "zygote_probe_module")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    server = self.zygote_server(env)
    self.assertFalse(server.from_zygote)
    self.assertIn("zygote_probe_module", server.zygote_declined)
    self.assertEqual(self.spawn_and_read(server, ["-c", "print('fresh')"]),
                     (0, "fresh\n"))
    # On the server's PYTHONPATH, the same file: the zygote serves.
    env["PYTHONPATH"] = lib
    self.assertTrue(self.zygote_server(env).from_zygote)

  def test_zygote_children_can_define_the_flags_of_its_modules_again(self):
    # A module of the repository (import_root) that this process imported
    # defines an absl flag; a script a child runs defines it again, as
    # tools/train.py does for a flag of tools/bench/scaling.py.
    root = self.create_tempdir().full_path
    with open(os.path.join(root, "zygote_flag_module.py"), "w") as f:
      f.write("from absl import flags\n"
              "flags.DEFINE_string('zygote_test_flag', '', 'Once.')\n")
    sys.path.insert(0, root)
    self.addCleanup(sys.path.remove, root)
    import zygote_flag_module  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
    self.addCleanup(sys.modules.pop, "zygote_flag_module")
    script = os.path.join(root, "main.py")
    with open(script, "w") as f:
      f.write("from absl import flags\n"
              "flags.DEFINE_string('zygote_test_flag', '', 'Again.')\n"
              "print(flags.FLAGS['zygote_test_flag'].help)\n")
    with mock.patch.dict(os.environ, LAUNCH_TEST_ZYGOTE="1"):
      self.assertTrue(launch.prefork(_test_key))
    self.addCleanup(fork_server.discard_zygote)
    server = fork_server.ForkServer(
        ["json.tool"], env=dict(os.environ, LAUNCH_TEST_ZYGOTE="1",
                                PYTHONPATH=root), import_root=root)
    self.addCleanup(server.close)
    self.assertTrue(server.from_zygote, server.zygote_declined)
    self.assertEqual(self.spawn_and_read(server, [script]),
                     (0, "Again.\n"))

  def test_no_zygote_once_a_backend_started(self):
    proc = launch.run([sys.executable, "-c", _BACKEND_CHECK, ROOT + "/tests"],
                      capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.stdout, "False\nTrue False\n", proc.stderr)

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
