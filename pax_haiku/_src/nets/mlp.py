"""`pax.nets.MLP`: `hk.nets.MLP` with an input size, as a pax module."""

from typing import Any, Callable, Dict, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nets import _common
from pax_haiku._src.nn import _checks


class MLP(haiku_bridge.HaikuModule):
  """A multi-layer perceptron (`hk.nets.MLP`; params `mlp/~/linear_i`).

  Leaves are held under their Haiku names below `mlp`, e.g. `linear_0/w`.

  >>> net = pax.nets.MLP(2, [3, 4])
  >>> sorted(net.params)
  ['mlp/~/linear_0', 'mlp/~/linear_1']
  >>> net(jnp.ones((5, 2))).shape
  (5, 4)

  Args:
    input_dim: input feature size.
    output_sizes: output size of each linear layer.
    activation: activation between layers (default `jax.nn.relu`).
    activate_final: also apply the activation after the last layer.
    with_bias: layers have biases.
    w_init: weight initializer.
    b_init: bias initializer.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `mlp`).
  """

  input_dim: int
  output_sizes: tuple

  def __init__(self, input_dim: int, output_sizes: Sequence[int], *,
               activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
               activate_final: bool = False, with_bias: bool = True,
               w_init: Optional[Callable[..., Any]] = None,
               b_init: Optional[Callable[..., Any]] = None,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    example = "pax.nets.MLP(784, [256, 10])"
    self.input_dim = _checks.positive_int("nets.MLP", "input_dim", input_dim,
                                          example)
    if isinstance(output_sizes, int) or not output_sizes:
      raise ValueError(
          f"pax.nets.MLP: output_sizes must be a non-empty sequence of "
          f"positive ints, got {output_sizes!r}.\nFix: e.g. {example}.")
    self.output_sizes = tuple(
        _checks.positive_int("nets.MLP", "output_sizes[i]", s, example)
        for s in output_sizes)
    if not callable(activation):
      raise TypeError(f"pax.nets.MLP: activation must be callable, got "
                      f"{activation!r}.")
    w_init, b_init = _checks.initializers("nets.MLP", w_init=w_init,
                                          b_init=b_init)
    fn = haiku_bridge.HaikuModuleCall(
        hk.nets.MLP, self.output_sizes, w_init=w_init, b_init=b_init,
        with_bias=bool(with_bias), activation=activation,
        activate_final=bool(activate_final), name=name)
    self._init_haiku(fn, (haiku_bridge.sample_input((1, input_dim)),), {},
                     rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _common.relative_attr(bundle, name)

  def __call__(self, x: jax.Array) -> jax.Array:
    if jnp.shape(x)[-1:] != (self.input_dim,):
      raise _checks.input_error(self, f"(..., {self.input_dim})", x,
                                "check the input size (input_dim).")
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    return {"input_dim": self.input_dim, "output_sizes": self.output_sizes}
