"""Convolutions: `hk.Conv1D/2D` and `hk.Conv1D/2DTranspose` with PAX signatures.

Parameters are Haiku's (`conv2_d/w`, `conv2_d/b`, ...), held as the
attributes `weight` and `bias`.
"""

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks

IntOrSeq = Union[int, Sequence[int]]
Padding = Union[str, Sequence[Tuple[int, int]]]

_FORMATS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW")}


def _extent(kernel: IntOrSeq, rate: IntOrSeq, ndim: int) -> Tuple[int, ...]:
  """The input size a kernel needs: `(k - 1) * rate + 1` per spatial dim."""
  ks = (kernel,) * ndim if isinstance(kernel, int) else kernel
  rs = (rate,) * ndim if isinstance(rate, int) else rate
  return tuple((k - 1) * r + 1 for k, r in zip(ks, rs))


class _ConvBase(haiku_bridge.HaikuModule):
  """Shared input checks and naming of the convolution layers."""

  in_features: int
  out_features: int
  kernel_shape: Union[int, Tuple[int, ...]]
  stride: Union[int, Tuple[int, ...]]
  padding: Any
  with_bias: bool
  data_format: str
  _ndim: int

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _checks.leaf_rename(name)

  def _channel_axis(self, rank: int) -> int:
    if self.data_format.endswith("C"):
      return rank - 1
    return rank - self._ndim - 1

  def __call__(self, x: jax.Array) -> jax.Array:
    shape = jnp.shape(x)
    n = self._ndim
    if len(shape) not in (n + 1, n + 2) or (
        shape[self._channel_axis(len(shape))] != self.in_features):
      layout = ", ".join(str(self.in_features) if c == "C" else c
                         for c in self.data_format)
      raise _checks.input_error(
          self, f"({layout}) (the batch dim N is optional)", x,
          f"pass {n + 2}-d inputs in {self.data_format} layout with "
          f"{self.in_features} channels (check data_format and the previous "
          "layer's output channels).")
    _checks.float_input(self, x)
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    info = {"in_features": self.in_features,
            "out_features": self.out_features,
            "kernel_shape": self.kernel_shape}
    if self.stride != 1:
      info["stride"] = self.stride
    if getattr(self, "rate", 1) != 1:
      info["rate"] = self.rate
    info["padding"] = self.padding
    if not self.with_bias:
      info["with_bias"] = False
    info["data_format"] = self.data_format
    return info


