"""`pax.Linear`: `hk.Linear` with PAX's `(in_dim, out_dim)` signature."""

from typing import Any, Callable, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


class Linear(haiku_bridge.HaikuModule):
  """A linear layer; params are `hk.Linear`'s (`linear/w`, `linear/b`).

  >>> fc = pax.Linear(3, 4)
  >>> fc.weight.shape, fc.bias.shape
  ((3, 4), (4,))
  >>> sorted(fc.params["linear"])
  ['b', 'w']
  >>> fc(jnp.ones((2, 3))).shape
  (2, 4)

  Args:
    in_dim: input feature size.
    out_dim: output feature size.
    with_bias: add a bias.
    w_init: weight initializer (Haiku's default: truncated normal, stddev
      1/sqrt(in_dim)).
    b_init: bias initializer (zeros by default).
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `linear`).
  """

  in_dim: int
  out_dim: int
  with_bias: bool

  def __init__(self, in_dim: int, out_dim: int, with_bias: bool = True, *,
               w_init: Optional[Callable[..., Any]] = None,
               b_init: Optional[Callable[..., Any]] = None,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim)):
      _checks.positive_int("Linear", arg, value,
                           "pax.Linear(in_dim=784, out_dim=10)")
    self.in_dim = in_dim
    self.out_dim = out_dim
    self.with_bias = with_bias
    w_init, b_init = _checks.initializers("Linear", w_init=w_init,
                                          b_init=b_init)
    fn = haiku_bridge.HaikuModuleCall(hk.Linear, out_dim, with_bias=with_bias,
                                      w_init=w_init, b_init=b_init, name=name)
    self._init_haiku(fn, (haiku_bridge.sample_input((1, in_dim)),), {}, rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _checks.leaf_rename(name)

  def __call__(self, x: jax.Array) -> jax.Array:
    if jnp.shape(x)[-1:] != (self.in_dim,):
      raise _checks.input_error(
          self, f"(..., {self.in_dim})", x,
          "check the previous layer's output size or this layer's in_dim.")
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    return {"in_dim": self.in_dim, "out_dim": self.out_dim,
            "with_bias": self.with_bias}
