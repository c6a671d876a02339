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
>>> update_fn = jax.jit(pax.build_update_fn(loss_fn))
>>> net, optimizer, loss = update_fn(net, optimizer, x)
>>> loss.shape
()

The batch size is global: with `D` devices each one computes `B / D`
examples, and the result is the same as on one device (up to the order of
float summation in the reductions over the batch). In a multi-process job
(`initialize_distributed` first) the mesh spans every process's devices and
the same code runs on every process.

Functions:
  make_mesh: a 1-D device mesh (axis "data") over all or some devices.
  replicate: every leaf of a tree fully replicated on the mesh.
  shard_params: large leaves split over the mesh (ZeRO/FSDP style), the rest
    replicated; the optimizer's params-shaped state gets the same layout.
  shard_batch: a batch split over the mesh along its batch axis.
  batch_sharding / replicated_sharding / shardings_of: the shardings
    themselves (e.g. for `jax.jit(..., out_shardings=...)`).
  to_host: a tree of NumPy arrays, gathered across processes if needed.
  check_batch_size: a clear error when the batch does not split evenly.
  initialize_distributed: `jax.distributed.initialize` from arguments or
    the environment, with CPU collectives (gloo) switched on.
"""

import os
import re
from typing import Any, Optional, Sequence, Tuple, Union

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

__all__ = (
    "batch_sharding",
    "check_batch_size",
    "DATA_AXIS",
    "initialize_distributed",
    "make_mesh",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_params",
    "shardings_of",
    "to_host",
)

#: The default (and trainer's) name of the data-parallel mesh axis.
DATA_AXIS = "data"

#: Leaves with fewer elements than this stay replicated in `shard_params`.
DEFAULT_MIN_SHARD_SIZE = 1024

_SIMULATE_HINT = (
    "On CPU, simulate more devices by setting, before JAX starts (i.e. in the "
    "environment of the process): "
    "XLA_FLAGS=--xla_force_host_platform_device_count=8")


def _check_mesh(mesh: Any, api: str) -> Mesh:
  if not isinstance(mesh, Mesh):
    raise TypeError(
        f"{api}: `mesh` must be a jax.sharding.Mesh, got "
        f"{type(mesh).__name__}.\nFix: `mesh = pax.sharding.make_mesh()` "
        "(all devices) or `pax.sharding.make_mesh(num_devices)`.")
  return mesh


def _axis(mesh: Mesh, axis_name: Optional[Union[str, Tuple[str, ...]]],
          api: str) -> Union[str, Tuple[str, ...]]:
  """The mesh axis (or axes) the batch is split over."""
  if axis_name is None:
    names = tuple(mesh.axis_names)
    return names[0] if len(names) == 1 else names
  names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
  for name in names:
    if name not in mesh.axis_names:
      raise ValueError(
          f"{api}: the mesh has no axis {name!r}; its axes are "
          f"{tuple(mesh.axis_names)}.\nFix: pass one of those as "
          "`axis_name`, or build the mesh with pax.sharding.make_mesh("
          f"axis_name={name!r}).")
  return axis_name


def _axis_size(mesh: Mesh, axis: Union[str, Tuple[str, ...]]) -> int:
  names = (axis,) if isinstance(axis, str) else axis
  return int(np.prod([mesh.shape[n] for n in names]))


def make_mesh(num_devices: Optional[int] = None, *,
              axis_name: str = DATA_AXIS,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh for data parallelism.

  >>> mesh = pax.sharding.make_mesh()
  >>> mesh.axis_names, mesh.size == jax.device_count()
  (('data',), True)

  Args:
    num_devices: how many devices; `None` or 0 means all (`jax.devices()`:
      in a multi-process job, the devices of every process). In a
      multi-process job it must be a multiple of the process count: each
      process contributes `num_devices // jax.process_count()` of its local
      devices.
    axis_name: the name of the mesh axis.
    devices: the devices to choose from (default `jax.devices()`).

  Returns:
    A `jax.sharding.Mesh` with one axis, in GSPMD (`Auto`) mode: `jax.jit`
    decides the layout of intermediate values.

  Raises:
    ValueError: if `num_devices` is negative, larger than the number of
      devices, or not a multiple of the process count.
  """
  if num_devices is not None and (isinstance(num_devices, bool) or
                                  not isinstance(num_devices,
                                                 (int, np.integer))):
    raise TypeError("pax.sharding.make_mesh: `num_devices` must be an int "
                    f"(0 or None for all devices), got {num_devices!r}.")
  available = list(jax.devices() if devices is None else devices)
  if not available:
    raise ValueError("pax.sharding.make_mesh: `devices` is empty.")
  n = len(available) if not num_devices else int(num_devices)
  if n < 0:
    raise ValueError(f"pax.sharding.make_mesh: `num_devices` must be >= 0 "
                     f"(0 = all devices), got {num_devices}.")
  if n > len(available):
    platform = available[0].platform
    raise ValueError(
        f"pax.sharding.make_mesh: asked for {n} devices but only "
        f"{len(available)} {platform} device(s) are available.\nFix: ask for "
        f"at most {len(available)} (0 = all)"
        + (f". {_SIMULATE_HINT}" if platform == "cpu" else "."))
  processes = sorted({d.process_index for d in available})
  if len(processes) > 1 and n < len(available):
    if n % len(processes):
      raise ValueError(
          f"pax.sharding.make_mesh: {n} devices cannot be spread evenly over "
          f"the {len(processes)} processes of this job.\nFix: use a multiple "
          f"of {len(processes)} devices, or 0 for all {len(available)}.")
    per_process = n // len(processes)
    chosen = []
    for p in processes:
      local = sorted((d for d in available if d.process_index == p),
                     key=lambda d: d.id)
      if len(local) < per_process:
        raise ValueError(
            f"pax.sharding.make_mesh: process {p} has {len(local)} devices, "
            f"fewer than the {per_process} per process that {n} devices "
            f"over {len(processes)} processes need.")
      chosen.extend(local[:per_process])
  else:
    chosen = sorted(available, key=lambda d: (d.process_index, d.id))[:n]
  return Mesh(np.array(chosen), (axis_name,),
              axis_types=(jax.sharding.AxisType.Auto,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """`NamedSharding(mesh, P())`: a full copy on every device of `mesh`."""
  return NamedSharding(_check_mesh(mesh, "pax.sharding.replicated_sharding"),
                       P())


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0,
                   axis_name: Optional[Union[str, Tuple[str, ...]]] = None
                   ) -> NamedSharding:
  """The sharding that splits axis `batch_axis` of an `ndim`-D array.

  >>> mesh = pax.sharding.make_mesh()
  >>> tuple(pax.sharding.batch_sharding(mesh, ndim=3, batch_axis=1).spec)
  (None, 'data')

  Args:
    mesh: the mesh.
    ndim: the rank of the arrays.
    batch_axis: the axis to split (1 for a `(K, B, ...)` chunk of K batches).
    axis_name: the mesh axis (or tuple of axes) to split over; default: all
      of the mesh's axes.

  Returns:
    `NamedSharding(mesh, P(None, ..., axis_name))`.
  """
  api = "pax.sharding.batch_sharding"
  mesh = _check_mesh(mesh, api)
  if not 0 <= batch_axis < ndim:
    raise ValueError(f"{api}: batch_axis={batch_axis} is not an axis of an "
                     f"array of rank {ndim}.")
  return NamedSharding(mesh, P(*([None] * batch_axis),
                               _axis(mesh, axis_name, api)))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch size",
                     axis_name: Optional[Union[str, Tuple[str, ...]]] = None
                     ) -> int:
  """Raises a ValueError unless `batch_size` splits evenly over `mesh`.

  >>> mesh = pax.sharding.make_mesh(1)
  >>> pax.sharding.check_batch_size(32, mesh)  # 32 per device
  32

  Returns:
    The per-device batch size.
  """
  api = "pax.sharding"
  n = _axis_size(mesh, _axis(_check_mesh(mesh, api), axis_name, api))
  if batch_size % n:
    lower = batch_size - batch_size % n
    examples = f"{lower} or {lower + n}" if lower else f"{n}"
    divisor = max(d for d in range(1, n + 1) if batch_size % d == 0)
    raise ValueError(
        f"The global {what} {batch_size} is not divisible by the number of "
        f"devices {n}: each device must get the same number of examples.\n"
        f"Fix: use a {what} that is a multiple of {n} (e.g. {examples}), or "
        f"a number of devices that divides {batch_size} (e.g. {divisor}).")
  return batch_size // n


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
  sharding = replicated_sharding(_check_mesh(mesh, "pax.sharding.replicate"))
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
  mesh = _check_mesh(mesh, api)
  axis = _axis(mesh, axis_name, api)
  n = _axis_size(mesh, axis)

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
  mesh = _check_mesh(mesh, api)
  axis = _axis(mesh, axis_name, api)
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
    sharding = batch_sharding(mesh, x.ndim, batch_axis, axis)
    if process_local and not sharding.is_fully_addressable:
      global_shape = list(x.shape)
      global_shape[batch_axis] *= jax.process_count()
      check_batch_size(global_shape[batch_axis], mesh,
                       f"batch size (axis {batch_axis} of {where})", axis)
      return jax.make_array_from_process_local_data(sharding,
                                                    _host_value(x),
                                                    tuple(global_shape))
    check_batch_size(x.shape[batch_axis], mesh,
                     f"batch size (axis {batch_axis} of {where})", axis)
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


