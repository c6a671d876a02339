"""Fast Haiku `init`: the same parameters with a few reusable compilations.

`hk.transform_with_state(f).init(key, x)` run eagerly compiles tiny XLA
programs for every new shape: each `jax.random.truncated_normal` of a new
shape is a full compilation (~1 s on 2 CPU cores), and the sample forward
pass compiles each of its ops again. `init` below gives the same arrays:

1. It traces `init` abstractly (`jax.eval_shape`: no compilation) under a
   `hk.custom_creator` that computes every parameter and state initial value
   concretely (`jax.ensure_compile_time_eval`), in Haiku's creation order, so
   the RNG sequence advances exactly as in Haiku.
2. Haiku's random initializers (`TruncatedNormal`, `RandomNormal`,
   `RandomUniform`, `VarianceScaling`, with float32 parameters and
   threefry keys) are computed in fixed-size chunks by one jitted program
   per (distribution, chunk size). JAX's partitionable threefry draws
   element `i` of any shape from counter `i`, so a chunk at counter offset
   `k * chunk` holds elements `k * chunk ...` of the flat array: the values
   equal `jax.random.*(key, shape)` bit for bit, with no per-shape compile
   (`chunked_random`).
   Constant initializers are built on the host. Any other initializer runs
   as Haiku would run it (eagerly).
3. Values that depend on the sample inputs (e.g. `hk.BatchNorm`'s moving
   averages set during `init`) come from one jitted forward pass that takes
   the already known leaves as arguments, compiled with LLVM optimizations
   off (the program runs once).

4. Layers (`HaikuModuleCall`s, which compare by value) keep what the trace
   found, per input signature, in a bounded LRU (`PLAN_CACHE_SIZE`): a
   model of 48 identical layers traces one and replays the rest with
   `hk.PRNGSequence` keys.

Compiled programs live in JAX's own jit caches and, with
`pax.enable_compilation_cache()`, in JAX's persistent cache across
processes.
"""

import collections
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from pax_haiku._src import chunked_random

# The forward pass for data-dependent leaves runs once: compile it fast.
_FORWARD_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                             "xla_llvm_disable_expensive_passes": True}


def _threefry_ok() -> bool:
  return (jax.config.jax_threefry_partitionable and
          str(jax.config.jax_default_prng_impl) == "threefry2x32")


def _key_data(key: Any) -> Optional[jax.Array]:
  """The uint32[2] threefry key data of `key`, or None if not threefry."""
  if isinstance(key, jax.core.Tracer) or not isinstance(key, jax.Array):
    return None
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape or "threefry" not in str(jax.random.key_impl(key)):
      return None
    return jax.random.key_data(key)
  if key.dtype == jnp.uint32 and key.shape == (2,) and _threefry_ok():
    return key
  return None


# -- recognising Haiku's initializers ----------------------------------------

def _fans(shape, fan_in_axes) -> Tuple[float, float]:
  """Haiku's `_compute_fans` (checked against Haiku in the tests)."""
  if len(shape) < 1:
    fan_in = fan_out = 1
  elif len(shape) == 1:
    fan_in = fan_out = shape[0]
  elif len(shape) == 2:
    fan_in, fan_out = shape
  else:
    if fan_in_axes is not None:
      fan_in = np.prod([shape[i] for i in fan_in_axes])
      fan_out = np.prod([s for i, s in enumerate(shape)
                         if i not in fan_in_axes])
    else:
      receptive_field_size = np.prod(shape[:-2])
      fan_in = shape[-2] * receptive_field_size
      fan_out = shape[-1] * receptive_field_size
  return fan_in, fan_out


def _variance_scaling(init: Any, shape, dtype) -> Optional[Any]:
  """The Haiku initializer `hk.initializers.VarianceScaling` delegates to."""
  scale = init.scale
  fan_in, fan_out = _fans(shape, init.fan_in_axes)
  if init.mode == "fan_in":
    scale /= max(1.0, fan_in)
  elif init.mode == "fan_out":
    scale /= max(1.0, fan_out)
  else:
    scale /= max(1.0, (fan_in + fan_out) / 2.0)
  if init.distribution == "truncated_normal":
    stddev = np.sqrt(scale)
    distribution_stddev = np.asarray(.87962566103423978, dtype=dtype)
    return hk.initializers.TruncatedNormal(stddev=stddev /
                                           distribution_stddev)
  if init.distribution == "normal":
    return hk.initializers.RandomNormal(stddev=np.sqrt(scale))
  limit = np.sqrt(3.0 * scale)
  return hk.initializers.RandomUniform(minval=-limit, maxval=limit)


