"""Flax NNX rows: the workloads as `nnx.Module`s, trained with optax Adam.

Two calling styles:

- `flax_nnx (nnx.jit)`: `loss = step(model, optimizer, x, y)` with
  `nnx.jit`, `nnx.value_and_grad` and `nnx.Optimizer(model, tx,
  wrt=nnx.Param)` updated in place (the style of the NNX examples).
- `flax_nnx (split/merge)`: `graphdef, state = nnx.split((model,
  optimizer))` once; a plain `jax.jit` step that `nnx.merge`s, steps and
  returns `nnx.state(...)`: the functional form NNX's performance guide
  recommends for Python-overhead-bound loops. Its fused scan is the NNX scan
  row.

The modules restate Haiku's math (`workloads.linear`, ...) with the same
module granularity and hold the same initial weights (`nnx.Param`).
"""

from typing import Any, Optional

import jax

from tools.bench import frameworks
from tools.bench import workloads as wl_lib

try:
  import flax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  _IMPORT_ERROR: Optional[str] = None
except ImportError as e:  # pragma: no cover - depends on the environment
  flax = nnx = None
  _IMPORT_ERROR = str(e)

INSTALL = "pip install flax==0.12.8"


def unavailable_reason() -> Optional[str]:
  """Why the Flax NNX rows cannot run here (None if they can)."""
  if nnx is None:
    return f"flax is not installed ({_IMPORT_ERROR}); `{INSTALL}`"
  return None


def version() -> Optional[str]:
  return None if flax is None else flax.__version__


if nnx is not None:

  def _list(items):
    return nnx.List(items) if hasattr(nnx, "List") else list(items)

  class Linear(nnx.Module):

    def __init__(self, w, b):
      self.w = nnx.Param(w)
      self.b = nnx.Param(b)

    def __call__(self, x):
      return wl_lib.linear(x, self.w[...], self.b[...])

  class LayerNorm(nnx.Module):

    def __init__(self, scale, offset):
      self.scale = nnx.Param(scale)
      self.offset = nnx.Param(offset)

    def __call__(self, x):
      return wl_lib.layer_norm(x, self.scale[...], self.offset[...])

  class MLP(nnx.Module):

    def __init__(self, layers):
      self.layers = _list(layers)

    def __call__(self, x):
      for layer in self.layers[:-1]:
        x = jax.nn.relu(layer(x))
      return self.layers[-1](x)

  class Attention(nnx.Module):

    def __init__(self, q, k, v, o, num_heads):
      self.q, self.k, self.v, self.o = q, k, v, o
      self.num_heads = num_heads

    def __call__(self, x, mask):
      return wl_lib.attention(x, self.q, self.k, self.v, self.o,
                              self.num_heads, mask)

  class Block(nnx.Module):

    def __init__(self, ln1, attn, ln2, fc1, fc2):
      self.ln1, self.attn, self.ln2 = ln1, attn, ln2
      self.fc1, self.fc2 = fc1, fc2

    def __call__(self, h, mask):
      return wl_lib.transformer_block(h, self.ln1, self.attn, self.ln2,
                                      self.fc1, self.fc2, mask)

  class TransformerLM(nnx.Module):

    def __init__(self, embed, pos, blocks, ln_f, head):
      self.embed = nnx.Param(embed)
      self.pos = nnx.Param(pos)
      self.blocks = _list(blocks)
      self.ln_f, self.head = ln_f, head

    def __call__(self, tokens):
      h = wl_lib.lm_embed(tokens, self.embed[...], self.pos[...])
      mask = wl_lib.causal_mask(tokens.shape[-1])
      for block in self.blocks:
        h = block(h, mask)
      return self.head(self.ln_f(h))

  class LSTMClassifier(nnx.Module):

    def __init__(self, cell, head):
      self.cell, self.head = cell, head

    def __call__(self, xs):
      return self.head(wl_lib.lstm_unroll(self.cell.w[...], self.cell.b[...],
                                          xs))


