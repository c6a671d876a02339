"""`pax.from_optax`: optax gradient transformations as pax modules.

An `Optimizer` is a pax module that holds an optax state (`opt_state`, pytree
data, never trainable) and the optax transformation (`tx`, static: every copy
holds the same object, so copies compare equal and share jit cache entries).
It works with any `optax.GradientTransformation`: chains, schedules,
`optax.masked`, `optax.multi_transform`, `optax.inject_hyperparams`, ...

Two ways to apply gradients:

- functional: `model, optimizer = optimizer.step(model, grads)`;
- PAX style, inside `pax.pure`: `params = optimizer(grads, params)` updates
  the optimizer in place and returns the new parameters.
"""

from typing import Any, Callable, Dict, List, Tuple, TypeVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pax_haiku._src import checks
from pax_haiku._src import context
from pax_haiku._src import haiku_naming
from pax_haiku._src import module as module_lib

M = TypeVar("M")

_STEP_FIX = (
    "    loss, grads = pax.value_and_grad(loss_fn)(model, x, y)\n"
    "    model, optimizer = optimizer.step(model, grads)")


class _Static:
  """Holds a static value; equal (and hashed) by the identity of the value.

  Keeps the optax transformation out of the pytree whatever it is made of,
  and makes copies of an optimizer compare equal.
  """

  __slots__ = ("value",)

  def __init__(self, value: Any):
    self.value = value

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _Static) and other.value is self.value

  def __hash__(self) -> int:
    return hash(id(self.value))

  def __copy__(self) -> "_Static":
    return self

  def __deepcopy__(self, memo: Any) -> "_Static":
    return self

  def __reduce__(self):
    raise TypeError(
        "An optimizer cannot be pickled: it holds an optax transformation, "
        "whose functions are closures (no optax transformation pickles).\n"
        "Fix: save its state with `pax.save(path, optimizer)` and load it "
        "into an optimizer built the same way: `optimizer = pax.load(path, "
        "pax.from_optax(tx)(model.parameters()))`. Copies work: "
        "`copy.deepcopy(optimizer)`.")

  def __repr__(self) -> str:
    return f"_Static({self.value!r})"


def _flatten_state(opt_state: Any) -> Tuple[Tuple[Any, ...], Any]:
  """The optax state as (leaves, treedef).

  The optimizer stores the leaves as one flat tuple and the treedef as a
  static field: the optax state (for adam, `mu` and `nu` shaped like the
  model) then costs one pytree node to flatten and unflatten at every jitted
  step, fewer than raw optax's own state, and unflattening it allocates no
  module copies for Python's garbage collector to walk.
  """
  leaves, treedef = jax.tree_util.tree_flatten(opt_state)
  leaves = tuple(x if isinstance(x, (jax.Array, np.ndarray)) else
                 jnp.asarray(x) for x in leaves)
  return leaves, treedef


def _is_inject_state(x: Any) -> bool:
  return (isinstance(getattr(x, "hyperparams", None), dict) and
          hasattr(x, "inner_state"))


