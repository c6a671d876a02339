"""Runs every `>>>` example in pax_haiku's docstrings (and the seed page)."""

import doctest
import importlib
import pkgutil

from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku
import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file


def _module_names():
  names = ["pax_haiku"]
  for info in pkgutil.walk_packages(pax_haiku.__path__, "pax_haiku."):
    names.append(info.name)
  return sorted(names)


def _globs():
  pax.seed_rng_key(42)
  return {"pax": pax, "jax": jax, "jnp": jnp, "hk": hk, "np": np,
          "optax": optax}


class DoctestTest(parameterized.TestCase):

  @parameterized.parameters(*_module_names())
  def test_docstring_examples(self, name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, globs=_globs(), module=module)
    for test in tests:
      test.globs = _globs()
      runner.run(test)
    result = runner.summarize(verbose=False)
    self.assertEqual(result.failed, 0, f"{result.failed} doctest(s) failed "
                     f"in {name} (see output above)")


if __name__ == "__main__":
  quick_exit.main()
