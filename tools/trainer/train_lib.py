"""`train_and_evaluate(config, workdir)`: the training binary's whole job.

The model and data are whatever `config.model` and `config.dataset` name:
a built-in alias or your own `package.module:factory` (`registry`); the
task (`config.task`, `tasks`) gives the loss and metrics, and the batches
come from a grain pipeline (`pipeline.TrainPipeline`) whose position is
saved in every checkpoint. Call `train_and_evaluate` from your own program
(or Bazel `py_binary`, depending on `@pax_haiku//tools/trainer`) to train
with the binary's checkpoints, resume, metrics and sharding.

The loop runs `config.steps_per_call` optimizer steps per jitted call: one
`jax.lax.scan` over `pax.build_update_fn(loss_fn, scan_mode=True)`. It
evaluates every `eval_every` steps, checkpoints every `checkpoint_every`
steps (model, optimizer, data position; atomic, last N kept), logs speed and
metrics (console, metrics.jsonl, TensorBoard events) and writes a PNG of the
curves at the end. Rerunning with the same workdir resumes from the latest
good checkpoint and ends bit-identical to an uninterrupted run (on CPU).

Scale-out (docs/scaling.md): the loop runs on a 1-D device mesh
(`pax.sharding.make_mesh(config.num_devices)`, all devices by default). Each
chunk of K batches `(K, B, ...)` is split over the devices on its batch axis;
the model and optimizer are replicated (or, with
`config.param_sharding = "sharded"`, their large leaves split), and `jax.jit`
partitions the step (GSPMD). `config.batch_size` is the global batch, so the
same config gives the same curve on 1 or 8 devices (up to float summation
order). In a multi-process job (`jax.distributed`, see tools/train.py) every
process runs this same function on a workdir they all see: each process
reads only the rows of every global batch that its devices hold (disjoint
shares whose union is the one-process batch); only process 0 writes
metrics, config.json and plots. Checkpoints are orbax
checkpoints with Haiku-named arrays (tools/trainer/checkpoint.py,
docs/checkpoints.md): every process writes the shards its devices hold,
and restores into the shardings of the current mesh, so a run saved on N
devices or processes resumes on any other number.
"""

import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import lifecycle
from tools.trainer import metrics as metrics_lib
from tools.trainer import models
from tools.trainer import pipeline
from tools.trainer import registry
from tools.trainer import storage_checks
from tools.trainer import tasks


# Raised when training diverges (NaN/Inf: `NonFiniteLossError`) or a stop
# signal arrives (`Preempted`); see `lifecycle`.
DivergedError = lifecycle.DivergedError
NonFiniteLossError = lifecycle.NonFiniteLossError
Preempted = lifecycle.Preempted


def _check_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: the processes of a multi-host job share workdir.
    probe = os.path.join(workdir, f".write_test.{os.getpid()}."
                         f"{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(
        f"Cannot write to workdir {workdir!r}: {e.strerror}.\nFix: pass a "
        "writable directory with --workdir.") from e
  return workdir


def load_dataset(config: Any) -> Tuple[Any, Any]:
  """`(train, test)` from the dataset factory `config.dataset` names.

  Raises:
    ValueError: if `config.dataset` does not resolve (`registry.resolve`).
    TypeError: if the factory does not return a pair of sources.
  """
  factory = registry.resolve(config.dataset, "dataset")
  splits = factory(config)
  if not isinstance(splits, (tuple, list)) or len(splits) != 2:
    raise registry.FactoryResultError(
        f"config.dataset={config.dataset!r}: the factory returned "
        f"{type(splits).__name__}, not a pair (train, test) of sources.\n"
        "Fix: end the factory with `return train, test`: two sources, e.g. "
        "`tools.trainer.sources.ArraySource(inputs, labels)`.")
  return splits[0], splits[1]


def process_rows(mesh: jax.sharding.Mesh,
                 batch_size: int) -> Optional[Tuple[int, int]]:
  """The rows of each global batch this process reads, or None for all.

  In a multi-process job whose mesh gives every process an equal,
  contiguous share of the batch, each process reads only its share; any
  other layout (one process, or a mesh on part of the devices) reads whole
  batches and copies its devices' slices.
  """
  if jax.process_count() == 1:
    return None
  try:
    start, stop = pipeline.rows_of_process(mesh, batch_size)
  except ValueError:
    return None
  return (start, stop) if (
      stop - start) * jax.process_count() == batch_size else None


