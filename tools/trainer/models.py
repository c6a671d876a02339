"""The training binary's models and optimizer, built from a config.

`build_model(config)` calls the model factory `config.model` names (a
built-in alias, `mlp`, `cnn`, `lstm`, `transformer`, defined here, or your
`package.module:factory`; see `registry`). The losses and metrics are the
task's (`tasks.py`). `make_optimizer(config)` is the optax chain every run
uses.
"""

from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

import pax_haiku as pax
from tools.trainer import registry


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  return pax.max_pool(x, (2, 2), (2, 2), "VALID")


def build_model(config: Any) -> pax.Module:
  """The model `config.model` names, built with `pax.seed_rng_key(seed)`.

  `config.model` is a built-in name (`registry.MODEL_ALIASES`) or an import
  path `package.module:factory`; the factory gets the whole config (its own
  keys are in `config.model_config`).

  Raises:
    ValueError: if `config.model` does not resolve (see `registry.resolve`).
    TypeError: if the factory does not return a `pax.Module`.
  """
  factory = registry.resolve(config.model, "model")
  pax.seed_rng_key(config.seed)
  model = factory(config)
  if not isinstance(model, pax.Module):
    message = (f"config.model={config.model!r}: the factory returned "
               f"{type(model).__name__}, not a pax.Module instance.")
    if isinstance(model, (list, tuple)) and model and all(
        callable(layer) for layer in model):
      message += ("\nFix: chain the layers into one module: "
                  "`return pax.Sequential(*layers)`.")
    raise registry.FactoryResultError(message)
  return model


def mlp(config: Any) -> pax.Module:
  """Flatten -> Linear/ReLU(/Dropout) x len(hidden_sizes) -> 10 logits."""
  m = config.model_config
  sizes = [64] + list(m.hidden_sizes) + [10]
  layers = [_flatten]
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers.append(pax.Linear(a, b))
    if i < len(sizes) - 2:
      layers.append(jax.nn.relu)
      if m.dropout > 0:
        layers.append(pax.Dropout(m.dropout))
  return pax.Sequential(*layers)


def cnn(config: Any) -> pax.Module:
  """Two 3x3 convolutions, 2x2 max pool, a dense layer, 10 logits."""
  m = config.model_config
  c1, c2 = m.channels
  head = [pax.Dropout(m.dropout)] if m.dropout > 0 else []
  return pax.Sequential(
      pax.Conv2D(1, c1, 3), jax.nn.relu,
      pax.Conv2D(c1, c2, 3), jax.nn.relu,
      _max_pool_2x2,
      _flatten,
      *head,
      pax.Linear(4 * 4 * c2, m.hidden), jax.nn.relu,
      *head[:1] and [pax.Dropout(m.dropout)],
      pax.Linear(m.hidden, 10))


def lstm(config: Any) -> pax.Module:
  """`CharLSTM` over bytes."""
  m = config.model_config
  return CharLSTM(m.embed_dim, m.hidden_dim)


def transformer(config: Any) -> pax.Module:
  """`pax.nets.TransformerLM` over bytes, `config.seq_len` positions."""
  m = config.model_config
  return pax.nets.TransformerLM(
      vocab_size=256, dim=m.d_model, num_heads=m.num_heads,
      num_layers=m.num_layers, max_len=config.seq_len,
      dropout_rate=m.dropout)


class CharLSTM(pax.Module):
  """Byte embedding -> LSTM (unrolled with pax.scan) -> logits."""

  def __init__(self, embed_dim: int, hidden_dim: int):
    super().__init__()
    self.embed = pax.Embed(256, embed_dim)
    self.lstm = pax.LSTM(embed_dim, hidden_dim)
    self.output = pax.Linear(hidden_dim, 256)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = self.embed(tokens)  # (B, T, E)
    state = self.lstm.initial_state(tokens.shape[0])
    _, h = pax.scan(self.lstm, state, x, time_major=False)
    return self.output(h)


class GradNormState(NamedTuple):
  """The global norm of the last step's gradients, before clipping."""
  grad_norm: jax.Array


def record_grad_norm() -> optax.GradientTransformation:
  """Keeps the gradients' global norm in the optimizer state.

  Updates pass through unchanged, so training is bit-identical with or
  without it; `optimizer_metrics` reads the norm back.
  """

  def init(params):
    del params
    return GradNormState(jnp.zeros([], jnp.float32))

  def update(updates, state, params=None):
    del state, params
    return updates, GradNormState(
        optax.tree.norm(updates).astype(jnp.float32))

  return optax.GradientTransformation(init, update)


def learning_rate_schedule(config: Any) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay to 1% of `learning_rate`."""
  return optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, max(1, config.warmup_steps),
      max(config.num_steps, config.warmup_steps + 1),
      end_value=config.learning_rate * 0.01)


def make_optimizer(config: Any,
                   record_norm: bool = True) -> optax.GradientTransformation:
  """AdamW (or SGD) with warmup + cosine decay and global-norm clipping.

  Args:
    config: the training config.
    record_norm: start the chain with `record_grad_norm` (False: the chain
      of checkpoints written before it was added, for conversion).
  """
  schedule = learning_rate_schedule(config)
  if config.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=config.weight_decay)
  elif config.optimizer == "adam":
    opt = optax.adam(schedule)
  else:
    opt = optax.sgd(schedule, momentum=0.9)
  clipped = (optax.clip_by_global_norm(config.grad_clip), opt)
  return optax.chain(record_grad_norm(), *clipped) if record_norm else (
      optax.chain(*clipped))


def grad_norm(optimizer: Any) -> jax.Array:
  """The global gradient norm of the optimizer's last update
  (`record_grad_norm`), before clipping."""
  return optax.tree_utils.tree_get(optimizer.opt_state, "grad_norm")


def optimizer_metrics(schedule: optax.Schedule, optimizer: Any,
                      step: int) -> Dict[str, float]:
  """The learning rate and gradient norm of the update that made `step`.

  `train/learning_rate` is `schedule`'s value for that update (the
  optimizer's count is `step - 1` there); `train/grad_norm` is the global
  norm of its gradients before clipping (`record_grad_norm`). Reading the
  norm may gather across processes: call it on every process.

  Args:
    schedule: `learning_rate_schedule(config)`, best jitted once per run
      (evaluated eagerly, a schedule compiles one program per operation).
    optimizer: the `pax.Optimizer` after that update.
    step: the step the update made.
  """
  norm = grad_norm(optimizer)
  return {"train/learning_rate": float(schedule(step - 1)),
          "train/grad_norm": float(pax.sharding.to_host(norm))}


def summarize(sums: Dict[str, Any]) -> Dict[str, float]:
  count = float(sums.pop("count"))
  return {k: float(v) / count for k, v in sums.items()}