def _is_scalar(value: Any) -> bool:
  return isinstance(value, (int, float, np.number)) and not isinstance(
      value, bool)


def _no_rng(compute: Callable[[], jax.Array]) -> Callable[..., jax.Array]:
  def no_key(key_data=None):
    del key_data
    return compute()
  no_key.uses_rng = False
  return no_key


def fast_value(init: Any, shape: Tuple[int, ...], dtype: Any
               ) -> Optional[Callable[[], jax.Array]]:
  """A function computing `init(shape, dtype)` fast, or None if unknown.

  Random ones draw their key with `hk.next_rng_key()` once, as Haiku's do.
  """
  dtype = np.dtype(dtype)
  shape = tuple(int(s) for s in shape)
  if init is jnp.zeros or init is jnp.ones:
    fill = 0 if init is jnp.zeros else 1
    return _no_rng(lambda: jax.device_put(np.full(shape, fill, dtype)))
  if type(init).__name__ == "VarianceScaling" and hasattr(init, "mode") and (
      type(init).__module__.startswith("pax_haiku.")):
    init = hk.initializers.VarianceScaling(init.scale, init.mode,
                                           init.distribution)
  if type(init) is hk.initializers.Constant:
    c = init.constant
    if not _is_scalar(c) or not jnp.issubdtype(dtype, jnp.floating):
      return None
    # `jnp.asarray(c)`'s dtype, without tracing it.
    host = np.asarray(c, jax.dtypes.canonicalize_dtype(np.result_type(c)))
    if not jnp.issubdtype(host.dtype, jnp.floating) and not isinstance(
        c, int):
      return None
    return _no_rng(
        lambda: jax.device_put(np.broadcast_to(host, shape).astype(dtype)))
  if dtype != np.float32 or math.prod(shape) >= 2 ** 32 or (
      jax.config.jax_enable_x64):
    return None
  if type(init) is hk.initializers.VarianceScaling:
    if init.distribution not in ("truncated_normal", "normal", "uniform"):
      return None
    init = _variance_scaling(init, shape, dtype)
  kind = {hk.initializers.TruncatedNormal: "truncated_normal",
          hk.initializers.RandomNormal: "normal",
          hk.initializers.RandomUniform: "uniform"}.get(type(init))
  if kind is None:
    return None
  if kind == "uniform":
    a, b, lower, upper = init.minval, init.maxval, 0.0, 0.0
  elif kind == "normal":
    a, b, lower, upper = init.stddev, init.mean, 0.0, 0.0
  else:
    a, b, lower, upper = init.stddev, init.mean, init.lower, init.upper
  if not all(_is_scalar(v) or (isinstance(v, (np.ndarray, jax.Array)) and
                               v.shape == () and not isinstance(
                                   v, jax.core.Tracer))
             for v in (a, b, lower, upper)):
    return None

  def compute(key_data=None):
    if key_data is None:
      key_data = draw_key()
    return chunked_random.draw(key_data, shape, kind, a, b, lower, upper)
  compute.uses_rng = True
  return compute


def _as_in_trace() -> Any:
  """The mode in which `_trace` draws keys, for eager key splits.

  `_trace` splits keys under `jax.ensure_compile_time_eval()`, and JAX
  caches the programs of that mode apart from plain eager ones: splitting
  the same way reuses them (the same values; two compiles fewer in a
  process that builds a model).
  """
  return jax.ensure_compile_time_eval()


def draw_key() -> jax.Array:
  """`hk.next_rng_key()`'s threefry key data; _NotConcrete if traced."""
  key_data = _key_data(hk.next_rng_key())
  if key_data is None:
    raise _NotConcrete()
  return key_data


class _NotConcrete(Exception):
  """The RNG key is traced: the value must come from the forward pass."""


# -- init ----------------------------------------------------------------------