def make_mesh(config: Any) -> jax.sharding.Mesh:
  """The device mesh for `config` (`num_devices`; 0 = all devices).

  Raises:
    ValueError: if `num_devices` asks for more devices than there are, or
      `batch_size` does not split evenly over the devices.
  """
  try:
    mesh = pax.sharding.make_mesh(config.num_devices)
  except ValueError as e:
    raise ValueError(f"config.num_devices={config.num_devices}: {e}") from e
  try:
    pax.sharding.check_batch_size(config.batch_size, mesh,
                                  "batch size (config.batch_size)")
  except ValueError as e:
    raise ValueError(
        f"{e}\nSet --config.batch_size or --config.num_devices (0 = all "
        f"{jax.device_count()} devices).") from e
  return mesh


def place(tree: Any, mesh: jax.sharding.Mesh, config: Any) -> Any:
  """Puts the model/optimizer on `mesh` as `config.param_sharding` says."""
  if config.param_sharding == "sharded":
    return pax.sharding.shard_params(tree, mesh)
  return pax.sharding.replicate(tree, mesh)


def make_train_chunk(config: Any, mesh: jax.sharding.Mesh, model: Any,
                     optimizer: Any, *, donate: bool = True
                     ) -> Callable[..., Tuple[Any, Any, Any]]:
  """The jitted `train_chunk(model, optimizer, batches)`.

  It runs `batches.shape[0]` steps (one `jax.lax.scan` over
  `pax.build_update_fn(loss_fn, scan_mode=True)`) and returns the new model
  and optimizer, laid out as the given (placed) `model` and `optimizer`, and
  the mean of each aux metric over the steps (replicated).

  With `donate` (the default) it is built by `pax.jit_update`: the new model
  and optimizer reuse the buffers of the given ones, which are consumed (the
  loop keeps only what each call returns; checkpoints hold host copies).
  """
  update_fn = pax.build_update_fn(tasks.loss_fn_for(config), scan_mode=True)

  def train_chunk(model, optimizer, batches):
    (model, optimizer), aux = jax.lax.scan(update_fn, (model, optimizer),
                                           batches, unroll=config.scan_unroll)
    return model, optimizer, jax.tree_util.tree_map(jnp.mean, aux)

  out_shardings = (pax.sharding.shardings_of(model),
                   pax.sharding.shardings_of(optimizer),
                   pax.sharding.replicated_sharding(mesh))
  return pax.jit_update(train_chunk, donate=donate, donate_argnums=(0, 1),
                        out_shardings=out_shardings)


def shard_chunk(chunk: Any, mesh: jax.sharding.Mesh,
                process_local: bool = False) -> Any:
  """A `(K, B, ...)` chunk of K batches, split over the batch axis.

  `process_local`: the chunk holds only this process's rows
  (`process_rows`), else whole global batches.
  """
  return pax.sharding.shard_batch(chunk, mesh, batch_axis=1,
                                  process_local=process_local)


def make_eval(config: Any, mesh: jax.sharding.Mesh
              ) -> Callable[[Any, Any, Any], Dict[str, Any]]:
  """The jitted `eval_all(model, batches, masks)`: the task's metrics summed
  over `N` stacked eval batches `(N, B, ...)`, replicated.

  One program per evaluation: in a multi-process job, a chain of small
  programs (one per batch, plus the sums) can starve XLA:CPU's thread pool
  while their collectives wait for each other across processes (seen as a
  hang of the second evaluation).
  """
  eval_fn = tasks.eval_fn_for(config)

  def eval_all(model, batches, masks):
    per_batch = jax.lax.map(lambda xs: eval_fn(model, *xs), (batches, masks))
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_batch)

  return jax.jit(eval_all,
                 out_shardings=pax.sharding.replicated_sharding(mesh))


def _place_eval_set(batches: Any, mesh: jax.sharding.Mesh) -> Tuple[Any, Any]:
  """`[(batch, mask), ...]` stacked to `(N, B, ...)` and split over the
  devices on the batch axis (replicated if B does not split evenly)."""
  stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs),
                                   *[b for b, _ in batches])
  masks = np.stack([m for _, m in batches])
  if masks.shape[1] % mesh.size == 0:
    return shard_chunk((stacked, masks), mesh)
  return pax.sharding.replicate((stacked, masks), mesh)


