"""tests/fork_server.py: forked children behave like `python script.py`."""

import os
import signal
import subprocess
import sys
import textwrap

from absl.testing import absltest

import fork_server  # tests/fork_server.py, beside this file

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

  def test_kill_timeout_poll_and_one_child_at_a_time(self):
    proc, _ = self.run_script("sleep")
    self.assertIsNone(proc.poll())
    with self.assertRaises(subprocess.TimeoutExpired):
      proc.wait(timeout=0.1)
    with self.assertRaisesRegex(RuntimeError, "still running"):
      self.run_script("exit", "0")
    proc.send_signal(signal.SIGKILL)
    self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
    proc.kill()  # Already reported: a no-op.
    again, _ = self.run_script("exit", "0")  # The server goes on.
    self.assertEqual(again.wait(timeout=60), 0)

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
  absltest.main()
