"""The benchmark workloads, their data and their framework-neutral weights.

Every framework trains the same architecture from the same initial weights on
the same batches: the weights are created once by the raw Haiku model
(`hk.transform_with_state(...).init`), turned into a framework-neutral
nested structure of arrays (`Weights`, see `canonical_weights`), and loaded
into each framework's model. The shared math in this file (`linear`,
`layer_norm`, `attention`, `lstm_step`) restates Haiku's own (`hk.Linear`,
`hk.LayerNorm`, `hk.MultiHeadAttention`, `hk.LSTM`) so that the peers compute
exactly what Haiku computes; `run_all` checks that every framework's first
loss matches raw Haiku's.

Workloads (the names used in BENCHMARKS.md):

- W1: MLP 64-256-256-10, batch 128.
- W2: MLP 784-512-512-10, batch 256.
- W3: 4-layer pre-LN causal Transformer LM (d 128, 4 heads, seq 64, batch 16,
  vocabulary 256), `pax.nets.haiku_transformer.TransformerLM`.
- W4: LSTM (64 inputs, 256 cells) over 50 steps, batch 32, linear head on the
  last output.
- Wdeep: 48-layer width-64 MLP (47 hidden layers of 64, 10 outputs), batch
  32: dispatch-bound.
"""

import dataclasses
from typing import Any, Callable, Dict, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pax_haiku.nets import haiku_transformer

# Framework-neutral weights: nested dicts / lists / tuples of arrays.
Weights = Dict[str, Any]

LEARNING_RATE = 1e-3


def make_optimizer() -> optax.GradientTransformation:
  """Adam, the one optimizer used by every framework."""
  return optax.adam(LEARNING_RATE)


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark workload.

  Attributes:
    name: short name (`W1`, ..., `Wdeep`).
    title: one-line description for the report.
    kind: `mlp`, `transformer` or `lstm`.
    config: architecture sizes (see the module docstring).
    batch_size: examples per step.
  """
  name: str
  title: str
  kind: str
  config: Dict[str, Any]
  batch_size: int

  def haiku_forward(self) -> Callable[..., jax.Array]:
    """The raw Haiku forward function (for `hk.transform_with_state`)."""
    c = self.config
    if self.kind == "mlp":
      sizes = list(c["sizes"][1:])
      return lambda x: hk.nets.MLP(sizes)(x)
    if self.kind == "transformer":
      return lambda tokens: haiku_transformer.TransformerLM(
          c["vocab"], c["dim"], c["heads"], c["layers"], c["seq"])(
              tokens, is_training=True)
    if self.kind == "lstm":

      def forward(xs):
        core = hk.LSTM(c["hidden"])
        hs, _ = hk.dynamic_unroll(core, xs, core.initial_state(xs.shape[0]),
                                  time_major=False)
        return hk.Linear(c["classes"])(hs[:, -1])

      return forward
    raise ValueError(self.kind)

  def make_batches(self, num: int, seed: int) -> Tuple[np.ndarray,
                                                       np.ndarray]:
    """`num` batches `(xs, ys)` stacked on a leading axis (NumPy)."""
    rng = np.random.RandomState(seed)
    c, b = self.config, self.batch_size
    if self.kind == "mlp":
      xs = rng.randn(num, b, c["sizes"][0]).astype(np.float32)
      ys = rng.randint(0, c["sizes"][-1], (num, b)).astype(np.int32)
    elif self.kind == "transformer":
      tokens = rng.randint(0, c["vocab"], (num, b, c["seq"] + 1))
      xs = tokens[..., :-1].astype(np.int32)
      ys = tokens[..., 1:].astype(np.int32)
    elif self.kind == "lstm":
      xs = rng.randn(num, b, c["steps"], c["inputs"]).astype(np.float32)
      ys = rng.randint(0, c["classes"], (num, b)).astype(np.int32)
    else:
      raise ValueError(self.kind)
    return xs, ys

  def matmul_flops_per_step(self) -> int:
    """Matmul FLOPs of one MLP training step (forward + backward).

    Forward `2*B*in*out` per layer; backward the weight gradient of every
    layer and the input gradient of every layer but the first (the data
    needs no gradient). Only for `mlp` workloads.
    """
    if self.kind != "mlp":
      raise ValueError("matmul_flops_per_step is defined for MLPs only")
    sizes = self.config["sizes"]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    macs = sum(i * o for i, o in pairs)
    return 2 * self.batch_size * (2 * macs + macs - pairs[0][0] * pairs[0][1])


WORKLOADS: Dict[str, Workload] = {
    w.name: w for w in [
        Workload("W1", "MLP 64-256-256-10, batch 128", "mlp",
                 {"sizes": (64, 256, 256, 10)}, 128),
        Workload("W2", "MLP 784-512-512-10, batch 256", "mlp",
                 {"sizes": (784, 512, 512, 10)}, 256),
        Workload("W3", "Transformer LM: 4 layers, d 128, 4 heads, seq 64, "
                 "vocab 256, batch 16", "transformer",
                 {"vocab": 256, "dim": 128, "heads": 4, "layers": 4,
                  "seq": 64}, 16),
        Workload("W4", "LSTM 64->256 over 50 steps + linear head, batch 32",
                 "lstm",
                 {"inputs": 64, "hidden": 256, "steps": 50, "classes": 10},
                 32),
        Workload("Wdeep", "MLP 64 x 48 layers (width 64, 10 outputs), "
                 "batch 32", "mlp", {"sizes": (64,) * 48 + (10,)}, 32),
    ]
}


def haiku_init(workload: Workload, x: Any) -> Tuple[Any, Any]:
  """Raw Haiku `(params, state)` for `workload` (seed 0), jitted init."""
  transformed = hk.transform_with_state(workload.haiku_forward())
  return jax.jit(transformed.init)(jax.random.PRNGKey(0), x)


def canonical_weights(workload: Workload, params: Any) -> Weights:
  """Framework-neutral weights from raw Haiku params.

  Args:
    workload: the workload.
    params: `haiku_init(workload, x)[0]`.

  Returns:
    `mlp`: `{"layers": [(w, b), ...]}`; `lstm`: `{"lstm": (w, b), "head":
    (w, b)}`; `transformer`: `{"embed", "pos", "blocks": [{"ln1", "q", "k",
    "v", "o", "ln2", "fc1", "fc2"}], "ln_f", "head"}` where linears are
    `(w, b)` and layer norms `(scale, offset)`.
  """
  def lin(key):
    return (params[key]["w"], params[key]["b"])

  if workload.kind == "mlp":
    n = len(workload.config["sizes"]) - 1
    return {"layers": [lin(f"mlp/~/linear_{i}") for i in range(n)]}
  if workload.kind == "lstm":
    return {"lstm": lin("lstm/linear"), "head": lin("linear")}
  if workload.kind == "transformer":
    top = "transformer_lm"
    stack = f"{top}/transformer"

    def ln(key):
      return (params[key]["scale"], params[key]["offset"])

    blocks = []
    for i in range(workload.config["layers"]):
      p = f"{stack}/layer_{i}"
      blocks.append({
          "ln1": ln(f"{p}_ln_attn"), "q": lin(f"{p}_attn/query"),
          "k": lin(f"{p}_attn/key"), "v": lin(f"{p}_attn/value"),
          "o": lin(f"{p}_attn/linear"), "ln2": ln(f"{p}_ln_mlp"),
          "fc1": lin(f"{p}_mlp_in"), "fc2": lin(f"{p}_mlp_out")})
    return {"embed": params[f"{top}/token_embed"]["embeddings"],
            "pos": params[top]["positional_embeddings"], "blocks": blocks,
            "ln_f": ln(f"{stack}/ln_final"), "head": lin(f"{top}/lm_head")}
  raise ValueError(workload.kind)


def num_parameters(weights: Weights) -> int:
  return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(weights))


# ----------------------------------------------------------------------------
# Shared math (Haiku's, restated for the peers).
# ----------------------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels (every framework)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         labels).mean()


def linear(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """`hk.Linear`: `dot(x, w) + broadcast(b)`."""
  out = jnp.dot(x, w)
  return out + jnp.broadcast_to(b, out.shape)


def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array,
               eps: float = 1e-5) -> jax.Array:
  """`hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)`."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  variance = jnp.var(x, axis=-1, keepdims=True)
  inv = scale * jax.lax.rsqrt(variance + jax.lax.convert_element_type(
      eps, variance.dtype))
  return inv * (x - mean) + offset