def _agree_on_restored_step(step: int, ckpt_dir: str) -> None:
  """Checks that every process restored the same checkpoint (-1: none).

  Every process sees every step, so they all stop together on a mismatch
  instead of some of them waiting forever in the first collective.
  """
  if jax.process_count() == 1:
    return
  steps = np.asarray(multihost_utils.process_allgather(np.int64(step)))
  steps = [int(s) for s in steps.reshape(-1)]
  if len(set(steps)) > 1:
    found = ", ".join(f"process {i}: {'none' if s < 0 else s}"
                      for i, s in enumerate(steps))
    raise ValueError(
        f"The processes found different latest checkpoints in {ckpt_dir} "
        f"({found}).\nLikely cause: the workdir is not on a filesystem that "
        "every process sees.\nFix: pass a --workdir on shared storage (the "
        "same path on every host).")


def _restore_position(train_data: pipeline.TrainPipeline, restored: Any,
                      is_chief: bool) -> None:
  """Puts the data pipeline where the restored checkpoint's run was."""
  position = restored.metadata.get("data")
  if isinstance(position, dict) and "grain" in position:
    train_data.restore(position)
    return
  # Written by the batchers that came before the grain pipeline: the
  # position in batches is the step; the order from here on is the
  # pipeline's.
  train_data.skip_to(restored.step)
  if is_chief:
    print(f"note: checkpoint {restored.path} has no grain data position "
          "(written before the grain pipeline); training continues from "
          f"batch {restored.step} of the current data order.", flush=True)


