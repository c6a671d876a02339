"""`pax.Sequential`: a chain of modules (functions become `pax.Lambda`)."""

from typing import Any, Callable, Iterator, Sequence, Union

from pax_haiku._src import module as module_lib
from pax_haiku._src.nn import lambda_module


def _as_module(layer: Any) -> module_lib.Module:
  if isinstance(layer, module_lib.Module):
    return layer
  if callable(layer):
    return lambda_module.Lambda(layer)
  raise TypeError(
      f"pax.Sequential layers must be modules or functions, got "
      f"{type(layer).__name__} ({layer!r}).\nFix: pass layers as separate "
      "arguments, e.g. `pax.Sequential(pax.Linear(2, 3), jax.nn.relu, "
      "pax.Linear(3, 1))` (sizes go to the layers, not to Sequential).")


class Sequential(module_lib.Module):
  """Applies its layers in order.

  >>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
  >>> net(jnp.ones((4, 2))).shape
  (4, 1)
  >>> sorted(net.params)
  ['sequential/~/linear', 'sequential/~/linear_1']
  >>> net = net >> pax.Lambda(jax.nn.sigmoid)
  >>> len(net)
  4
  """

  layers: tuple

  def __init__(self, *layers: Union[module_lib.Module, Callable[..., Any]],
               name: str = None):
    super().__init__(name=name)
    self.layers = tuple(_as_module(l) for l in layers)

  def __call__(self, x: Any) -> Any:
    for i, layer in enumerate(self.layers):
      try:
        x = layer(x)
      except (TypeError, ValueError) as e:
        # Layers name themselves, not their place: say which one it was
        # (shown under the message in tracebacks; nested Sequentials add one
        # line each, outermost last).
        e.add_note(f"  in layer {i} of {type(self).__name__} with "
                   f"{len(self.layers)} layers: {layer!r}")
        raise
    return x

  @property
  def modules(self) -> tuple:
    """The layers (PAX's name for them).

    >>> pax.Sequential(pax.Linear(2, 2)).modules == (pax.Sequential(
    ...     pax.Linear(2, 2)).layers)
    False
    >>> len(pax.Sequential(pax.Linear(2, 2), jax.nn.relu).modules)
    2
    """
    return self.layers

  def replace(self, **kwargs: Any) -> "Sequential":
    """`Module.replace`; PAX's `modules=` means `layers=`."""
    if "modules" in kwargs:
      if "layers" in kwargs:
        raise ValueError("Sequential.replace: pass `layers=` or `modules=` "
                         "(the same attribute), not both.")
      kwargs["layers"] = tuple(_as_module(l) for l in kwargs.pop("modules"))
    return super().replace(**kwargs)

  def __getitem__(self, index: Union[int, slice]) -> Any:
    if isinstance(index, slice):
      return Sequential(*self.layers[index])
    return self.layers[index]

  def __len__(self) -> int:
    return len(self.layers)

  def __iter__(self) -> Iterator[module_lib.Module]:
    return iter(self.layers)

  def set(self, index: int, layer: Any) -> "Sequential":
    """A copy with layer `index` replaced."""
    layers = list(self.layers)
    layers[index] = _as_module(layer)
    return self.replace(layers=tuple(layers))

  def __rshift__(self, other: Any) -> "Sequential":
    if isinstance(other, Sequential):
      return Sequential(*self.layers, *other.layers)
    return Sequential(*self.layers, other)
