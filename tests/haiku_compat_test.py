"""The Haiku/JAX internals pax_haiku relies on still exist and still behave.

Every name `pax_haiku._src.haiku_compat` provides has a test here, so a Haiku
or JAX upgrade that moves or changes one fails in this file, with a message
saying which assumption broke, instead of somewhere deep in the bridge.
"""

import ast
import gc
import os
import types

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import jmp

import pax_haiku
from pax_haiku._src import haiku_compat
import quick_exit  # tests/quick_exit.py, beside this file

_PRIVATE_PACKAGES = ("haiku._src", "jax._src")

HALF = jmp.get_policy("params=float32,compute=bfloat16,output=float32")


def _private_imports(path):
  """`(line, module)` for each import of a private Haiku/JAX package."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name.startswith(_PRIVATE_PACKAGES):
        out.append((node.lineno, name))
        break
  return out


def _package_files():
  root = os.path.dirname(pax_haiku.__file__)
  for dirpath, _, filenames in os.walk(root):
    for fname in filenames:
      if fname.endswith(".py"):
        path = os.path.join(dirpath, fname)
        yield os.path.relpath(path, root), path


class PrivateImportsTest(absltest.TestCase):

  def test_only_haiku_compat_imports_private_packages(self):
    offenders = {}
    seen = 0
    for rel, path in _package_files():
      seen += 1
      found = _private_imports(path)
      if rel == os.path.join("_src", "haiku_compat.py"):
        self.assertNotEmpty(found, "the import scan found nothing in "
                            "haiku_compat.py, so it cannot be trusted")
        continue
      if found:
        offenders[rel] = found
    self.assertGreater(seen, 10, "the package source was not found")
    self.assertEmpty(
        offenders, "Private Haiku/JAX imports outside "
        "pax_haiku/_src/haiku_compat.py (add what you need there, with a "
        f"test here, and import it from haiku_compat): {offenders}")

  def test_backends_started_after_an_operation(self):
    # (Before any operation it is False: tests/launch_test.py checks that in
    # a forked child.)
    jnp.ones(1).block_until_ready()
    self.assertIs(haiku_compat.backends_started(), True)

  def test_missing_internal_is_a_clear_import_error(self):
    with self.assertRaisesRegex(ImportError, "(?s)needs `.*missing_thing`.*"
                                "jax .*requirements.txt"):
      haiku_compat._require(types.SimpleNamespace(__name__="mod"),  # pylint: disable=protected-access
                            "missing_thing", "something pax uses")


class RngTest(absltest.TestCase):

  def test_next_rng_key_without_key_raises_missing_rng_error(self):
    f = hk.transform(lambda: hk.next_rng_key())
    with self.assertRaises(haiku_compat.MissingRNGError,
                           msg="hk.next_rng_key with rng=None no longer "
                           "raises haiku._src.base.MissingRNGError; the "
                           "bridge detects RNG use by catching it"):
      f.init(None)
    self.assertTrue(issubclass(haiku_compat.MissingRNGError, Exception))

  def test_other_value_errors_are_not_missing_rng_errors(self):
    def f():
      raise ValueError("user error")
    with self.assertRaises(ValueError) as cm:
      hk.transform(f).init(None)
    self.assertNotIsInstance(cm.exception, haiku_compat.MissingRNGError)


class TransformTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("transform", hk.transform),
      ("transform_with_state", hk.transform_with_state),
      ("without_apply_rng", lambda f: hk.without_apply_rng(hk.transform(f))),
  )
  def test_get_original_fn(self, transform):
    def f(x):
      return hk.Linear(2)(x)
    self.assertIs(haiku_compat.get_original_fn(transform(f)), f,
                  "get_original_fn no longer returns the transformed function")

  def test_inside_transform(self):
    self.assertFalse(haiku_compat.inside_transform())
    with self.assertRaises(ValueError, msg="hk.running_init no longer raises "
                           "ValueError outside a transform"):
      hk.running_init()
    seen = []
    f = hk.transform(lambda: seen.append(haiku_compat.inside_transform()))
    f.init(None)
    f.apply({}, None)
    self.assertEqual(seen, [True, True])
    self.assertFalse(haiku_compat.inside_transform())


class _Outer(hk.Module):

  def __call__(self, path):
    return _use_bundle(path)


def _use_bundle(path):
  with haiku_compat.bundle_scope(path):
    w = hk.get_parameter("w", [2], init=jnp.ones)
    s = hk.get_state("s", [], init=jnp.zeros)
  with haiku_compat.bundle_scope(path):
    hk.set_state("s", s + 1)
  return w


class BundleScopeTest(parameterized.TestCase):

  @parameterized.product(
      path=["linear", "sequential/~/linear", "a/~/b", "~",
            "outer/~/net/~/batch_norm", "mlp/~/linear_1"],
      inside_module=[False, True])
  def test_exact_path(self, path, inside_module):
    f = hk.transform_with_state(
        (lambda: _Outer()(path)) if inside_module else (lambda: _use_bundle(
            path)))
    params, state = f.init(None)
    self.assertEqual(list(params), [path], "bundle_scope no longer puts "
                     "parameters under exactly the given module path")
    self.assertEqual(list(params[path]), ["w"])
    self.assertEqual(list(state), [path])
    _, new_state = f.apply(params, state, None)
    self.assertEqual(float(new_state[path]["s"]), 1.0)

  def test_later_haiku_modules_get_fresh_names(self):
    # The path is reserved like any Haiku module name, so a Haiku module
    # created after it in the same scope cannot share its parameters.
    def f(x):
      with haiku_compat.bundle_scope("linear"):
        hk.get_parameter("w", [3, 3], init=jnp.ones)
      return hk.Linear(3)(x)
    params = hk.transform(f).init(jax.random.PRNGKey(0), jnp.ones((1, 3)))
    self.assertEqual(sorted(params), ["linear", "linear_1"])

  def test_outside_transform_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "hk.transform"):
      haiku_compat.bundle_scope("linear")


class CamelToSnakeTest(parameterized.TestCase):

  @parameterized.parameters(
      "Linear", "MLP", "BatchNorm2D", "Conv1DTranspose", "ResNet50",
      "HTTPServer", "MultiHeadAttention", "VanillaRNN", "GRU", "LSTM",
      "myModule", "A", "ABCdef", "X2Y", "Already_snake", "Net2Net")
  def test_matches_haiku_default_module_names(self, class_name):
    cls = type(class_name, (hk.Module,),
               {"__call__": lambda self: self.module_name})
    name = hk.transform(lambda: cls()()).apply({}, None)
    self.assertEqual(haiku_compat.camel_to_snake(class_name), name,
                     "Haiku names default modules differently now; "
                     "haiku_compat.camel_to_snake must follow it")


class TopLevelPolicyTest(absltest.TestCase):

  def test_params_stored_in_param_dtype_read_in_compute_dtype(self):
    def f():
      with haiku_compat.top_level_policy(HALF):
        self.assertEqual(hk.mixed_precision.current_policy(), HALF)
        w = hk.get_parameter("w", [2], jnp.bfloat16, init=jnp.ones)
        # Haiku's creator covers parameters only; state is created as asked.
        s = hk.get_state("s", [2], jnp.float32, init=jnp.ones)
        return w.dtype, s.dtype
    t = hk.transform_with_state(f)
    params, state = t.init(None)
    self.assertEqual(params["~"]["w"].dtype, jnp.float32)
    self.assertEqual(state["~"]["s"].dtype, jnp.float32)
    (w_dtype, s_dtype), _ = t.apply(params, state, None)
    self.assertEqual((w_dtype, s_dtype), (jnp.bfloat16, jnp.bfloat16))
    self.assertIsNone(hk.mixed_precision.current_policy())

  def test_class_policy_inside_replaces_it(self):
    full = jmp.get_policy("params=float32,compute=float32,output=float32")

    def f(x):
      with hk.mixed_precision.push_policy(hk.LayerNorm, full):
        with haiku_compat.top_level_policy(HALF):
          w = hk.get_parameter("w", [3], init=jnp.ones)
          y = hk.LayerNorm(-1, True, True)(x)
          return w.dtype, y.dtype

    t = hk.transform(f)
    params = t.init(None, jnp.ones((1, 3)))
    self.assertEqual(t.apply(params, None, jnp.ones((1, 3))),
                     (jnp.bfloat16, jnp.float32))


class TraceStateTest(absltest.TestCase):

  def test_equal_under_the_same_trace(self):
    a = haiku_compat.current_trace_state()
    self.assertEqual(a, haiku_compat.current_trace_state())
    self.assertNotEqual(a, None)

  def test_changes_inside_jax_transforms(self):
    outer = haiku_compat.current_trace_state()
    inner = {}

    def probe(name):
      def fn(x):
        inner[name] = haiku_compat.current_trace_state()
        self.assertEqual(inner[name], haiku_compat.current_trace_state())
        return jnp.sum(x)
      return fn

    jax.jit(probe("jit"))(jnp.ones(2))
    jax.grad(probe("grad"))(jnp.ones(2))
    jax.vmap(probe("vmap"))(jnp.ones((2, 2)))
    jax.eval_shape(probe("eval_shape"), jnp.ones(2))
    self.assertLen(inner, 4)
    for name, state in inner.items():
      self.assertNotEqual(state, outer, f"the trace state inside {name} "
                          "equals the outer one: pax's tracer-leak guard "
                          "would let modules be mutated there")
    self.assertEqual(outer, haiku_compat.current_trace_state())

  def test_a_finished_trace_never_equals_a_new_one(self):
    first = {}
    jax.jit(lambda x: first.setdefault("s", haiku_compat.current_trace_state())
            and x)(1.0)
    gc.collect()

    def again(x):
      self.assertNotEqual(first["s"], haiku_compat.current_trace_state())
      return x
    jax.jit(again)(2.0)


if __name__ == "__main__":
  quick_exit.main()
