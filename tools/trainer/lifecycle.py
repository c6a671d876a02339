"""A training run's life: one writer per workdir, graceful preemption,
divergence stops, config changes on resume, room for checkpoints.

`RunGuard` bundles the pieces for `train_lib.train_and_evaluate`:

* entering it takes the workdir's lock (`workdir_lock`; process 0 holds it
  for a multi-process job, whose other processes fail with it) and turns
  SIGTERM / SIGINT into a stop request (`preemption`);
* `check_config` refuses a resumed run whose config changes the
  optimization unless allowed (`resume_config`); `record_config` writes
  `config.json` (keeping a replaced one);
* `preflight` checks the checkpoint directory before the first step
  (`storage_checks`);
* `stop_requested` says, the same on every process, whether to checkpoint
  and stop (raise `Preempted`, exit code `PREEMPTED_EXIT_CODE`);
* `saved` / `pinned` track the checkpoint with the lowest training loss,
  which rotation must keep;
* `check_divergence` raises `DivergedError` (`NonFiniteLossError` for
  NaN/Inf) before a diverged state is saved, after moving checkpoints newer
  than the pinned one aside (renamed, never deleted), so that rerunning
  resumes from the pinned one. Its message says how to rerun.
"""

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from tools.trainer import checkpoint
from tools.trainer import divergence
from tools.trainer import preemption
from tools.trainer import resume_config
from tools.trainer import storage_checks
from tools.trainer import workdir_lock

__all__ = ["DIVERGED_PREFIX", "DivergedError", "NonFiniteLossError",
           "PREEMPTED_EXIT_CODE", "Preempted", "RunGuard"]

PREEMPTED_EXIT_CODE = preemption.PREEMPTED_EXIT_CODE
# Checkpoints written after the pinned one when a run diverged are renamed
# `<DIVERGED_PREFIX><step>` in the checkpoint directory.
DIVERGED_PREFIX = "diverged_step_"


class DivergedError(FloatingPointError):
  """Training diverged; the pinned checkpoint is what a rerun resumes."""


class NonFiniteLossError(DivergedError):
  """Training produced a NaN/Inf loss or gradient norm."""


class Preempted(Exception):
  """A stop signal arrived; a checkpoint of `step` was written."""

  def __init__(self, step: int, signal_name: str):
    super().__init__(f"preempted at step {step} ({signal_name}); the "
                     f"checkpoint of step {step} is written, rerun the same "
                     "command to resume.")
    self.step = step
    self.signal_name = signal_name


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(np.asarray(
      multihost_utils.process_allgather(np.int32(flag))).max())


