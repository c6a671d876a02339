"""`pax.Lambda` and `pax.Identity`: functions as (parameter-free) modules."""

from typing import Any, Callable, Dict

from pax_haiku._src import module as module_lib


class Lambda(module_lib.Module):
  """Wraps a function `f(x)` as a module with no parameters.

  >>> relu = pax.Lambda(jax.nn.relu)
  >>> relu(jnp.array(-1.0))
  Array(0., dtype=float32, weak_type=True)
  """

  func: Callable[..., Any]

  def __init__(self, func: Callable[..., Any], name: str = None):
    super().__init__(name=name)
    if not callable(func):
      raise TypeError(
          f"pax.Lambda expects a callable, got {type(func).__name__} "
          f"({func!r}).\nFix: pass the function itself, e.g. "
          "`pax.Lambda(jax.nn.relu)` or `pax.Lambda(lambda x: 2 * x)`.")
    self.func = func

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.func(*args, **kwargs)

  def __repr__(self) -> str:
    name = getattr(self.func, "__name__", repr(self.func))
    return f"Lambda({name})"


class Identity(module_lib.Module):
  """Returns its input unchanged.

  >>> pax.Identity()(jnp.ones(2))
  Array([1., 1.], dtype=float32)
  """

  def __call__(self, x: Any) -> Any:
    return x

  def _repr_info(self) -> Dict[str, Any]:
    return {}