def build_model(workload: wl_lib.Workload, weights: wl_lib.Weights) -> Any:
  """The Flax NNX model of `workload`, holding `weights`."""
  if workload.kind == "mlp":
    return MLP([Linear(w, b) for w, b in weights["layers"]])
  if workload.kind == "lstm":
    return LSTMClassifier(Linear(*weights["lstm"]), Linear(*weights["head"]))
  if workload.kind == "transformer":
    heads = workload.config["heads"]
    blocks = [
        Block(LayerNorm(*b["ln1"]),
              Attention(Linear(*b["q"]), Linear(*b["k"]), Linear(*b["v"]),
                        Linear(*b["o"]), heads),
              LayerNorm(*b["ln2"]), Linear(*b["fc1"]), Linear(*b["fc2"]))
        for b in weights["blocks"]]
    return TransformerLM(weights["embed"], weights["pos"], blocks,
                         LayerNorm(*weights["ln_f"]),
                         Linear(*weights["head"]))
  raise ValueError(workload.kind)


def loss_fn(model, x, y):
  return wl_lib.cross_entropy(model(x), y)


class NnxJit(frameworks.Impl):
  """`nnx.jit` step; the optimizer updates the model in place."""

  name = "flax_nnx (nnx.jit)"
  family = "flax_nnx"
  measures_scan = False

  def __init__(self, workload, weights, x, y, **unused):
    super().__init__(workload, weights, x, y)
    model = build_model(workload, weights)
    optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
    self.model = model
    self.graphdef, self.state = nnx.split((model, optimizer))

  def _build_step(self):

    @nnx.jit
    def step(model, optimizer, x, y):
      loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
      optimizer.update(model, grads)
      return loss

    return step

  def _initial_carry(self):
    # Fresh objects and Variables holding the initial arrays: the step
    # mutates them, and `merge` without `copy` would share the Variables.
    return nnx.merge(self.graphdef, self.state, copy=True)

  def _loop(self, step, carry, n):
    model, optimizer = carry
    x, y = self.x, self.y
    for _ in range(n):
      loss = step(model, optimizer, x, y)
    return (model, optimizer), loss

  def flatten_case(self):
    model = self.model

    def case():
      graphdef, state = nnx.split(model)
      return nnx.merge(graphdef, state)

    return case

  def args_flatten_case(self):
    model, optimizer = nnx.merge(self.graphdef, self.state)
    x, y = self.x, self.y

    def case():
      graphdef, state = nnx.split((model, optimizer))
      return nnx.merge(graphdef, state), x, y

    return case

  def params_case(self):
    model = self.model

    def case():
      params = nnx.state(model, nnx.Param)
      nnx.update(model, params)
      return model

    return case


class NnxSplitMerge(NnxJit):
  """Functional NNX: `jax.jit` over `(graphdef, state)`, merge inside."""

  name = "flax_nnx (split/merge)"
  measures_scan = True

  def _body(self):

    def step(graphdef, state, x, y):
      model, optimizer = nnx.merge(graphdef, state)
      loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
      optimizer.update(model, grads)
      return loss, nnx.state((model, optimizer))

    return step

  def _build_step(self):
    return jax.jit(self._body())

  def _initial_carry(self):
    return self.state

  def _loop(self, step, carry, n):
    graphdef, state = self.graphdef, carry
    x, y = self.x, self.y
    for _ in range(n):
      loss, state = step(graphdef, state, x, y)
    return state, loss

  def _lower(self, step, carry):
    return step.lower(self.graphdef, carry, self.x, self.y)

  def _build_scan(self):
    body = self._body()

    def scan(graphdef, state, xs, ys):

      def one(s, batch):
        loss, s = body(graphdef, s, *batch)
        return s, loss

      return jax.lax.scan(one, state, (xs, ys))

    return jax.jit(scan)

  def _scan_call(self, scan, carry, xs, ys):
    return scan(self.graphdef, carry, xs, ys)

  def _scan_lower(self, scan, carry, xs, ys):
    return scan.lower(self.graphdef, carry, xs, ys)

  def flatten_case(self):
    state = nnx.state(self.model)
    return lambda: frameworks.round_trip(state)

  def args_flatten_case(self):
    args = (self.graphdef, self.state, self.x, self.y)
    return lambda: frameworks.round_trip(args)


IMPLS = [NnxJit, NnxSplitMerge]