class _Conv(_ConvBase):
  """`hk.ConvND` with PAX's `(in_features, out_features, kernel_shape)`."""

  _hk_class: Any = None
  _default_format: str = ""

  rate: Union[int, Tuple[int, ...]]
  feature_group_count: int

  def __init__(self, in_features: int, out_features: int,
               kernel_shape: IntOrSeq, stride: IntOrSeq = 1,
               rate: IntOrSeq = 1, padding: Padding = "SAME",
               with_bias: bool = True,
               w_init: Optional[Callable[..., Any]] = None,
               b_init: Optional[Callable[..., Any]] = None,
               data_format: Optional[str] = None,
               feature_group_count: int = 1, *,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    layer = type(self).__name__
    n = self._ndim
    example = f"pax.{layer}(3, 16, kernel_shape=3)"
    self.in_features = _checks.positive_int(layer, "in_features", in_features,
                                            example)
    self.out_features = _checks.positive_int(layer, "out_features",
                                             out_features, example)
    self.kernel_shape = _checks.int_tuple(layer, "kernel_shape", kernel_shape,
                                          n)
    self.stride = _checks.int_tuple(layer, "stride", stride, n)
    self.rate = _checks.int_tuple(layer, "rate", rate, n)
    self.padding = _checks.padding(layer, padding, n)
    self.with_bias = bool(with_bias)
    if data_format is None:
      data_format = self._default_format
    self.data_format = _checks.one_of(layer, "data_format", data_format,
                                      _FORMATS[n])
    self.feature_group_count = _checks.positive_int(
        layer, "feature_group_count", feature_group_count,
        f"pax.{layer}(4, 8, 3, feature_group_count=2)")
    if (in_features % feature_group_count or
        out_features % feature_group_count):
      raise ValueError(
          f"pax.{layer}: in_features ({in_features}) and out_features "
          f"({out_features}) must both be divisible by feature_group_count "
          f"({feature_group_count}).")
    w_init, b_init = _checks.initializers(layer, w_init=w_init, b_init=b_init)
    fn = haiku_bridge.HaikuModuleCall(
        self._hk_class, out_features, self.kernel_shape, stride=self.stride,
        rate=self.rate, padding=self.padding, with_bias=self.with_bias,
        w_init=w_init, b_init=b_init, data_format=self.data_format,
        feature_group_count=self.feature_group_count, name=name)
    spatial = _extent(self.kernel_shape, self.rate, n)
    if self.data_format.endswith("C"):
      sample = (1,) + spatial + (in_features,)
    else:
      sample = (1, in_features) + spatial
    self._init_haiku(fn, (haiku_bridge.sample_input(sample),), {}, rng_key)


class _ConvTranspose(_ConvBase):
  """`hk.ConvNDTranspose` with PAX's `(in_features, out_features, ...)`."""

  _hk_class: Any = None
  _default_format: str = ""

  def __init__(self, in_features: int, out_features: int,
               kernel_shape: IntOrSeq, stride: IntOrSeq = 1,
               padding: Padding = "SAME", with_bias: bool = True,
               w_init: Optional[Callable[..., Any]] = None,
               b_init: Optional[Callable[..., Any]] = None,
               data_format: Optional[str] = None, *,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    layer = type(self).__name__
    n = self._ndim
    example = f"pax.{layer}(16, 3, kernel_shape=3, stride=2)"
    self.in_features = _checks.positive_int(layer, "in_features", in_features,
                                            example)
    self.out_features = _checks.positive_int(layer, "out_features",
                                             out_features, example)
    self.kernel_shape = _checks.int_tuple(layer, "kernel_shape", kernel_shape,
                                          n)
    self.stride = _checks.int_tuple(layer, "stride", stride, n)
    self.padding = _checks.padding(layer, padding, n)
    self.with_bias = bool(with_bias)
    if data_format is None:
      data_format = self._default_format
    self.data_format = _checks.one_of(layer, "data_format", data_format,
                                      _FORMATS[n])
    w_init, b_init = _checks.initializers(layer, w_init=w_init, b_init=b_init)
    fn = haiku_bridge.HaikuModuleCall(
        self._hk_class, out_features, self.kernel_shape, stride=self.stride,
        padding=self.padding, with_bias=self.with_bias, w_init=w_init,
        b_init=b_init, data_format=self.data_format, name=name)
    if self.data_format.endswith("C"):
      sample = (1,) * (n + 1) + (in_features,)
    else:
      sample = (1, in_features) + (1,) * n
    self._init_haiku(fn, (haiku_bridge.sample_input(sample),), {}, rng_key)


class Conv1D(_Conv):
  """1D convolution (`hk.Conv1D`); input `[N, W, C]` (or `NCW`).

  >>> conv = pax.Conv1D(3, 4, kernel_shape=3, stride=2)
  >>> conv.weight.shape, sorted(conv.params)
  ((3, 3, 4), ['conv1_d'])
  >>> conv(jnp.ones((2, 16, 3))).shape
  (2, 8, 4)

  Args:
    in_features: number of input channels.
    out_features: number of output channels.
    kernel_shape: kernel size, an int or a sequence of 1 int.
    stride: stride, an int or a sequence of 1 int.
    rate: dilation rate (1 is a plain convolution).
    padding: 'SAME', 'VALID', or a sequence of `(low, high)` pairs.
    with_bias: add a bias.
    w_init: weight initializer (Haiku's default: truncated normal with
      stddev 1/sqrt(fan_in)).
    b_init: bias initializer (zeros by default).
    data_format: 'NWC' (default) or 'NCW'.
    feature_group_count: number of groups of a grouped convolution.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `conv1_d`).
  """

  _hk_class = hk.Conv1D
  _default_format = "NWC"
  _ndim = 1


class Conv2D(_Conv):
  """2D convolution (`hk.Conv2D`); input `[N, H, W, C]` (or `NCHW`).

  >>> conv = pax.Conv2D(3, 4, kernel_shape=3)
  >>> conv.weight.shape, conv.bias.shape
  ((3, 3, 3, 4), (4,))
  >>> sorted(conv.params["conv2_d"])
  ['b', 'w']
  >>> conv(jnp.ones((2, 8, 8, 3))).shape
  (2, 8, 8, 4)

  Args:
    in_features: number of input channels.
    out_features: number of output channels.
    kernel_shape: kernel size, an int or a sequence of 2 ints.
    stride: stride, an int or a sequence of 2 ints.
    rate: dilation rate (1 is a plain convolution).
    padding: 'SAME', 'VALID', or a sequence of `(low, high)` pairs.
    with_bias: add a bias.
    w_init: weight initializer (Haiku's default: truncated normal with
      stddev 1/sqrt(fan_in)).
    b_init: bias initializer (zeros by default).
    data_format: 'NHWC' (default) or 'NCHW'.
    feature_group_count: number of groups of a grouped convolution.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `conv2_d`).
  """

  _hk_class = hk.Conv2D
  _default_format = "NHWC"
  _ndim = 2


class Conv1DTranspose(_ConvTranspose):
  """1D transposed convolution (`hk.Conv1DTranspose`); input `[N, W, C]`.

  >>> up = pax.Conv1DTranspose(4, 3, kernel_shape=3, stride=2)
  >>> up.weight.shape
  (3, 3, 4)
  >>> up(jnp.ones((2, 5, 4))).shape
  (2, 10, 3)

  Args:
    in_features: number of input channels.
    out_features: number of output channels.
    kernel_shape: kernel size, an int or a sequence of 1 int.
    stride: stride, an int or a sequence of 1 int.
    padding: 'SAME', 'VALID', or a sequence of `(low, high)` pairs.
    with_bias: add a bias.
    w_init: weight initializer (Haiku's default).
    b_init: bias initializer (zeros by default).
    data_format: 'NWC' (default) or 'NCW'.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `conv1_d_transpose`).
  """

  _hk_class = hk.Conv1DTranspose
  _default_format = "NWC"
  _ndim = 1


class Conv2DTranspose(_ConvTranspose):
  """2D transposed convolution (`hk.Conv2DTranspose`); input `[N, H, W, C]`.

  >>> up = pax.Conv2DTranspose(4, 3, kernel_shape=3, stride=2)
  >>> up.weight.shape
  (3, 3, 3, 4)
  >>> up(jnp.ones((1, 4, 4, 4))).shape
  (1, 8, 8, 3)

  Args:
    in_features: number of input channels.
    out_features: number of output channels.
    kernel_shape: kernel size, an int or a sequence of 2 ints.
    stride: stride, an int or a sequence of 2 ints.
    padding: 'SAME', 'VALID', or a sequence of `(low, high)` pairs.
    with_bias: add a bias.
    w_init: weight initializer (Haiku's default).
    b_init: bias initializer (zeros by default).
    data_format: 'NHWC' (default) or 'NCHW'.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `conv2_d_transpose`).
  """

  _hk_class = hk.Conv2DTranspose
  _default_format = "NHWC"
  _ndim = 2
