"""`pax.BatchNorm1D` / `pax.BatchNorm2D`: `hk.BatchNorm` with PAX signatures.

Trainable `scale`/`offset` are Haiku's `batch_norm/scale|offset`; the moving
averages are Haiku's state `batch_norm/~/mean_ema` and `batch_norm/~/var_ema`
(attributes `mean_ema_average`, `mean_ema_hidden`, `mean_ema_counter`, ...).
In training mode (the default) a call normalizes with the batch statistics and
updates the moving averages, so it must run inside `pax.purecall`/`pax.pure`;
after `.eval()` it normalizes with the moving averages and changes nothing.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src import haiku_naming
from pax_haiku._src.nn import _checks


@dataclasses.dataclass(frozen=True)
class EMAView:
  """A read-only view of one of `hk.BatchNorm`'s moving averages.

  PAX's BatchNorm holds its statistics in `pax.EMA` submodules
  (`bn.ema_mean.averages`, `bn.ema_var.averages`); here they are Haiku's
  state `mean_ema` / `var_ema`, shown through this view. Haiku's averages
  are zero-debiased (`average = hidden / (1 - decay_rate ** counter)`), PAX's
  replace the initial value by the first batch's statistics; the two agree
  after the first update and differ slightly after the following ones.

  Attributes:
    averages: the debiased moving average (shape of `scale`).
    hidden: Haiku's raw (biased) accumulator.
    counter: number of updates so far.
    decay_rate: the decay.
  """
  averages: Any
  hidden: Any
  counter: Any
  decay_rate: float


class _BatchNorm(haiku_bridge.HaikuModule):
  """`hk.BatchNorm` over all axes but the channel axis."""

  _formats: tuple = ()
  _rank: int = 0

  num_channels: int
  create_scale: bool
  create_offset: bool
  decay_rate: float
  eps: float
  data_format: str

  def __init__(self, num_channels: int, create_scale: bool = True,
               create_offset: bool = True, decay_rate: float = 0.9,
               eps: float = 1e-5, data_format: Optional[str] = None, *,
               scale_init: Optional[Callable[..., Any]] = None,
               offset_init: Optional[Callable[..., Any]] = None,
               cross_replica_axis: Optional[str] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    layer = type(self).__name__
    self.num_channels = _checks.positive_int(
        layer, "num_channels", num_channels, f"pax.{layer}(32)")
    if data_format is None:
      data_format = self._formats[0]
    self.data_format = _checks.one_of(layer, "data_format", data_format,
                                      self._formats)
    if isinstance(decay_rate, bool) or not isinstance(
        decay_rate, (int, float)) or not 0.0 <= decay_rate <= 1.0:
      raise _checks.PaxArgumentError(
          f"pax.{layer}: decay_rate must be a float in [0, 1], got "
          f"{decay_rate!r}.\nFix: e.g. decay_rate=0.9.")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
      raise ValueError(f"pax.{layer}: eps must be a non-negative float, got "
                       f"{eps!r}.")
    if scale_init is not None and not create_scale:
      raise ValueError(f"pax.{layer}: scale_init needs create_scale=True.")
    if offset_init is not None and not create_offset:
      raise ValueError(f"pax.{layer}: offset_init needs create_offset=True.")
    self.create_scale = bool(create_scale)
    self.create_offset = bool(create_offset)
    self.decay_rate = float(decay_rate)
    self.eps = float(eps)
    channels_last = self.data_format.endswith("C")
    scale_init, offset_init = _checks.initializers(
        layer, scale_init=scale_init, offset_init=offset_init)
    fn = haiku_bridge.HaikuModuleCall(
        hk.BatchNorm, self.create_scale, self.create_offset, self.decay_rate,
        eps=self.eps, scale_init=scale_init, offset_init=offset_init,
        cross_replica_axis=cross_replica_axis,
        data_format="channels_last" if channels_last else "channels_first",
        name=name)
    sample = [1] * self._rank
    sample[-1 if channels_last else 1] = num_channels
    # Like Haiku code, parameters are created in training mode (Haiku cannot
    # create the moving averages in test mode).
    self._init_haiku(fn, (haiku_bridge.sample_input(sample),),
                     {"is_training": True}, None)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    if role == haiku_naming.STATE:
      return f"{bundle.rsplit('/', 1)[-1]}_{name}"
    return name

  def _ema_view(self, which: str) -> EMAView:
    d = self.__dict__
    return EMAView(d[f"{which}_average"], d[f"{which}_hidden"],
                   d[f"{which}_counter"], self.decay_rate)

  @property
  def ema_mean(self) -> EMAView:
    """PAX's `bn.ema_mean` (read-only): `.averages` is the moving mean."""
    return self._ema_view("mean_ema")

  @property
  def ema_var(self) -> EMAView:
    """PAX's `bn.ema_var` (read-only): `.averages` is the moving variance."""
    return self._ema_view("var_ema")

  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalizes `x` (batch statistics in training mode, averages in eval)."""
    shape = jnp.shape(x)
    axis = -1 if self.data_format.endswith("C") else 1
    if len(shape) != self._rank or shape[axis] != self.num_channels:
      layout = ", ".join(str(self.num_channels) if c == "C" else c
                         for c in self.data_format)
      raise _checks.input_error(
          self, f"({layout})", x,
          f"pass {self._rank}-d inputs in {self.data_format} layout with "
          f"{self.num_channels} channels" + (
              "; for (N, C) features use `x[:, None, :]` or pax.LayerNorm."
              if self._rank == 3 else "."))
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    info = {"num_channels": self.num_channels}
    if not self.create_scale:
      info["create_scale"] = False
    if not self.create_offset:
      info["create_offset"] = False
    info["decay_rate"] = self.decay_rate
    info["eps"] = self.eps
    info["data_format"] = self.data_format
    return info


class BatchNorm1D(_BatchNorm):
  """Batch normalization of `[N, W, C]` (or `NCW`) inputs (`hk.BatchNorm`).

  >>> bn = pax.BatchNorm1D(3)
  >>> sorted(bn.params["batch_norm"]), sorted(bn.state)
  (['offset', 'scale'], ['batch_norm/~/mean_ema', 'batch_norm/~/var_ema'])
  >>> x = jnp.arange(12.0).reshape(2, 2, 3)
  >>> bn, y = pax.purecall(bn, x)  # Training mode: updates the averages.
  >>> y.shape, int(bn.mean_ema_counter)
  ((2, 2, 3), 1)
  >>> bn.eval()(x).shape  # Eval mode: uses the averages, changes nothing.
  (2, 2, 3)

  Args:
    num_channels: number of channels C.
    create_scale: create a trainable `scale`.
    create_offset: create a trainable `offset`.
    decay_rate: decay of the moving averages.
    eps: added to the variance.
    data_format: 'NWC' (default) or 'NCW'.
    scale_init: initializer of `scale` (ones by default).
    offset_init: initializer of `offset` (zeros by default).
    cross_replica_axis: axis name to average batch statistics over (pmap).
    name: Haiku module name (default `batch_norm`).
  """

  _formats = ("NWC", "NCW")
  _rank = 3


class BatchNorm2D(_BatchNorm):
  """Batch normalization of `[N, H, W, C]` (or `NCHW`) inputs (`hk.BatchNorm`).

  >>> bn = pax.BatchNorm2D(3)
  >>> bn.scale.shape
  (1, 1, 1, 3)
  >>> bn, y = pax.purecall(bn, jnp.ones((2, 4, 4, 3)))
  >>> y.shape
  (2, 4, 4, 3)

  Args:
    num_channels: number of channels C.
    create_scale: create a trainable `scale`.
    create_offset: create a trainable `offset`.
    decay_rate: decay of the moving averages.
    eps: added to the variance.
    data_format: 'NHWC' (default) or 'NCHW'.
    scale_init: initializer of `scale` (ones by default).
    offset_init: initializer of `offset` (zeros by default).
    cross_replica_axis: axis name to average batch statistics over (pmap).
    name: Haiku module name (default `batch_norm`).
  """

  _formats = ("NHWC", "NCHW")
  _rank = 4