def causal_mask(seq_len: int) -> jax.Array:
  return jnp.tril(jnp.ones((1, 1, seq_len, seq_len), dtype=bool))


def attention(x: jax.Array, q: Callable[[jax.Array], jax.Array],
              k: Callable[[jax.Array], jax.Array],
              v: Callable[[jax.Array], jax.Array],
              o: Callable[[jax.Array], jax.Array], num_heads: int,
              mask: jax.Array) -> jax.Array:
  """`hk.MultiHeadAttention` self-attention (q/k/v/o are the projections)."""
  *lead, seq_len, dim = x.shape
  key_size = dim // num_heads

  def heads(proj):
    return proj(x).reshape((*lead, seq_len, num_heads, key_size))

  qh, kh, vh = heads(q), heads(k), heads(v)
  logits = jnp.einsum("...thd,...Thd->...htT", qh, kh)
  logits = logits / np.sqrt(key_size).astype(x.dtype)
  logits = jnp.where(mask, logits, -1e30)
  weights = jax.nn.softmax(logits)
  out = jnp.einsum("...htT,...Thd->...thd", weights, vh)
  return o(jnp.reshape(out, (*lead, seq_len, -1)))


def transformer_block(h: jax.Array, ln1, attn, ln2, fc1, fc2,
                      mask: jax.Array) -> jax.Array:
  """One pre-LN block of `haiku_transformer.Transformer` (no dropout)."""
  h = h + attn(ln1(h), mask)
  return h + fc2(jax.nn.gelu(fc1(ln2(h))))


def lm_embed(tokens: jax.Array, embed: jax.Array,
             pos: jax.Array) -> jax.Array:
  """Token (`hk.Embed`, ARRAY_INDEX) plus learned positional embeddings."""
  return jnp.asarray(embed)[(tokens,)] + pos[:tokens.shape[-1]]


def lstm_step(w: jax.Array, b: jax.Array, state: Tuple[jax.Array, jax.Array],
              x: jax.Array) -> Tuple[Tuple[jax.Array, jax.Array], jax.Array]:
  """`hk.LSTM` step: `((hidden, cell), x) -> ((hidden, cell), hidden)`."""
  hidden, cell = state
  gated = linear(jnp.concatenate([x, hidden], axis=-1), w, b)
  i, g, f, o = jnp.split(gated, indices_or_sections=4, axis=-1)
  f = jax.nn.sigmoid(f + 1)
  cell = f * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
  hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
  return (hidden, cell), hidden


def lstm_unroll(w: jax.Array, b: jax.Array, xs: jax.Array) -> jax.Array:
  """Runs `lstm_step` over batch-major `xs` `[B, T, F]`; the last output."""
  batch = xs.shape[0]
  hidden = w.shape[-1] // 4
  zeros = jnp.zeros((batch, hidden), xs.dtype)
  _, hs = jax.lax.scan(lambda s, x: lstm_step(w, b, s, x), (zeros, zeros),
                       jnp.swapaxes(xs, 0, 1))
  return hs[-1]

