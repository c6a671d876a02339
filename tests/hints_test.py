"""Every hint in tools/ and the trainer works: triggered, then its fix run.

A hint is a message string with `Fix:` or `e.g.` in it (docstrings and
comments aside). `HINTS` maps each one, by file and a piece of its
statement's source, to the test here that provokes the error and then runs
exactly what the message suggests (the flag, key, argument or call it
names); `test_every_hint_is_covered` fails for a hint that no test runs, and
for an entry whose hint no longer exists.
"""

import ast
import doctest
import errno
import glob
import importlib
import json
import os
import re
import shlex
import sys
import textwrap
from unittest import mock

from absl import flags
from absl.testing import absltest
import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import pax_haiku as pax
from tools import cli
from tools.bench import scaling
from tools.trainer import checkpoint
from tools.trainer import checkpoint_legacy
from tools.trainer import compile_cache
from tools.trainer import config_schema
from tools.trainer import metrics
from tools.trainer import divergence
from tools.trainer import lifecycle
from tools.trainer import resume_config
from tools.trainer import registry
from tools.trainer import storage_checks
from tools.trainer import tasks
from tools.trainer import train_lib
from tools.trainer import workdir_lock
from configs import smoke
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

# tools/plot_metrics.py runs several times here: the fork servers import
# its matplotlib once.
launch.also_preload(launch.PLOTTING)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
PLOT = os.path.join(ROOT, "tools", "plot_metrics.py")
SMOKE = os.path.join(ROOT, "configs", "smoke.py")

# (file, a piece of the hint statement's source) -> the test that runs it.
HINTS = {
    ("tools/trainer/compile_cache.py", "must be True or False"):
        "test_compile_cache_hint",
    ("tools/trainer/lifecycle.py", "Fix: lower `learning_rate` (now"):
        "test_non_finite_loss",
    ("tools/trainer/lifecycle.py", "Process 0 could not lock the workdir"):
        "test_lifecycle_hints",
    ("tools/trainer/workdir_lock.py", "is in use by another run"):
        "test_lifecycle_hints",
    ("tools/trainer/workdir_lock.py", "Cannot lock the workdir"):
        "test_lifecycle_hints",
    ("tools/trainer/resume_config.py", "was trained with another config"):
        "test_lifecycle_hints",
    ("tools/trainer/storage_checks.py", "Cannot write a checkpoint in"):
        "test_lifecycle_hints",
    ("tools/trainer/storage_checks.py", "Not enough space for checkpoints"):
        "test_lifecycle_hints",
    ("tools/trainer/divergence.py", "divergence factor must be 0"):
        "test_lifecycle_hints",
    ("tools/cli.py", "is required.\\nFix: "): "test_train_command_line",
    ("tools/cli.py", "Fix: see `--help` for the flags."):
        "test_train_command_line",
    ("tools/cli.py", "unexpected arguments: "): "test_train_command_line",
    ("tools/train.py", "use a key the config has, e.g."):
        "test_train_command_line",
    ("tools/train.py", "\\nFix: {fix}; `--help` lists every key."):
        "test_train_command_line",
    ("tools/train.py", "Fix: pass an existing config \""):
        "test_train_command_line",
    ("tools/train.py", "add e.g. `--workdir={workdir}`"):
        "test_train_command_line",
    ("tools/trainer/train_lib.py", "Cannot write to workdir"):
        "test_train_command_line",
    ("tools/trainer/train_lib.py", "Fix: pass a --workdir on shared storage"):
        "test_processes_disagree_on_checkpoint",
    ("tools/plot_metrics.py", "pass the --workdir of a training run, e.g."):
        "test_plot_metrics",
    ("tools/plot_metrics.py", "train one, e.g. `python3 tools/train.py "):
        "test_plot_metrics",
    ("tools/plot_metrics.py", "\\nFix: {_workdir_fix()}"): "test_plot_metrics",
    ("tools/plot_metrics.py", "e.g. `--panels=loss`"): "test_plot_metrics",
    ("tools/trainer/checkpoint.py", "(e.g. int(x), \""):
        "test_checkpoint_hints",
    ("tools/trainer/checkpoint.py", "Fix: restore an intact checkpoint"):
        "test_checkpoint_hints",
    ("tools/trainer/checkpoint.py", "in the trainer's old format"):
        "test_checkpoint_conversion_hints",
    ("tools/convert_checkpoint.py", "No old-format checkpoints"):
        "test_checkpoint_conversion_hints",
    ("tools/convert_checkpoint.py", "--config and --workdir are required"):
        "test_checkpoint_conversion_hints",
    ("tools/convert_checkpoint.py", "arrays but the model and"):
        "test_checkpoint_conversion_hints",
    ("tools/convert_checkpoint.py", "has shape "):
        "test_checkpoint_conversion_hints",
    ("tools/trainer/registry.py", "is not {_usage(kind)}"):
        "test_factory_hints",
    ("tools/trainer/registry.py", "{what} {attr!r} (its functions"):
        "test_factory_hints",
    ("tools/trainer/registry.py", "cannot import module {module_name!r}"):
        "test_factory_import_hint",
    ("tools/trainer/registry.py", "importing module {module_name!r} failed"):
        "test_factory_hints",
    ("tools/trainer/models.py", "`return pax.Sequential(*layers)`"):
        "test_factory_hints",
    ("tools/trainer/train_lib.py", "not a pair (train, test) of sources"):
        "test_factory_hints",
    ("tools/trainer/tasks.py", "an example must be a pair (inputs, label)"):
        "test_factory_hints",
    ("tools/trainer/tasks.py", "not a \"\n          \"random-access source"):
        "test_factory_hints",
    ("tools/trainer/metrics.py", "reduce it first (e.g. x.mean())"):
        "test_metric_hints",
    ("tools/trainer/metrics.py", "is reserved; use e.g. "):
        "test_metric_hints",
    ("tools/bench/scaling.py", "batch_size=512 or model_config.hidden_sizes"):
        "test_bench_override_example",
}

