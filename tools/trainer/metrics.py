"""Metrics: `<workdir>/metrics.jsonl`, TensorBoard event files, console lines.

`MetricWriter` appends every record as one JSON line to
`<workdir>/metrics.jsonl` (`{"step": 1200, "time": ..., "train/loss": 0.12}`)
and writes the same scalars to TensorBoard through `tensorboardX` (its
protocol buffers, summaries and record writer): one events file per run in
`<workdir>/tensorboard/`, which also holds the run's config (as hparams and
as a text summary). `tensorboard --logdir <workdir>` reads it; `read_events`
reads it back here.

Scalar names follow `<split>/<name>`: `train/loss`, `eval/loss`,
`train/accuracy`, `eval/bits_per_char`, ... (`tools.trainer.plotting` groups
curves by `<name>`).

Resuming: construct the writer with `resume_step=<restored step>`; records
with a larger step (written after the checkpoint the run resumes from) are
dropped from metrics.jsonl and from the run's events file, which the resumed
run then appends to, so no step appears twice in either (a fresh run,
`resume_step=None`, empties metrics.jsonl and starts a new events file in
place of the old ones).

>>> import tempfile
>>> workdir = tempfile.mkdtemp()
>>> with MetricWriter(workdir) as w:
...   _ = w.write(100, {"train/loss": 0.5})
...   _ = w.write(200, {"train/loss": 0.25})
>>> [r["train/loss"] for r in read_metrics(workdir)]
[0.5, 0.25]
>>> with MetricWriter(workdir, resume_step=100) as w:  # resumed at step 100
...   _ = w.write(200, {"train/loss": 0.3})
>>> [(r["step"], r["train/loss"]) for r in read_metrics(workdir)]
[(100, 0.5), (200, 0.3)]
>>> [(e.step, v.tag, round(v.simple_value, 3)) for e in read_events(workdir)
...  for v in e.summary.value if v.HasField("simple_value")]
[(100, 'train/loss', 0.5), (200, 'train/loss', 0.3)]
"""

import datetime
import glob
import json
import math
import os
import socket
import struct
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import logging
import numpy as np
from tensorboardX import record_writer
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2

from pax_haiku._src import atomic_write

__all__ = [
    "EventFile",
    "METRICS_FILE",
    "MetricWriter",
    "ProgressLogger",
    "TENSORBOARD_DIR",
    "format_duration",
    "format_progress",
    "read_events",
    "read_metrics",
]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("step", "time")
_EVENTS_GLOB = "events.out.tfevents.*"
# Written again at the end of every (resumed) run, so dropped on resume.
_END_TAGS = ("_hparams_/experiment", "_hparams_/session_end_info")

# ------------------------------------------------------------ event files ---


def _records(path: str) -> List[bytes]:
  """The intact records of a TFRecord file (a torn last record is dropped).

  The framing is TFRecord's: length (uint64), masked CRC of the length,
  data, masked CRC of the data; the CRCs are tensorboardX's.
  """
  with open(path, "rb") as f:
    data = f.read()
  records, pos = [], 0
  while pos + 12 <= len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    end = pos + 12 + length + 4
    if (struct.unpack("<I", data[pos + 8:pos + 12])[0]
        != record_writer.masked_crc32c(header) or end > len(data)):
      break
    payload = data[pos + 12:end - 4]
    if (struct.unpack("<I", data[end - 4:end])[0]
        != record_writer.masked_crc32c(payload)):
      break
    records.append(payload)
    pos = end
  if pos != len(data):
    logging.warning("%s: ignoring %d damaged byte(s) after the last intact "
                    "record (a writer killed mid-write).", path,
                    len(data) - pos)
  return records


def _event_files(logdir: str) -> List[str]:
  return sorted(glob.glob(os.path.join(logdir, _EVENTS_GLOB)))


def read_events(path: str) -> List[event_pb2.Event]:
  """The events of an events file, or of a workdir's (or logdir's) newest one.

  Raises:
    FileNotFoundError: if a directory holds no events file.
  """
  if os.path.isdir(path):
    tb_dir = os.path.join(path, TENSORBOARD_DIR)
    files = _event_files(tb_dir if os.path.isdir(tb_dir) else path)
    if not files:
      raise FileNotFoundError(f"No {_EVENTS_GLOB} file in {path}.")
    path = files[-1]
  return [event_pb2.Event.FromString(r) for r in _records(path)]