def train_and_evaluate(config: Any, workdir: str, *,
                       allow_config_change: bool = False) -> Dict[str, Any]:
  """Trains per `config`, resuming from `workdir` if it has checkpoints.

  In a multi-process job, call it on every process with the same config and
  workdir (after `pax.sharding.initialize_distributed`).

  One run per workdir at a time (a second one gets
  `workdir_lock.WorkdirLockedError`). A SIGTERM/SIGINT checkpoints the
  current step and raises `Preempted`; a diverging loss raises
  `DivergedError` without saving it (see `lifecycle`). A resumed run whose
  config changes the optimization raises `resume_config.ConfigChangeError`
  unless `allow_config_change`.

  Returns:
    The final evaluation metrics, e.g. `{"loss": ..., "accuracy": ...}`, plus
    `step`, `num_devices`, `process_count` and the paths of the checkpoint,
    metrics and plot.
  """
  config_schema.validate(config)
  workdir = _check_workdir(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  with lifecycle.RunGuard(workdir, ckpt_dir, config,
                          allow_config_change) as guard:
    return _train(config, workdir, ckpt_dir, guard)


def _storage_errors(ckpt_dir: str, fn, *args, **kwargs):
  """`fn(...)`, with a failed write as one `StorageError` line."""
  try:
    return fn(*args, **kwargs)
  except OSError as e:
    raise storage_checks.save_failed(ckpt_dir, e) from e


def _train(config: Any, workdir: str, ckpt_dir: str,
           guard: lifecycle.RunGuard) -> Dict[str, Any]:
  """`train_and_evaluate` inside its `RunGuard`."""
  mesh = make_mesh(config)
  is_chief = jax.process_index() == 0
  train_source, test_source = load_dataset(config)
  model = models.build_model(config)
  tasks.check(config, model, train_source, test_source)
  rows = process_rows(mesh, config.batch_size)
  train_data = pipeline.TrainPipeline(
      train_source, global_batch_size=config.batch_size, seed=config.seed,
      rows=rows)
  eval_name = "test"
  # The initial optimizer state as one program, not one per operation (the
  # zeros of each parameter's shape, the step count): the same values.
  optimizer = jax.jit(pax.from_optax(models.make_optimizer(config)))(
      model.parameters())
  config_hash = checkpoint.json_sha256(config_schema.hashed_dict(config))

  start_step = 0
  # Placed first: the checkpoint is restored straight into the shardings of
  # this run's mesh (any device or process count), each process reading
  # only what its devices hold.
  model, optimizer = place((model, optimizer), mesh, config)
  ckpt = checkpoint.CheckpointManager(ckpt_dir, keep=config.keep_checkpoints,
                                      async_save=True)
  guard.on_exit(lambda: _storage_errors(ckpt_dir, ckpt.close))
  guard.check_config(config_schema.to_dict(config))
  restored = ckpt.restore_latest(like={"model": model, "optimizer": optimizer})
  _agree_on_restored_step(-1 if restored is None else restored.step, ckpt_dir)
  guard.record_config(None if restored is None else restored.step,
                      config_schema.to_dict(config))
  guard.preflight({"model": model, "optimizer": optimizer})
  if restored is not None:
    guard.saved(restored.step,
                restored.metadata.get("train_loss", float("nan")))
    model, optimizer = restored.tree["model"], restored.tree["optimizer"]
    start_step = restored.step
    _restore_position(train_data, restored, is_chief)
    if is_chief:
      print(f"Resumed from {restored.path} (step {start_step}).", flush=True)

  train_chunk = make_train_chunk(config, mesh, model, optimizer)
  eval_all = make_eval(config, mesh)
  # The logged learning rate: one program instead of one per operation.
  learning_rate_at = jax.jit(models.learning_rate_schedule(config))
  eval_set = _place_eval_set(pipeline.eval_batches(
      test_source, config.batch_size, config.eval_batches), mesh)

  def evaluate(model) -> Dict[str, float]:
    return models.summarize(pax.sharding.to_host(eval_all(model, *eval_set)))

  writer = metrics_lib.MetricWriter(
      workdir, enabled=is_chief,
      resume_step=start_step if restored is not None else None,
      config=config_schema.to_dict(config))
  k = config.steps_per_call
  logger = metrics_lib.ProgressLogger(
      config.num_steps, examples_per_step=config.batch_size,
      start_step=start_step)
  step = start_step
  last_eval: Dict[str, float] = {}

  def save(step, loss):
    # Every process writes the shards its devices hold; nothing is gathered.
    # Asynchronous: the files are written while training goes on.
    guard.saved(step, loss)
    ckpt.pinned = guard.pinned()
    _storage_errors(ckpt_dir, ckpt.save, step,
                    {"model": model, "optimizer": optimizer},
                    {"data": train_data.state(), "config_hash": config_hash,
                     "train_loss": loss})

  t0 = time.monotonic()
  while step < config.num_steps:
    chunk = shard_chunk(train_data.next_chunk(k), mesh,
                        process_local=rows is not None)
    new_model, new_optimizer, aux = train_chunk(model, optimizer, chunk)
    aux = pax.sharding.to_host(aux)
    loss = float(aux["loss"])
    guard.check_divergence(
        step + 1, step + k, loss,
        float(pax.sharding.to_host(models.grad_norm(new_optimizer))),
        before_stop=lambda: _storage_errors(ckpt_dir, ckpt.close))
    model, optimizer = new_model, new_optimizer
    step += k
    train_metrics = {f"train/{n}": float(v) for n, v in aux.items()}
    if step % config.log_every == 0 or step == config.num_steps:
      writer.write(step, {
          **train_metrics,
          **models.optimizer_metrics(learning_rate_at, optimizer, step),
          "train/steps_per_sec": writer.steps_per_sec(step)})
      if is_chief:
        logger.log(step, {n.split("/")[1]: v
                          for n, v in train_metrics.items()})
    if step % config.eval_every == 0 or step == config.num_steps:
      last_eval = evaluate(model)
      writer.write(step, {f"{eval_name}/{n}": v
                          for n, v in last_eval.items()})
      if is_chief:
        print(f"step {step}: {eval_name} " + ", ".join(
            f"{n} {v:.4f}" for n, v in last_eval.items()), flush=True)
    saved = step % config.checkpoint_every == 0 or step == config.num_steps
    if saved:
      save(step, loss)
    if step < config.num_steps and guard.stop_requested():
      if not saved:
        save(step, loss)
      _storage_errors(ckpt_dir, ckpt.close)
      writer.close()
      raise lifecycle.Preempted(step, guard.signal_name)
  _storage_errors(ckpt_dir, ckpt.close)
  if not last_eval:
    last_eval = evaluate(model)
  writer.close()
  plot_path = os.path.join(workdir, "curves.png")
  if config.plot and is_chief:
    from tools.trainer import plotting  # pylint: disable=g-import-not-at-top
    plotting.plot_workdir(workdir)
  if jax.process_count() > 1:
    # The others wait until process 0 has written everything.
    multihost_utils.sync_global_devices("pax_haiku.train_and_evaluate.end")
  result: Dict[str, Any] = dict(last_eval)
  result.update(step=step, seconds=time.monotonic() - t0,
                num_devices=mesh.size, process_count=jax.process_count(),
                checkpoint=checkpoint.checkpoint_path(ckpt_dir, step)
                if checkpoint.latest_step(ckpt_dir) is not None else None,
                metrics=os.path.join(workdir, "metrics.jsonl"),
                plot=plot_path if config.plot else None)
  return result