_SIMPLE = (ast.Raise, ast.Return, ast.Expr, ast.Assign, ast.AnnAssign,
           ast.AugAssign)


def find_hints(root):
  """[(file, line, statement source)] of every hint string under tools/."""
  found = []
  for path in sorted(glob.glob(os.path.join(root, "tools", "**", "*.py"),
                               recursive=True)):
    with open(path, encoding="utf-8") as f:
      source = f.read()
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                           ast.AsyncFunctionDef)):
        if (node.body and isinstance(node.body[0], ast.Expr) and
            isinstance(node.body[0].value, ast.Constant)):
          docstrings.add(id(node.body[0].value))
    for stmt in ast.walk(tree):
      if not isinstance(stmt, _SIMPLE):
        continue
      if any(isinstance(n, ast.Constant) and isinstance(n.value, str) and
             id(n) not in docstrings and ("Fix:" in n.value or
                                          "e.g." in n.value)
             for n in ast.walk(stmt)):
        found.append((os.path.relpath(path, root), stmt.lineno,
                      ast.get_source_segment(source, stmt)))
  return found


def run(*args, env=None, cwd=None):
  """`python3 *args`, forked from a server that imported the trainer."""
  return launch.run([sys.executable, *args], capture_output=True, text=True,
                    timeout=600, cwd=cwd, env=dict(os.environ, **(env or {})))


