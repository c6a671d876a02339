"""Joining a multi-process JAX job (`initialize_distributed`).

Arguments not passed are read from the environment, so the training binary's
flags and a launcher's environment variables both work; on CPU the gloo
cross-process collectives are switched on.
"""

import os
import re
from typing import Optional, Sequence

import jax

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
