"""RNN cores unrolled with `pax.scan` equal `hk.dynamic_unroll` of Haiku's."""

from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from pax_haiku._src.nn.recurrent import GRUState
from pax_haiku._src.nn.recurrent import VanillaRNNState
import quick_exit  # tests/quick_exit.py, beside this file

CORES = (
    ("vanilla_rnn", pax.VanillaRNN, hk.VanillaRNN),
    ("lstm", pax.LSTM, hk.LSTM),
    ("gru", pax.GRU, hk.GRU),
)
T, B, I, H = 6, 2, 3, 4


def _xs(*shape):
  return jnp.asarray(np.random.RandomState(0).normal(size=shape), jnp.float32)


def _scan(core, state, xs, **kwargs):
  """`pax.scan` of one step `core(state, x) -> (state, h)`."""
  return pax.scan(lambda s, x: core(s, x), state, xs, **kwargs)


def _hk_state(state):
  """Haiku's state inside PAX's named tuple (GRU/VanillaRNN: the array)."""
  if isinstance(state, (GRUState, VanillaRNNState)):
    return state.hidden
  return state


def _haiku_unroll(hk_core, params, xs, state=None):
  def f(xs, state):
    core = hk_core(H)
    if state is None:
      state = core.initial_state(xs.shape[1])
    return hk.dynamic_unroll(core, xs, state)
  return hk.transform(f).apply(params, None, xs, state)


class RecurrentTest(parameterized.TestCase):

  @parameterized.named_parameters(*CORES)
  def test_scan_equals_haiku_dynamic_unroll(self, pax_core, hk_core):
    core = pax_core(I, H)
    xs = _xs(T, B, I)
    state, hs = _scan(core, core.initial_state(B), xs)
    ref_hs, ref_state = _haiku_unroll(hk_core, core.params, xs)
    chex.assert_trees_all_close(hs, ref_hs, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(_hk_state(state), ref_state, rtol=1e-6,
                                atol=1e-6)
    chex.assert_trees_all_equal_structs(_hk_state(state), ref_state)
    # Haiku's bare state works too (GRU/VanillaRNN: the hidden array).
    raw_state, raw_hs = _scan(core, _hk_state(core.initial_state(B)), xs)
    chex.assert_trees_all_equal((raw_state, raw_hs), (ref_state, hs))

  @parameterized.named_parameters(*CORES)
  def test_batch_major_scan_and_jit(self, pax_core, hk_core):
    core = pax_core(I, H)
    xs = _xs(B, T, I)
    state0 = core.initial_state(B)

    @jax.jit
    def unroll(core, xs):
      return _scan(core, state0, xs, time_major=False)

    state, hs = unroll(core, xs)
    ref_hs, ref_state = _haiku_unroll(hk_core, core.params,
                                      jnp.swapaxes(xs, 0, 1))
    chex.assert_trees_all_close(hs, jnp.swapaxes(ref_hs, 0, 1), rtol=1e-6,
                                atol=1e-6)
    chex.assert_trees_all_close(_hk_state(state), ref_state, rtol=1e-6,
                                atol=1e-6)

  @parameterized.named_parameters(*CORES)
  def test_initial_state_is_haiku_initial_state(self, pax_core, hk_core):
    core = pax_core(I, H)
    for batch in (None, 3):
      ref = hk.transform(lambda b: hk_core(H).initial_state(b)).apply(
          {}, None, batch)
      chex.assert_trees_all_equal(_hk_state(core.initial_state(batch)), ref)
      chex.assert_trees_all_equal_structs(
          _hk_state(core.initial_state(batch)), ref)

  @parameterized.named_parameters(
      ("vanilla_rnn", pax.VanillaRNN, VanillaRNNState),
      ("gru", pax.GRU, GRUState),
  )
  def test_state_is_pax_named_tuple(self, pax_core, state_type):
    # PAX: `state.hidden` of `GRUState(hidden)` / `VanillaRNNState(hidden)`.
    core = pax_core(I, H)
    state = core.initial_state(B)
    self.assertIs(type(state), state_type)
    self.assertEqual(state._fields, ("hidden",))
    self.assertEqual(state.hidden.shape, (B, H))
    new_state, h = core(state, _xs(B, I))
    self.assertIs(type(new_state), state_type)
    np.testing.assert_array_equal(h, new_state.hidden)

  def test_lstm_state_is_haiku_lstm_state(self):
    lstm = pax.LSTM(I, H)
    state = lstm.initial_state(B)
    self.assertIsInstance(state, hk.LSTMState)
    self.assertIs(pax.LSTMState, hk.LSTMState)
    new_state, h = lstm(state, _xs(B, I))
    self.assertIsInstance(new_state, hk.LSTMState)
    np.testing.assert_array_equal(h, new_state.hidden)

  def test_gradient_through_scan_matches_haiku(self):
    core = pax.LSTM(I, H)
    xs = _xs(T, B, I)

    def pax_loss(params):
      model = core.update_parameters(params)
      _, hs = _scan(model, model.initial_state(B), xs)
      return jnp.sum(hs ** 2)

    def hk_loss(params):
      hs, _ = _haiku_unroll(hk.LSTM, params, xs)
      return jnp.sum(hs ** 2)

    grads = jax.jit(jax.grad(pax_loss))(core.parameters())
    ref = jax.jit(jax.grad(hk_loss))(core.params)
    chex.assert_trees_all_close(grads.params, ref, rtol=1e-5, atol=1e-6)

  def test_unbatched_step(self):
    gru = pax.GRU(I, H)
    state, h = gru(gru.initial_state(None), _xs(I))
    self.assertEqual(h.shape, (H,))
    self.assertEqual(state.hidden.shape, (H,))

  @parameterized.named_parameters(
      ("swapped_arguments", lambda c: c(_xs(B, I), c.initial_state(B)),
       "state comes first"),
      ("wrong_batch", lambda c: c(c.initial_state(B + 1), _xs(B, I)),
       "initial_state"),
      ("wrong_input_size", lambda c: c(c.initial_state(B), _xs(B, I + 1)),
       "input_dim"),
  )
  def test_clear_errors(self, call, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      call(pax.VanillaRNN(I, H))


if __name__ == "__main__":
  quick_exit.main()