_ADDRESS_RE = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} must be an "
                     "integer.") from None


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, *,
                           local_device_ids: Optional[Sequence[int]] = None,
                           initialization_timeout: int = 300) -> bool:
  """Joins a multi-process JAX job (`jax.distributed.initialize`).

  Call it first thing in every process, before any JAX computation. Values
  not passed are read from the environment: `JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`. With no coordinator address at all
  it does nothing and returns False (a single-process run). On CPU it
  selects the gloo cross-process collectives.

  Example, two processes on one machine (run each in its own shell)::

    python3 tools/train.py ... --coordinator_address=127.0.0.1:12355 \\
        --num_processes=2 --process_id=0
    python3 tools/train.py ... --coordinator_address=127.0.0.1:12355 \\
        --num_processes=2 --process_id=1

  Args:
    coordinator_address: `host:port` of process 0 (the coordinator).
    num_processes: the number of processes in the job.
    process_id: this process's index, in `[0, num_processes)`.
    local_device_ids: restrict this process to these local devices.
    initialization_timeout: seconds to wait for every process to join.

  Returns:
    True if the job was joined (also when it already was), False for a
    single-process run.

  Raises:
    ValueError: for missing or inconsistent arguments.
  """
  api = "pax.sharding.initialize_distributed"
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID")
  if not address:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError(
          f"{api}: num_processes={num_processes} and process_id={process_id} "
          "were given without a coordinator address.\nFix: also pass "
          "--coordinator_address=HOST:PORT (the address of process 0; the "
          "same on every process), or set JAX_COORDINATOR_ADDRESS.")
    return False
  if not _ADDRESS_RE.match(address):
    raise ValueError(
        f"{api}: coordinator address {address!r} is not HOST:PORT.\nFix: e.g. "
        "--coordinator_address=127.0.0.1:12355 (process 0's host and a free "
        "port, the same on every process).")
  missing = [name for name, v in (("num_processes", num_processes),
                                  ("process_id", process_id)) if v is None]
  if missing:
    raise ValueError(
        f"{api}: coordinator address {address!r} given but "
        f"{' and '.join(missing)} missing.\nFix: pass --num_processes=N and "
        "--process_id=I (0 on the coordinator), or set JAX_NUM_PROCESSES and "
        "JAX_PROCESS_ID.")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(
        f"{api}: process_id must be in [0, num_processes), got "
        f"process_id={process_id}, num_processes={num_processes}.")
  if jax.distributed.is_initialized():
    return True
  # Cross-process collectives on CPU (ignored by GPU/TPU backends).
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=address, num_processes=int(num_processes),
      process_id=int(process_id), local_device_ids=local_device_ids,
      initialization_timeout=initialization_timeout)
  return True
