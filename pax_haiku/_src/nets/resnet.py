"""`pax.nets.ResNet*`: Haiku's `hk.nets.ResNet*` as pax modules.

Parameter and state names are Haiku's (`res_net18/~/initial_conv/w`,
`res_net18/~/block_group_0/~/block_0/~/batchnorm_0/~/mean_ema/average`, ...),
so a checkpoint of `hk.nets.ResNet18` loads with
`net.update_parameters(params).update_state(state)`. Leaves are held under
their Haiku names below the net's scope, e.g. `initial_conv/w`. The nets
contain BatchNorm: in training mode (the default) a call updates the moving
averages and must run inside `pax.purecall`/`pax.pure`; use `.eval()` for
inference.
"""

from typing import Any, Dict, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nets import _common
from pax_haiku._src.nn import _checks

_SAMPLE_SIZE = 32  # Spatial size of the sample image used to create params.
_FORMATS = ("NHWC", "NCHW")
_PADDINGS = ("SAME", "pax")


def _pax_padding(next_f, args, kwargs, context):
  """`hk.intercept_methods` interceptor giving a v1 ResNet PAX's padding.

  PAX's ResNet pads every convolution by `(k - 1) // 2` on both sides and
  zero-pads by 1 before a VALID 3x3/2 max pool; Haiku pads 'SAME', which
  is the same on odd sizes but pads `(k // 2 - 1, k // 2)`-style on even
  ones. Parameters are unchanged.
  """
  module = context.module
  if context.method_name == "__call__":
    if isinstance(module, hk.Conv2D) and module.padding == "SAME":
      saved = module.padding
      module.padding = tuple(((k - 1) // 2,) * 2 for k in module.kernel_shape)
      try:
        return next_f(*args, **kwargs)
      finally:
        module.padding = saved
    if isinstance(module, hk.nets.ResNet):
      return _pax_forward(module, *args, **kwargs)
  return next_f(*args, **kwargs)


def _pax_forward(net: hk.nets.ResNet, inputs: jax.Array, is_training: bool,
                 test_local_stats: bool = False) -> jax.Array:
  """A v1 ResNet's forward pass with PAX's max-pool padding."""
  out = net.initial_conv(inputs)
  out = jax.nn.relu(net.initial_batchnorm(out, is_training, test_local_stats))
  out = jnp.pad(out, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = hk.max_pool(out, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1),
                    padding="VALID")
  for block_group in net.block_groups:
    out = block_group(out, is_training, test_local_stats)
  return net.logits(jnp.mean(out, axis=(1, 2)))


class _PaxPaddedCall(haiku_bridge.HaikuModuleCall):
  """The Haiku ResNet under `_pax_padding` (same parameters)."""

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    with hk.intercept_methods(_pax_padding):
      return super().__call__(*args, **kwargs)

  def _key(self):
    return super()._key() + ("pax_padding",)


def _config(arg: str, value: Optional[Mapping[str, Any]]
            ) -> Optional[Dict[str, Any]]:
  if value is None:
    return None
  if not isinstance(value, Mapping):
    raise TypeError(f"pax.nets.ResNet: {arg} must be a dict of keyword "
                    f"arguments, got {type(value).__name__}.")
  return dict(value)


class ResNet(haiku_bridge.HaikuModule):
  """A ResNet (`hk.nets.ResNet`) for NHWC images; see `ResNet18` etc.

  >>> make = lambda: pax.nets.ResNet(
  ...     3, 10, blocks_per_group=(1, 1, 1, 1),
  ...     channels_per_group=(8, 16, 32, 64),
  ...     initial_conv_config={"output_channels": 8})
  >>> net = jax.eval_shape(make)  # Shapes only: nothing is computed.
  >>> jax.eval_shape(lambda n, x: n.eval()(x), net, jnp.ones((2, 32, 32, 3)))
  ShapeDtypeStruct(shape=(2, 10), dtype=float32)

  Args:
    input_channels: channels of the input images.
    num_classes: number of logits.
    blocks_per_group: blocks in each of the 4 groups.
    bottleneck: use bottleneck blocks.
    channels_per_group: channels of each group.
    use_projection: projection shortcut per group.
    logits_config: keyword arguments of the logits `hk.Linear`.
    initial_conv_config: keyword arguments of the initial `hk.Conv2D`.
    bn_config: keyword arguments of the `hk.BatchNorm`s (decay_rate, eps...).
    resnet_v2: use ResNet v2 (pre-activation) blocks.
    strides: stride of each group.
    data_format: 'NHWC' (default, Haiku's) or 'NCHW' (PAX's ResNet input;
      images are transposed to NHWC before the Haiku net).
    padding: 'SAME' (default, Haiku's) or 'pax': PAX's explicit padding
      (`(k - 1) // 2` per side of every conv, zero pad + VALID max pool).
      The two differ where a stride-2 layer sees an even size; use
      `data_format="NCHW", padding="pax"` to reproduce a PAX ResNet's
      outputs with its weights (v1 only).
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default from the Haiku class, e.g. `res_net`).
  """

  input_channels: int
  num_classes: int
  data_format: str = "NHWC"
  padding: str = "SAME"

  def __init__(self, input_channels: int, num_classes: int,
               blocks_per_group: Sequence[int] = (2, 2, 2, 2),
               bottleneck: bool = False,
               channels_per_group: Sequence[int] = (64, 128, 256, 512),
               use_projection: Sequence[bool] = (False, True, True, True),
               logits_config: Optional[Mapping[str, Any]] = None,
               initial_conv_config: Optional[Mapping[str, Any]] = None, *,
               bn_config: Optional[Mapping[str, Any]] = None,
               resnet_v2: bool = False,
               strides: Sequence[int] = (1, 2, 2, 2),
               data_format: str = "NHWC", padding: str = "SAME",
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._set_layout(data_format, padding, resnet_v2)
    self._build(
        input_channels, num_classes, rng_key, hk.nets.ResNet,
        blocks_per_group=tuple(blocks_per_group), bottleneck=bool(bottleneck),
        channels_per_group=tuple(channels_per_group),
        use_projection=tuple(use_projection), logits_config=logits_config,
        initial_conv_config=initial_conv_config, bn_config=bn_config,
        resnet_v2=resnet_v2, strides=strides, name=name)

  def _set_layout(self, data_format: str, padding: str,
                  resnet_v2: bool) -> None:
    layer = f"nets.{type(self).__name__}"
    self.data_format = _checks.one_of(layer, "data_format", data_format,
                                      _FORMATS)
    self.padding = _checks.one_of(layer, "padding", padding, _PADDINGS)
    if padding == "pax" and resnet_v2:
      raise ValueError(f"pax.{layer}: padding='pax' is for v1 ResNets (PAX "
                       "has no v2); pass resnet_v2=False.")

  def _build(self, input_channels: int, num_classes: int,
             rng_key: Optional[jax.Array], hk_class: type,
             **kwargs: Any) -> None:
    layer = f"nets.{type(self).__name__}"
    example = f"pax.{layer}(input_channels=3, num_classes=10)"
    self.input_channels = _checks.positive_int(layer, "input_channels",
                                               input_channels, example)
    self.num_classes = _checks.positive_int(layer, "num_classes", num_classes,
                                            example)
    for arg in ("logits_config", "initial_conv_config", "bn_config"):
      kwargs[arg] = _config(arg, kwargs[arg])
    for arg in ("logits_config", "initial_conv_config"):
      for init in ("w_init", "b_init"):
        if kwargs[arg] and init in kwargs[arg]:  # PAX's or Haiku's form.
          kwargs[arg][init] = _checks.initializer(layer, f"{arg}[{init!r}]",
                                                  kwargs[arg][init])
    kwargs["strides"] = tuple(kwargs["strides"])
    kwargs["resnet_v2"] = bool(kwargs["resnet_v2"])
    call = (_PaxPaddedCall if self.padding == "pax" else
            haiku_bridge.HaikuModuleCall)
    fn = call(hk_class, num_classes=num_classes, **kwargs)
    x = haiku_bridge.sample_input(
        (1, _SAMPLE_SIZE, _SAMPLE_SIZE, input_channels))
    self._init_haiku(fn, (x,), {"is_training": True}, rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _common.relative_attr(bundle, name)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits `[N, num_classes]` of images `x` (NHWC, or NCHW if chosen)."""
    axis = 1 if self.data_format == "NCHW" else -1
    if jnp.ndim(x) != 4 or jnp.shape(x)[axis] != self.input_channels:
      layout = ("(N, {}, H, W)" if axis == 1 else "(N, H, W, {})").format(
          self.input_channels)
      raise _checks.input_error(
          self, layout, x,
          f"pass a batch of {self.data_format} images with input_channels "
          "channels.")
    if axis == 1:
      x = jnp.transpose(x, (0, 2, 3, 1))
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    info = {"input_channels": self.input_channels,
            "num_classes": self.num_classes}
    if self.data_format != "NHWC":
      info["data_format"] = self.data_format
    if self.padding != "SAME":
      info["padding"] = self.padding
    return info


class _PresetResNet(ResNet):
  """A `hk.nets.ResNet{depth}` preset with PAX's signature and defaults.

  As in PAX, the presets take NCHW images and pad like PAX
  (`data_format="NCHW", padding="pax"`); pass `data_format="NHWC",
  padding="SAME"` for exactly the Haiku preset (same parameters either way).
  The generic `pax.nets.ResNet` defaults to Haiku's NHWC/'SAME'.
  """

  _hk_class: type

  def __init__(self, input_channels: int, num_classes: int,
               logits_config: Optional[Mapping[str, Any]] = None,
               initial_conv_config: Optional[Mapping[str, Any]] = None, *,
               bn_config: Optional[Mapping[str, Any]] = None,
               resnet_v2: bool = False,
               strides: Sequence[int] = (1, 2, 2, 2),
               data_format: str = "NCHW", padding: str = "pax",
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    """Builds the preset; parameters are Haiku's `res_net{depth}/~/...`.

    Args:
      input_channels: channels of the input images.
      num_classes: number of logits.
      logits_config: keyword arguments of the logits `hk.Linear`.
      initial_conv_config: keyword arguments of the initial `hk.Conv2D`.
      bn_config: keyword arguments of the `hk.BatchNorm`s (decay_rate,
        eps...).
      resnet_v2: use ResNet v2 (pre-activation) blocks.
      strides: stride of each group.
      data_format: 'NCHW' (default, PAX's input layout) or 'NHWC' (Haiku's).
      padding: 'pax' (default, PAX's explicit padding) or 'SAME' (Haiku's).
      rng_key: key for initialization (default: `pax.next_rng_key()`).
      name: Haiku module name (default `res_net{depth}`).
    """
    super(ResNet, self).__init__(name=name)  # pylint: disable=bad-super-call
    self._set_layout(data_format, padding, resnet_v2)
    self._build(input_channels, num_classes, rng_key, self._hk_class,
                logits_config=logits_config,
                initial_conv_config=initial_conv_config, bn_config=bn_config,
                resnet_v2=resnet_v2, strides=strides, name=name)


class ResNet18(_PresetResNet):
  """ResNet18 (`hk.nets.ResNet18`) with PAX's defaults (NCHW images).

  >>> net = jax.eval_shape(lambda: pax.nets.ResNet18(3, 10))  # Shapes.
  >>> net.params["res_net18/~/logits"]["w"].shape
  (512, 10)
  >>> jax.eval_shape(lambda n, x: n.eval()(x), net, jnp.ones((2, 3, 32, 32)))
  ShapeDtypeStruct(shape=(2, 10), dtype=float32)
  """
  _hk_class = hk.nets.ResNet18


# Tracing the deeper nets takes seconds: their examples only check the class.
class ResNet34(_PresetResNet):
  """ResNet34 (`hk.nets.ResNet34`) with PAX's defaults (NCHW images).

  >>> issubclass(pax.nets.ResNet34, pax.nets.ResNet)
  True
  """
  _hk_class = hk.nets.ResNet34


class ResNet50(_PresetResNet):
  """ResNet50 (`hk.nets.ResNet50`) with PAX's defaults (NCHW images).

  >>> issubclass(pax.nets.ResNet50, pax.nets.ResNet)
  True
  """
  _hk_class = hk.nets.ResNet50


class ResNet101(_PresetResNet):
  """ResNet101 (`hk.nets.ResNet101`) with PAX's defaults (NCHW images).

  >>> issubclass(pax.nets.ResNet101, pax.nets.ResNet)
  True
  """
  _hk_class = hk.nets.ResNet101


class ResNet152(_PresetResNet):
  """ResNet152 (`hk.nets.ResNet152`) with PAX's defaults (NCHW images).

  >>> issubclass(pax.nets.ResNet152, pax.nets.ResNet)
  True
  """
  _hk_class = hk.nets.ResNet152


class ResNet200(_PresetResNet):
  """ResNet200 (`hk.nets.ResNet200`) with PAX's defaults (NCHW images).

  >>> issubclass(pax.nets.ResNet200, pax.nets.ResNet)
  True
  """
  _hk_class = hk.nets.ResNet200
