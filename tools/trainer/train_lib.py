"""`train_and_evaluate(config, workdir)`: the training binary's whole job.

The loop runs `config.steps_per_call` optimizer steps per jitted call: one
`jax.lax.scan` over `pax.build_update_fn(loss_fn, scan_mode=True)`. It
evaluates every `eval_every` steps, checkpoints every `checkpoint_every`
steps (model, optimizer, data position; atomic, last N kept), logs speed and
metrics (console, metrics.jsonl, TensorBoard events) and writes a PNG of the
curves at the end. Rerunning with the same workdir resumes from the latest
good checkpoint and ends bit-identical to an uninterrupted run (on CPU).
"""

import json
import math
import os
import time
from typing import Any, Dict

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import data as data_lib
from tools.trainer import metrics as metrics_lib
from tools.trainer import models


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss; the last good checkpoint is kept."""


def _check_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(
        f"Cannot write to workdir {workdir!r}: {e.strerror}.\nFix: pass a "
        "writable directory with --workdir.") from e
  return workdir


class _Task:
  """Data + functions for one config."""

  def __init__(self, config: Any):
    self.config = config
    if config.dataset == "digits":
      d = data_lib.load_digits()
      self.train = data_lib.ArrayBatcher(d.train, config.batch_size,
                                         seed=config.seed)
      self.eval_sets = list(data_lib.eval_batches(d.test, 512))
      self.eval_name = "test"
    else:
      d = data_lib.load_chars(max_bytes=config.max_bytes or None)
      self.train = data_lib.WindowBatcher(d.train, config.batch_size,
                                          config.seq_len, seed=config.seed)
      windows = data_lib.eval_windows(d.test, config.batch_size,
                                      config.seq_len,
                                      max_batches=config.eval_batches)
      self.eval_sets = [(w, np.ones((w.shape[0],), np.float32))
                        for w in windows]
      self.eval_name = "test"


def _to_device(chunk: Any) -> Any:
  return jax.tree_util.tree_map(jnp.asarray, chunk)


def train_and_evaluate(config: Any, workdir: str) -> Dict[str, float]:
  """Trains per `config`, resuming from `workdir` if it has checkpoints.

  Returns:
    The final evaluation metrics, e.g. `{"loss": ..., "accuracy": ...}`, plus
    `step` and the paths of the checkpoint, metrics and plot.
  """
  config_schema.validate(config)
  workdir = _check_workdir(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  task = _Task(config)
  model = models.build_model(config)
  optimizer = pax.from_optax(models.make_optimizer(config))(model.parameters())
  config_hash = checkpoint.json_sha256(config_schema.to_dict(config))

  start_step = 0
  restored = checkpoint.restore_latest(ckpt_dir, like=(model, optimizer))
  if restored is not None:
    if restored.metadata.get("config_hash") != config_hash:
      logging.warning("Resuming from %s, written with a different config.",
                      restored.path)
    model, optimizer = restored.tree
    start_step = restored.step
    task.train.restore(restored.metadata["data"])
    print(f"Resumed from {restored.path} (step {start_step}).", flush=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config_schema.to_dict(config), f, indent=2, default=str)

  update_fn = pax.build_update_fn(models.loss_fn_for(config), scan_mode=True)

  @jax.jit
  def train_chunk(model, optimizer, batches):
    (model, optimizer), aux = jax.lax.scan(update_fn, (model, optimizer),
                                           batches, unroll=config.scan_unroll)
    return model, optimizer, jax.tree_util.tree_map(jnp.mean, aux)

  eval_step = jax.jit(models.eval_fn_for(config))

  def evaluate(model) -> Dict[str, float]:
    sums = None
    for batch, mask in task.eval_sets:
      out = eval_step(model, _to_device(batch), jnp.asarray(mask))
      sums = out if sums is None else jax.tree_util.tree_map(
          jnp.add, sums, out)
    return models.summarize(jax.device_get(sums))

  writer = metrics_lib.MetricWriter(
      workdir, resume_step=start_step if restored is not None else None)
  k = config.steps_per_call
  logger = metrics_lib.ProgressLogger(
      config.num_steps, examples_per_step=config.batch_size,
      start_step=start_step)
  step = start_step
  last_eval: Dict[str, float] = {}

  def save(step):
    checkpoint.save(ckpt_dir, step, (model, optimizer),
                    {"data": task.train.state(), "config_hash": config_hash},
                    keep=config.keep_checkpoints)

  t0 = time.monotonic()
  while step < config.num_steps:
    chunk = _to_device(task.train.next_chunk(k))
    new_model, new_optimizer, aux = train_chunk(model, optimizer, chunk)
    loss = float(aux["loss"])
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f"Training loss became {loss} in steps {step + 1}..{step + k}. "
          f"The last good checkpoint (step {checkpoint.latest_step(ckpt_dir)}) "
          f"in {ckpt_dir} is kept.\nFix: lower `learning_rate` (now "
          f"{config.learning_rate}) or `grad_clip`, then rerun to resume.")
    model, optimizer = new_model, new_optimizer
    step += k
    train_metrics = {f"train/{n}": float(v) for n, v in aux.items()}
    if step % config.log_every == 0 or step == config.num_steps:
      writer.write(step, train_metrics)
      logger.log(step, {n.split("/")[1]: v for n, v in train_metrics.items()})
    if step % config.eval_every == 0 or step == config.num_steps:
      last_eval = evaluate(model)
      writer.write(step, {f"{task.eval_name}/{n}": v
                          for n, v in last_eval.items()})
      print(f"step {step}: {task.eval_name} " + ", ".join(
          f"{n} {v:.4f}" for n, v in last_eval.items()), flush=True)
    if step % config.checkpoint_every == 0 or step == config.num_steps:
      save(step)
  if not last_eval:
    last_eval = evaluate(model)
  writer.close()
  plot_path = os.path.join(workdir, "curves.png")
  if config.plot:
    from tools.trainer import plotting  # pylint: disable=g-import-not-at-top
    plotting.plot_workdir(workdir)
  result = dict(last_eval)
  result.update(step=step, seconds=time.monotonic() - t0,
                checkpoint=checkpoint.checkpoint_path(ckpt_dir, step)
                if checkpoint.latest_step(ckpt_dir) is not None else None,
                metrics=os.path.join(workdir, "metrics.jsonl"),
                plot=plot_path if config.plot else None)
  return result
