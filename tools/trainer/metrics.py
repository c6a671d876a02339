"""Metrics: `<workdir>/metrics.jsonl`, TensorBoard event files, console lines.

`MetricWriter` appends every record as one JSON line to
`<workdir>/metrics.jsonl` (`{"step": 1200, "time": ..., "train/loss": 0.12}`)
and writes the same scalars to a TensorBoard event file under
`<workdir>/tensorboard/`. The event file is written by this module itself
(TFRecord framing with masked CRC32C around hand-encoded `Event` protocol
buffers), so neither TensorFlow, tensorboard nor protobuf is needed; the
format is the one `tensorboard --logdir <workdir>` reads. `read_events` reads
it back (checking every CRC).

Scalar names follow `<split>/<name>`: `train/loss`, `eval/loss`,
`train/accuracy`, `eval/bits_per_char`, ... (`tools.trainer.plotting` groups
curves by `<name>`).

Resuming: construct the writer with `resume_step=<restored step>`; records
with a larger step (written after the checkpoint the run resumes from) are
dropped from metrics.jsonl, so no step appears twice, and the new event file
starts with a TensorBoard "session start" at `resume_step + 1`, which makes
TensorBoard discard the older files' events from that step on (a fresh run,
`resume_step=None`, empties metrics.jsonl and starts its event file with a
session start at step 0).

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
"""

import datetime
import json
import math
import os
import socket
import struct
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

from absl import logging
import numpy as np

from pax_haiku._src import atomic_write

__all__ = [
    "Event",
    "EventFileWriter",
    "METRICS_FILE",
    "MetricWriter",
    "ProgressLogger",
    "TENSORBOARD_DIR",
    "crc32c",
    "format_duration",
    "format_progress",
    "masked_crc32c",
    "read_events",
    "read_metrics",
]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("step", "time")

# ----------------------------------------------------------------- CRC32C ---


