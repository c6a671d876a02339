"""Device meshes for data parallelism, and the shardings of a batch.

`make_mesh` builds the 1-D mesh (axis "data") that `pax.sharding` places
models and batches on; `replicated_sharding` / `batch_sharding` are the
shardings it uses, and `check_batch_size` explains a batch that does not
split evenly over the mesh. See `sharding.py` for the whole recipe.
"""

from typing import Any, Optional, Sequence, Tuple, Union

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

#: The default (and trainer's) name of the data-parallel mesh axis.
DATA_AXIS = "data"

_SIMULATE_HINT = (
    "On CPU, simulate more devices by setting, before JAX starts (i.e. in the "
    "environment of the process): "
    "XLA_FLAGS=--xla_force_host_platform_device_count=8")


def check_mesh(mesh: Any, api: str) -> Mesh:
  """`mesh`, or a TypeError saying how to build one (`api`: the caller)."""
  if not isinstance(mesh, Mesh):
    raise TypeError(
        f"{api}: `mesh` must be a jax.sharding.Mesh, got "
        f"{type(mesh).__name__}.\nFix: `mesh = pax.sharding.make_mesh()` "
        "(all devices) or `pax.sharding.make_mesh(num_devices)`.")
  return mesh


def resolve_axis(mesh: Mesh,
                 axis_name: Optional[Union[str, Tuple[str, ...]]],
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


def axis_size(mesh: Mesh, axis: Union[str, Tuple[str, ...]]) -> int:
  """The number of devices along `axis` (the product over a tuple of axes)."""
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
  return NamedSharding(check_mesh(mesh, "pax.sharding.replicated_sharding"),
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
  mesh = check_mesh(mesh, api)
  if not 0 <= batch_axis < ndim:
    raise ValueError(f"{api}: batch_axis={batch_axis} is not an axis of an "
                     f"array of rank {ndim}.")
  return NamedSharding(mesh, P(*([None] * batch_axis),
                               resolve_axis(mesh, axis_name, api)))


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
  n = axis_size(mesh, resolve_axis(check_mesh(mesh, api), axis_name, api))
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