class RunGuard:
  """See the module docstring.

  Args:
    workdir: the run's directory.
    ckpt_dir: its checkpoint directory.
    config: the run's config (reads `learning_rate`, `grad_clip`,
      `keep_checkpoints` and the `divergence_*` keys).
    allow_config_change: resume even if the config changes the optimization.
  """

  def __init__(self, workdir: str, ckpt_dir: str, config: Any,
               allow_config_change: bool = False):
    self.workdir = workdir
    self.ckpt_dir = ckpt_dir
    self.config = config
    self.allow_config_change = allow_config_change
    self.is_chief = jax.process_index() == 0
    self.guard = divergence.DivergenceGuard(
        factor=config.divergence_factor, window=config.divergence_window,
        warmup=config.divergence_warmup)
    self._lock = workdir_lock.WorkdirLock(workdir)
    self._on_exit: List[Callable[[], None]] = []
    self._diffs: List[resume_config.Difference] = []
    self._stop = preemption.StopRequests()
    # Step -> training loss of the checkpoints this guard knows of.
    self._losses: Dict[int, float] = {}

  # -- start and end ---------------------------------------------------------

  def __enter__(self) -> "RunGuard":
    # Before the lock: a signal that finds the lock taken finds the handler.
    self._stop.install()
    try:
      self._take_lock()
    except BaseException:
      self._stop.uninstall()
      raise
    return self

  def _take_lock(self) -> None:
    error = None
    if self.is_chief:
      try:
        self._lock.acquire()
      except ValueError as e:
        error = e
    if _any_process(error is not None):
      raise error or workdir_lock.WorkdirLockedError(
          f"Process 0 could not lock the workdir {self.workdir} (see its "
          "error).\nFix: wait for the other run to finish, or pass another "
          "--workdir.")

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      for fn in reversed(self._on_exit):
        try:
          fn()
        except Exception:  # pylint: disable=broad-except
          if exc is None:
            raise
          # The error that ended the run is the one to report.
          logging.exception("While stopping after an error:")
    finally:
      self._stop.uninstall()
      self._lock.release()

  def on_exit(self, fn: Callable[[], None]) -> None:
    """Calls `fn` when the run ends, however it ends (e.g. to finish a
    background checkpoint save)."""
    self._on_exit.append(fn)

  def check_config(self, config_dict: Mapping[str, Any]) -> None:
    """Before restoring: refuses a config that changes the optimization of
    the workdir's checkpoints (unless allowed)."""
    step = checkpoint.latest_step(self.ckpt_dir)
    self._diffs = [] if step is None else resume_config.check(
        resume_config.load(self.workdir), config_dict, step,
        self.allow_config_change)

  def record_config(self, restored_step: Optional[int],
                    config_dict: Mapping[str, Any]) -> None:
    """After restoring: says what changed and writes `config.json`."""
    diffs = self._diffs if restored_step is not None else []
    if diffs and self.is_chief:
      print(f"Resuming step {restored_step} with config changes: " +
            "; ".join(str(d) for d in diffs) + ".", flush=True)
    if self.is_chief:
      resume_config.record(self.workdir, dict(config_dict),
                           restored_step or 0,
                           bool(resume_config.refused(diffs)))

  def preflight(self, tree: Any) -> None:
    if self.is_chief:
      # The newest `keep`, the pinned one and the one being written.
      storage_checks.preflight(self.ckpt_dir, tree,
                               self.config.keep_checkpoints + 1)

  # -- during training ------------------------------------------------------

  def stop_requested(self) -> bool:
    """Whether any process got a stop signal (the same on all)."""
    return _any_process(self._stop.requested)

  @property
  def signal_name(self) -> str:
    return self._stop.signal_name or "a stop signal on another process"

  def saved(self, step: int, loss: float) -> None:
    """Records that checkpoint `step` holds a state of training `loss`."""
    self._losses[step] = loss

  def pinned(self) -> Optional[int]:
    """The known checkpoint with the lowest training loss (rotation keeps
    it), or None."""
    alive = set(checkpoint.checkpoint_steps(self.ckpt_dir)) | {
        max(self._losses, default=-1)}
    known = [(loss, -step) for step, loss in self._losses.items()
             if step in alive and math.isfinite(loss)]
    return -min(known)[1] if known else None

  def check_divergence(self, first: int, last: int, loss: float,
                       grad_norm: Optional[float] = None,
                       before_stop: Callable[[], None] = lambda: None
                       ) -> None:
    """Raises `DivergedError` if steps `first..last` diverged.

    Args:
      first: the chunk's first step.
      last: its last step.
      loss: its training loss.
      grad_norm: its gradient norm, if the step reports one.
      before_stop: called first when it diverged (e.g. to finish a
        background save, so that the checkpoints on disk are final).
    """
    reason = self.guard.check(loss, grad_norm)
    if reason is None:
      return
    before_stop()
    pinned = self.pinned()
    steps = checkpoint.checkpoint_steps(self.ckpt_dir)
    if pinned is None and steps:
      pinned = steps[-1]
    moved = self._move_aside([s for s in steps
                              if pinned is not None and s > pinned])
    lr = self.config.learning_rate
    fix = [f"--config.learning_rate={lr / 10:g}"]
    if self.config.grad_clip > 1.0:
      fix.append("--config.grad_clip=1.0")
    if pinned is not None:
      kept = (f"The checkpoint of step {pinned} (the lowest training loss "
              f"saved) is kept in {self.ckpt_dir}" +
              (f"; the later ones were renamed {DIVERGED_PREFIX}<step>: "
               f"{', '.join(map(str, moved))}" if moved else "") + ".")
      fix.append("--allow_config_change")
      how = f"rerun with {' '.join(fix)} to resume from step {pinned}"
    else:
      kept = "No checkpoint had been written yet, so nothing was saved."
      how = f"rerun with {' '.join(fix)}"
    cls = (DivergedError if math.isfinite(loss) and (
        grad_norm is None or math.isfinite(grad_norm)) else
           NonFiniteLossError)
    lead = (f"Training loss became {loss:g} in steps {first}..{last}"
            if not math.isfinite(loss) else
            f"Training diverged in steps {first}..{last}: {reason}")
    raise cls(f"{lead}. {kept}\nFix: lower `learning_rate` (now {lr:g}): "
              f"{how}.")

  def _move_aside(self, steps: List[int]) -> List[int]:
    if not self.is_chief:
      return steps
    for step in steps:
      target = os.path.join(self.ckpt_dir, f"{DIVERGED_PREFIX}{step}")
      n = 0
      while os.path.exists(target):
        n += 1
        target = os.path.join(self.ckpt_dir, f"{DIVERGED_PREFIX}{step}.{n}")
      os.rename(checkpoint.checkpoint_path(self.ckpt_dir, step), target)
    return steps
