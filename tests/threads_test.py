"""Thread safety: `pure`, `purecall` and `build_update_fn` from 8 threads.

Each worker's results (outputs, module state, trained parameters) computed
by 8 concurrent threads must equal, bit for bit, the same workers run one
after another; and a module made mutable by `pax.pure` in one thread stays
immutable in every other thread.
"""

import queue
import threading

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

NUM_THREADS = 8
ROUNDS = 2


class Counter(pax.Module):
  """Counts calls and keeps a running sum of its inputs (pure mutation)."""

  def __init__(self):
    super().__init__()
    self.count = jnp.array(0)
    self.total = jnp.zeros((3,))

  def __call__(self, x):
    self.count = self.count + 1
    self.total = self.total + x.sum(0)
    return x * self.count


def _loss(model, x, y):
  y_hat = model(x)
  loss = jnp.mean(jnp.square(y - y_hat))
  return loss, (loss, model)


_UPDATE = pax.build_update_fn(_loss)
_JIT_UPDATE = jax.jit(_UPDATE)
# One optax transformation for every worker: the optimizer holds it as a
# static field, and each `optax.adam(...)` call makes new functions, so a
# transformation per worker would recompile `_JIT_UPDATE` in every thread.
_TX = optax.adam(1e-2)


@pax.pure
def _grow(module, value):
  module.extra = value
  module.total = module.total * 2
  return module


def _net(seed):
  pax.seed_rng_key(seed)  # Thread-local: each thread seeds its own RNG.
  return pax.Sequential(pax.Linear(3, 4), jax.nn.relu, pax.Linear(4, 2),
                        pax.Dropout(0.5))


def work(i):
  """Everything one worker does; returns its results as a flat list."""
  rng = np.random.RandomState(i)
  x = jnp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
  y = jnp.asarray(rng.standard_normal((5, 2)).astype(np.float32))
  out = []
  counter = Counter()
  for _ in range(4):
    counter, z = pax.purecall(counter, x)
    out.append(z)
  grown = _grow(counter, x[0])
  out += [counter.count, counter.total, grown.extra, grown.total]
  net = _net(i)
  optimizer = pax.from_optax(_TX)(net.parameters())
  for _ in range(2):
    net, optimizer, loss = _UPDATE(net, optimizer, x, y)
    out.append(loss)
  for _ in range(3):
    net, optimizer, loss = _JIT_UPDATE(net, optimizer, x, y)
    out.append(loss)
  net, z = pax.module_and_value(net)(x)  # Dropout advances its RNG state.
  out.append(z)
  out += jax.tree_util.tree_leaves((net, optimizer))
  return out


def _assert_bit_equal(test, a, b, what):
  test.assertLen(a, len(b), what)
  for k, (x, y) in enumerate(zip(a, b)):
    x, y = np.asarray(x), np.asarray(y)
    test.assertEqual(x.dtype, y.dtype, f"{what}, item {k}")
    test.assertEqual(x.shape, y.shape, f"{what}, item {k}")
    test.assertEqual(x.tobytes(), y.tobytes(), f"{what}, item {k}")


class ThreadsTest(absltest.TestCase):

  def test_concurrent_results_equal_sequential(self):
    expected = [work(i) for i in range(NUM_THREADS)]
    results = {}
    errors = []
    barrier = threading.Barrier(NUM_THREADS)

    def run(i):
      try:
        barrier.wait()
        results[i] = [work(i) for _ in range(ROUNDS)]
      except BaseException as e:  # pylint: disable=broad-except
        errors.append((i, e))

    threads = [threading.Thread(target=run, args=(i,))
               for i in range(NUM_THREADS)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=300)
      self.assertFalse(t.is_alive())
    self.assertEqual(errors, [])
    for i in range(NUM_THREADS):
      for r in range(ROUNDS):
        _assert_bit_equal(self, results[i][r], expected[i],
                          f"thread {i}, round {r}")

  def test_mutable_in_one_thread_is_immutable_in_another(self):
    inside = queue.Queue()
    release = threading.Event()
    outcome = {}

    @pax.pure
    def hold(module):
      module.count = module.count + 1  # Mutable here, in this thread.
      inside.put(module)
      release.wait(timeout=60)
      return module

    def owner():
      outcome["owner"] = hold(Counter())

    def intruder():
      module = inside.get(timeout=60)
      try:
        module.count = jnp.array(100)
        outcome["intruder"] = "mutated"
      except ValueError as e:
        outcome["intruder"] = str(e)
      try:
        pax.purecall(module, jnp.ones((1, 3)))  # Its own copy: fine.
        outcome["purecall"] = "ok"
      except Exception as e:  # pylint: disable=broad-except
        outcome["purecall"] = repr(e)
      release.set()

    threads = [threading.Thread(target=owner), threading.Thread(
        target=intruder)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=120)
    self.assertRegex(outcome["intruder"], r"immutable outside `pax\.pure`")
    self.assertEqual(outcome["purecall"], "ok")
    self.assertEqual(int(outcome["owner"].count), 1)

  def test_seeded_init_is_per_thread(self):
    expected = [jax.tree_util.tree_leaves(_net(i)) for i in range(4)]
    got = {}

    def run(i):
      got[i] = jax.tree_util.tree_leaves(_net(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=120)
    for i in range(4):
      _assert_bit_equal(self, got[i], expected[i], f"init {i}")


if __name__ == "__main__":
  quick_exit.main()
