"""`pax.build_update_fn`: one training step from a loss function."""

from typing import Any, Callable, Tuple

import chex

from pax_haiku._src import checks
from pax_haiku._src import haiku_naming
from pax_haiku._src import module as module_lib
from pax_haiku._src import optim
from pax_haiku._src import pure as pure_lib
from pax_haiku._src import transforms

_API = "pax.build_update_fn"

_LOSS_FN_EXAMPLE = (
    "    def loss_fn(model, x, y):\n"
    "        y_hat = model(x)\n"
    "        loss = jnp.mean(jnp.square(y - y_hat))\n"
    "        return loss, (loss, model)  # (loss, (aux, model))")


def _output_error(loss_fn: Any, problem: str, cause: str) -> ValueError:
  return ValueError(
      f"{_API}: `{checks.fn_name(loss_fn)}` must return "
      f"`(loss, (aux, model))`, but {problem}.\nLikely cause: {cause}.\n"
      "Fix: return the scalar loss, any auxiliary output, and the model "
      "that was passed in (after calling it, so updated state such as "
      "BatchNorm statistics or RNG keys is kept):\n" + _LOSS_FN_EXAMPLE)


def _check_loss_fn_output(out: Any, model: module_lib.Module,
                          loss_fn: Any) -> None:
  """ValueError/TypeError unless `out` is `(loss, (aux, model_like))`."""
  if not (isinstance(out, (tuple, list)) and len(out) == 2):
    raise _output_error(
        loss_fn, f"it returned {checks.describe(out)}",
        "returning only the loss (pax needs the model back: calling it may "
        "have updated its state)")
  aux_and_model = out[1]
  if not (isinstance(aux_and_model, (tuple, list)) and
          len(aux_and_model) == 2):
    raise _output_error(
        loss_fn,
        "its second element is "
        f"{checks.describe(aux_and_model)}, not a pair `(aux, model)`",
        "returning `(loss, aux)` or `(loss, model)` without the other")
  aux, new_model = aux_and_model
  if not isinstance(new_model, module_lib.Module):
    swapped = isinstance(aux, module_lib.Module)
    raise _output_error(
        loss_fn,
        "the model in `(aux, model)` is "
        f"{checks.describe(new_model)}, not a pax module",
        "`(model, aux)` in the wrong order" if swapped else
        "the model was not returned")
  checks.check_loss(out[0], _API, loss_fn, has_aux=True)
  checks.chex_check(
      chex.assert_trees_all_equal_structs, new_model, model,
      error=ValueError,
      message=lambda: str(_output_error(
          loss_fn,
          "the returned model does not have the structure of the input "
          "model: " + haiku_naming.first_difference(model, new_model),
          "returning another module (a submodule, a fresh copy, a model from "
          "an outer scope), or changing its attributes inside loss_fn")))


