"""Every private Haiku/JAX internal pax_haiku relies on, in one place.

The rest of the library imports these names from here and never imports
`haiku._src` or `jax._src` itself (tests/haiku_compat_test.py checks both
that rule and the behaviour of every name below), so a Haiku or JAX upgrade
that moves an internal breaks one file, loudly, with a message that says what
to do.

Public APIs are used wherever they behave identically:

- `bundle_scope`: `hk.name_scope(hk.force_name(path))`;
- `inside_transform`: `hk.running_init`, which raises outside a transform;
- `camel_to_snake`: a copy of Haiku's regex (Haiku's default module names are
  the contract; the test checks them against real `hk.Module`s);
- `current_trace_state`: `jax.extend.core.get_opaque_trace_state`.

Private, because no public API serves (each says why at its definition):
`MissingRNGError`, `get_original_fn`, `top_level_policy`,
`backends_started`.
"""

import contextlib
import re
from typing import Any, Callable, ContextManager, Iterator

import haiku as hk
from haiku._src import base as _hk_base
from haiku._src import mixed_precision as _hk_mp
from haiku._src import transform as _hk_transform
import jax
from jax._src import xla_bridge as _jax_xla_bridge
import jax.extend.core as _jax_extend_core
import jmp

_VERSIONS = f"dm-haiku {hk.__version__}, jax {jax.__version__}"
_FIX = ("Fix: install the versions pinned in requirements.txt "
        "(`python3 -m pip install -r requirements.txt`), or port "
        "pax_haiku/_src/haiku_compat.py to this version (its test, "
        "tests/haiku_compat_test.py, says what must hold).")


def _require(owner: Any, attr: str, what: str) -> Any:
  """`owner.attr`, or an ImportError naming the versions and the fix."""
  try:
    return getattr(owner, attr)
  except AttributeError as e:
    raise ImportError(
        f"pax_haiku needs `{getattr(owner, '__name__', owner)}.{attr}` "
        f"({what}), which is missing in {_VERSIONS}.\n{_FIX}") from e


# -- RNG ---------------------------------------------------------------------

# Private: Haiku raises it from `hk.next_rng_key()` when the transform got no
# key, but does not export it; its base class, ValueError, is too broad to
# tell "no RNG key" apart from the user's own errors.
MissingRNGError: type = _require(
    _hk_base, "MissingRNGError", "the error hk.next_rng_key raises without a "
    "key")
if not (isinstance(MissingRNGError, type) and
        issubclass(MissingRNGError, Exception)):
  raise ImportError(f"haiku._src.base.MissingRNGError is not an exception "
                    f"class in {_VERSIONS}.\n{_FIX}")


# -- Transforms --------------------------------------------------------------

# Private: an `hk.Transformed` holds only `init`/`apply`; Haiku records the
# function it was built from (`_original_fn`) and reads it back only through
# this helper, which it does not export.
_get_original_fn = _require(_hk_transform, "get_original_fn",
                            "the function an hk.transform was built from")


def get_original_fn(f: Any) -> Callable[..., Any]:
  """The Haiku function an `hk.Transformed`/`hk.TransformedWithState` wraps.

  Args:
    f: the result of `hk.transform` / `hk.transform_with_state` (possibly
      through `hk.without_apply_rng`).

  Returns:
    The function that was transformed.
  """
  return _get_original_fn(f)


def inside_transform() -> bool:
  """Whether the caller runs inside a Haiku transform (`init` or `apply`).

  `hk.running_init` raises ValueError exactly when no transform is active
  (the same test as Haiku's private `inside_transform`).

  Returns:
    True inside `hk.transform(...).init/apply`, False elsewhere.
  """
  try:
    hk.running_init()
  except ValueError:
    return False
  return True


def bundle_scope(path: str) -> ContextManager[None]:
  """Makes `hk.get_parameter`/`get_state`/`set_state` use module path `path`.

  `path` is absolute (e.g. `"sequential/~/linear"`): the current Haiku module
  scope is ignored, as `hk.force_name` promises. Must run inside a transform.

  Args:
    path: the Haiku module path (the key in the params/state dicts).

  Returns:
    A single-use context manager.
  """
  return hk.name_scope(hk.force_name(path))


# -- Names -------------------------------------------------------------------

# Haiku's rule for default module names (haiku/_src/utils.py), copied: the
# names Haiku gives `hk.Module`s are the contract, checked in the test.
_CAMEL_TO_SNAKE = re.compile(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")


def camel_to_snake(name: str) -> str:
  """Haiku's default module name for a class name (`BatchNorm` -> `batch_norm`).

  >>> from pax_haiku._src import haiku_compat
  >>> haiku_compat.camel_to_snake("MultiHeadAttention")
  'multi_head_attention'

  Args:
    name: a class name.

  Returns:
    The snake-case name Haiku would give an `hk.Module` of that class.
  """
  return _CAMEL_TO_SNAKE.sub(r"_\1", name).lower()


# -- Mixed precision ---------------------------------------------------------

# Private: Haiku applies a policy only through its per-class method
# interceptor (`hk.mixed_precision.push_policy(cls, ...)`); running a plain
# function under a policy needs the same thread-local policy stack, creator
# and getter, which Haiku does not export. Nested per-class policies then
# replace this one exactly as they replace a parent class's policy.
_require(_hk_mp, "_thread_local_state", "Haiku's mixed precision policy "
         "stack")
_mp_creator = _require(_hk_mp, "_mixed_precision_creator",
                       "Haiku's mixed precision parameter creator")
_mp_getter = _require(_hk_mp, "_mixed_precision_getter",
                      "Haiku's mixed precision parameter getter")


@contextlib.contextmanager
def top_level_policy(policy: jmp.Policy) -> Iterator[None]:
  """Runs the block under `policy` as if it were a policy-carrying hk.Module.

  Parameters and state are created in `policy.param_dtype` and read in
  `policy.compute_dtype`; the caller casts inputs and outputs.

  Args:
    policy: the jmp policy.

  Yields:
    Nothing; the policy is active inside the block.
  """
  # Read at call time: Haiku's test helper replaces the object.
  tls = _hk_mp._thread_local_state  # pylint: disable=protected-access
  with contextlib.ExitStack() as stack:
    if hk.mixed_precision.current_policy() is None:
      stack.enter_context(hk.custom_creator(_mp_creator))
      stack.enter_context(hk.custom_getter(_mp_getter, state=True))
    stack.enter_context(tls.push_current_policy(policy))
    yield


# -- JAX traces ----------------------------------------------------------------

_get_opaque_trace_state = _require(
    _jax_extend_core, "get_opaque_trace_state",
    "an identifier of the current JAX trace (pax's tracer-leak guard)")


def current_trace_state() -> Any:
  """An identifier of the current JAX trace (changes inside `jax.jit` etc).

  Two results compare equal (`==`) exactly when they were taken under the
  same trace. They hold the trace weakly.

  Returns:
    An opaque value, only meant for `==`.
  """
  return _get_opaque_trace_state()


# JAX has no public way to ask whether a backend has started without
# starting one (`jax.devices()` does).
_backends_are_initialized = _require(
    _jax_xla_bridge, "backends_are_initialized",
    "whether a JAX backend has started (the test suite forks a process only "
    "before, tests/launch.py)")


def backends_started() -> bool:
  """Whether this process has started a JAX backend (without starting one).

  XLA's thread pools do not survive `os.fork()`: a process may fork only
  before this turns True.
  """
  return bool(_backends_are_initialized())
