"""tests/fork_server.py: forked children behave like `python script.py`."""

import os
import signal
import subprocess
import sys
import textwrap

from absl.testing import absltest

import fork_server  # tests/fork_server.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

SCRIPT = textwrap.dedent("""\
    import atexit, os, sys, threading, time
    mode = sys.argv[1]
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "env",
          os.environ.get("FORK_SERVER_TEST"), flush=True)
    print("preloaded", "json.tool" in sys.modules, flush=True)
    if mode == "exit":
      sys.exit(int(sys.argv[2]))
    if mode == "raise":
      raise RuntimeError("boom")
    if mode == "sleep":
      time.sleep(600)
    if mode == "atexit":
      atexit.register(lambda: print("atexit ran", flush=True))
      # A non-daemon thread is joined before the process exits.
      threading.Thread(target=lambda: (time.sleep(0.2),
                                       print("thread done", flush=True))).start()
    """)


class ForkServerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.script = os.path.join(self.tmp, "script.py")
    with open(self.script, "w") as f:
      f.write(SCRIPT)
    env = dict(os.environ, FORK_SERVER_TEST="from the server")
    self.server = fork_server.ForkServer(
        ["json.tool"], env=env, cwd=self.tmp,
        log_path=os.path.join(self.tmp, "server.log"))
    self.addCleanup(self.server.close)

  def run_script(self, *argv):
    log = os.path.join(self.tmp, "child.log")
    proc = self.server.start(self.script, list(argv), log)
    return proc, log

  def read(self, log):
    with open(log) as f:
      return f.read()

  def test_exit_code_output_argv_env_cwd_and_preload(self):
    proc, log = self.run_script("exit", "3")
    self.assertEqual(proc.wait(timeout=60), 3)
    self.assertEqual(proc.returncode, 3)
    self.assertEqual(self.read(log), (
        f"argv ['exit', '3'] cwd {self.tmp} env from the server\n"
        "preloaded True\n"))
    self.assertNotEqual(proc.pid, os.getpid())

  def test_uncaught_exception_exits_1_with_traceback(self):
    proc, log = self.run_script("raise")
    self.assertEqual(proc.wait(timeout=60), 1)
    self.assertIn("RuntimeError: boom", self.read(log))

  def test_atexit_and_threads_run_at_exit(self):
    proc, log = self.run_script("atexit")
    self.assertEqual(proc.wait(timeout=60), 0)
    self.assertTrue(self.read(log).endswith("thread done\natexit ran\n"),
                    self.read(log))

  def test_kill_timeout_poll_and_children_at_once(self):
    proc, _ = self.run_script("sleep")
    self.assertIsNone(proc.poll())
    with self.assertRaises(subprocess.TimeoutExpired):
      proc.wait(timeout=0.1)
    # Another child runs and ends while the first one sleeps.
    other, log = self.run_script("exit", "4")
    self.assertEqual(other.wait(timeout=60), 4)
    self.assertIn("argv ['exit', '4']", self.read(log))
    self.assertIsNone(proc.poll())
    proc.send_signal(signal.SIGKILL)
    self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
    proc.kill()  # Already reported: a no-op.
    again, _ = self.run_script("exit", "0")  # The server goes on.
    self.assertEqual(again.wait(timeout=60), 0)

  def test_stop_continue_and_terminate(self):
    proc, _ = self.run_script("sleep")
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGCONT)
    self.assertIsNone(proc.poll())
    proc.terminate()
    self.assertEqual(proc.wait(timeout=60), -signal.SIGTERM)

  def test_request_env_cwd_and_separate_outputs(self):
    elsewhere = self.create_tempdir().full_path
    out, err = (os.path.join(self.tmp, n) for n in ("out.txt", "err.txt"))
    env = dict(os.environ, FORK_SERVER_TEST="from the request")
    proc = self.server.spawn([self.script, "raise"], stdout_path=out,
                             stderr_path=err, env=env, cwd=elsewhere)
    self.assertEqual(proc.wait(timeout=60), 1)
    self.assertEqual(self.read(out), (
        f"argv ['raise'] cwd {elsewhere} env from the request\n"
        "preloaded True\n"))
    self.assertIn("RuntimeError: boom", self.read(err))
    self.assertNotIn("preloaded", self.read(err))

  def test_module_and_code_like_python(self):
    out = os.path.join(self.tmp, "out.txt")
    code = ("import sys; print(__name__, sys.argv, sys.path[0] == '');"
            "sys.exit(7)")
    proc = self.server.spawn(["-c", code, "a", "b"], stdout_path=out,
                             stderr_path=out)
    self.assertEqual(proc.wait(timeout=60), 7)
    self.assertEqual(self.read(out), "__main__ ['-c', 'a', 'b'] True\n")
    with open(os.path.join(self.tmp, "some_mod.py"), "w") as f:
      f.write("import sys\nprint(__name__, sys.argv[1:], sys.path[0])\n")
    proc = self.server.spawn(["-m", "some_mod", "x"], stdout_path=out,
                             stderr_path=out)
    self.assertEqual(proc.wait(timeout=60), 0)
    self.assertEqual(self.read(out), f"__main__ ['x'] {self.tmp}\n")
    with self.assertRaisesRegex(ValueError, "nothing to run"):
      self.server.spawn(["-m"], stdout_path=out, stderr_path=out)

  def test_server_that_cannot_import_says_so(self):
    log = os.path.join(self.tmp, "bad_server.log")
    with self.assertRaisesRegex(RuntimeError, "fork server exited"):
      fork_server.ForkServer(["no_such_module_here"], log_path=log)
    self.assertIn("ModuleNotFoundError", self.read(log))

  def test_main_without_serve_is_a_usage_error(self):
    proc = subprocess.run([sys.executable, fork_server.__file__],
                          capture_output=True, text=True, check=False)
    self.assertEqual(proc.returncode, 1)
    self.assertIn("usage: fork_server.py --serve", proc.stderr)


if __name__ == "__main__":
  quick_exit.main()