def _map_inject_states(tree: Any, fn: Callable[[Any], Any],
                       found: List[Any]) -> Any:
  """Applies `fn` to every `optax.inject_hyperparams` state in `tree`."""
  if _is_inject_state(tree):
    found.append(tree)
    return fn(tree)
  if isinstance(tree, module_lib.Module):  # A params-shaped tree.
    return tree
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # namedtuple
    return type(tree)(*(_map_inject_states(v, fn, found) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(_map_inject_states(v, fn, found) for v in tree)
  if isinstance(tree, dict):
    return type(tree)(
        (k, _map_inject_states(v, fn, found)) for k, v in tree.items())
  return tree


def _check_tx(tx: Any) -> None:
  if isinstance(tx, optax.GradientTransformation) or (
      callable(getattr(tx, "init", None)) and
      callable(getattr(tx, "update", None))):
    return
  name = getattr(tx, "__name__", None)
  if callable(tx) and name:
    raise TypeError(
        f"pax.from_optax expects an optax GradientTransformation, got the "
        f"function `{name}` itself.\nLikely cause: the optimizer was not "
        f"called with its hyperparameters.\nFix: "
        f"`pax.from_optax(optax.{name}(1e-3))(model.parameters())`.")
  raise TypeError(
      "pax.from_optax expects an optax GradientTransformation (an object "
      f"with `init` and `update`), got {type(tx).__name__}.\nFix: e.g. "
      "`pax.from_optax(optax.adam(1e-3))(model.parameters())`.")


def _check_params(params: Any) -> None:
  bad = [x for x in jax.tree_util.tree_leaves(params)
         if not isinstance(x, (jax.Array, np.ndarray))]
  if bad:
    raise TypeError(
        "pax.from_optax(tx)(params): `params` must be the model's "
        "parameters (`model.parameters()`, or a pytree of arrays), got "
        f"{type(params).__name__} holding {type(bad[0]).__name__} "
        f"{bad[0]!r}.\nLikely cause: a hyperparameter passed to the builder "
        "instead of to the optax transformation.\nFix: "
        "`pax.from_optax(optax.adam(1e-3))(model.parameters())`.")


class Optimizer(module_lib.Module):
  """A pax module holding an optax transformation and its state.

  Build it with `pax.from_optax(tx)(model.parameters())`.

  >>> net = pax.Linear(2, 1)
  >>> optimizer = pax.from_optax(optax.sgd(0.1, momentum=0.9))(net.parameters())
  >>> grads = pax.grad(lambda m, x: jnp.mean(m(x) ** 2))(net, jnp.ones((4, 2)))
  >>> new_net, new_optimizer = optimizer.step(net, grads)
  >>> bool((new_net.weight != net.weight).all())
  True
  >>> jax.tree_util.tree_leaves(optimizer.parameters())  # Never trainable.
  []

  Inside `pax.pure`, PAX style (the optimizer updates itself in place):

  >>> @pax.pure
  ... def train_step(net, optimizer, x):
  ...     grads = pax.grad(lambda m, x: jnp.mean(m(x) ** 2))(net, x)
  ...     params = optimizer(grads, net.parameters())
  ...     return net.update_parameters(params), optimizer
  >>> net, optimizer = train_step(net, optimizer, jnp.ones((4, 2)))

  Attributes:
    opt_state: the optax state (a property; not trainable). It is stored
      flat: its leaves in `state_leaves` (pytree data) and its structure in
      `state_treedef` (static).
    tx: the optax `GradientTransformation` (static).
    params_treedef: the tree structure of the parameters it was built for.
  """

  # Nothing is trainable, not even params-shaped trees inside the optax state.
  parameters = module_lib.parameters_method(submodules=False)

  state_leaves: Tuple[Any, ...]

  def __init__(self, tx: optax.GradientTransformation, params: Any):
    """Creates the optax state `tx.init(params)`.

    Args:
      tx: an optax `GradientTransformation`.
      params: the parameters to optimize: `model.parameters()` (a module is
        reduced to its `parameters()`), or any pytree of arrays.
    """
    super().__init__()
    _check_tx(tx)
    if isinstance(params, module_lib.Module):
      params = params.parameters()
    else:
      _check_params(params)
    self._tx = _Static(tx)
    self.params_treedef = jax.tree_util.tree_structure(params)
    self.opt_state = tx.init(params)

  @property
  def tx(self) -> optax.GradientTransformation:
    """The optax transformation."""
    return self._tx.value

  @property
  def opt_state(self) -> Any:
    """The optax state (a new tree of the stored leaves at each access)."""
    return self.state_treedef.unflatten(self.state_leaves)

  def __setattr__(self, name: str, value: Any) -> None:
    if name == "opt_state":  # Stored flat (see `_flatten_state`).
      leaves, treedef = _flatten_state(value)
      super().__setattr__("state_treedef", treedef)
      super().__setattr__("state_leaves", leaves)
      return
    super().__setattr__(name, value)

  def replace(self, **kwargs: Any) -> "Optimizer":
    """Returns a copy with some attributes (e.g. `opt_state`) replaced."""
    if "opt_state" in kwargs:
      leaves, treedef = _flatten_state(kwargs.pop("opt_state"))
      kwargs.update(state_leaves=leaves, state_treedef=treedef)
    return super().replace(**kwargs)

  def _repr_info(self) -> Dict[str, Any]:
    return {}

  # -- applying gradients ------------------------------------------------------

  def _check(self, grads: Any, params: Any, api: str) -> None:
    params_treedef = jax.tree_util.tree_structure(params)
    if params_treedef != self.params_treedef:
      expected = self.params_treedef.unflatten(
          [0] * self.params_treedef.num_leaves)
      raise ValueError(
          f"{api}: the parameters do not have the structure this optimizer "
          "was created for: "
          f"{haiku_naming.first_difference(expected, params)}.\nLikely "
          "cause: the optimizer was built for another model, or the model "
          "changed after it was built (new layers, `freeze_parameters`, "
          "`eval()`/`train()`).\nFix: build the optimizer from this model's "
          "parameters: `optimizer = pax.from_optax(tx)(model.parameters())`.")
    checks.chex_check(
        chex.assert_trees_all_equal_structs, grads, params, error=ValueError,
        message=lambda: (
            f"{api}: the gradients do not have the structure of the "
            "parameters: "
            f"{haiku_naming.first_difference(params, grads)}.\nLikely cause: "
            "gradients taken with `jax.grad(loss_fn)(model, ...)` w.r.t. the "
            "whole module (non-trainable state included) or w.r.t. another "
            "model.\nFix: take gradients w.r.t. the trainable parameters with "
            f"pax.grad / pax.value_and_grad:\n{_STEP_FIX}"))
    checks.chex_check(
        chex.assert_trees_all_equal_shapes, grads, params, error=ValueError,
        message=(f"{api}: the gradients and the parameters have the same "
                 "structure but different shapes.\nFix: compute the "
                 "gradients from the same model:\n" + _STEP_FIX))

  def _apply(self, grads: Any, params: Any, api: str) -> Tuple[Any, Any]:
    self._check(grads, params, api)
    updates, opt_state = self.tx.update(grads, self.opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def step(self, model: M, grads: Any) -> Tuple[M, "Optimizer"]:
    """Applies `grads` to `model`; returns `(new_model, new_optimizer)`.

    Args:
      model: a pax module (its `parameters()` are updated), or a pytree of
        parameters.
      grads: gradients with the structure of `model.parameters()`, e.g. from
        `pax.grad`.

    Returns:
      The updated model and optimizer (new objects; the inputs are unchanged).
    """
    if isinstance(model, module_lib.Module):
      params, new_params_fn = model.parameters(), model.update_parameters
    else:
      params, new_params_fn = model, lambda p: p
    new_params, opt_state = self._apply(grads, params,
                                        "optimizer.step(model, grads)")
    return new_params_fn(new_params), self.replace(opt_state=opt_state)

  def __call__(self, grads: Any, params: Any) -> Any:
    """PAX style: updates the optimizer in place; returns the new params.

    Only inside `pax.pure` (see the class docstring).

    Args:
      grads: gradients with the structure of `params`.
      params: `model.parameters()`.

    Returns:
      The updated parameters: `model = model.update_parameters(new_params)`.
    """
    if not context.is_mutable(self):
      raise ValueError(
          "`optimizer(grads, params)` updates the optimizer's state in place, "
          "which pax allows only inside `pax.pure` (modules are immutable "
          "elsewhere).\nFix: call it inside a `@pax.pure` function that "
          "returns the optimizer, or use the functional form:\n" + _STEP_FIX)
    new_params, opt_state = self._apply(grads, params,
                                        "optimizer(grads, params)")
    self.opt_state = opt_state
    return new_params

  # -- hyperparameters ---------------------------------------------------------

  def _inject_states(self) -> List[Any]:
    found: List[Any] = []
    _map_inject_states(self.opt_state, lambda s: s, found)
    if len(found) != 1:
      what = "no" if not found else f"{len(found)}"
      raise ValueError(
          f"Optimizer hyperparameters: the optax state has {what} "
          "`optax.inject_hyperparams` state(s); reading and setting "
          "hyperparameters needs exactly one.\nFix: build the optimizer with "
          "`optax.inject_hyperparams`, e.g. `pax.from_optax("
          "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))(params)`"
          + ("" if not found else
             ", or edit `optimizer.opt_state` directly for several of them"))
    return found

  @property
  def hyperparams(self) -> Dict[str, jax.Array]:
    """The current hyperparameters of an `optax.inject_hyperparams` optimizer.

    >>> tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    >>> optimizer = pax.from_optax(tx)(pax.Linear(2, 2).parameters())
    >>> round(float(optimizer.hyperparams["learning_rate"]), 6)
    0.001
    >>> optimizer = optimizer.set_hyperparam("learning_rate", 1e-4)
    >>> round(float(optimizer.hyperparams["learning_rate"]), 6)
    0.0001

    Returns:
      A new dict of arrays, by hyperparameter name (changing it does not
      change the optimizer; use `set_hyperparam`).
    """
    return dict(self._inject_states()[0].hyperparams)

  def set_hyperparam(self, name: str, value: Any) -> "Optimizer":
    """Returns a copy with hyperparameter `name` set to `value`.

    Needs an `optax.inject_hyperparams` transformation (see `hyperparams`).
    A hyperparameter that `inject_hyperparams` got as a schedule is
    recomputed from the schedule at every step, so setting it only lasts
    until the next update.

    Args:
      name: e.g. `"learning_rate"`.
      value: a number or array of the hyperparameter's shape (its dtype is
        kept, so a jitted step does not recompile).

    Returns:
      The new optimizer.
    """
    current = self.hyperparams
    if name not in current:
      raise ValueError(
          f"Optimizer.set_hyperparam: unknown hyperparameter {name!r}; this "
          f"optimizer has {sorted(current)}.\nFix: pass one of those names, "
          "or make it injectable with `optax.inject_hyperparams`.")
    old = current[name]
    try:
      new = jnp.broadcast_to(jnp.asarray(value, dtype=old.dtype), old.shape)
    except (TypeError, ValueError) as e:
      raise ValueError(
          f"Optimizer.set_hyperparam: {name!r} has shape {old.shape} and "
          f"dtype {old.dtype}; cannot set it to {value!r} ({e}).") from e

    def set_value(state):
      hyperparams = dict(state.hyperparams)
      hyperparams[name] = new
      return state._replace(hyperparams=hyperparams)

    opt_state = _map_inject_states(self.opt_state, set_value, [])
    return self.replace(opt_state=opt_state)


def from_optax(
    tx: optax.GradientTransformation) -> Callable[[Any], Optimizer]:
  """Turns an optax transformation into a pax optimizer builder.

  The seed's `opax.adam(1e-4)(net.parameters())` is written
  `pax.from_optax(optax.adam(1e-4))(net.parameters())`:

  >>> net = pax.Linear(2, 2)
  >>> optimizer = pax.from_optax(optax.adam(1e-4))(net.parameters())
  >>> loss_fn = lambda m, x: jnp.mean(m(x) ** 2)
  >>> grads = pax.grad(loss_fn)(net, jnp.ones((8, 2)))
  >>> net, optimizer = optimizer.step(net, grads)

  Any `optax.GradientTransformation` works: chains, schedules,
  `optax.masked`, `optax.multi_transform`, `optax.inject_hyperparams`.

  Args:
    tx: the optax transformation.

  Returns:
    `build(params) -> Optimizer`, where `params` is `model.parameters()` (a
    module is reduced to its `parameters()`) or any pytree of arrays.
  """
  _check_tx(tx)

  def build(params: Any) -> Optimizer:
    return Optimizer(tx, params)

  return build
