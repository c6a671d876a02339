"""Weights saved by real PAX (pax3 0.5.9) load into pax_haiku layers.

The fixtures in tests/data/pax_weights were written by
tools/pax_compat/make_fixtures.py under PAX itself (see its docstring): each
holds a PAX module's state_dict, an input and PAX's output. Here the same
architecture is built with pax_haiku, the weights are loaded with
`pax_state_dict.load_state_dict`, and the outputs must match PAX's.
"""

import functools
import io
import json
import os
import pickle

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from pax_haiku._src import pax_state_dict
import quick_exit  # tests/quick_exit.py, beside this file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "pax_weights")
RTOL = 1e-5
ATOL = 1e-6  # For outputs near 0 (JAX 0.4.30 against this JAX).


def _fixture(kind):
  with np.load(os.path.join(DATA, f"{kind}.npz"), allow_pickle=False) as f:
    flat = {k: f[k] for k in f.files}
  config = json.loads(str(flat.pop("config")))
  sd = pax_state_dict.unflatten_state_dict(flat, prefix="state_dict")
  inputs = {k[len("input/"):]: v for k, v in flat.items()
            if k.startswith("input/")}
  outputs = {k[len("output/"):]: v for k, v in flat.items()
             if k.startswith("output/")}
  return config, sd, inputs, outputs, flat


def _scan(core, xs):
  state = core.initial_state(xs.shape[1])
  hs = []
  for x in xs:
    state, h = core(state, jnp.asarray(x))
    hs.append(h)
  return state, jnp.stack(hs)


# kind -> (pax_haiku module, fn(module, inputs) -> {output name: array}).
def _y(fn):
  return lambda m, i: {"y": fn(m, i)}


CASES = {
    "linear": (lambda: pax.Linear(3, 4), _y(lambda m, i: m(i["x"]))),
    "linear_no_bias": (lambda: pax.Linear(3, 4, with_bias=False),
                       _y(lambda m, i: m(i["x"]))),
    "conv1d": (lambda: pax.Conv1D(3, 4, 3), _y(lambda m, i: m(i["x"]))),
    "conv2d": (lambda: pax.Conv2D(3, 4, 3, stride=2),
               _y(lambda m, i: m(i["x"]))),
    "conv2d_nchw": (lambda: pax.Conv2D(3, 4, (3, 2), data_format="NCHW",
                                       padding=((1, 1), (0, 1))),
                    _y(lambda m, i: m(i["x"]))),
    "conv2d_no_bias": (lambda: pax.Conv2D(3, 4, 3, with_bias=False,
                                          padding="VALID"),
                       _y(lambda m, i: m(i["x"]))),
    "conv1d_transpose": (lambda: pax.Conv1DTranspose(4, 3, 3, stride=2),
                         _y(lambda m, i: m(i["x"]))),
    "conv2d_transpose": (lambda: pax.Conv2DTranspose(4, 3, 3, stride=2),
                         _y(lambda m, i: m(i["x"]))),
    "batchnorm1d": (lambda: pax.BatchNorm1D(3).eval(),
                    _y(lambda m, i: m(i["x"]))),
    "batchnorm2d": (lambda: pax.BatchNorm2D(3, data_format="NCHW").eval(),
                    _y(lambda m, i: m(i["x"]))),
    "layernorm": (lambda: pax.LayerNorm(5), _y(lambda m, i: m(i["x"]))),
    "groupnorm": (lambda: pax.GroupNorm(2, 4), _y(lambda m, i: m(i["x"]))),
    "embed": (lambda: pax.Embed(7, 3), _y(lambda m, i: m(i["ids"]))),
    "lstm": (lambda: pax.LSTM(3, 4),
             lambda m, i: dict(zip(("final_cell", "hidden_seq"), (
                 lambda s, h: (s.cell, h))(*_scan(m, i["xs"]))))),
    "gru": (lambda: pax.GRU(3, 4),
            lambda m, i: {"hidden_seq": _scan(m, i["xs"])[1]}),
    "vanilla_rnn": (lambda: pax.VanillaRNN(3, 4, activation=jnp.tanh,
                                           double_bias=False),
                    lambda m, i: {"hidden_seq": _scan(m, i["xs"])[1]}),
    "multi_head_attention": (
        lambda: pax.MultiHeadAttention(2, 3, 1.0),
        _y(lambda m, i: m(i["query"], i["key"], i["value"], i["mask"]))),
    "sequential": (lambda: pax.Sequential(pax.Linear(3, 5), jax.nn.relu,
                                          pax.LayerNorm(5), pax.Linear(5, 2)),
                   _y(lambda m, i: m(i["x"]))),
    "mlp": (lambda: pax.nets.MLP(3, [6, 5, 2]), _y(lambda m, i: m(i["x"]))),
    "resnet": (lambda: pax.nets.ResNet(
        3, 5, blocks_per_group=(2, 2, 2, 2), channels_per_group=(4, 8, 8, 8),
        initial_conv_config={"output_channels": 4}, data_format="NCHW",
        padding="pax").eval(),
               lambda m, i: {"y": m(i["x"]), "y_even": m(i["x_even"])}),
    "transformer": (lambda: pax.nets.Transformer(8, 2, 2).eval(),
                    lambda m, i: {"y": m(i["h"]),
                                  "y_mask": m(i["h"], i["mask"])}),
}