def _split_arrays(args: Any) -> Tuple[List[Any], Callable[[List[Any]], Any]]:
  """Array leaves of `args` (to trace) and a function putting them back."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  where = [i for i, l in enumerate(leaves)
           if isinstance(l, (jax.Array, np.ndarray))]

  def merge(arrays):
    out = list(leaves)
    for i, a in zip(where, arrays):
      out[i] = a
    return treedef.unflatten(out)
  return [leaves[i] for i in where], merge


_Key = Tuple[int, str, str]  # (0 params / 1 state, module name, leaf name)


def _with_creators(fn: Callable[..., Any], make: Callable[[int], Any]
                   ) -> Callable[..., Any]:
  """`fn` under one custom creator for params (role 0), one for state."""
  def wrapped(*args, **kwargs):
    with hk.custom_creator(make(0), params=True, state=False), \
        hk.custom_creator(make(1), params=False, state=True):
      return fn(*args, **kwargs)
  return wrapped


def init(fn: Callable[..., Any], rng_key: jax.Array, args: Tuple[Any, ...],
         kwargs: Dict[str, Any], reusable: bool = False
         ) -> Tuple[hk.Params, hk.State]:
  """`hk.transform_with_state(fn).init(rng_key, *args, **kwargs)`, faster.

  Runs Haiku's own `init` when the inputs or the key are traced (a lazy
  module built inside `jax.jit`): there is nothing to compute ahead then.

  Args:
    fn: the Haiku function.
    rng_key: the key of `init`.
    args: positional sample inputs.
    kwargs: keyword sample inputs.
    reusable: `fn` compares by value and depends on nothing else (a
      `HaikuModuleCall`): what the trace found is kept for later calls with
      the same inputs' shapes (an LRU cache of `PLAN_CACHE_SIZE`), so a
      model of many identical layers traces one.
  """
  arrays, merge = _split_arrays((args, kwargs))
  if isinstance(rng_key, jax.core.Tracer) or any(
      isinstance(a, jax.core.Tracer) for a in arrays):
    return hk.transform_with_state(fn).init(rng_key, *args, **kwargs)
  plan_key = signature(fn, rng_key, args, kwargs) if reusable else None
  plan = _PLANS.get(plan_key) if plan_key is not None else None
  if plan is not None and plan.still_valid():
    _PLANS.move_to_end(plan_key)
    return plan.replay(rng_key, arrays)
  plan = _Plan.trace(fn, rng_key, arrays, merge)
  if plan_key is not None and plan.reusable:
    _PLANS[plan_key] = plan
    while len(_PLANS) > PLAN_CACHE_SIZE:
      _PLANS.popitem(last=False)
  return plan.values


# Bounded: a plan holds its function and compiled forward pass, and a
# program may build layers of any number of distinct configurations.
PLAN_CACHE_SIZE = 256
_PLANS: "collections.OrderedDict[Any, _Plan]" = collections.OrderedDict()


def signature(fn, rng_key, args, kwargs) -> Optional[Any]:
  """What `init`'s result depends on, besides the key's value; None if
  something is unhashable."""
  leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
  sig = tuple((l.shape, str(l.dtype)) if isinstance(l, (jax.Array, np.ndarray))
              else ("static", l) for l in leaves)
  key = (fn, treedef, sig, rng_key.shape, str(rng_key.dtype),
         bool(jax.config.jax_enable_x64), _threefry_ok())
  try:
    hash(key)
  except TypeError:
    return None
  return key


class _Plan:
  """One traced `init`: its leaves, in creation order, and how to compute
  them for another key."""

  def __init__(self):
    self.shapes = None
    self.steps: List[Tuple[_Key, Any]] = []  # (leaf, fast_value or None)
    self.keys: List[jax.Array] = []  # Key data each random step used.
    self.missing: List[_Key] = []
    self.forward = None  # Compiled: (known, arrays, rng_key) -> missing.
    self.policies: Dict[type, Any] = {}
    self.reusable = False
    self.values = None

  @classmethod
  def trace(cls, fn, rng_key, arrays, merge) -> "_Plan":
    plan = cls()
    known = plan._trace(fn, rng_key, arrays, merge, eager_forward=False)
    eager = known is None
    if eager:
      # The forward pass drew RNG keys before some initializer: trace again
      # with every input-independent op (key splits included) run eagerly,
      # as Haiku's own eager init runs them, so the initializers' keys are
      # concrete.
      plan = cls()
      known = plan._trace(fn, rng_key, arrays, merge, eager_forward=True)
    # Leaves created by `hk.set_state` alone (no initializer), or whose
    # initializer read the inputs, come from the forward pass.
    plan.missing = [(role, bundle, name)
                    for role, tree in enumerate(plan.shapes)
                    for bundle, leaves in tree.items() for name in leaves
                    if (role, bundle, name) not in known]
    if plan.missing:
      plan.forward = _compile_forward(fn, arrays, merge, known, plan.missing,
                                      rng_key)
      known.update(zip(plan.missing, plan.forward(known, arrays, rng_key)))
    plan.values = plan._assemble(known)
    plan.reusable = (not eager and all(f is not None for _, f in plan.steps)
                     and hk.mixed_precision.current_policy() is None
                     and plan._keys_are_sequential(rng_key))
    return plan

  def _trace(self, fn, rng_key, arrays, merge, eager_forward):
    """Traces `init` abstractly, computing the initializers' values.

    Returns the values computed, or None if an initializer got a traced key
    and `eager_forward` is off.
    """
    known: Dict[_Key, jax.Array] = {}
    traced_key = []
    pending = []  # (leaf, fast_value, key data)

    def make(role):
      def creator(next_creator, shape, dtype, init_fn, context):
        key = (role, context.module_name, context.name)
        fast = fast_value(init_fn, shape, dtype)

        def concrete(shape, dtype):
          value = None
          with jax.ensure_compile_time_eval():
            try:
              if fast is not None and not eager_forward:
                # Drawn now, in Haiku's order; computed after the trace,
                # outside it (a program run inside a trace compiles again).
                key_data = draw_key() if fast.uses_rng else None
                pending.append((key, fast, key_data))
                if fast.uses_rng:
                  self.keys.append(key_data)
              else:
                value = fast() if fast is not None else init_fn(shape,
                                                                 dtype)
            except _NotConcrete:
              traced_key.append(key)
              value = init_fn(shape, dtype)
          self.steps.append((key, fast))
          if value is None:
            return jnp.zeros(shape, dtype)  # Traced: a placeholder.
          if not isinstance(value, jax.core.Tracer):
            known[key] = value
          return value
        return next_creator(shape, dtype, concrete)
      return creator

    def record(next_f, args, kwargs, context):
      cls = type(context.module)
      self.policies.setdefault(cls, hk.mixed_precision.get_policy(cls))
      return next_f(*args, **kwargs)

    def run(arr):
      args, kwargs = merge(arr)
      with hk.intercept_methods(record):
        return traced.init(rng_key, *args, **kwargs)

    traced = hk.transform_with_state(_with_creators(fn, make))
    if eager_forward:
      with jax.ensure_compile_time_eval():
        self.shapes = jax.eval_shape(run, arrays)
    else:
      self.shapes = jax.eval_shape(run, arrays)
    if traced_key and not eager_forward:
      return None
    for key, fast, key_data in pending:
      known[key] = fast(key_data)
    return known

  def _keys_are_sequential(self, rng_key) -> bool:
    """The random initializers drew consecutive keys of the sequence (the
    forward pass drew none between them): `replay` reproduces them."""
    try:
      with _as_in_trace():
        seq = hk.PRNGSequence(rng_key)
        return all(np.array_equal(_key_data(next(seq)), used)
                   for used in self.keys)
    except (TypeError, ValueError):  # A key Haiku's sequence rejects.
      return False

  def still_valid(self) -> bool:
    return hk.mixed_precision.current_policy() is None and all(
        hk.mixed_precision.get_policy(cls) == policy
        for cls, policy in self.policies.items())

  def replay(self, rng_key, arrays):
    """`init`'s arrays for another key, without tracing."""
    with _as_in_trace():
      seq = hk.PRNGSequence(rng_key)
      keys = [_key_data(next(seq)) if fast.uses_rng else None
              for _, fast in self.steps]
    known = {key: fast(key_data)
             for (key, fast), key_data in zip(self.steps, keys)}
    if self.missing:
      known.update(zip(self.missing, self.forward(known, arrays, rng_key)))
    return self._assemble(known)

  def _assemble(self, known):
    return tuple({bundle: {name: known[(role, bundle, name)]
                           for name in leaves}
                  for bundle, leaves in tree.items()}
                 for role, tree in enumerate(self.shapes))