def _is_end_event(event: event_pb2.Event) -> bool:
  return any(v.tag in _END_TAGS for v in event.summary.value)


def _flat_hparams(config: Mapping[str, Any], prefix: str = ""
                  ) -> Dict[str, Any]:
  """Nested config -> `{"a.b": value}` with bool/int/float/str values."""
  out = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      out.update(_flat_hparams(value, f"{prefix}{key}."))
    elif isinstance(value, (bool, int, float, str)):
      out[f"{prefix}{key}"] = value
    else:
      out[f"{prefix}{key}"] = str(value)
  return out


class EventFile:
  """One run's TensorBoard events file, written with tensorboardX.

  A fresh run (`resume_step=None`) replaces the events files in `logdir` by
  a new one; a resumed run rewrites the existing file without the events
  after `resume_step` (and without a torn last record) and appends to it.
  Both rewrite through a temporary file that is renamed once complete.
  """

  def __init__(self, logdir: str, resume_step: Optional[int] = None,
               config: Optional[Mapping[str, Any]] = None,
               clock: Callable[[], float] = time.time):
    self._clock = clock
    self._tags: Dict[str, None] = {}
    self._last_step = 0
    self._hparams = None if config is None else _flat_hparams(config)
    os.makedirs(logdir, exist_ok=True)
    existing = _event_files(logdir)
    kept: List[bytes] = []
    if resume_step is not None and existing:
      self.path = existing[-1]
      for record in _records(self.path):
        event = event_pb2.Event.FromString(record)
        if event.step <= resume_step and not _is_end_event(event):
          kept.append(record)
          self._last_step = max(self._last_step, event.step)
          self._tags.update((v.tag, None) for v in event.summary.value
                            if v.HasField("simple_value"))
    else:
      # tensorboardX's file name, plus the pid: processes can't collide.
      self.path = os.path.join(
          logdir, f"events.out.tfevents.{int(clock()):010d}."
          f"{socket.gethostname()}.{os.getpid()}")
    tmp = os.path.join(logdir, f".{os.path.basename(self.path)}.tmp")
    self._writer = record_writer.RecordWriter(tmp)
    for record in kept:
      self._writer.write(record)
    if not kept:
      self._write(event_pb2.Event(wall_time=clock(), step=0,
                                  file_version="brain.Event:2"))
      if config is not None:
        self._write_config(config)
    self._writer.flush()
    os.replace(tmp, self.path)
    for old in existing:
      if old != self.path:  # A fresh run's predecessors.
        os.remove(old)

  def _write(self, event: event_pb2.Event) -> None:
    self._writer.write(event.SerializeToString())

  def _write_summary(self, step: int, summary: summary_pb2.Summary,
                     wall_time: Optional[float] = None) -> None:
    self._write(event_pb2.Event(
        wall_time=self._clock() if wall_time is None else wall_time,
        step=int(step), summary=summary))

  def _write_config(self, config: Mapping[str, Any]) -> None:
    """The config as hparams (session start) and as a JSON text summary."""
    _, session_start, _ = tbx_summary.hparams(self._hparams, {})
    self._write_summary(0, session_start)
    text = json.dumps(dict(config), indent=2, default=str)
    self._write_summary(0, tbx_summary.text(
        "config", "```\n" + text + "\n```"))

  def write_scalars(self, step: int, scalars: Mapping[str, float],
                    wall_time: Optional[float] = None) -> None:
    """Writes one event holding `scalars` (tag -> float) at `step`."""
    values = [tbx_summary.scalar(tag, value).value[0]
              for tag, value in scalars.items()]
    self._tags.update((v.tag, None) for v in values)
    self._last_step = max(self._last_step, int(step))
    self._write_summary(step, summary_pb2.Summary(value=values), wall_time)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    """Closes the file, ending it with the hparams experiment (the config's
    keys and every scalar tag written: the metrics TensorBoard's HParams
    dashboard offers) at the last step written."""
    if self._writer is None:
      return
    if self._hparams is not None:
      experiment, _, session_end = tbx_summary.hparams(
          self._hparams, dict.fromkeys(self._tags, 0.0))
      self._write_summary(self._last_step, experiment)
      self._write_summary(self._last_step, session_end)
    self._writer.flush()
    self._writer.close()
    self._writer = None


# ------------------------------------------------------------ JSON lines ---


