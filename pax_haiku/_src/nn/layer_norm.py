"""`pax.LayerNorm` (`hk.LayerNorm`) and `pax.GroupNorm` (`hk.GroupNorm`).

Parameters are Haiku's `layer_norm/scale|offset` and `group_norm/scale|offset`
(shape `[num_channels]`), held as the attributes `scale` and `offset`.
"""

from typing import Any, Callable, Dict, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks

Axis = Union[int, Sequence[int], slice]


def _normalize_axis(layer: str, axis: Any) -> Axis:
  """An int, a tuple of ints or a slice (hashable where Python allows)."""
  if isinstance(axis, slice):
    return axis
  if isinstance(axis, int) and not isinstance(axis, bool):
    return axis
  if isinstance(axis, (tuple, list)) and axis and all(
      isinstance(a, int) and not isinstance(a, bool) for a in axis):
    return tuple(axis)
  raise ValueError(
      f"pax.{layer}: axis must be an int, a sequence of ints or a slice, got "
      f"{axis!r}.\nFix: e.g. axis=-1 (the channel axis) or axis=slice(1, None).")


def _min_rank(axis: Axis) -> int:
  """The smallest input rank for which every axis in `axis` exists."""
  if isinstance(axis, slice):
    return 2
  axes = (axis,) if isinstance(axis, int) else axis
  return max([2] + [-a if a < 0 else a + 1 for a in axes])


def _check_inits(layer, create_scale, create_offset, scale_init, offset_init):
  if scale_init is not None and not create_scale:
    raise ValueError(f"pax.{layer}: scale_init needs create_scale=True.")
  if offset_init is not None and not create_offset:
    raise ValueError(f"pax.{layer}: offset_init needs create_offset=True.")


