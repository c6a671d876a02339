"""Tests for tools/trainer/metrics.py and tools/trainer/plotting.py."""

import doctest
import glob
import json
import os
import struct
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import matplotlib.image
import numpy as np

from tools.trainer import metrics
from tools.trainer import plotting

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Records serialised by tensorboard 2.x itself (event_pb2.Event(...)
# .SerializeToString() framed by tensorboard.summary.writer.record_writer):
# Event(wall_time=1.5, step=7, summary={value {tag: "train/loss",
# simple_value: 0.25}}) and Event(wall_time=2.0, step=301,
# session_log={status: START}).
_GOLDEN_SCALAR = bytes.fromhex(
    "200000000000000029eda95009000000000000f83f10072a130a110a0a747261696e2f6c"
    "6f7373150000803ef4985d1a")
_GOLDEN_START = bytes.fromhex(
    "100000000000000095fbfe1809000000000000004010ad023a0208013264e72b")


def _record(payload):
  header = struct.pack("<Q", len(payload))
  return (header + struct.pack("<I", metrics.masked_crc32c(header)) + payload
          + struct.pack("<I", metrics.masked_crc32c(payload)))


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


class EventFileTest(parameterized.TestCase):

  @parameterized.parameters(
      (b"", 0x00000000),
      (b"123456789", 0xE3069283),
      (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
      (b"\xff" * 32, 0x62A8AB43),
      (bytes(range(32)), 0x46DD794E),
  )
  def test_crc32c_vectors(self, data, expected):
    self.assertEqual(metrics.crc32c(data), expected)

  def test_bytes_match_tensorboard(self):
    # pylint: disable=protected-access
    self.assertEqual(
        _record(metrics._encode_event(1.5, 7, scalars={"train/loss": 0.25})),
        _GOLDEN_SCALAR)
    self.assertEqual(_record(metrics._encode_event(2.0, 301,
                                                   session_status=1)),
                     _GOLDEN_START)

  def test_round_trip_through_metric_writer(self):
    workdir = self.create_tempdir().full_path
    with metrics.MetricWriter(workdir, clock=Clock()) as w:
      w.write(0, {"train/loss": 2.5, "eval/accuracy": np.float32(0.125)})
      w.write(2**40, {"train/loss": jnp.asarray(-1.5)})
    (path,) = glob.glob(os.path.join(workdir, "tensorboard",
                                     "events.out.tfevents.*"))
    events = metrics.read_events(path)
    self.assertEqual(events[0].file_version, "brain.Event:2")
    self.assertEqual((events[1].session_status, events[1].step), (1, 0))
    self.assertEqual([(e.step, e.values, e.wall_time) for e in events[2:]],
                     [(0, {"train/loss": 2.5, "eval/accuracy": 0.125}, 1003.0),
                      (2**40, {"train/loss": -1.5}, 1004.0)])

  def test_corruption_and_truncation(self):
    path = os.path.join(self.create_tempdir().full_path, "events")
    with open(path, "wb") as f:
      f.write(_GOLDEN_SCALAR + _GOLDEN_START + _GOLDEN_SCALAR[:-3])
    events = metrics.read_events(path)  # truncated last record: dropped
    self.assertEqual([e.step for e in events], [7, 301])
    self.assertEqual(events[0].values, {"train/loss": 0.25})
    bad = bytearray(_GOLDEN_SCALAR)
    bad[20] ^= 0x01
    with open(path, "wb") as f:
      f.write(bytes(bad))
    with self.assertRaisesRegex(ValueError, "bad data CRC"):
      metrics.read_events(path)


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
    self.assertLen(glob.glob(os.path.join(self.workdir, "tensorboard", "*")),
                   2)

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

  def test_command_line(self):
    out = os.path.join(self.workdir, "cli.png")
    result = subprocess.run(
        [sys.executable, os.path.join(_REPO_ROOT, "tools", "plot_metrics.py"),
         "--workdir", self.workdir, "--output", out, "--panels", "loss"],
        capture_output=True, text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip(), out)
    self.assertEqual(matplotlib.image.imread(out).shape[:2], (400, 550))


if __name__ == "__main__":
  absltest.main()
