"""Graceful stop on SIGTERM / SIGINT: finish the step, checkpoint, exit.

Clusters announce preemption with SIGTERM (SLURM, Kubernetes, cloud TPU/GPU
VMs) and a grace period before SIGKILL. `StopRequests` turns the first
SIGTERM or SIGINT into a flag the training loop reads between steps (it
then writes a checkpoint and exits with `PREEMPTED_EXIT_CODE`); a second
signal restores the default handler and re-delivers itself, so the process
ends at once.

Signal handlers can only be installed from the main thread; elsewhere
(e.g. a notebook's worker thread) `StopRequests` does nothing and says so in
`installed`.

>>> import os, signal
>>> with StopRequests() as stop:
...   os.kill(os.getpid(), signal.SIGTERM)
...   print(stop.requested, stop.signal_name)
True SIGTERM
"""

import signal
import threading
from typing import Any, Dict, Optional

__all__ = ["PREEMPTED_EXIT_CODE", "StopRequests"]

# EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to
# retry". The run checkpointed and rerunning it resumes.
PREEMPTED_EXIT_CODE = 75

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """Records the first SIGTERM/SIGINT; a second one ends the process.

  Attributes:
    requested: a stop signal arrived.
    signal_name: its name (`SIGTERM` or `SIGINT`), or None.
    installed: the handlers are in place (main thread only).
  """

  def __init__(self):
    self.requested = False
    self.signal_name: Optional[str] = None
    self.installed = False
    self._previous: Dict[int, Any] = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self.requested:
      # Second signal: stop now, the way the default action would.
      self.uninstall()
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    self.requested = True
    self.signal_name = signal.Signals(signum).name

  def install(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      for s in _SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
      self.installed = True
    return self

  def uninstall(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
    self.installed = False

  def __enter__(self) -> "StopRequests":
    return self.install()

  def __exit__(self, *exc) -> None:
    self.uninstall()