class LayerNorm(haiku_bridge.HaikuModule):
  """Layer normalization over `axis` (`hk.LayerNorm`); params on the last axis.

  >>> norm = pax.LayerNorm(8)
  >>> norm.scale.shape, norm.offset.shape
  ((8,), (8,))
  >>> y = norm(jnp.arange(16.0).reshape(2, 8))
  >>> y.shape, abs(float(y.mean())) < 1e-6
  ((2, 8), True)

  Args:
    num_channels: size of the last axis (where `scale`/`offset` live).
    axis: axes to normalize over: an int, a sequence of ints or a slice.
    create_scale: create a trainable `scale` (initialized to ones).
    create_offset: create a trainable `offset` (initialized to zeros).
    eps: added to the variance.
    scale_init: initializer of `scale`.
    offset_init: initializer of `offset`.
    use_fast_variance: compute the variance as `E[x^2] - E[x]^2`.
    name: Haiku module name (default `layer_norm`).
  """

  num_channels: int
  axis: Axis
  create_scale: bool
  create_offset: bool
  eps: float

  def __init__(self, num_channels: int, axis: Axis = -1,
               create_scale: bool = True, create_offset: bool = True,
               eps: float = 1e-5,
               scale_init: Optional[Callable[..., Any]] = None,
               offset_init: Optional[Callable[..., Any]] = None, *,
               use_fast_variance: bool = False,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.num_channels = _checks.positive_int(
        "LayerNorm", "num_channels", num_channels, "pax.LayerNorm(512)")
    self.axis = _normalize_axis("LayerNorm", axis)
    scale_init, offset_init = _checks.initializers(
        type(self).__name__, scale_init=scale_init, offset_init=offset_init)
    _check_inits("LayerNorm", create_scale, create_offset, scale_init,
                 offset_init)
    self.create_scale = bool(create_scale)
    self.create_offset = bool(create_offset)
    self.eps = float(eps)
    fn = haiku_bridge.HaikuModuleCall(
        hk.LayerNorm, self.axis, self.create_scale, self.create_offset,
        eps=self.eps, scale_init=scale_init, offset_init=offset_init,
        use_fast_variance=bool(use_fast_variance), name=name)
    rank = _min_rank(self.axis)
    sample = haiku_bridge.sample_input((1,) * (rank - 1) + (num_channels,))
    self._init_haiku(fn, (sample,), {}, None)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return name

  def __call__(self, x: jax.Array) -> jax.Array:
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != self.num_channels:
      raise _checks.input_error(
          self, f"(..., {self.num_channels})", x,
          "normalize inputs whose last axis has num_channels entries.")
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    info = {"num_channels": self.num_channels, "axis": self.axis}
    if not self.create_scale:
      info["create_scale"] = False
    if not self.create_offset:
      info["create_offset"] = False
    info["eps"] = self.eps
    return info


_GROUP_FORMATS = ("channels_last", "channels_first", "N...C", "NC...")


class GroupNorm(haiku_bridge.HaikuModule):
  """Group normalization (`hk.GroupNorm`).

  >>> norm = pax.GroupNorm(groups=2, num_channels=4)
  >>> sorted(norm.params["group_norm"])
  ['offset', 'scale']
  >>> norm(jnp.ones((1, 3, 3, 4))).shape
  (1, 3, 3, 4)

  Args:
    groups: number of channel groups; must divide `num_channels`.
    num_channels: number of channels.
    axis: axes normalized over (by default all but the batch axis).
    create_scale: create a trainable `scale` (initialized to ones).
    create_offset: create a trainable `offset` (initialized to zeros).
    eps: added to the variance.
    scale_init: initializer of `scale`.
    offset_init: initializer of `offset`.
    data_format: 'channels_last' (default, also 'N...C') or
      'channels_first' ('NC...').
    input_ndim: rank of the inputs, for channels_first only (Haiku's
      parameters are then shaped `[C, 1, ..., 1]`); default 4 (NCHW).
    name: Haiku module name (default `group_norm`).
  """

  groups: int
  num_channels: int
  axis: Axis
  create_scale: bool
  create_offset: bool
  eps: float
  data_format: str
  input_ndim: Optional[int]

  def __init__(self, groups: int, num_channels: int,
               axis: Axis = slice(1, None), create_scale: bool = True,
               create_offset: bool = True, eps: float = 1e-5,
               scale_init: Optional[Callable[..., Any]] = None,
               offset_init: Optional[Callable[..., Any]] = None,
               data_format: str = "channels_last", *,
               input_ndim: Optional[int] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    example = "pax.GroupNorm(groups=8, num_channels=64)"
    self.groups = _checks.positive_int("GroupNorm", "groups", groups, example)
    self.num_channels = _checks.positive_int("GroupNorm", "num_channels",
                                             num_channels, example)
    if num_channels % groups:
      raise ValueError(
          f"pax.GroupNorm: num_channels ({num_channels}) must be divisible "
          f"by groups ({groups}).\nFix: e.g. {example}.")
    self.axis = _normalize_axis("GroupNorm", axis)
    self.data_format = _checks.one_of("GroupNorm", "data_format", data_format,
                                      _GROUP_FORMATS)
    scale_init, offset_init = _checks.initializers(
        type(self).__name__, scale_init=scale_init, offset_init=offset_init)
    _check_inits("GroupNorm", create_scale, create_offset, scale_init,
                 offset_init)
    self.create_scale = bool(create_scale)
    self.create_offset = bool(create_offset)
    self.eps = float(eps)
    fn = haiku_bridge.HaikuModuleCall(
        hk.GroupNorm, groups, self.axis, self.create_scale,
        self.create_offset, self.eps, scale_init, offset_init,
        self.data_format, name=name)
    rank = max(3, _min_rank(self.axis))
    if input_ndim is not None:
      if self._channel_axis() == -1:
        raise ValueError(
            "pax.GroupNorm: input_ndim is only needed (and allowed) with "
            "data_format='channels_first'.")
      rank = _checks.positive_int("GroupNorm", "input_ndim", input_ndim,
                                  "input_ndim=4 for NCHW images")
    elif self._channel_axis() == 1:
      rank = max(4, rank)
    self.input_ndim = rank if self._channel_axis() == 1 else None
    sample = [1] * rank
    sample[self._channel_axis()] = num_channels
    self._init_haiku(fn, (haiku_bridge.sample_input(sample),), {}, None)

  def _channel_axis(self) -> int:
    return -1 if self.data_format in ("channels_last", "N...C") else 1

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return name

  def __call__(self, x: jax.Array) -> jax.Array:
    shape = jnp.shape(x)
    axis = self._channel_axis()
    bad_rank = (len(shape) < 2 if self.input_ndim is None else
                len(shape) != self.input_ndim)
    if bad_rank or shape[axis] != self.num_channels:
      expected = (f"(N, ..., {self.num_channels})" if axis == -1 else
                  "(N, {}{})".format(self.num_channels,
                                     ", ..." * (self.input_ndim - 2)))
      raise _checks.input_error(
          self, expected, x,
          f"pass batched inputs with {self.num_channels} channels in "
          f"{self.data_format} layout.")
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    return {"groups": self.groups, "num_channels": self.num_channels,
            "data_format": self.data_format}
