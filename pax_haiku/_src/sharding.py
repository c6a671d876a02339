"""`pax.sharding`: data-parallel and multi-host training on `jax.sharding`.

pax modules and optimizers are pytrees, so placing a whole model on a device
mesh is one `jax.device_put`; `jax.jit` then partitions the training step
over the mesh (GSPMD): no `pmap`, no per-device code. The recipe:

>>> mesh = pax.sharding.make_mesh()            # all devices, axis "data"
>>> net = pax.Linear(2, 1)
>>> optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())
>>> net, optimizer = pax.sharding.replicate((net, optimizer), mesh)
>>> x = pax.sharding.shard_batch(jnp.ones((8, 2)), mesh)  # split on axis 0
>>> def loss_fn(model, x):
...     model, y = pax.purecall(model, x)
...     loss = jnp.mean(y ** 2)
...     return loss, (loss, model)
>>> update_fn = pax.jit_update(pax.build_update_fn(loss_fn))  # donating
>>> net, optimizer, loss = update_fn(net, optimizer, x)
>>> loss.shape
()

The batch size is global: with `D` devices each one computes `B / D`
examples, and the result is the same as on one device (up to the order of
float summation in the reductions over the batch). In a multi-process job
(`initialize_distributed` first) the mesh spans every process's devices and
the same code runs on every process.

Functions here:
  replicate: every leaf of a tree fully replicated on the mesh.
  shard_params: large leaves split over the mesh (ZeRO/FSDP style), the rest
    replicated; the optimizer's params-shaped state gets the same layout.
  shard_batch: a batch split over the mesh along its batch axis.
  shardings_of: the shardings of a placed tree (e.g. for
    `jax.jit(..., out_shardings=...)`).
  to_host: a tree of NumPy arrays, gathered across processes if needed.

In `mesh.py`: `make_mesh` (a 1-D device mesh, axis "data", over all or some
devices), `replicated_sharding` / `batch_sharding` (the shardings
themselves) and `check_batch_size` (a clear error when the batch does not
split evenly). In `distributed.py`: `initialize_distributed`
(`jax.distributed.initialize` from arguments or the environment, with CPU
collectives (gloo) switched on).
"""

from typing import Any, Optional, Tuple, Union

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from pax_haiku._src import mesh as mesh_lib

__all__ = (
    "replicate",
    "shard_batch",
    "shard_params",
    "shardings_of",
    "to_host",
)

#: Leaves with fewer elements than this stay replicated in `shard_params`.
DEFAULT_MIN_SHARD_SIZE = 1024


def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype,
                                                     jax.dtypes.prng_key)


def _as_array(x: Any) -> Any:
  """`x` as a jax.Array or NumPy array of a JAX dtype (x64 rules apply)."""
  if isinstance(x, jax.Array):
    return x
  array = np.asarray(x)
  return array.astype(jax.dtypes.canonicalize_dtype(array.dtype), copy=False)


def _host_value(x: Any) -> np.ndarray:
  """A NumPy copy of one leaf (this process's copy if it is replicated)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    raise ValueError(
        "pax.sharding: this array is split across processes, so no process "
        "holds all of it; gather it first with pax.sharding.to_host(tree) "
        "(called on every process).")
  return np.asarray(x)


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
  """Places one leaf, within one process or across processes."""
  if _is_key(x):
    impl = jax.random.key_impl(x)
    return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding),
                                    impl=impl)
  x = _as_array(x)
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  # Multi-process: every process holds the whole value; each one copies only
  # the slices of its own devices.
  value = _host_value(x)
  return jax.make_array_from_callback(value.shape, sharding,
                                      lambda index: value[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A copy of `tree` with every leaf replicated on all devices of `mesh`.

  Works on any pytree: a module, an optimizer, `(model, optimizer)`.

  >>> mesh = pax.sharding.make_mesh()
  >>> net = pax.sharding.replicate(pax.Linear(3, 2), mesh)
  >>> net.weight.sharding.is_fully_replicated
  True

  In a multi-process job every process must pass the same values (e.g.
  built from the same seed, or restored from the same checkpoint).
  """
  sharding = mesh_lib.replicated_sharding(
      mesh_lib.check_mesh(mesh, "pax.sharding.replicate"))
  return jax.tree_util.tree_map(lambda x: _put(x, sharding), tree)


def _param_spec(shape: Tuple[int, ...], n: int, axis: Any,
                min_size: int) -> P:
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [(size, -i) for i, size in enumerate(shape) if size % n == 0]
  if not candidates:
    return P()
  _, neg_dim = max(candidates)
  dim = -neg_dim
  return P(*([None] * dim), axis)