def _compile_forward(fn: Callable[..., Any], arrays: List[Any],
                     merge: Callable[[List[Any]], Any],
                     known: Dict[_Key, jax.Array], missing: List[_Key],
                     rng_key: jax.Array) -> Any:
  """`(known, arrays, rng_key) -> missing leaves`: one compiled forward pass
  of `init`, the known leaves given."""
  given: Dict[_Key, Any] = {}

  def make(role):
    def creator(next_creator, shape, dtype, init_fn, context):
      key = (role, context.module_name, context.name)

      def create(shape, dtype):
        if key not in given:
          return init_fn(shape, dtype)
        fast = fast_value(init_fn, shape, dtype)
        if fast is None:
          init_fn(shape, dtype)  # Advances the RNG sequence as in Haiku.
        elif fast.uses_rng:
          hk.next_rng_key()
        return given[key]
      return next_creator(shape, dtype, create)
    return creator

  traced = hk.transform_with_state(_with_creators(fn, make))

  def forward(known_values, arr, key):
    given.clear()
    given.update(known_values)
    args, kwargs = merge(arr)
    out = traced.init(key, *args, **kwargs)
    return [out[role][bundle][name] for role, bundle, name in missing]

  return jax.jit(forward).lower(known, arrays, rng_key).compile(
      compiler_options=_FORWARD_COMPILER_OPTIONS)
