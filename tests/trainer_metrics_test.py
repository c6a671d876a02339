"""Tests for tools/trainer/metrics.py and tools/trainer/plotting.py.

The events files are read back with TensorBoard's own reader
(`EventAccumulator`, a test-only dependency).
"""

import doctest
import glob
import json
import os
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import matplotlib.image
import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from tools.trainer import metrics
from tools.trainer import plotting
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

# tools/plot_metrics.py runs several times here: the fork servers import
# its matplotlib once.
launch.also_preload(launch.PLOTTING)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensorboard_scalars(workdir):
  """{tag: [(step, value)]} as TensorBoard reads `<workdir>/tensorboard`."""
  acc = event_accumulator.EventAccumulator(
      os.path.join(workdir, "tensorboard"),
      size_guidance={event_accumulator.SCALARS: 0,
                     event_accumulator.TENSORS: 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}, acc


def jsonl_scalars(workdir):
  """The same mapping from metrics.jsonl, values rounded to float32."""
  out = {}
  for record in metrics.read_metrics(workdir):
    for tag, value in record.items():
      if tag not in ("step", "time"):
        out.setdefault(tag, []).append(
            (record["step"], float(np.float32(value))))
  return out


def event_files(workdir):
  return glob.glob(os.path.join(workdir, "tensorboard", "events.out.*"))


class Clock:

  def __init__(self, start=1000.0):
    self.now = start

  def __call__(self):
    self.now += 1.0
    return self.now


class DocstringTest(parameterized.TestCase):

  @parameterized.named_parameters(("metrics", metrics), ("plotting", plotting))
  def test_examples(self, module):
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0, "see the doctest output above")


class EventFileTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path

  def test_tensorboard_reads_every_scalar_once_per_step(self):
    with metrics.MetricWriter(self.workdir, clock=Clock()) as w:
      w.write(0, {"train/loss": 2.5, "eval/accuracy": np.float32(0.125)})
      w.write(2**40, {"train/loss": jnp.asarray(-1.5)})
    scalars, _ = tensorboard_scalars(self.workdir)
    self.assertEqual(scalars, {"train/loss": [(0, 2.5), (2**40, -1.5)],
                               "eval/accuracy": [(0, 0.125)]})
    self.assertEqual(scalars, jsonl_scalars(self.workdir))
    self.assertLen(event_files(self.workdir), 1)

  def test_config_as_hparams_and_text(self):
    config = {"name": "smoke", "learning_rate": 0.01,
              "model_config": {"hidden_sizes": (32,)}, "plot": False}
    with metrics.MetricWriter(self.workdir, config=config) as w:
      w.write(10, {"train/loss": 1.0})
    _, acc = tensorboard_scalars(self.workdir)
    self.assertIn("config/text_summary", acc.Tags()["tensors"])
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
    self.assertEqual(json.loads(text.decode().strip("`\n")),
                     {"name": "smoke", "learning_rate": 0.01,
                      "model_config": {"hidden_sizes": [32]}, "plot": False})
    hparams = acc.PluginTagToContent("hparams")
    self.assertEqual(sorted(hparams), ["_hparams_/experiment",
                                       "_hparams_/session_end_info",
                                       "_hparams_/session_start_info"])
    # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]).session_start_info
    self.assertEqual(start.hparams["model_config.hidden_sizes"].string_value,
                     "(32,)")
    self.assertEqual(start.hparams["learning_rate"].number_value, 0.01)
    self.assertTrue(start.hparams["plot"].HasField("bool_value"))
    self.assertFalse(start.hparams["plot"].bool_value)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/experiment"]).experiment
    self.assertEqual([m.name.tag for m in experiment.metric_infos],
                     ["train/loss"])

  def test_resume_appends_to_the_one_file_without_orphans(self):
    with metrics.MetricWriter(self.workdir, config={"seed": 0}) as w:
      for step in range(10, 70, 10):
        w.write(step, {"train/loss": 1.0 / step})
    (path,) = event_files(self.workdir)
    with open(path, "ab") as f:
      f.write(b"\x20\x00\x00")  # A record torn by a kill.
    # Resumed from the checkpoint at step 40: steps 50.. are written again.
    with metrics.MetricWriter(self.workdir, resume_step=40,
                              config={"seed": 0}) as w:
      for step in range(50, 90, 10):
        w.write(step, {"train/loss": 2.0 / step})
    self.assertEqual(event_files(self.workdir), [path])
    scalars, acc = tensorboard_scalars(self.workdir)
    expected = ([(s, np.float32(1.0 / s)) for s in range(10, 50, 10)]
                + [(s, np.float32(2.0 / s)) for s in range(50, 90, 10)])
    self.assertEqual(scalars, {"train/loss": expected})
    self.assertEqual(scalars, jsonl_scalars(self.workdir))
    self.assertLen(acc.PluginTagToContent("hparams"), 3)
    # The reader here sees the same: one experiment, at the last step.
    ends = [e.step for e in metrics.read_events(self.workdir)
            if any(v.tag == "_hparams_/experiment" for v in e.summary.value)]
    self.assertEqual(ends, [80])

  def test_rerun_of_a_finished_run_adds_no_file(self):
    with metrics.MetricWriter(self.workdir) as w:
      w.write(100, {"train/loss": 1.0})
    for _ in range(2):
      metrics.MetricWriter(self.workdir, resume_step=100).close()
    self.assertLen(event_files(self.workdir), 1)
    self.assertEqual(tensorboard_scalars(self.workdir)[0],
                     {"train/loss": [(100, 1.0)]})

  def test_fresh_run_replaces_old_event_files(self):
    with metrics.MetricWriter(self.workdir) as w:
      w.write(5, {"train/loss": 1.0})
    with metrics.MetricWriter(self.workdir) as w:  # No checkpoint: restart.
      w.write(1, {"train/loss": 3.0})
    self.assertLen(event_files(self.workdir), 1)
    self.assertEqual(tensorboard_scalars(self.workdir)[0],
                     {"train/loss": [(1, 3.0)]})

  def test_steps_per_sec(self):
    times = iter([100.0, 110.0, 112.0])
    w = metrics.MetricWriter(self.workdir, enabled=False, resume_step=40,
                             clock=lambda: next(times))
    self.assertEqual(w.steps_per_sec(140), 10.0)  # 100 steps in 10 s
    self.assertEqual(w.steps_per_sec(240), 50.0)

  def test_read_events_errors(self):
    with self.assertRaisesRegex(FileNotFoundError, "No events.out"):
      metrics.read_events(self.workdir)


class MetricWriterTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path

  def _steps(self):
    return [r["step"] for r in metrics.read_metrics(self.workdir)]

  def test_jsonl_records(self):
    with metrics.MetricWriter(self.workdir, clock=lambda: 12.5) as w:
      record = w.write(3, {"train/loss": np.float64(0.5), "train/n": 4})
    self.assertEqual(record, {"step": 3, "time": 12.5, "train/loss": 0.5,
                              "train/n": 4.0})
    with open(os.path.join(self.workdir, "metrics.jsonl")) as f:
      self.assertEqual([json.loads(l) for l in f], [record])

  def test_written_immediately(self):
    w = metrics.MetricWriter(self.workdir)
    w.write(1, {"train/loss": 1.0})
    self.assertEqual(self._steps(), [1])  # flushed, before close()
    w.close()

  def test_resume_drops_later_steps_and_torn_lines(self):
    with metrics.MetricWriter(self.workdir) as w:
      for step in range(0, 100, 10):
        w.write(step, {"train/loss": 1.0})
        if step % 20 == 0:
          w.write(step, {"eval/loss": 2.0})
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write('{"step": 100, "train/lo')  # killed mid-line
    # The run resumes from its checkpoint at step 40: steps 50.. re-run.
    with metrics.MetricWriter(self.workdir, resume_step=40) as w:
      for step in range(50, 120, 10):
        w.write(step, {"train/loss": 0.5})
    steps = self._steps()
    self.assertEqual(steps, [0, 0, 10, 20, 20, 30, 40, 40, 50, 60, 70, 80,
                             90, 100, 110])
    train = {r["step"]: r["train/loss"] for r in
             metrics.read_metrics(self.workdir) if "train/loss" in r}
    self.assertEqual(train[40], 1.0)
    self.assertEqual(train[50], 0.5)
    self.assertLen(event_files(self.workdir), 1)
    self.assertEqual(tensorboard_scalars(self.workdir)[0],
                     jsonl_scalars(self.workdir))

  def test_fresh_run_empties_old_file(self):
    with metrics.MetricWriter(self.workdir) as w:
      w.write(5, {"train/loss": 1.0})
    with metrics.MetricWriter(self.workdir, resume_step=None) as w:
      w.write(1, {"train/loss": 1.0})
    self.assertEqual(self._steps(), [1])

  def test_resume_with_nothing_to_drop_keeps_file(self):
    with metrics.MetricWriter(self.workdir) as w:
      w.write(5, {"train/loss": 1.0})
    with metrics.MetricWriter(self.workdir, resume_step=5) as w:
      w.write(6, {"train/loss": 1.0})
    self.assertEqual(self._steps(), [5, 6])

  def test_disabled_writes_nothing(self):
    workdir = os.path.join(self.workdir, "sub")
    with metrics.MetricWriter(workdir, enabled=False) as w:
      record = w.write(1, {"train/loss": 1.0})
    self.assertEqual(record["train/loss"], 1.0)
    self.assertFalse(os.path.exists(workdir))

  def test_bad_values(self):
    with metrics.MetricWriter(self.workdir, tensorboard=False) as w:
      with self.assertRaisesRegex(TypeError, "real scalar.*x.mean"):
        w.write(1, {"train/loss": np.ones(3)})
      with self.assertRaisesRegex(TypeError, "real scalar"):
        w.write(1, {"train/loss": "high"})
      with self.assertRaisesRegex(ValueError, "reserved"):
        w.write(1, {"step": 1})
      with self.assertRaisesRegex(TypeError, "step must be an int"):
        w.write(1.0, {"train/loss": 1})
      w.write(2, {"train/loss": float("nan")})
    self.assertTrue(np.isnan(metrics.read_metrics(self.workdir)[0]
                             ["train/loss"]))
    self.assertFalse(os.path.exists(os.path.join(self.workdir,
                                                 "tensorboard")))


class ConsoleTest(absltest.TestCase):

  def test_format_progress(self):
    self.assertEqual(
        metrics.format_progress(1200, 3000, 45.1, 5770,
                                {"loss": 0.1234, "acc": jnp.float32(0.9712)}),
        "step 1200/3000 | 45.1 steps/s | 5770 ex/s | ETA 0:00:40 | "
        "loss 0.1234 | acc 0.9712")
    self.assertEqual(metrics.format_progress(10, 10, 0.0),
                     "step 10/10 | 0.0 steps/s | ETA 0:00:00")
    self.assertEqual(metrics.format_progress(5, 10, 0.0, scalars={
        "loss": 1e-6, "big": 3e7, "bad": float("nan")}),
                     "step 5/10 | 0.0 steps/s | ETA ? | loss 1.0000e-06 | "
                     "big 3.0000e+07 | bad nan")

  def test_progress_logger_measures_between_calls(self):
    times = iter([100.0, 110.0, 112.0])
    p = metrics.ProgressLogger(1000, examples_per_step=32, start_step=0,
                               clock=lambda: next(times))
    self.assertEqual(p.line(100), "step 100/1000 | 10.0 steps/s | 320 ex/s | "
                     "ETA 0:01:30")
    with self.assertLogs(level="INFO") as logs:
      line = p.log(200, {"loss": 0.5})
    self.assertEqual(line, "step 200/1000 | 50.0 steps/s | 1600 ex/s | "
                     "ETA 0:00:16 | loss 0.5000")
    self.assertIn(line, logs.output[0])


class PlottingTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path
    with metrics.MetricWriter(self.workdir, tensorboard=False) as w:
      for step in range(0, 1001, 50):
        w.write(step, {"train/loss": 2.0 / (1 + step / 100),
                       "train/accuracy": step / 1000})
        if step % 250 == 0:
          w.write(step, {"eval/loss": 2.2 / (1 + step / 100),
                         "eval/accuracy": step / 1100})

  def test_curves_grouping(self):
    grouped = plotting.curves(metrics.read_metrics(self.workdir))
    self.assertEqual(sorted(grouped), ["accuracy", "loss"])
    steps, values = grouped["loss"]["eval"]
    self.assertEqual(steps, [0, 250, 500, 750, 1000])
    self.assertAlmostEqual(values[1], 2.2 / 3.5)
    self.assertLen(grouped["accuracy"]["train"][0], 21)

  def test_plot_workdir_writes_png(self):
    path = plotting.plot_workdir(self.workdir)
    self.assertEqual(path, os.path.join(self.workdir, "curves.png"))
    image = matplotlib.image.imread(path)
    self.assertEqual(image.shape[:2], (400, 1100))  # 2 panels, 100 dpi
    self.assertGreater(image[..., :3].std(), 0.05)  # not blank

  def test_bits_per_char_panel_and_errors(self):
    out = os.path.join(self.workdir, "chars.png")
    records = [{"step": 1, "train/loss": 1.0, "eval/bits_per_char": 2.0},
               {"step": 2, "train/loss": 0.5, "eval/bits_per_char": 1.5}]
    self.assertEqual(plotting.plot_curves(records, out),
                     ["loss", "bits_per_char"])
    with self.assertRaisesRegex(ValueError, "No metric to plot.*present"):
      plotting.plot_curves([{"step": 1, "train/speed": 3.0}], out)
    with self.assertRaisesRegex(FileNotFoundError, "metrics.jsonl"):
      plotting.plot_workdir(os.path.join(self.workdir, "nope"))

  def test_title_is_the_config_name(self):
    self.assertEqual(plotting.run_title(self.workdir),
                     os.path.basename(self.workdir))  # No config.json.
    with open(os.path.join(self.workdir, "config.json"), "w") as f:
      json.dump({"name": "", "model": "cnn", "dataset": "digits"}, f)
    self.assertEqual(plotting.run_title(self.workdir), "cnn on digits")
    with open(os.path.join(self.workdir, "config.json"), "w") as f:
      json.dump({"name": "digits_cnn", "model": "cnn"}, f)
    self.assertEqual(plotting.run_title(self.workdir), "digits_cnn")

  def _cli(self, *args, env=None):
    """tools/plot_metrics.py as a process (forked: tests/launch.py)."""
    return launch.run(
        [sys.executable, os.path.join(_REPO_ROOT, "tools", "plot_metrics.py"),
         *args], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, **(env or {})))

  def test_command_line_usage_errors(self):
    runs_root = self.create_tempdir().full_path
    for args in (["--workdir=/nonexistent"], [], ["--workdir", self.workdir,
                                                  "--panels=speed"],
                 ["--no_such_flag"], ["--workdir", self.workdir, "extra"]):
      result = self._cli(*args, env={"PAX_HAIKU_RUNS": runs_root})
      self.assertEqual(result.returncode, 2, (args, result.stderr))
      # Library warnings (matplotlib's about an unwritable ~/.config under
      # Bazel) may come first; the error ends stderr.
      lines = result.stderr.strip().splitlines()[-2:]
      self.assertNotIn("Traceback", result.stderr)
      self.assertTrue(lines[0].startswith("error: "), lines)
      self.assertTrue(lines[1].startswith("Fix: "), lines)
    result = self._cli("--workdir=/nonexistent",
                       env={"PAX_HAIKU_RUNS": runs_root})
    self.assertIn("'/nonexistent' does not exist", result.stderr)

  def test_help(self):
    result = self._cli("--help")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("--workdir", result.stdout)
    self.assertNotIn("mnist", result.stdout.lower())

  def test_command_line(self):
    out = os.path.join(self.workdir, "cli.png")
    result = self._cli("--workdir", self.workdir, "--output", out,
                       "--panels", "loss")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip(), out)
    self.assertEqual(matplotlib.image.imread(out).shape[:2], (400, 550))


if __name__ == "__main__":
  quick_exit.main()
