"""`pure`, `purecall`, `module_and_value`: the only ways to mutate modules."""

import functools
import types
from typing import Any, Callable, Tuple, TypeVar

import jax

from pax_haiku._src import context
from pax_haiku._src import module_base

O = TypeVar("O")
M = TypeVar("M", bound=module_base.BaseModule)


def pure(func: Callable[..., O]) -> Callable[..., O]:
  """Makes `func` pure: it runs on copies of its inputs, which it may mutate.

  Modules passed in (and all their submodules) are copied, and only the
  copies are mutable while `func` runs, so the caller's objects never change.
  Return the mutated modules to keep the changes.

  >>> f = pax.Linear(3, 3)
  >>> @pax.pure
  ... def add_list(m):
  ...     m.a_list = []
  ...     return m
  >>> g = add_list(f)
  >>> g.a_list, hasattr(f, "a_list")
  ([], False)

  Args:
    func: a function, a bound method of a module, or a callable module.

  Returns:
    The pure version of `func`.
  """
  if isinstance(func, types.MethodType) and isinstance(
      func.__self__, module_base.BaseModule):
    bound_self, unbound = func.__self__, func.__func__

    @functools.wraps(unbound)
    def method_wrapper(*args, **kwargs):
      return _run(unbound, (bound_self,) + args, kwargs)

    return method_wrapper
  if isinstance(func, module_base.BaseModule):
    if not callable(func):
      raise TypeError(f"pax.pure: the module `{func!r}` is not callable "
                      "(it defines no `__call__`).\nFix: define `__call__` "
                      "on its class, or wrap a function that uses it: "
                      "`pax.pure(lambda m, x: (m, m.method(x)))`.")
    module = func

    def module_wrapper(*args, **kwargs):
      return _run(type(module).__call__, (module,) + args, kwargs)

    return module_wrapper
  if not callable(func):
    raise TypeError(
        f"pax.pure expects a function (or a module or bound method), got "
        f"{type(func).__name__}.\nFix: decorate the function that calls "
        "the modules:\n    @pax.pure\n    def step(model, x):\n"
        "        return model, model(x)")

  @functools.wraps(func)
  def wrapper(*args, **kwargs):
    return _run(func, args, kwargs)

  return wrapper


def _run(func: Callable[..., O], args: Tuple[Any, ...], kwargs: Any) -> O:
  leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
  args, kwargs = treedef.unflatten(leaves)  # Fresh module objects.
  modules = list(module_base.iter_modules((args, kwargs)))
  with context.allow_mutation(modules):
    out = func(*args, **kwargs)
  # Mutation may have stored one module in two places.
  module_base.check_no_shared_modules(out)
  return out


def purecall(module: Callable[..., O], *args: Any,
             **kwargs: Any) -> Tuple[Any, O]:
  """Calls `module(*args, **kwargs)` on a copy and returns `(copy, output)`.

  >>> drop = pax.from_haiku(lambda x: hk.dropout(hk.next_rng_key(), 0.5, x))(
  ...     jnp.ones((4, 3)))
  >>> drop2, y = pax.purecall(drop, jnp.ones((4, 3)))
  >>> y.shape, drop2 is drop
  ((4, 3), False)
  """
  if not isinstance(module, module_base.BaseModule):
    raise TypeError(
        f"pax.purecall expects a pax.Module as first argument, got "
        f"{type(module).__name__}.\nFix: `model, y = pax.purecall(model, x)`.")
  if not callable(module):
    raise TypeError(f"pax.purecall: `{module!r}` defines no `__call__`.\n"
                    "Fix: use `pax.module_and_value(module.method)(...)`.")
  return _run(_call_and_return, (module,) + args, kwargs)


def _call_and_return(module, *args, **kwargs):
  return module, module(*args, **kwargs)


def module_and_value(
    module_or_method: Callable[..., O]) -> Callable[..., Tuple[Any, O]]:
  """Returns a pure function running a module (or its method) that also
  returns the updated module.

  >>> net = pax.Linear(1, 1)
  >>> x = jnp.ones((32, 1))
  >>> net, y = pax.module_and_value(net)(x)
  >>> y.shape
  (32, 1)

  It also decorates a method in a class body (as in PAX):

  >>> class Counter(pax.Module):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.c = jnp.array(0)
  ...     @pax.module_and_value
  ...     def step(self):
  ...         self.c += 1
  >>> counter, _ = Counter().step()
  >>> int(counter.c)
  1
  """
  if isinstance(module_or_method, types.MethodType) and isinstance(
      module_or_method.__self__, module_base.BaseModule):
    module, func = module_or_method.__self__, module_or_method.__func__
  elif isinstance(module_or_method, module_base.BaseModule):
    module = module_or_method
    if not callable(module):
      raise TypeError(f"`{module!r}` defines no `__call__`.")
    func = type(module).__call__
  elif isinstance(module_or_method, types.FunctionType):
    # A method decorated in a class body: `module.step(...)` then returns
    # `(module, value)` (the module comes as the first argument).
    func = module_or_method

    @functools.wraps(func)
    def call_method(mod, *args, **kwargs):
      if not isinstance(mod, module_base.BaseModule):
        raise TypeError(
            f"`{func.__name__}` (decorated with pax.module_and_value) expects "
            f"a pax module as first argument, got {type(mod).__name__}.")
      return mod, func(mod, *args, **kwargs)

    return pure(call_method)
  else:
    raise TypeError(
        "pax.module_and_value expects a module or a bound method of a module "
        "(e.g. `net.step`), or a function taking the module first, got "
        f"{type(module_or_method).__name__}.")

  def call(mod, *args, **kwargs):
    return mod, func(mod, *args, **kwargs)

  return functools.partial(pure(call), module)
