"""Training tasks: the loss, the eval metrics and the checks of the examples.

`config.task` chooses one of `TASKS`:

* `classification`: examples `(inputs, label)` with an integer label; the
  model maps a batch of inputs to logits `(batch, num_classes)`; metrics
  `loss` (cross-entropy) and `accuracy`.
* `language_model`: examples `(tokens, next_tokens)`, two integer arrays of
  the same shape `(seq_len,)`; the model maps tokens `(batch, seq_len)` to
  logits `(batch, seq_len, vocab)`; metrics `loss` (nats per token) and
  `bits_per_char` (bits per token).

Losses have the `pax.build_update_fn` form `loss_fn(model, batch) ->
(loss, (metrics, model))`; eval functions `eval_fn(model, batch, mask)`
return the metrics summed over the examples whose mask is 1, plus `count`.
`check(config, model, train, test)` runs before training: it reads a few
examples and traces the model on two of them, and raises `ValueError`
naming what does not fit (structure, shapes, dtypes, the model's output).
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
from tools.trainer import sources

__all__ = ["TASKS", "Task", "check", "eval_fn_for", "get", "loss_fn_for"]

LN2 = math.log(2.0)


def _classification_loss(model, batch):
  x, y = batch
  model, logits = pax.purecall(model, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  acc = jnp.mean(jnp.argmax(logits, -1) == y)
  return loss, ({"loss": loss, "accuracy": acc}, model)


def _classification_eval(model, batch, mask):
  x, y = batch
  logits = model.eval()(x)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return {"loss": jnp.sum(nll * mask), "accuracy": jnp.sum(correct * mask),
          "count": jnp.sum(mask)}


def _lm_loss(model, batch):
  inputs, targets = batch
  model, logits = pax.purecall(model, inputs)
  loss = jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, targets))
  return loss, ({"loss": loss, "bits_per_char": loss / LN2}, model)


def _lm_eval(model, batch, mask):
  inputs, targets = batch
  logits = model.eval()(inputs)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  per_seq = jnp.mean(nll, axis=-1)
  return {"loss": jnp.sum(per_seq * mask),
          "bits_per_char": jnp.sum(per_seq * mask) / LN2,
          "count": jnp.sum(mask)}


def _classification_shapes(inputs, label, logits) -> Optional[str]:
  if label.shape != ():
    return (f"a classification label is one integer, got shape "
            f"{label.shape}; use --config.task=language_model for "
            "per-token labels")
  if logits.ndim != 2:
    return (f"the model's output for a batch of 2 has shape {logits.shape}; "
            "classification needs logits of shape (batch, num_classes)")
  del inputs
  return None


def _lm_shapes(inputs, label, logits) -> Optional[str]:
  if label.shape != inputs.shape or inputs.ndim != 1:
    return ("a language_model example is (tokens, next_tokens) of the same "
            f"shape (seq_len,), got {inputs.shape} and {label.shape}")
  if not np.issubdtype(inputs.dtype, np.integer):
    return f"language_model tokens must be integers, got {inputs.dtype}"
  if logits.ndim != 3 or logits.shape[1] != inputs.shape[0]:
    return (f"the model's output for a batch of 2 has shape {logits.shape}; "
            f"language_model needs logits (batch, seq_len={inputs.shape[0]},"
            " vocab)")
  return None


@dataclasses.dataclass(frozen=True)
class Task:
  """A task's loss, eval function and shape check."""
  name: str
  loss_fn: Callable[..., Any]
  eval_fn: Callable[..., Dict[str, Any]]
  # (inputs, label, logits) of one example -> a problem, or None.
  check_shapes: Callable[[np.ndarray, np.ndarray, Any], Optional[str]]


TASKS: Dict[str, Task] = {
    "classification": Task("classification", _classification_loss,
                           _classification_eval, _classification_shapes),
    "language_model": Task("language_model", _lm_loss, _lm_eval,
                           _lm_shapes),
}


def get(config: Any) -> Task:
  """The task `config.task` names (validated by config_schema)."""
  return TASKS[config.task]


def loss_fn_for(config: Any) -> Callable[..., Any]:
  return get(config).loss_fn


def eval_fn_for(config: Any) -> Callable[..., Dict[str, Any]]:
  """`eval_fn(model, batch, mask) -> {name: sum over valid examples}`."""
  return get(config).eval_fn


def _example(source: Any, i: int, split: str, where: str) -> Tuple[Any, Any]:
  try:
    ex = source[i]
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{where}: reading {split}[{i}] raised "
                     f"{type(e).__name__}: {e}") from e
  if not isinstance(ex, (tuple, list)) or len(ex) != 2:
    raise ValueError(
        f"{where}: {split}[{i}] is {type(ex).__name__} "
        f"{_short(ex)}; an example must be a pair (inputs, label).\nFix: "
        "make the source's __getitem__ end with `return inputs, label`.")
  return np.asarray(ex[0]), np.asarray(ex[1])


def _short(x: Any) -> str:
  text = repr(x)
  return text if len(text) < 80 else text[:77] + "..."


def check(config: Any, model: Any, train: Any, test: Any) -> None:
  """Checks the dataset's examples and the model's output against the task.

  Raises:
    ValueError: naming the split, the example and what does not fit.
  """
  task = get(config)
  where = f"config.dataset={config.dataset!r} (task {task.name!r})"
  for split, source in (("train", train), ("test", test)):
    if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
      raise ValueError(
          f"{where}: the {split} source is a {type(source).__name__}, not a "
          "random-access source (len(source), source[i]).\nFix: return "
          "e.g. `tools.trainer.sources.ArraySource(inputs, labels)`.")
    if len(source) < 1:
      raise ValueError(f"{where}: the {split} source is empty.")
  first = _example(train, 0, "train", where)
  for split, source in (("train", train), ("test", test)):
    for i in sorted({0, len(source) // 2, len(source) - 1}):
      inputs, label = _example(source, i, split, where)
      for name, a, b in (("inputs", inputs, first[0]),
                         ("label", label, first[1])):
        if a.shape != b.shape or a.dtype != b.dtype:
          raise ValueError(
              f"{where}: {split}[{i}] has {name} of shape {a.shape} "
              f"{a.dtype}, train[0] {b.shape} {b.dtype}; every example "
              "needs the same shapes and dtypes.")
      if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{where}: {split}[{i}] has a {label.dtype} label; "
                         f"{task.name} labels are integers.")
  batch = sources.read_examples(train, [0, min(1, len(train) - 1)])
  try:
    logits = jax.eval_shape(lambda m, x: m.eval()(x), model, batch[0])
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"config.model={config.model!r} fails on a batch of 2 training "
        f"examples of {where} (inputs {batch[0].shape} {batch[0].dtype}): "
        f"{type(e).__name__}: {e}") from e
  problem = (task.check_shapes(first[0], first[1], logits)
             if hasattr(logits, "shape") else
             f"the model returned {type(logits).__name__}, not an array of "
             "logits")
  if problem:
    raise ValueError(f"config.model={config.model!r} on {where}: {problem}.")
  num_classes = logits.shape[-1]
  labels = np.asarray(batch[1])
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"{where}: labels {labels.tolist()} of train[0:2] are outside "
        f"0..{num_classes - 1}, the model's {num_classes} outputs.")