def shard_params(tree: Any, mesh: Mesh, *,
                 min_size: int = DEFAULT_MIN_SHARD_SIZE,
                 axis_name: Optional[str] = None) -> Any:
  """A copy of `tree` with its large leaves split over the devices of `mesh`.

  ZeRO-3 / FSDP style: each leaf with at least `min_size` elements is split
  along its largest dimension that the mesh size divides; other leaves are
  replicated. The rule looks only at shapes, so an optimizer's
  params-shaped state (Adam's moments) gets the same layout as the
  parameters. Inside `jax.jit`, XLA gathers the parameters where they are
  used and reduce-scatters their gradients; memory per device for the
  parameters and optimizer state drops by up to the number of devices.

  >>> mesh = pax.sharding.make_mesh()
  >>> net = pax.sharding.shard_params(pax.Linear(64, 32), mesh)
  >>> net.weight.shape  # Global shape; each device holds a slice.
  (64, 32)

  Args:
    tree: any pytree (e.g. `(model, optimizer)`).
    mesh: the mesh.
    min_size: smaller leaves stay replicated.
    axis_name: the mesh axis to split over (default: the mesh's only axis).

  Returns:
    The placed tree.
  """
  api = "pax.sharding.shard_params"
  mesh = mesh_lib.check_mesh(mesh, api)
  axis = mesh_lib.resolve_axis(mesh, axis_name, api)
  n = mesh_lib.axis_size(mesh, axis)

  def put(x):
    shape = tuple(getattr(x, "shape", np.shape(x)))
    return _put(x, NamedSharding(mesh, _param_spec(shape, n, axis, min_size)))

  return jax.tree_util.tree_map(put, tree)


def shard_batch(batch: Any, mesh: Mesh, *, batch_axis: int = 0,
                process_local: bool = False,
                axis_name: Optional[Union[str, Tuple[str, ...]]] = None
                ) -> Any:
  """Splits every array of `batch` over the devices of `mesh`.

  >>> mesh = pax.sharding.make_mesh()
  >>> x = pax.sharding.shard_batch(np.zeros((8, 3), np.float32), mesh)
  >>> x.shape, tuple(x.sharding.spec)
  ((8, 3), ('data',))

  A chunk of K stacked batches `(K, B, ...)` (for a `jax.lax.scan` over
  steps) is split on axis 1:

  >>> chunk = pax.sharding.shard_batch(
  ...     {"x": np.zeros((4, 8, 3)), "y": np.zeros((4, 8))}, mesh,
  ...     batch_axis=1)
  >>> tuple(chunk["y"].sharding.spec)
  (None, 'data')

  Args:
    batch: a pytree of arrays sharing the global batch size on `batch_axis`.
    mesh: the mesh.
    batch_axis: the axis that holds the examples.
    process_local: in a multi-process job: False (default) means every
      process passes the same *global* batch and each copies only its own
      devices' slices to them; True means each process passes only *its*
      slice (`global_batch // jax.process_count()` examples, in process
      order), as read by a per-process input pipeline.
    axis_name: the mesh axis (or axes) to split over; default all.

  Returns:
    The batch as global `jax.Array`s with the global batch size.

  Raises:
    ValueError: if the batch size is not divisible by the number of devices
      (the message says what to change) or an array lacks `batch_axis`.
  """
  api = "pax.sharding.shard_batch"
  mesh = mesh_lib.check_mesh(mesh, api)
  axis = mesh_lib.resolve_axis(mesh, axis_name, api)
  paths_leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
  if not paths_leaves:
    raise ValueError(f"{api}: the batch holds no arrays.")

  def put(path, x):
    x = _as_array(x)
    where = jax.tree_util.keystr(path) or "the batch"
    if x.ndim <= batch_axis:
      raise ValueError(
          f"{api}: {where} has shape {tuple(x.shape)}, with no axis "
          f"{batch_axis} to split.\nFix: pass arrays with the examples on "
          f"axis {batch_axis}, or set `batch_axis` (1 for a (K, B, ...) "
          "chunk of K batches).")
    sharding = mesh_lib.batch_sharding(mesh, x.ndim, batch_axis, axis)
    if process_local and not sharding.is_fully_addressable:
      global_shape = list(x.shape)
      global_shape[batch_axis] *= jax.process_count()
      mesh_lib.check_batch_size(global_shape[batch_axis], mesh,
                                f"batch size (axis {batch_axis} of {where})",
                                axis)
      return jax.make_array_from_process_local_data(sharding,
                                                    _host_value(x),
                                                    tuple(global_shape))
    mesh_lib.check_batch_size(x.shape[batch_axis], mesh,
                              f"batch size (axis {batch_axis} of {where})",
                              axis)
    return _put(x, sharding)

  return jax.tree_util.tree_map_with_path(put, batch)


def shardings_of(tree: Any) -> Any:
  """The tree of the `.sharding` of every leaf (same structure as `tree`).

  Handy to keep a jitted step's outputs where its inputs are:
  `jax.jit(step, out_shardings=pax.sharding.shardings_of((model, opt)))`.
  """
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


def to_host(tree: Any) -> Any:
  """A copy of `tree` with every leaf a NumPy array of its global value.

  Replicated arrays are read from this process's copy; arrays split across
  processes are gathered (`multihost_utils.process_allgather`), which is a
  collective: in a multi-process job call it on every process, in the same
  order.

  >>> mesh = pax.sharding.make_mesh()
  >>> x = pax.sharding.shard_batch(np.arange(8.0), mesh)
  >>> pax.sharding.to_host({"x": x})["x"]
  array([0., 1., 2., 3., 4., 5., 6., 7.], dtype=float32)
  """

  def get(x):
    if isinstance(x, jax.Array):
      if _is_key(x):
        raise TypeError(
            "pax.sharding.to_host: a typed PRNG key array cannot become a "
            "NumPy array; convert it first with jax.random.key_data(key).")
      if not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
      return _host_value(x)
    return np.asarray(x)

  return jax.tree_util.tree_map(get, tree)