@functools.lru_cache(maxsize=None)
def _built(kind):
  """Each case's module, built once: loading returns a new module (modules
  are immutable), and building runs the initializers (and, for BatchNorm,
  compiles a forward pass)."""
  return CASES[kind][0]()


class PaxWeightsTest(parameterized.TestCase):

  def test_every_fixture_has_a_case(self):
    kinds = {f[:-4] for f in os.listdir(DATA) if f.endswith(".npz")}
    self.assertEqual(kinds, set(CASES))

  @parameterized.named_parameters((k, k) for k in sorted(CASES))
  def test_loads_and_matches_pax(self, kind):
    run = CASES[kind][1]
    config, sd, inputs, outputs, _ = _fixture(kind)
    net = pax_state_dict.load_state_dict(_built(kind), sd)
    # One compiled program per case: run eagerly, every op of a new shape
    # is a compilation of its own (the ResNet's forward passes: 4 s of CPU
    # eagerly, 1 s jitted).
    got = jax.jit(run)(net, {k: jnp.asarray(v) for k, v in inputs.items()})
    wanted = {k: v for k, v in outputs.items() if k != "train"}
    self.assertEqual(set(got), set(wanted), config["notes"])
    for name, want in wanted.items():
      # A float32 sum's rounding error scales with its largest terms, not
      # with the result: a deep net's output near 0 beside outputs near 2
      # differs by a few 1e-6 between CPUs (AVX2 against AVX-512 kernels),
      # so the absolute tolerance is relative to the output's scale.
      atol = max(ATOL, RTOL * float(np.max(np.abs(want))))
      np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=atol,
                                 err_msg=f"{kind}: output {name}")

  @parameterized.named_parameters((k, k) for k in sorted(CASES))
  def test_state_dict_round_trip(self, kind):
    """state_dict(load_state_dict(m, sd)) gives PAX's sd back."""
    _, sd, _, _, flat = _fixture(kind)
    net = pax_state_dict.load_state_dict(_built(kind), sd)
    back = pax_state_dict.flatten_state_dict(pax_state_dict.state_dict(net))
    want = {k[len("state_dict/"):]: v for k, v in flat.items()
            if k.startswith("state_dict/")}
    if kind == "transformer":  # PAX's dropout key is not loaded.
      want.pop("rng_seq/_rng_key")
      back.pop("rng_seq/_rng_key")
    self.assertEqual(sorted(back), sorted(want))
    for key, value in want.items():
      np.testing.assert_allclose(
          np.reshape(back[key], np.shape(value)), value, rtol=RTOL,
          atol=ATOL, err_msg=key)
    # And loading that again gives the same module.
    again = pax_state_dict.load_state_dict(
        _built(kind), pax_state_dict.state_dict(net))
    for a, b in zip(jax.tree_util.tree_leaves(net),
                    jax.tree_util.tree_leaves(again)):
      np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)

  @parameterized.parameters("batchnorm1d", "batchnorm2d")
  def test_batchnorm_training_step_matches_pax(self, kind):
    _, sd, inputs, outputs, flat = _fixture(kind)
    bn = pax_state_dict.load_state_dict(_built(kind), sd).train()
    bn, y = pax.purecall(bn, jnp.asarray(inputs["x"]))
    np.testing.assert_allclose(y, outputs["train"], rtol=RTOL, atol=ATOL)
    after = pax_state_dict.state_dict(bn)
    for name in ("ema_mean", "ema_var"):
      want = flat[f"after_train_step/{name}"]
      np.testing.assert_allclose(
          np.reshape(after[name]["averages"], want.shape), want, rtol=RTOL,
          atol=ATOL, err_msg=name)

  def test_pax_pickle_checkpoint(self):
    """The pickle PAX's way of saving writes (a trusted file: ours)."""
    _, _, inputs, outputs, _ = _fixture("mlp")
    net = pax_state_dict.load_pax_pickle(
        pax.nets.MLP(3, [6, 5, 2]), os.path.join(DATA, "mlp_checkpoint.pkl"))
    np.testing.assert_allclose(net(jnp.asarray(inputs["x"])), outputs["y"],
                               rtol=RTOL, atol=ATOL)
    raw = pax_state_dict.read_pax_pickle(
        os.path.join(DATA, "mlp_checkpoint.pkl"))
    self.assertEqual(raw["step"], 7)
    seq = pax_state_dict.load_state_dict(
        pax.Sequential(pax.Linear(3, 6), jax.nn.relu, pax.Linear(6, 5),
                       jax.nn.relu, pax.Linear(5, 2)), raw["state_dict"])
    np.testing.assert_allclose(seq(jnp.asarray(inputs["x"])), outputs["y"],
                               rtol=RTOL, atol=ATOL)

  def test_pickle_without_state_dict_key(self):
    f = io.BytesIO(pickle.dumps({"model": {}}))
    with self.assertRaisesRegex(ValueError, "no `state_dict` entry"):
      pax_state_dict.load_pax_pickle(pax.Linear(2, 3), f)
    f = io.BytesIO(pickle.dumps({"weight": np.ones((2, 3), np.float32),
                                 "bias": np.ones((3,), np.float32)}))
    fc = pax_state_dict.load_pax_pickle(pax.Linear(2, 3), f, key=None)
    self.assertEqual(float(fc.bias.sum()), 3.0)

  def test_missing_entry_names_path(self):
    _, sd, _, _, _ = _fixture("sequential")
    del sd["modules"]["3"]["bias"]
    with self.assertRaisesRegex(ValueError, r"(?s)`modules/3/bias`.*\n.*Fix"):
      pax_state_dict.load_state_dict(_built("sequential"), sd)

  def test_extra_entry_names_path(self):
    _, sd, _, _, _ = _fixture("linear_no_bias")
    sd["bias"] = np.zeros((4,), np.float32)
    with self.assertRaisesRegex(ValueError, r"unexpected entry `bias`"):
      pax_state_dict.load_state_dict(_built("linear_no_bias"), sd)
    _, sd, _, _, _ = _fixture("transformer")
    sd["layers"]["1"]["dense_block"]["fc3"] = {"weight": np.ones((2, 2))}
    with self.assertRaisesRegex(ValueError,
                                "`layers/1/dense_block/fc3/weight`"):
      pax_state_dict.load_state_dict(_built("transformer"), sd)

  def test_shape_mismatch_names_path(self):
    _, sd, _, _, _ = _fixture("resnet")
    with self.assertRaisesRegex(
        ValueError, r"(?s)`block_groups/3/blocks/0/layers/0/0/weight` has "
        r"shape \(3, 3, 8, 8\).*needs \(3, 3, 8, 16\).*\nFix"):
      # Shapes only: the error comes before any value is read.
      pax_state_dict.load_state_dict(jax.eval_shape(lambda: pax.nets.ResNet(
          3, 5, blocks_per_group=(2, 2, 2, 2),
          channels_per_group=(4, 8, 8, 16),
          initial_conv_config={"output_channels": 4})), sd)

  def test_wrong_architecture(self):
    _, sd, _, _, _ = _fixture("gru")
    with self.assertRaisesRegex(ValueError, "no entry `fc/weight`"):
      pax_state_dict.load_state_dict(pax.LSTM(3, 4), sd)
    with self.assertRaisesRegex(TypeError, "expects a PAX state_dict"):
      pax_state_dict.load_state_dict(pax.Linear(2, 3), [1, 2])

  def test_user_module(self):
    """A user's pax.Module mirrors PAX's attribute names."""

    class Net(pax.Module):

      def __init__(self):
        super().__init__()
        self.body = pax.Sequential(pax.Linear(3, 5), jax.nn.relu,
                                   pax.LayerNorm(5), pax.Linear(5, 2))
        self.scale = jnp.ones((2,))

      def __call__(self, x):
        return self.body(x) * self.scale

    _, sd, inputs, outputs, _ = _fixture("sequential")
    net = pax_state_dict.load_state_dict(
        Net(), {"body": sd, "scale": np.full((2,), 2.0, np.float32)})
    np.testing.assert_allclose(net(jnp.asarray(inputs["x"])),
                               2 * outputs["y"], rtol=RTOL, atol=ATOL)
    self.assertEqual(sorted(pax_state_dict.state_dict(net)),
                     ["body", "scale"])

  def test_fixtures_are_small(self):
    total = sum(os.path.getsize(os.path.join(DATA, f))
                for f in os.listdir(DATA))
    self.assertLess(total, 1 << 20)


if __name__ == "__main__":
  quick_exit.main()