def _parse_lines(path: str) -> tuple:
  """(records, number of unreadable lines) of a metrics.jsonl file."""
  records, bad = [], 0
  with open(path, "r", encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        bad += 1
        continue
      if isinstance(record, dict) and isinstance(record.get("step"), int):
        records.append(record)
      else:
        bad += 1
  return records, bad


def read_metrics(path: str) -> List[Dict[str, Any]]:
  """The records of a metrics.jsonl file (or of `<path>/metrics.jsonl`).

  Unreadable lines (e.g. a line cut short by a crash) are skipped with a
  warning.
  """
  if os.path.isdir(path):
    path = os.path.join(path, METRICS_FILE)
  records, bad = _parse_lines(path)
  if bad:
    logging.warning("Skipped %d unreadable line(s) in %s.", bad, path)
  return records


def _to_float(name: str, value: Any) -> float:
  try:
    array = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(f"Metric {name!r} is not a number: {value!r}.") from e
  if array.size != 1 or array.dtype.kind not in "biuf":
    raise TypeError(f"Metric {name!r} must be a real scalar, got "
                    f"{type(value).__name__} of shape {array.shape} dtype "
                    f"{array.dtype}; reduce it first (e.g. x.mean()).")
  return float(array.reshape(()))


class MetricWriter:
  """Writes scalar metrics to metrics.jsonl and TensorBoard.

  Only one process should write (pass `enabled=jax.process_index() == 0`);
  a disabled writer accepts every call and writes nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True,
               resume_step: Optional[int] = None, tensorboard: bool = True,
               config: Optional[Mapping[str, Any]] = None,
               clock: Callable[[], float] = time.time):
    """Opens the writer.

    Args:
      workdir: where metrics.jsonl and tensorboard/ go (created if missing).
      enabled: False on every process but process 0.
      resume_step: the step of the checkpoint the run resumed from: records
        with a larger step are dropped from metrics.jsonl and the events
        file. None means a fresh run: an existing metrics.jsonl (from a run
        that left no checkpoint) is emptied, older events files are replaced.
      tensorboard: also write a TensorBoard events file.
      config: the run's config (a possibly nested dict), written to the
        events file as hparams and as a text summary.
      clock: wall-clock source (for tests).
    """
    self.enabled = bool(enabled)
    self.path = os.path.join(workdir, METRICS_FILE)
    self._clock = clock
    self._file = None
    self._events = None
    self._rate_step = 0 if resume_step is None else int(resume_step)
    self._rate_time = clock()
    if not self.enabled:
      return
    if resume_step is not None and (isinstance(resume_step, bool) or
                                    not isinstance(resume_step, int)):
      raise TypeError(f"resume_step must be an int or None, got "
                      f"{resume_step!r}.")
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      self._truncate(resume_step)
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      self._events = EventFile(os.path.join(workdir, TENSORBOARD_DIR),
                               resume_step, config=config, clock=clock)

  def _truncate(self, resume_step: Optional[int]) -> None:
    """Keeps only the records with step <= resume_step (atomic rewrite)."""
    records, bad = _parse_lines(self.path)
    keep = ([] if resume_step is None
            else [r for r in records if r["step"] <= resume_step])
    # A file cut right after a record's closing brace parses whole but has no
    # final newline: appending to it would glue two records into one line.
    with open(self.path, "rb") as f:
      size = f.seek(0, os.SEEK_END)
      if size:
        f.seek(size - 1)
      ends_clean = not size or f.read(1) == b"\n"
    if len(keep) == len(records) and not bad and ends_clean:
      return
    log = logging.warning if bad else logging.info
    log("%s: keeping %d of %d records (resume_step=%s); dropped %d "
        "unreadable line(s) (a record cut by a crash: the resumed run "
        "writes the steps after resume_step again).", self.path, len(keep),
        len(records), resume_step, bad)
    with atomic_write.atomic_file(self.path, "w", encoding="utf-8") as f:
      for record in keep:
        f.write(json.dumps(record) + "\n")

  def write(self, step: int, scalars: Mapping[str, Any]) -> Dict[str, Any]:
    """Writes one record; returns it (`{"step", "time", **scalars}`).

    Args:
      step: the training step (int).
      scalars: name -> real scalar (Python, NumPy or JAX); names should be
        `<split>/<name>`, e.g. `train/loss`.

    Raises:
      TypeError: for a non-scalar value or a non-int step.
      ValueError: for the reserved names "step" and "time".
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
      raise TypeError(f"step must be an int, got {step!r}.")
    values = {}
    for name, value in scalars.items():
      if name in _RESERVED:
        raise ValueError(f"Metric name {name!r} is reserved; use e.g. "
                         f"'train/{name}'.")
      values[str(name)] = _to_float(name, value)
    record = {"step": int(step), "time": round(self._clock(), 3), **values}
    if self.enabled:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
      if self._events is not None:
        self._events.write_scalars(step, values, wall_time=record["time"])
        self._events.flush()
    return record

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def steps_per_sec(self, step: int) -> float:
    """Training speed: steps per second since the last call (or since the
    writer opened, at `resume_step` or 0), measured with `clock`."""
    now = self._clock()
    steps, elapsed = step - self._rate_step, now - self._rate_time
    self._rate_step, self._rate_time = int(step), now
    return steps / elapsed if elapsed > 0 else 0.0

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ------------------------------------------------------------- console ---


def format_duration(seconds: float) -> str:
  """`H:MM:SS` (rounded to whole seconds).

  >>> format_duration(40.4), format_duration(3725)
  ('0:00:40', '1:02:05')
  """
  if not math.isfinite(seconds):
    return "?"
  return str(datetime.timedelta(seconds=max(0, int(round(seconds)))))


def _format_value(value: float) -> str:
  if value == 0 or (1e-3 <= abs(value) < 1e5):
    return f"{value:.4f}"
  if math.isfinite(value):
    return f"{value:.4e}"
  return str(value)


def format_progress(step: int, total_steps: int, steps_per_sec: float,
                    examples_per_sec: Optional[float] = None,
                    scalars: Optional[Mapping[str, Any]] = None) -> str:
  """One console line of training progress.

  >>> format_progress(1200, 3000, 45.1, 5770, {"loss": 0.1234, "acc": 0.9712}
  ...                 ).split(" | ")  # doctest: +NORMALIZE_WHITESPACE
  ['step 1200/3000', '45.1 steps/s', '5770 ex/s', 'ETA 0:00:40', 'loss 0.1234',
   'acc 0.9712']
  """
  parts = [f"step {step}/{total_steps}", f"{steps_per_sec:.1f} steps/s"]
  if examples_per_sec is not None:
    parts.append(f"{examples_per_sec:.0f} ex/s")
  remaining = max(0, total_steps - step)
  eta = remaining / steps_per_sec if steps_per_sec > 0 else (
      0.0 if remaining == 0 else float("inf"))
  parts.append(f"ETA {format_duration(eta)}")
  for name, value in (scalars or {}).items():
    parts.append(f"{name} {_format_value(_to_float(name, value))}")
  return " | ".join(parts)


class ProgressLogger:
  """Builds `format_progress` lines, measuring speed between calls.

  >>> t = iter([0.0, 10.0])
  >>> p = ProgressLogger(3000, examples_per_step=128, start_step=1000,
  ...                    clock=lambda: next(t))
  >>> p.line(1200, {"loss": 0.5})
  'step 1200/3000 | 20.0 steps/s | 2560 ex/s | ETA 0:01:30 | loss 0.5000'
  """

  def __init__(self, total_steps: int, examples_per_step: Optional[int] = None,
               start_step: int = 0,
               clock: Callable[[], float] = time.monotonic):
    """Starts timing now, at `start_step` (the resumed step, or 0)."""
    self._total = int(total_steps)
    self._examples = examples_per_step
    self._clock = clock
    self._last_step = int(start_step)
    self._last_time = clock()

  def line(self, step: int, scalars: Optional[Mapping[str, Any]] = None) -> str:
    """The progress line for `step`; speed is measured since the last call."""
    now = self._clock()
    elapsed = now - self._last_time
    steps = step - self._last_step
    rate = steps / elapsed if elapsed > 0 else 0.0
    self._last_step, self._last_time = step, now
    ex_rate = rate * self._examples if self._examples else None
    return format_progress(step, self._total, rate, ex_rate, scalars)

  def log(self, step: int, scalars: Optional[Mapping[str, Any]] = None) -> str:
    """`line()`, also logged with absl logging.info; returns the line."""
    text = self.line(step, scalars)
    logging.info("%s", text)
    return text