def _make_crc_table() -> List[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as used by TFRecord files.

  >>> hex(crc32c(b"123456789"))
  '0xe3069283'
  """
  crc = 0xFFFFFFFF
  table = _CRC_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The masked CRC TFRecord stores: rotate right by 15, add a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -------------------------------------------------------- protobuf encoding ---


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # int64 two's complement, as protobuf does
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _encode_event(wall_time: float, step: int, *,
                  file_version: Optional[str] = None,
                  scalars: Optional[Mapping[str, float]] = None,
                  session_status: Optional[int] = None) -> bytes:
  """Encodes a `tensorflow.Event` (event.proto).

  Event: wall_time = 1 (double), step = 2 (int64), file_version = 3
  (string), summary = 5 (Summary), session_log = 7 (SessionLog).
  Summary: value = 1 (repeated Value); Value: tag = 1 (string),
  simple_value = 2 (float). SessionLog: status = 1 (enum, START = 1).
  """
  out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
  if file_version is not None:
    out += _length_delimited(3, file_version.encode("utf-8"))
  if scalars is not None:
    summary = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode("utf-8"))
                          + _key(2, 5) + struct.pack("<f", value))
        for tag, value in scalars.items())
    out += _length_delimited(5, summary)
  if session_status is not None:
    out += _length_delimited(7, _key(1, 0) + _varint(session_status))
  return out


def _decode(buf: bytes) -> List[tuple]:
  """Decodes one protobuf message into [(field, wire_type, value)]."""
  fields = []
  pos = 0

  def varint():
    nonlocal pos
    shift = result = 0
    while True:
      if pos >= len(buf):
        raise ValueError("truncated varint")
      byte = buf[pos]
      pos += 1
      result |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        return result

  while pos < len(buf):
    key = varint()
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value = varint()
    elif wire_type == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire_type == 5:
      value, pos = buf[pos:pos + 4], pos + 4
    elif wire_type == 2:
      n = varint()
      value, pos = buf[pos:pos + n], pos + n
    else:
      raise ValueError(f"unsupported wire type {wire_type}")
    if pos > len(buf):
      raise ValueError("truncated field")
    fields.append((field, wire_type, value))
  return fields


class Event(NamedTuple):
  """A decoded event: `values` maps tag to simple_value (summary events)."""
  wall_time: float
  step: int
  file_version: Optional[str]
  values: Dict[str, float]
  session_status: Optional[int]


def _decode_event(buf: bytes) -> Event:
  wall_time, step, file_version, values, status = 0.0, 0, None, {}, None
  for field, wire_type, value in _decode(buf):
    if field == 1 and wire_type == 1:
      wall_time = struct.unpack("<d", value)[0]
    elif field == 2 and wire_type == 0:
      step = value - (1 << 64) if value >= 1 << 63 else value
    elif field == 3 and wire_type == 2:
      file_version = value.decode("utf-8")
    elif field == 5 and wire_type == 2:
      for f, _, v in _decode(value):
        if f != 1:
          continue
        tag, simple = None, None
        for vf, vw, vv in _decode(v):
          if vf == 1 and vw == 2:
            tag = vv.decode("utf-8")
          elif vf == 2 and vw == 5:
            simple = struct.unpack("<f", vv)[0]
        if tag is not None and simple is not None:
          values[tag] = simple
    elif field == 7 and wire_type == 2:
      for f, w, v in _decode(value):
        if f == 1 and w == 0:
          status = v
  return Event(wall_time, step, file_version, values, status)


# ------------------------------------------------------------ event files ---


class EventFileWriter:
  """Writes a TensorBoard event file (`events.out.tfevents.*`)."""

  FILE_VERSION = "brain.Event:2"
  SESSION_START = 1

  def __init__(self, logdir: str, clock: Callable[[], float] = time.time):
    os.makedirs(logdir, exist_ok=True)
    self._clock = clock
    now = clock()
    name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{time.monotonic_ns() % 10**9}")
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "xb")
    self._write(_encode_event(now, 0, file_version=self.FILE_VERSION))
    self.flush()

  def _write(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                     + struct.pack("<I", masked_crc32c(data)))

  def write_scalars(self, step: int, scalars: Mapping[str, float],
                    wall_time: Optional[float] = None) -> None:
    """Writes one event holding `scalars` (tag -> float) at `step`."""
    wall_time = self._clock() if wall_time is None else wall_time
    self._write(_encode_event(wall_time, int(step), scalars=scalars))

  def write_session_start(self, step: int) -> None:
    """Marks a restart: TensorBoard drops earlier events with step >= `step`."""
    self._write(_encode_event(self._clock(), int(step),
                              session_status=self.SESSION_START))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def read_events(path: str) -> List[Event]:
  """Reads an event file, verifying every record's CRCs.

  A truncated final record (a writer killed mid-write) ends the list, as in
  TensorBoard.

  Raises:
    ValueError: if a complete record fails its CRC check.
  """
  with open(path, "rb") as f:
    data = f.read()
  events = []
  pos = 0
  while pos < len(data):
    if pos + 12 > len(data):
      break
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    if header_crc != masked_crc32c(header):
      raise ValueError(f"{path}: bad length CRC at offset {pos}.")
    end = pos + 12 + length + 4
    if end > len(data):
      break
    payload = data[pos + 12:pos + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[end - 4:end])
    if payload_crc != masked_crc32c(payload):
      raise ValueError(f"{path}: bad data CRC in the record at offset {pos}.")
    events.append(_decode_event(payload))
    pos = end
  return events


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
               clock: Callable[[], float] = time.time):
    """Opens the writer.

    Args:
      workdir: where metrics.jsonl and tensorboard/ go (created if missing).
      enabled: False on every process but process 0.
      resume_step: the step of the checkpoint the run resumed from: records
        with a larger step are dropped from metrics.jsonl. None means a fresh
        run: an existing metrics.jsonl (from a run that left no checkpoint)
        is emptied.
      tensorboard: also write a TensorBoard event file.
      clock: wall-clock source (for tests).
    """
    self.enabled = bool(enabled)
    self.path = os.path.join(workdir, METRICS_FILE)
    self._clock = clock
    self._file = None
    self._events = None
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
      self._events = EventFileWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                     clock=clock)
      # TensorBoard drops older files' events from this step on.
      self._events.write_session_start(
          0 if resume_step is None else resume_step + 1)
      self._events.flush()

  def _truncate(self, resume_step: Optional[int]) -> None:
    """Keeps only the records with step <= resume_step (atomic rewrite)."""
    records, bad = _parse_lines(self.path)
    keep = ([] if resume_step is None
            else [r for r in records if r["step"] <= resume_step])
    if len(keep) == len(records) and not bad:
      return
    logging.info("%s: keeping %d of %d records (resume_step=%s); dropped %d "
                 "unreadable line(s).", self.path, len(keep), len(records),
                 resume_step, bad)
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