class HintsTest(absltest.TestCase):

  def usage_error(self, *args, env=None, rc=2):
    """Runs a command that must fail; returns its `Fix:` line's examples."""
    proc = run(*args, env=env)
    self.assertEqual(proc.returncode, rc, (args, proc.stdout, proc.stderr))
    # The user-facing error ends stderr: before it may come absl's "I1202 "
    # log lines and library warnings (matplotlib's about an unwritable
    # ~/.config under Bazel).
    lines = proc.stderr.strip().splitlines()
    errors = [i for i, l in enumerate(lines) if l.startswith("error: ")]
    self.assertNotEmpty(errors, proc.stderr)
    lines = lines[errors[0]:]
    self.assertLen(lines, 2, proc.stderr)  # One error line, one fix line.
    self.assertNotIn("Traceback", proc.stderr)
    self.assertTrue(lines[0].startswith("error: "), proc.stderr)
    self.assertTrue(lines[1].startswith("Fix: "), proc.stderr)
    self.assertNotIn("\\n", proc.stderr)  # Unescaped text.
    self.assertNotIn("\\'", proc.stderr)
    return lines[0], re.findall(r"`([^`]+)`", lines[1])

  def test_every_hint_is_covered(self):
    found = find_hints(ROOT)
    self.assertNotEmpty(found)
    uncovered = [(f, line, src) for f, line, src in found
                 if not any(f == hf and piece in src for hf, piece in HINTS)]
    self.assertEqual(uncovered, [], "a hint no test runs: add it to HINTS")
    stale = [k for k in HINTS
             if not any(f == k[0] and k[1] in src for f, _, src in found)]
    self.assertEqual(stale, [], "HINTS entries whose hint is gone")
    for name in set(HINTS.values()):
      self.assertTrue(callable(getattr(self, name, None)), name)

  def test_train_command_line(self):
    runs_root = self.create_tempdir().full_path
    env = {"PAX_HAIKU_RUNS": runs_root}
    scratch = self.create_tempdir().full_path
    fixes = []
    # Unknown keys: the fix is the nearest key, with the value given.
    error, (arg, *_) = self.usage_error(TRAIN, "--config.lerning_rate=0.05",
                                     f"--workdir={scratch}", env=env)
    self.assertIn("unknown config key `lerning_rate`", error)
    self.assertEqual(shlex.split(arg), ["--config.learning_rate=0.05"])
    fixes += shlex.split(arg)
    _, (arg, *_) = self.usage_error(TRAIN, "--config.model_config.hiden_sizes="
                                 "(16,)", f"--workdir={scratch}", env=env)
    self.assertEqual(shlex.split(arg),
                     ["--config.model_config.hidden_sizes=(16,)"])
    fixes += shlex.split(arg)
    _, (arg, *_) = self.usage_error(TRAIN, "--config.steps=100",
                                 f"--workdir={scratch}", env=env)
    self.assertEqual(arg, "--config.num_steps=100")
    fixes.append(arg)
    # A config file that does not exist.
    error, (arg, *_) = self.usage_error(
        TRAIN, "--config=/nonexistent/config.py", f"--workdir={scratch}",
        env=env)
    self.assertIn("cannot load the config file", error)
    fixes.insert(0, arg)
    # No --workdir.
    _, (arg, *_) = self.usage_error(TRAIN, env=env)
    self.assertEqual(arg, f"--workdir={runs_root}/digits_mlp")
    workdir_fix = arg
    # A workdir that can't be written.
    blocker = os.path.join(scratch, "file")
    open(blocker, "w").close()
    error, _ = self.usage_error(TRAIN, f"--config={SMOKE}",
                                f"--workdir={blocker}/sub", env=env)
    self.assertIn("Cannot write to workdir", error)
    # An unknown flag and a stray argument: --help lists the flags.
    error, (arg, *_) = self.usage_error(TRAIN, "--no_such_flag",
                                     f"--workdir={scratch}", env=env)
    self.assertIn("Unknown command line flag 'no_such_flag'", error)
    proc = run(TRAIN, arg)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    for name in ("--workdir", "--config.learning_rate=0.001",
                 "--config.model_config.hidden_sizes=(256, 256)"):
      self.assertIn(name, proc.stdout)
    error, _ = self.usage_error(TRAIN, "stray", f"--workdir={scratch}",
                                env=env)
    self.assertIn("unexpected arguments: stray", error)
    # Every suggested fix at once (a writable workdir, no stray argument).
    proc = run(TRAIN, *fixes, workdir_fix, env=env)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Final test metrics after 100 steps", proc.stdout)
    with open(os.path.join(runs_root, "digits_mlp", "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["learning_rate"], config["num_steps"],
                      config["model_config"]["hidden_sizes"],
                      config["name"]), (0.05, 100, [16], "digits_mlp"))

  def test_non_finite_loss(self):
    workdir = self.create_tempdir().full_path
    config = smoke.get_config()
    config.num_steps = 20
    train_lib.train_and_evaluate(config, workdir)  # Checkpoint at step 20.
    original = train_lib.tasks.loss_fn_for

    def diverging_above_lr_1(config):
      """The loss turns NaN with a learning rate > 1 (a stand-in for a
      diverging run: the smoke MLP's ReLUs die instead of diverging)."""
      loss_fn = original(config)

      def loss(model, batch):
        value, (aux, model) = loss_fn(model, batch)
        if config.learning_rate > 1.0:
          value = value * jnp.nan
          aux = dict(aux, loss=aux["loss"] * jnp.nan)
        return value, (aux, model)

      return loss

    config = smoke.get_config()
    config.num_steps, config.learning_rate = 40, 10.0
    with mock.patch.object(train_lib.tasks, "loss_fn_for",
                           diverging_above_lr_1):
      with self.assertRaises(train_lib.NonFiniteLossError) as raised:
        train_lib.train_and_evaluate(config, workdir, allow_config_change=True)
      message = str(raised.exception)
      self.assertIn("The checkpoint of step 20", message)
      fix = re.search(r"Fix: lower `learning_rate` \(now 10\): rerun with "
                      r"(.*) to resume from step 20\.", message)
      self.assertIsNotNone(fix, message)
      flags_given = shlex.split(fix.group(1))
      self.assertEqual(flags_given, ["--config.learning_rate=1",
                                     "--allow_config_change"])
      # The rerun the message names, as the binary applies it.
      config.learning_rate = float(flags_given[0].split("=")[1])
      result = train_lib.train_and_evaluate(config, workdir,
                                            allow_config_change=True)
    self.assertEqual(result["step"], 40)
    self.assertTrue(np.isfinite(result["loss"]))

  def test_lifecycle_hints(self):
    config = smoke.get_config()
    config.num_steps = config.eval_every = config.checkpoint_every = 10
    # Another run holds the workdir: once it is done, the run starts.
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir):
      with self.assertRaisesRegex(workdir_lock.WorkdirLockedError,
                                  r"Fix: wait for that run to finish"):
        train_lib.train_and_evaluate(config, workdir)
      with mock.patch.object(lifecycle.jax, "process_index", lambda: 1), \
          mock.patch.object(lifecycle, "_any_process", lambda flag: True):
        with self.assertRaisesRegex(
            workdir_lock.WorkdirLockedError,
            r"Process 0 could not lock.*\nFix: wait for the other run"):
          lifecycle.RunGuard(workdir, workdir, config).__enter__()
    train_lib.train_and_evaluate(config, workdir)
    # No file locks: a workdir on a filesystem that has them works.
    elsewhere = self.create_tempdir().full_path
    with mock.patch.object(workdir_lock.fcntl, "flock", side_effect=OSError(
        errno.ENOLCK, os.strerror(errno.ENOLCK))):
      with self.assertRaisesRegex(ValueError, r"Cannot lock the workdir .*"
                                  r"\nFix: use a workdir on a filesystem "
                                  r"with locking"):
        workdir_lock.WorkdirLock(elsewhere).acquire()
    workdir_lock.WorkdirLock(elsewhere).acquire().release()
    # A refused config change: --allow_config_change (as the binary passes
    # it) resumes and keeps the old config.
    config.num_steps, config.learning_rate = 20, 0.05
    with self.assertRaisesRegex(resume_config.ConfigChangeError,
                                r"learning_rate: 0\.01 -> 0\.05(?s:.*)pass "
                                r"--allow_config_change"):
      train_lib.train_and_evaluate(config, workdir)
    self.assertIn("allow_config_change", run(TRAIN, "--help").stdout)
    train_lib.train_and_evaluate(config, workdir, allow_config_change=True)
    self.assertTrue(os.path.exists(os.path.join(workdir, "config.10.json")))
    # Too little room: lower `keep_checkpoints`.
    config = smoke.get_config()
    config.num_steps = config.eval_every = config.checkpoint_every = 10
    fresh = self.create_tempdir().full_path
    model = train_lib.models.build_model(config)
    size = storage_checks.checkpoint_bytes(
        (model, pax.from_optax(train_lib.models.make_optimizer(config))(
            model.parameters())))
    with mock.patch("shutil.disk_usage",
                    return_value=mock.Mock(free=int(size * 3.5))):
      with self.assertRaisesRegex(storage_checks.StorageError,
                                  r"\nFix: free space there, lower "
                                  r"`keep_checkpoints`"):
        train_lib.train_and_evaluate(config, fresh)
      config.keep_checkpoints = 1
      train_lib.train_and_evaluate(config, fresh)
    # Not writable: once it is, the run goes on.
    blocked = self.create_tempdir().full_path
    real_open = open

    def deny(path, *args, **kwargs):
      if str(path).startswith(os.path.join(blocked, "checkpoints")):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
      return real_open(path, *args, **kwargs)

    with mock.patch("builtins.open", deny):
      with self.assertRaisesRegex(storage_checks.StorageError,
                                  r"Permission denied\.\nFix: make it "
                                  r"writable"):
        train_lib.train_and_evaluate(config, blocked)
    train_lib.train_and_evaluate(config, blocked)
    # The divergence factor's example value is valid.
    with self.assertRaisesRegex(ValueError,
                                r"e\.g\. `--config\.divergence_factor=10`"):
      divergence.DivergenceGuard(factor=0.5)
    config.divergence_factor = 10.0
    config_schema.validate(config)
    divergence.DivergenceGuard(factor=config.divergence_factor)

  def test_processes_disagree_on_checkpoint(self):
    agree = train_lib._agree_on_restored_step  # pylint: disable=protected-access
    with mock.patch.object(train_lib.jax, "process_count", lambda: 2):
      with mock.patch.object(train_lib.multihost_utils, "process_allgather",
                             lambda x: np.asarray([40, -1])):
        with self.assertRaisesRegex(
            ValueError, r"process 0: 40, process 1: none(?s:.*)Fix: pass a "
            r"--workdir on shared storage"):
          agree(40, "/ckpt")
      # The fix: a workdir every process sees, so they find the same step.
      with mock.patch.object(train_lib.multihost_utils, "process_allgather",
                             lambda x: np.asarray([40, 40])):
        agree(40, "/ckpt")
    proc = run(TRAIN, "--help")
    self.assertIn("--workdir", proc.stdout)

  def test_plot_metrics(self):
    runs_root = self.create_tempdir().full_path
    env = {"PAX_HAIKU_RUNS": runs_root}
    # No run yet: the fix trains one, from the repository root.
    error, (command, *_) = self.usage_error(PLOT, "--workdir=/nonexistent",
                                         env=env)
    self.assertIn("'/nonexistent' does not exist", error)
    argv = shlex.split(command)
    self.assertEqual(argv[:2], ["python3", "tools/train.py"])
    proc = run(*argv[1:], "--config.num_steps=20", env=env, cwd=ROOT)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    # Now the fix names that run.
    for args in (["--workdir=/nonexistent"], []):
      _, (arg, *_) = self.usage_error(PLOT, *args, env=env)
      self.assertEqual(arg, f"--workdir={runs_root}/smoke")
      proc = run(PLOT, arg, env=env)
      self.assertEqual(proc.returncode, 0, proc.stderr)
      self.assertEqual(proc.stdout.strip(),
                       os.path.join(runs_root, "smoke", "curves.png"))
    _, (arg, *_) = self.usage_error(PLOT, f"--workdir={runs_root}/smoke",
                                 "--panels=speed", env=env)
    proc = run(PLOT, f"--workdir={runs_root}/smoke", arg, env=env)
    self.assertEqual(proc.returncode, 0, proc.stderr)

  def test_checkpoint_hints(self):
    directory = self.create_tempdir().full_path
    tree = {"w": np.arange(3.0)}
    with self.assertRaisesRegex(TypeError, r"\(e\.g\. int\(x\), x\.tolist"):
      checkpoint.save(directory, 1, tree, {"n": np.int64(3),
                                           "v": np.arange(2)})
    checkpoint.save(directory, 1, tree, {"n": int(np.int64(3)),
                                         "v": np.arange(2).tolist()})
    checkpoint.save(directory, 2, tree, {})
    damaged = checkpoint.array_files(checkpoint.checkpoint_path(directory, 2))
    with open(damaged[0], "r+b") as f:
      f.truncate(10)
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                "Fix: restore an intact checkpoint"):
      checkpoint.restore(directory, 2, like=tree)
    # The fix: restore_latest skips the damaged one; verify finds it.
    restored = checkpoint.restore_latest(directory, like=tree)
    self.assertEqual(restored.step, 1)
    self.assertEqual(restored.metadata["n"], 3)
    with self.assertRaises(checkpoint.CheckpointError):
      checkpoint.verify(directory, 2)
    checkpoint.verify(directory, 1)

  def test_checkpoint_conversion_hints(self):
    """Old-format checkpoints: the training error names the conversion
    command, and the command's own errors name working arguments."""
    config = smoke.get_config()
    config.num_steps = 10
    workdir = self.create_tempdir().full_path
    ckpt_dir = os.path.join(workdir, "checkpoints")
    model = train_lib.models.build_model(config)
    optimizer = pax.from_optax(train_lib.models.make_optimizer(config))(
        model.parameters())
    # The previous release's batcher position after 10 steps.
    data_state = {"epoch": 0, "index": 10, "seed": 0, "batch_size": 32}
    checkpoint_legacy.write(ckpt_dir, 10, (model, optimizer),
                            {"data": data_state})
    with self.assertRaises(ValueError) as raised:
      train_lib.train_and_evaluate(config, workdir)
    command = re.search(r"Fix: convert them once, .*: `([^`]+)`",
                        str(raised.exception)).group(1)
    convert = shlex.split(command)[1:]
    # Missing flags: the error's example is a valid command line (its
    # workdir has no old checkpoints: that error names the fix).
    proc = run(convert[0], cwd=ROOT)
    self.assertEqual(proc.returncode, 2, proc.stderr)
    example = re.search(r"e\.g\. python3 (\S+ .*)$", proc.stderr.strip())
    proc = run(*shlex.split(example.group(1)), cwd=ROOT)
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertIn("Fix: pass the --workdir of the training run", proc.stderr)
    # Another config: pass the one it was trained with.
    other = os.path.join(self.create_tempdir().full_path, "wide.py")
    with open(other, "w") as f:
      f.write("from configs import smoke\n\n\ndef get_config():\n"
              "  c = smoke.get_config()\n  c.model_config.hidden_sizes = (8,)\n"
              "  return c\n")
    proc = run(convert[0], f"--config={other}", f"--workdir={workdir}",
               cwd=ROOT)
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertIn("Fix: pass the config (and --config overrides) the run was "
                  "trained with", proc.stderr)
    deep = os.path.join(self.create_tempdir().full_path, "deep.py")
    with open(deep, "w") as f:
      f.write("from configs import smoke\n\n\ndef get_config():\n"
              "  c = smoke.get_config()\n"
              "  c.model_config.hidden_sizes = (32, 32)\n  return c\n")
    proc = run(convert[0], f"--config={deep}", f"--workdir={workdir}",
               cwd=ROOT)
    self.assertEqual(proc.returncode, 2, proc.stderr)
    self.assertIn("arrays but the model and optimizer of this config have",
                  proc.stderr)
    # The suggested command, with the run's config, converts; training
    # then resumes.
    proc = run(*[a.replace("CONFIG", SMOKE) for a in convert], cwd=ROOT)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    config.num_steps = 20
    self.assertEqual(train_lib.train_and_evaluate(config, workdir)["step"],
                     20)

  def test_compile_cache_hint(self):
    config = smoke.get_config().to_dict()
    config["compilation_cache"] = "yes"  # A config file's bad value.
    config = ml_collections.ConfigDict(config)
    with self.assertRaisesRegex(
        ValueError, r"Fix: `--config\.compilation_cache=False`") as raised:
      compile_cache.setup(config)
    key, value = re.search(r"`--config\.(\w+)=(\w+)`",
                           str(raised.exception)).groups()
    config = smoke.get_config()  # The file, fixed as the hint says.
    config[key] = value == "True"
    config_schema.validate(config)
    self.assertIsNone(compile_cache.setup(config))

  def _module(self, root, name, text):
    """Writes module `name` under `root` and imports it afresh."""
    with open(os.path.join(root, f"{name}.py"), "w") as f:
      f.write(textwrap.dedent(text))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()

  def test_factory_hints(self):
    root = self.create_tempdir().full_path
    sys.path.insert(0, root)
    self.addCleanup(sys.path.remove, root)
    config = smoke.get_config()
    fix = lambda e: re.search(r"Fix: .*?`([^`]+)`", str(e)).group(1)
    # Not an alias: the nearest built-in name.
    with self.assertRaises(ValueError) as e:
      registry.resolve("mpl", "model")
    config.model = fix(e.exception).split("=", 1)[1]
    self.assertIsInstance(train_lib.models.build_model(config), pax.Module)
    # A misspelt factory: the module's nearest function.
    self._module(root, "hint_models", """
        import jax
        import pax_haiku as pax

        def build_model(config):
          return pax.Sequential(lambda x: x.reshape(x.shape[0], -1),
                                pax.Linear(64, 10))

        def layer_list(config):
          layers = [lambda x: x.reshape(x.shape[0], -1), pax.Linear(64, 10)]
          return layers
        """)
    config.model = "hint_models:build_modle"
    with self.assertRaises(ValueError) as e:
      train_lib.models.build_model(config)
    config.model = fix(e.exception).split("=", 1)[1]
    self.assertIsInstance(train_lib.models.build_model(config), pax.Module)
    # A list of layers: chain them as the fix says.
    config.model = "hint_models:layer_list"
    with self.assertRaises(registry.FactoryResultError) as e:
      train_lib.models.build_model(config)
    self.assertEqual(fix(e.exception), "return pax.Sequential(*layers)")
    path = os.path.join(root, "hint_models.py")
    with open(path) as f:
      text = f.read().replace("  return layers",
                              f"  {fix(e.exception)}")
    self._module(root, "hint_models", text)
    model = train_lib.models.build_model(config)
    self.assertEqual(model(np.zeros((2, 8, 8, 1), np.float32)).shape, (2, 10))
    # A module whose own import is missing: remove that import.
    self._module(root, "hint_deps", """
        import not_installed_pkg_xyz
        from tools.trainer import datasets

        def make(config):
          return datasets.digits(config)
        """)
    config.dataset = "hint_deps:make"
    with self.assertRaises(ValueError) as e:
      train_lib.load_dataset(config)
    self.assertIn("install `not_installed_pkg_xyz` or remove that import",
                  str(e.exception))
    with open(os.path.join(root, "hint_deps.py")) as f:
      text = f.read().replace("import not_installed_pkg_xyz\n", "")
    self._module(root, "hint_deps", text)
    self.assertLen(train_lib.load_dataset(config), 2)
    # A dataset factory returning one source; examples that are dicts; a
    # source that is an iterator. Each fixed as its message says.
    self._module(root, "hint_data", """
        import numpy as np
        from tools.trainer import sources

        X = np.random.default_rng(0).uniform(size=(40, 8, 8, 1))
        X = X.astype(np.float32)
        Y = (np.arange(40) % 10).astype(np.int32)

        class Dicts:
          def __len__(self):
            return len(X)

          def __getitem__(self, i):
            inputs, label = X[i], Y[i]
            return {"x": inputs, "y": label}

        def one(config):
          train = sources.ArraySource(X, Y)
          return train

        def dicts(config):
          return Dicts(), Dicts()

        def iterators(config):
          return iter(zip(X, Y)), sources.ArraySource(X, Y)
        """)
    config.model = "mlp"
    model = train_lib.models.build_model(config)
    config.dataset = "hint_data:one"
    with self.assertRaises(registry.FactoryResultError) as e:
      train_lib.load_dataset(config)
    self.assertEqual(fix(e.exception), "return train, test")
    edits = [("  return train\n", f"  {fix(e.exception)}\n"),
             ("  train = sources", "  train = test = sources")]
    config.dataset = "hint_data:dicts"
    with self.assertRaises(ValueError) as e:
      tasks.check(config, model, *train_lib.load_dataset(config))
    self.assertEqual(fix(e.exception), "return inputs, label")
    edits.append(('    return {"x": inputs, "y": label}',
                  f"    {fix(e.exception)}"))
    config.dataset = "hint_data:iterators"
    with self.assertRaises(ValueError) as e:
      tasks.check(config, model, *train_lib.load_dataset(config))
    self.assertEqual(fix(e.exception),
                     "tools.trainer.sources.ArraySource(inputs, labels)")
    edits.append(("iter(zip(X, Y))", "sources.ArraySource(X, Y)"))
    with open(os.path.join(root, "hint_data.py")) as f:
      text = f.read()
    for old, new in edits:
      self.assertIn(old, text)
      text = text.replace(old, new)
    self._module(root, "hint_data", text)
    for name in ("one", "dicts", "iterators"):
      config.dataset = f"hint_data:{name}"
      tasks.check(config, model, *train_lib.load_dataset(config))

  def test_factory_import_hint(self):
    root = self.create_tempdir().full_path
    os.makedirs(os.path.join(root, "hintpkg"))
    with open(os.path.join(root, "hintpkg", "__init__.py"), "w") as f:
      f.write("from tools.trainer.models import mlp as build\n")
    args = [TRAIN, f"--config={SMOKE}", "--config.model=hintpkg:build",
            "--config.num_steps=20", "--config.checkpoint_every=20",
            f"--workdir={self.create_tempdir().full_path}"]
    error, fixes = self.usage_error(*args)
    self.assertIn("cannot import module 'hintpkg'", error)
    self.assertEqual(fixes, ["hintpkg"])
    # Run from the directory that holds it.
    proc = run(*args, cwd=root)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])

  def test_metric_hints(self):
    workdir = self.create_tempdir().full_path
    x = jnp.arange(4.0)
    with metrics.MetricWriter(workdir) as w:
      with self.assertRaisesRegex(TypeError, r"e\.g\. x\.mean\(\)"):
        w.write(1, {"train/loss": x})
      w.write(1, {"train/loss": x.mean()})
      with self.assertRaisesRegex(ValueError, "use e.g. 'train/step'"):
        w.write(1, {"step": 3})
      w.write(1, {"train/step": 3})
    self.assertEqual(metrics.read_metrics(workdir)[1]["train/step"], 3.0)

  def test_bench_override_example(self):
    help_text = flags.FLAGS["override"].help  # tools/bench/scaling.py's
    examples = re.findall(r"(\S+=\S+?)\.?(?=[\s;]|$)",
                          help_text.split("e.g.")[1])
    self.assertEqual(examples, ["batch_size=512",
                                "model_config.hidden_sizes=(512,512)"])
    config = scaling.load_config(
        os.path.join(ROOT, "configs", "digits_mlp.py"), examples)
    config_schema.validate(config)
    self.assertEqual((config.batch_size, config.model_config.hidden_sizes),
                     (512, (512, 512)))

  def test_transformer_hints_name_real_arguments(self):
    with self.assertRaisesRegex(ValueError, r"dim \(10\) must be divisible by "
                                r"num_heads \(4\).\nFix: e.g. dim=256, "
                                r"num_heads=8."):
      pax.nets.TransformerLM(vocab_size=11, dim=10, num_heads=4,
                             num_layers=1, max_len=4)
    pax.nets.TransformerLM(vocab_size=11, dim=256, num_heads=8, num_layers=1,
                           max_len=4)
    with self.assertRaisesRegex(ValueError, r"Fix: e.g. pax.nets.Transformer"
                                r"\(dim=128, num_heads=4, num_layers=2\)"):
      pax.nets.Transformer(dim=0, num_heads=4, num_layers=2)
    pax.nets.Transformer(dim=128, num_heads=4, num_layers=2)
    haiku_lm = pax.nets.haiku_transformer.TransformerLM
    with self.assertRaisesRegex(ValueError, "Fix: e.g. model_dim=256, "
                                "num_heads=8."):
      hk.transform(lambda t: haiku_lm(11, 10, 4, 1, 4)(
          t, is_training=False)).init(None, jnp.zeros((1, 2), jnp.int32))
    hk.transform(lambda t: haiku_lm(11, model_dim=256, num_heads=8,
                                    num_layers=1, max_len=4)(
                                        t, is_training=False)).init(
                                            jax.random.PRNGKey(0),
                                            jnp.zeros((1, 2), jnp.int32))
    haiku_stack = pax.nets.haiku_transformer.Transformer
    f = hk.transform(lambda h: haiku_stack(num_heads=4, num_layers=1)(
        h, is_training=False))
    with self.assertRaisesRegex(ValueError, r"last dimension is a multiple of "
                                r"num_heads, e.g. 16"):
      f.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 10)))
    f.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 16)))


class DocstringTest(absltest.TestCase):

  def test_examples(self):
    for module in (cli, config_schema, registry, resume_config):
      result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
      self.assertGreater(result.attempted, 0, module.__name__)
      self.assertEqual(result.failed, 0, "see the doctest output above")


if __name__ == "__main__":
  quick_exit.main()