def build_update_fn(loss_fn: Callable[..., Tuple[Any, Tuple[Any, Any]]], *,
                    scan_mode: bool = False) -> Callable[..., Any]:
  """Build a simple update function.

  Note: The output of loss_fn must be (loss, (aux, model)).

  Example:

  >>> def mse_loss(model, x, y):
  ...     y_hat = model(x)
  ...     loss = jnp.mean(jnp.square(y - y_hat))
  ...     return loss, (loss, model)
  ...
  >>> update_fn = pax.utils.build_update_fn(mse_loss)
  >>> net = pax.Linear(2, 2)
  >>> optimizer = pax.from_optax(optax.adam(1e-4))(net.parameters())
  >>> x = jnp.ones((32, 2))
  >>> y = jnp.zeros((32, 2))
  >>> net, optimizer, loss = update_fn(net, optimizer, x, y)

  With `scan_mode=True` the model and the optimizer travel as one carry, so
  the update function plugs into `jax.lax.scan` (here 10 steps, each with
  one `(x, y)` batch):

  >>> def batch_loss(model, batch):
  ...     return mse_loss(model, *batch)
  >>> scan_update = pax.build_update_fn(batch_loss, scan_mode=True)
  >>> xs, ys = jnp.ones((10, 32, 2)), jnp.zeros((10, 32, 2))
  >>> (net, optimizer), losses = jax.lax.scan(scan_update, (net, optimizer),
  ...                                         (xs, ys))
  >>> losses.shape
  (10,)

  The loss function runs with `pax.pure` semantics: it may call stateful
  modules (BatchNorm, dropout) and must return the updated model. The update
  function is pure too; compile it with `pax.jit_update(update_fn)`, the
  recommended way: a `jax.jit` that donates the model and the optimizer, so
  the new ones reuse their buffers (one copy in memory, faster steps; the
  given model and optimizer are consumed). `jax.jit(update_fn)` works too
  and keeps them. Either compiles once: the model and optimizer keep their
  structure from step to step.

  >>> step = pax.jit_update(pax.build_update_fn(mse_loss))
  >>> net, optimizer, loss = step(net, optimizer, x, y)

  Args:
    loss_fn: `loss_fn(model, *inputs, **kwinputs) -> (loss, (aux, model))`;
      `loss` is a scalar float.
    scan_mode: If true, use (model, optimizer) as a single argument.

  Returns:
    `update_fn(model, optimizer, *inputs, **kwinputs) -> (model, optimizer,
    aux)`, or with `scan_mode=True`, `update_fn((model, optimizer), *inputs,
    **kwinputs) -> ((model, optimizer), aux)`.
  """
  if not callable(loss_fn):
    raise TypeError(
        f"{_API} expects a loss function, got {type(loss_fn).__name__}.\n"
        "Fix:\n" + _LOSS_FN_EXAMPLE + "\n    update_fn = "
        "pax.build_update_fn(loss_fn)")
  pure_loss_fn = pure_lib.pure(loss_fn)

  def checked_loss_fn(model, *inputs, **kwinputs):
    out = pure_loss_fn(model, *inputs, **kwinputs)
    _check_loss_fn_output(out, model, loss_fn)
    return out[0], tuple(out[1])

  value_and_grad_fn = transforms.value_and_grad(checked_loss_fn, has_aux=True)
  example = ("update_fn((model, optimizer), x, y)" if scan_mode else
             "update_fn(model, optimizer, x, y)")

  def update(model, optimizer, inputs, kwinputs):
    checks.require_module(model, _API + " update_fn",
                              what="model argument", example=example)
    if not isinstance(optimizer, optim.Optimizer):
      raise TypeError(
          f"{_API} update_fn: the optimizer must be a pax Optimizer, got "
          f"{type(optimizer).__name__}.\nFix: "
          "`optimizer = pax.from_optax(optax.adam(1e-3))(model.parameters())`"
          f" then `{example}`.")
    (_, (aux, new_model)), grads = value_and_grad_fn(model, *inputs,
                                                     **kwinputs)
    new_model, optimizer = optimizer.step(new_model, grads)
    return new_model, optimizer, aux

  if scan_mode:

    def scan_update_fn(model_and_optimizer, *inputs, **kwinputs):
      if not (isinstance(model_and_optimizer, (tuple, list)) and
              len(model_and_optimizer) == 2):
        raise TypeError(
            f"{_API}(..., scan_mode=True): the first argument must be the "
            "pair `(model, optimizer)`, got "
            f"{checks.describe(model_and_optimizer)}.\nFix: "
            "`(model, optimizer), aux = update_fn((model, optimizer), x)`, "
            "or in a scan: `jax.lax.scan(update_fn, (model, optimizer), xs)`;"
            " or build it with scan_mode=False for `update_fn(model, "
            "optimizer, x)`.")
      model, optimizer = model_and_optimizer
      model, optimizer, aux = update(model, optimizer, inputs, kwinputs)
      return type(model_and_optimizer)((model, optimizer)), aux

    # What `pax.jit_update` donates: the `(model, optimizer)` carry.
    scan_update_fn._pax_donate_argnums = (0,)
    return scan_update_fn

  def update_fn(model, optimizer, *inputs, **kwinputs):
    return update(model, optimizer, inputs, kwinputs)

  update_fn._pax_donate_argnums = (0, 1)  # The model and the optimizer.
  return update_fn
