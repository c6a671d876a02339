"""PAX's module kinds: `ParameterModule`, `StateModule`, `LazyModule`."""

from typing import Any, Callable, TypeVar

from pax_haiku._src import module as module_lib

T = TypeVar("T")


class _AllFields(tuple):
  """A `_pax_trainable` that names every attribute."""
  __slots__ = ()

  def __contains__(self, name: Any) -> bool:
    return True


class ParameterModule(module_lib.Module):
  """A module whose own array attributes are all trainable parameters.

  Submodules keep their own kinds (a `StateModule` inside stays state).

  >>> class Scale(pax.ParameterModule):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.s = jnp.ones(3)
  >>> len(jax.tree_util.tree_leaves(Scale().parameters()))
  1
  """
  __slots__ = ()
  _pax_trainable = _AllFields()


class StateModule(module_lib.Module):
  """A module whose own array attributes are all non-trainable state.

  Its submodules' parameters stay trainable.

  >>> class Counter(pax.StateModule):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.count = jnp.array(0)
  >>> jax.tree_util.tree_leaves(Counter().parameters())
  []
  """
  __slots__ = ()
  parameters = module_lib.parameters_method()


class LazyModule(module_lib.Module):
  """A module that creates its submodules on first use (PAX's LazyModule).

  Call it through `pax.purecall`/`pax.module_and_value` the first time, so
  the created submodules are kept.

  >>> class MLP(pax.experimental.LazyModule):
  ...     def __call__(self, x):
  ...         fc = self.get_or_create("fc", lambda: pax.Linear(x.shape[-1], 2))
  ...         return fc(x)
  >>> mlp, y = pax.purecall(MLP(), jnp.ones((1, 3)))
  >>> mlp.fc, y.shape
  (Linear(in_dim=3, out_dim=2, with_bias=True), (1, 2))
  """
  __slots__ = ()

  def get_or_create(self, name: str, create_fn: Callable[[], T]) -> T:
    """Returns attribute `name`, first setting it to `create_fn()` if absent.

    Args:
      name: the attribute name.
      create_fn: a function without arguments that creates the value.

    Returns:
      The attribute's value.
    """
    if not isinstance(name, str):
      raise TypeError(f"get_or_create expects an attribute name (str), got "
                      f"{type(name).__name__}.")
    if hasattr(self, name):
      return getattr(self, name)
    if not callable(create_fn):
      raise TypeError(
          f"get_or_create('{name}', create_fn): create_fn must be a function "
          f"that creates the value, got {type(create_fn).__name__}.\nFix: "
          f"`self.get_or_create('{name}', lambda: pax.Linear(2, 2))`.")
    value = create_fn()
    setattr(self, name, value)
    return value
