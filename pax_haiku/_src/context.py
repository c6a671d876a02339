"""Thread-local state: which modules may be mutated right now, and the RNG seed.

Mutation is allowed only for modules registered by `pax.pure` (or by a module's
own constructor), only in the thread that registered them, and only at the JAX
trace that was current when they were registered: a module captured by an inner
`jax.jit`/`jax.grad` cannot be mutated there, which would leak tracers.
"""

import contextlib
import random
import threading
from typing import Any, Dict, Iterable, Iterator

import jax
import numpy as np

from pax_haiku._src import haiku_compat

# Compared with `==` (see `haiku_compat.current_trace_state`).
current_trace = haiku_compat.current_trace_state


class _ThreadState(threading.local):
  """Per-thread mutation scope and Python RNG."""

  def __init__(self):
    super().__init__()
    # id -> module; strong references so that ids cannot be recycled while the
    # scope is open.
    self.mutable: Dict[int, Any] = {}
    self.trace: Any = None
    self.rng = random.Random(42)


_STATE = _ThreadState()


def is_mutable(module: Any) -> bool:
  """Whether `module` may be mutated in the current thread and trace."""
  state = _STATE
  return id(module) in state.mutable and current_trace() == state.trace


def nothing_mutable() -> bool:
  """Whether no module may be mutated in this thread (no `pax.pure` open).

  Modules seen then are frozen for good (`pax.pure` mutates fresh copies),
  so facts about their structure may be cached on them.
  """
  return not _STATE.mutable


@contextlib.contextmanager
def allow_mutation(modules: Iterable[Any]) -> Iterator[None]:
  """Allows mutating exactly `modules` (and nothing else) inside the block."""
  state = _STATE
  previous = (state.mutable, state.trace)
  state.mutable = {id(m): m for m in modules}
  state.trace = current_trace()
  try:
    yield
  finally:
    state.mutable, state.trace = previous


@contextlib.contextmanager
def also_allow_mutation(module: Any) -> Iterator[None]:
  """Adds one module (being constructed) to the current mutable scope."""
  state = _STATE
  previous = (state.mutable, state.trace)
  trace = current_trace()
  if previous[1] == trace:
    mutable = dict(previous[0])
  else:  # Modules of an outer trace stay immutable in here.
    mutable = {}
  mutable[id(module)] = module
  state.mutable, state.trace = mutable, trace
  try:
    yield
  finally:
    state.mutable, state.trace = previous


def seed_rng_key(seed: int) -> None:
  """Seeds the library's RNG (per thread) used for default module init keys.

  >>> pax.seed_rng_key(42)
  >>> a = pax.next_rng_key()
  >>> pax.seed_rng_key(42)
  >>> bool((a == pax.next_rng_key()).all())
  True

  Args:
    seed: a Python integer.
  """
  if not isinstance(seed, int) or isinstance(seed, bool):
    raise TypeError(
        f"seed_rng_key expects a Python int, got {type(seed).__name__}. "
        "Fix: pax.seed_rng_key(42).")
  _STATE.rng = random.Random(seed)


def next_rng_key() -> jax.Array:
  """Returns a fresh PRNG key from the library's seeded RNG and advances it."""
  return prng_key(_STATE.rng.randint(0, 2**31 - 1))


def prng_key(seed: int) -> jax.Array:
  """`jax.random.PRNGKey(seed)`, made on the host where JAX's defaults hold.

  With the default threefry implementation a seed below 2**31 is the key
  data `[seed >> 32, seed & 0xFFFFFFFF] = [0, seed]` (uint32). Built with
  NumPy and `jax.device_put` it needs no device program, where
  `jax.random.PRNGKey` compiles two (the seed's conversion and its split
  into words) in every new process: ~70 ms of a small model's construction
  on two cores. Any other implementation, seed or legacy-key setting goes
  through `jax.random.PRNGKey`.

  >>> import numpy as np
  >>> from pax_haiku._src import context
  >>> np.array_equal(context.prng_key(42), jax.random.PRNGKey(42))
  True
  """
  if (0 <= seed < 2**31 and
      str(jax.config.jax_default_prng_impl) == "threefry2x32" and
      str(jax.config.jax_legacy_prng_key) == "allow"):
    return jax.device_put(np.array([0, seed], np.uint32))
  return jax.random.PRNGKey(seed)
