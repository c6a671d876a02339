"""The seed API page's examples, run verbatim as doctests.

The page (PAX's "Utilities" documentation) was written for PAX + opax; the
only change is `opax.adam(1e-4)(net.parameters())`, written here
`pax.from_optax(optax.adam(1e-4))(net.parameters())`.
"""

import doctest

from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

PARAMETERS_METHOD = """
>>> class Linear(pax.Module):
...     parameters = pax.parameters_method("weight")
...     def __init__(self):
...         self.weight = jnp.array(1.0)
>>> fc = Linear()
>>> fc == fc.parameters()
True
"""

GRAD = """
>>> @pax.pure
... def loss_fn(model: pax.Linear, x, y):
...     y_hat = model(x)
...     loss = jnp.mean(jnp.square(y - y_hat))
...     return loss, (loss, model)
...
>>> grad_fn = pax.grad(loss_fn, has_aux=True)
>>> net = pax.Linear(1, 1)
>>> x = jnp.ones((3, 1))
>>> grads, (loss, net) = grad_fn(net, x, x)
"""

SCAN = """
>>> def scan(f, init, xs, length=None):
...     if xs is None:
...         xs = [None] * length
...     carry = init
...     ys = []
...     for x in xs:
...         carry, y = f(carry, x)
...         ys.append(y)
...     return carry, np.stack(ys)
"""

BUILD_UPDATE_FN = """
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
"""

# The page's fourth entry, value_and_grad, has no example; this one checks
# the seed's claims about it (gradients w.r.t. trainable parameters).
VALUE_AND_GRAD = """
>>> def loss_fn(model, x, y):
...     return jnp.mean(jnp.square(y - model(x)))
>>> net = pax.Linear(2, 1)
>>> loss, grads = pax.value_and_grad(loss_fn)(net, jnp.ones((4, 2)),
...                                           jnp.zeros((4, 1)))
>>> jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(
...     net.parameters())
True
"""

# After the seed examples ran: check what they computed.
CHECKS = """
>>> float(loss) >= 0.0
True
>>> net.weight.shape, optimizer.__class__.__name__
((2, 2), 'Optimizer')
>>> carry, ys = scan(lambda c, x: (c + x, c), 0, [1, 2, 3])
>>> carry, ys.tolist()
(6, [0, 1, 3])
>>> carry, ys = pax.scan(lambda c, x: (c + x, c), 0, jnp.array([1, 2, 3]))
>>> int(carry), ys.tolist()
(6, [0, 1, 3])
"""


def _globs():
  pax.seed_rng_key(42)
  return {"pax": pax, "jax": jax, "jnp": jnp, "hk": hk, "np": np,
          "optax": optax}


class SeedDocTest(parameterized.TestCase):

  def _run(self, name, source, globs):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(source, globs, name, name + ".py", 0)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    self.assertEqual(result.failed, 0,
                     f"{result.failed} example(s) of {name} failed (see the "
                     "output above)")
    self.assertGreater(result.attempted, 0)

  @parameterized.named_parameters(
      ("parameters_method", PARAMETERS_METHOD),
      ("grad", GRAD),
      ("value_and_grad", VALUE_AND_GRAD),
      ("scan", SCAN),
      ("build_update_fn", BUILD_UPDATE_FN),
  )
  def test_example(self, source):
    self._run(self._testMethodName, source, _globs())

  def test_whole_page_in_one_session(self):
    globs = _globs()
    self._run("seed_page", PARAMETERS_METHOD + GRAD + VALUE_AND_GRAD + SCAN +
              BUILD_UPDATE_FN + CHECKS, globs)


if __name__ == "__main__":
  quick_exit.main()
