"""Stops a diverging run before its weights reach a checkpoint.

NaN is not the only way a run diverges: a loss of 1e33 is finite, and a
keep-N rotation would replace every good checkpoint with diverged ones.
`DivergenceGuard.check` is called with each chunk's training loss (and
gradient norm, when the step reports it) and returns a reason when

* the loss or gradient norm is not finite, or
* after `warmup` chunks, the loss exceeds `factor` x the (positive) median
  of the last `window` accepted losses.

Accepted losses only feed the median, so a slow blow-up can't drag the
reference up with it.

>>> guard = DivergenceGuard(factor=10.0, window=5, warmup=2)
>>> [guard.check(loss) for loss in (2.0, 1.5, 1.2, 1.1)]
[None, None, None, None]
>>> guard.check(30.0)
'loss 30 is above 10 x the running median 1.35 of the last 4 chunks'
>>> guard.check(float("nan"))
'loss nan is not finite'
"""

import collections
import math
import statistics
from typing import Deque, Optional

__all__ = ["DivergenceGuard"]


class DivergenceGuard:
  """Flags a diverging loss (see the module docstring).

  Args:
    factor: a loss above `factor` x the running median diverged; 0 checks
      only for non-finite values.
    window: how many recent accepted chunk losses the median covers.
    warmup: chunks accepted before the factor test starts (early losses
      fall fast and are noisy).
  """

  def __init__(self, factor: float, window: int = 20, warmup: int = 5):
    if factor < 0 or (0 < factor <= 1):
      raise ValueError(
          f"divergence factor must be 0 (off) or > 1, got {factor!r}.\n"
          "Fix: e.g. `--config.divergence_factor=10`.")
    self.factor = factor
    self.warmup = warmup
    self._losses: Deque[float] = collections.deque(maxlen=max(1, window))
    self._seen = 0

  def check(self, loss: float,
            grad_norm: Optional[float] = None) -> Optional[str]:
    """None if `loss` looks healthy (and records it), else the reason."""
    if not math.isfinite(loss):
      return f"loss {loss:g} is not finite"
    if grad_norm is not None and not math.isfinite(grad_norm):
      return f"gradient norm {grad_norm:g} is not finite"
    if self.factor and self._seen >= self.warmup and self._losses:
      median = statistics.median(self._losses)
      # A ratio test needs a positive reference (cross-entropy is >= 0).
      if median > 0 and loss > self.factor * median:
        return (f"loss {loss:g} is above {self.factor:g} x the running "
                f"median {median:g} of the last {len(self._losses)} chunks")
    self._losses.append(loss)
    self._seen += 1
    return None
