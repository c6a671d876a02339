"""Equinox rows: the workloads as `eqx.Module`s, trained with optax Adam.

Two calling styles:

- `equinox (filter_jit)`: `model, opt_state, loss = step(model, opt_state,
  x, y)` with `eqx.filter_jit`, `eqx.filter_value_and_grad` and
  `eqx.apply_updates` (the style of Equinox's examples).
- `equinox (jax.jit)`: `eqx.partition` once outside the loop, then a plain
  `jax.jit` step over the array leaves, `eqx.combine` inside (the faster form
  from Equinox's FAQ); its fused scan is the Equinox scan row.

The modules restate Haiku's math (`workloads.linear`, ...) with the same
module granularity (one module per linear / layer norm / attention / block),
and hold the same initial weights.
"""

from typing import Any, Optional

import jax
import optax

from tools.bench import frameworks
from tools.bench import workloads as wl_lib

try:
  import equinox as eqx  # pylint: disable=g-import-not-at-top
  _IMPORT_ERROR: Optional[str] = None
except ImportError as e:  # pragma: no cover - depends on the environment
  eqx = None
  _IMPORT_ERROR = str(e)

INSTALL = "pip install equinox==0.13.8"


def unavailable_reason() -> Optional[str]:
  """Why the Equinox rows cannot run here (None if they can)."""
  if eqx is None:
    return f"equinox is not installed ({_IMPORT_ERROR}); `{INSTALL}`"
  return None


def version() -> Optional[str]:
  return None if eqx is None else eqx.__version__


if eqx is not None:

  class Linear(eqx.Module):
    w: jax.Array
    b: jax.Array

    def __call__(self, x):
      return wl_lib.linear(x, self.w, self.b)

  class LayerNorm(eqx.Module):
    scale: jax.Array
    offset: jax.Array

    def __call__(self, x):
      return wl_lib.layer_norm(x, self.scale, self.offset)

  class MLP(eqx.Module):
    layers: tuple

    def __call__(self, x):
      for layer in self.layers[:-1]:
        x = jax.nn.relu(layer(x))
      return self.layers[-1](x)

  class Attention(eqx.Module):
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    num_heads: int = eqx.field(static=True)

    def __call__(self, x, mask):
      return wl_lib.attention(x, self.q, self.k, self.v, self.o,
                              self.num_heads, mask)

  class Block(eqx.Module):
    ln1: LayerNorm
    attn: Attention
    ln2: LayerNorm
    fc1: Linear
    fc2: Linear

    def __call__(self, h, mask):
      return wl_lib.transformer_block(h, self.ln1, self.attn, self.ln2,
                                      self.fc1, self.fc2, mask)

  class TransformerLM(eqx.Module):
    embed: jax.Array
    pos: jax.Array
    blocks: tuple
    ln_f: LayerNorm
    head: Linear

    def __call__(self, tokens):
      h = wl_lib.lm_embed(tokens, self.embed, self.pos)
      mask = wl_lib.causal_mask(tokens.shape[-1])
      for block in self.blocks:
        h = block(h, mask)
      return self.head(self.ln_f(h))

  class LSTMClassifier(eqx.Module):
    cell: Linear
    head: Linear

    def __call__(self, xs):
      return self.head(wl_lib.lstm_unroll(self.cell.w, self.cell.b, xs))


def build_model(workload: wl_lib.Workload, weights: wl_lib.Weights) -> Any:
  """The Equinox model of `workload`, holding `weights`."""
  if workload.kind == "mlp":
    return MLP(tuple(Linear(w, b) for w, b in weights["layers"]))
  if workload.kind == "lstm":
    return LSTMClassifier(Linear(*weights["lstm"]), Linear(*weights["head"]))
  if workload.kind == "transformer":
    heads = workload.config["heads"]
    blocks = tuple(
        Block(LayerNorm(*b["ln1"]),
              Attention(Linear(*b["q"]), Linear(*b["k"]), Linear(*b["v"]),
                        Linear(*b["o"]), heads),
              LayerNorm(*b["ln2"]), Linear(*b["fc1"]), Linear(*b["fc2"]))
        for b in weights["blocks"])
    return TransformerLM(weights["embed"], weights["pos"], blocks,
                         LayerNorm(*weights["ln_f"]),
                         Linear(*weights["head"]))
  raise ValueError(workload.kind)


def loss_fn(model, x, y):
  return wl_lib.cross_entropy(model(x), y)


class EquinoxFilterJit(frameworks.Impl):
  """`eqx.filter_jit` step on the whole model."""

  name = "equinox (filter_jit)"
  family = "equinox"
  measures_scan = False

  def __init__(self, workload, weights, x, y, **unused):
    super().__init__(workload, weights, x, y)
    self.model = build_model(workload, weights)
    self.opt_state = self.tx.init(eqx.filter(self.model, eqx.is_array))

  def _build_step(self):
    tx = self.tx

    @eqx.filter_jit
    def step(model, opt_state, x, y):
      loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
      updates, opt_state = tx.update(grads, opt_state,
                                     eqx.filter(model, eqx.is_array))
      return eqx.apply_updates(model, updates), opt_state, loss

    return step

  def _initial_carry(self):
    return (self.model, self.opt_state)

  def flatten_case(self):
    model = self.model
    return lambda: frameworks.round_trip(model)

  def args_flatten_case(self):
    args = (self.model, self.opt_state, self.x, self.y)
    return lambda: frameworks.round_trip(args)

  def params_case(self):
    model = self.model

    def case():
      params, static = eqx.partition(model, eqx.is_array)
      return eqx.combine(params, static)

    return case


class EquinoxJaxJit(EquinoxFilterJit):
  """`eqx.partition` outside the loop; plain `jax.jit` over the arrays."""

  name = "equinox (jax.jit)"
  measures_scan = True

  def __init__(self, workload, weights, x, y, **unused):
    super().__init__(workload, weights, x, y)
    self.params, self.static = eqx.partition(self.model, eqx.is_array)

  def _body(self):
    tx, static = self.tx, self.static

    def step(params, opt_state, x, y):
      loss, grads = jax.value_and_grad(
          lambda p: loss_fn(eqx.combine(p, static), x, y))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    return step

  def _build_step(self):
    return jax.jit(self._body())

  def _initial_carry(self):
    return (self.params, self.opt_state)

  def _build_scan(self):
    body = self._body()

    def scan(carry, xs, ys):

      def one(c, batch):
        params, opt_state, loss = body(*c, *batch)
        return (params, opt_state), loss

      return jax.lax.scan(one, carry, (xs, ys))

    return jax.jit(scan)

  def args_flatten_case(self):
    args = (self.params, self.opt_state, self.x, self.y)
    return lambda: frameworks.round_trip(args)


IMPLS = [EquinoxFilterJit, EquinoxJaxJit]
