"""Mixed precision: jmp policies on pax modules, through Haiku's own machinery.

A `jmp.Policy` says in which dtype parameters are kept (`param_dtype`),
computations run (`compute_dtype`) and outputs are returned
(`output_dtype`).

- Haiku-backed modules (the layers, the nets, `pax.from_haiku`) run their
  Haiku function under `hk.mixed_precision.push_policy(hk_class, policy)` for
  their top-level `hk.Module` class (exactly what
  `hk.mixed_precision.set_policy` does in plain Haiku code; a Haiku function
  that is not one module class gets the same treatment at its top level):
  parameters and state are cast to the compute dtype when read, inputs are
  cast to the compute dtype and outputs to the output dtype. The stored
  parameters keep their dtype (float32), and so does updated state (it is
  cast back to the policy's parameter dtype when Haiku sets it).
- Other modules (`pax.Module` subclasses) follow PAX: their own array
  attributes and the call's inputs are cast to the compute dtype, the output
  to the output dtype; their submodules keep their own policies.

`apply_default_mp_policy` applies the usual recipe to a whole tree: layers
with matmuls/convolutions compute in half precision, normalization layers in
float32.
"""

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar, Union

import haiku as hk
import jax
import jax.numpy as jnp
import jmp

from pax_haiku._src import haiku_bridge
from pax_haiku._src import haiku_compat
from pax_haiku._src import haiku_naming
from pax_haiku._src import module as module_lib
from pax_haiku._src import module_base
from pax_haiku._src import module_layout

T = TypeVar("T", bound=module_lib.Module)
Policy = Union[jmp.Policy, str]

#: Haiku classes the default policy keeps in float32.
NORM_CLASSES: Tuple[type, ...] = tuple(
    c for c in (getattr(hk, n, None) for n in (
        "BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm"))
    if c is not None)


def _as_policy(policy: Any) -> jmp.Policy:
  if isinstance(policy, jmp.Policy):
    return policy
  if isinstance(policy, str):
    try:
      return jmp.get_policy(policy)
    except ValueError as e:
      raise ValueError(
          f"Cannot parse the mixed precision policy {policy!r}: {e}\nFix: "
          "e.g. 'params=float32,compute=bfloat16,output=float32'.") from e
  raise TypeError(
      f"Expected a jmp.Policy (or a policy string), got "
      f"{type(policy).__name__}.\nFix: `jmp.get_policy('params=float32,"
      "compute=bfloat16,output=float32')`.")


def _top_level_policy(policy: jmp.Policy):
  """Haiku's method interceptor, for a function that is not a module."""
  return haiku_compat.top_level_policy(policy)


class MixedPrecisionFn:
  """A Haiku function run under a policy (and per-class inner policies).

  Value-equal, so modules with the same policy share a treedef.
  """

  def __init__(self, fn: Callable[..., Any], policy: jmp.Policy,
               inner: Tuple[Tuple[type, jmp.Policy], ...] = ()):
    self.fn = fn
    self.policy = policy
    self.inner = inner
    self.__name__ = getattr(fn, "__name__", "haiku_fn")

  @property
  def top_class(self) -> Optional[type]:
    if isinstance(self.fn, haiku_bridge.HaikuModuleCall):
      return self.fn.cls
    return None

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    top = self.top_class
    with contextlib.ExitStack() as stack:
      # Haiku casts state to the compute dtype when it is read, so updated
      # state would be stored in half precision; keep the parameter dtype.
      stack.enter_context(hk.custom_setter(self._cast_state))
      for cls, policy in self.inner:
        if cls is not top:
          stack.enter_context(hk.mixed_precision.push_policy(cls, policy))
      if top is not None:
        stack.enter_context(hk.mixed_precision.push_policy(top, self.policy))
        return self.fn(*args, **kwargs)
      stack.enter_context(_top_level_policy(self.policy))
      args, kwargs = self.policy.cast_to_compute((args, kwargs))
      return self.policy.cast_to_output(self.fn(*args, **kwargs))

  def _cast_state(self, next_setter, value, context):
    del context
    return next_setter(self.policy.cast_to_param(value))

  def __reduce__(self):
    # Rebuilt through the constructor: pickles whenever `fn`, the policies
    # and the inner classes (by reference) do.
    return (MixedPrecisionFn, (self.fn, self.policy, self.inner))

  def _key(self):
    return (self.fn, self.policy, self.inner)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, MixedPrecisionFn) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def __repr__(self) -> str:
    return f"{self.__name__}[{_short(self.policy)}]"


def _short(policy: jmp.Policy) -> str:
  names = {jnp.dtype(jnp.float16): "H", jnp.dtype(jnp.bfloat16): "H",
           jnp.dtype(jnp.float32): "F", jnp.dtype(jnp.float64): "F"}
  return "".join(names.get(jnp.dtype(d), "?") for d in (
      policy.param_dtype, policy.compute_dtype, policy.output_dtype))


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def get_mp_policy(module: module_lib.Module) -> Optional[jmp.Policy]:
  """The policy applied to `module` itself (not its submodules), or None.

  >>> net = pax.apply_mp_policy(pax.Linear(2, 2), "p=f32,c=bf16,o=f32")
  >>> pax.get_mp_policy(net).compute_dtype == jnp.bfloat16
  True
  """
  module_base.require_module("pax.get_mp_policy", module)
  return module._mp_policy()  # pylint: disable=protected-access


def _apply(module: T, policy: jmp.Policy,
           inner: Tuple[Tuple[type, jmp.Policy], ...] = ()) -> T:
  if get_mp_policy(module) is not None:
    raise ValueError(
        f"`{module!r}` already has a mixed precision policy "
        f"({get_mp_policy(module)}).\nFix: remove it first with "
        "`pax.unwrap_mp_policy(module)`.")
  if isinstance(module, haiku_bridge.HaikuModule):
    spec = module._require_initialized()  # pylint: disable=protected-access
    fn = MixedPrecisionFn(spec.fn, policy, inner)
    return module.replace(_haiku_spec=dataclasses.replace(
        spec, fn=fn, mp_policy=policy))
  # `pax.Module` runs `__call__` under this field's policy (module_base);
  # other methods (and modules without `__call__`) run as they are (PAX).
  module = module.copy()
  module_layout.set_fields(module, **{module_base.MP_POLICY: policy})
  return module


def apply_mp_policy(module: T, mp_policy: Policy) -> T:
  """Returns a copy of `module` that runs under a mixed precision policy.

  Parameters keep their dtype; inputs, parameters and state are cast to the
  policy's compute dtype for the call, the output to its output dtype. For
  Haiku-backed modules this is `hk.mixed_precision` (nested Haiku modules run
  under the same policy unless they have their own); for other modules only
  the module's own arrays are cast, as in PAX.

  >>> policy = "params=float32,compute=bfloat16,output=float32"  # jmp syntax
  >>> net = pax.apply_mp_policy(pax.Linear(3, 4), policy)
  >>> net.weight.dtype, net(jnp.ones((1, 3))).dtype
  (dtype('float32'), dtype('float32'))
  >>> pax.unwrap_mp_policy(net)
  Linear(in_dim=3, out_dim=4, with_bias=True)

  Args:
    module: a pax module.
    mp_policy: a `jmp.Policy` or a policy string such as
      `"params=float32,compute=bfloat16,output=float32"`.

  Returns:
    A copy of the module with the policy.
  """
  module_base.require_module("pax.apply_mp_policy", module)
  return _apply(module, _as_policy(mp_policy))


def unwrap_mp_policy(module: T, *, recursive: bool = False) -> T:
  """Returns a copy of `module` without its mixed precision policy.

  >>> net = pax.apply_mp_policy(pax.Linear(2, 2), "p=f32,c=f16,o=f32")
  >>> pax.get_mp_policy(pax.unwrap_mp_policy(net)) is None
  True

  Args:
    module: a module with a policy (`apply_mp_policy`).
    recursive: remove the policies of every module in the tree (modules
      without one are left as they are).

  Returns:
    A copy of the module without policy.
  """
  module_base.require_module("pax.unwrap_mp_policy", module)
  if recursive:
    return module.apply(
        lambda m: unwrap_mp_policy(m) if get_mp_policy(m) else m)
  if get_mp_policy(module) is None:
    raise ValueError(
        f"`{module!r}` has no mixed precision policy to remove.\nFix: only "
        "unwrap modules returned by `pax.apply_mp_policy`, or pass "
        "`recursive=True` to clear a whole tree.")
  spec = getattr(module, "_haiku_spec", None)
  if spec is not None and isinstance(spec.fn, MixedPrecisionFn):
    return module.replace(_haiku_spec=dataclasses.replace(
        spec, fn=spec.fn.fn, mp_policy=None))
  module = module.copy()
  del module_layout.fields(module)[module_base.MP_POLICY]
  module_layout.refresh(module)
  return module


def default_policies(half_dtype: Any = jnp.bfloat16
                     ) -> Tuple[jmp.Policy, jmp.Policy, jmp.Policy]:
  """`(half, full, inner_norm)` policies used by `apply_default_mp_policy`.

  - half: parameters float32, compute `half_dtype`, output float32 (layers
    with matmuls/convolutions and whole Haiku nets);
  - full: everything float32 (normalization layers);
  - inner_norm: parameters and compute float32, output `half_dtype` (Haiku
    normalization modules inside a half-precision Haiku net, so the
    activations flowing between its convolutions stay in half precision).

  >>> half, full, _ = pax.default_policies()
  >>> half.compute_dtype == jnp.bfloat16, full.compute_dtype == jnp.float32
  (True, True)

  Args:
    half_dtype: `jnp.bfloat16` (default; TPUs, recent GPUs) or `jnp.float16`.

  Returns:
    The three policies.
  """
  if jnp.dtype(half_dtype) not in (jnp.dtype(jnp.bfloat16),
                                   jnp.dtype(jnp.float16)):
    raise ValueError(f"half_dtype must be jnp.bfloat16 or jnp.float16, got "
                     f"{half_dtype!r}.")
  f32 = jnp.float32
  return (jmp.Policy(param_dtype=f32, compute_dtype=half_dtype,
                     output_dtype=f32),
          jmp.Policy(param_dtype=f32, compute_dtype=f32, output_dtype=f32),
          jmp.Policy(param_dtype=f32, compute_dtype=f32,
                     output_dtype=half_dtype))


def _has_params(module: haiku_bridge.HaikuModule) -> bool:
  spec = module._require_initialized()  # pylint: disable=protected-access
  return any(role == haiku_naming.PARAMS for _, _, _, role in spec.leaves)


def apply_default_mp_policy(module: T, half_dtype: Any = jnp.bfloat16) -> T:
  """Applies the usual mixed precision recipe to every module of a tree.

  Haiku-backed modules with parameters (Linear, convolutions, attention,
  embeddings, RNN cores, whole nets) compute in `half_dtype` with float32
  inputs/outputs; normalization layers (BatchNorm, LayerNorm, GroupNorm)
  compute in float32, also inside Haiku nets. Parameters stay float32.
  Modules without parameters, modules that already have a policy and
  non-Haiku modules (their children are handled) are left as they are.

  >>> net = pax.Sequential(pax.Linear(3, 4), pax.LayerNorm(4))
  >>> net = pax.apply_default_mp_policy(net)
  >>> pax.get_mp_policy(net[0]).compute_dtype == jnp.bfloat16
  True
  >>> pax.get_mp_policy(net[1]).compute_dtype == jnp.float32
  True
  >>> net(jnp.ones((2, 3))).dtype, net[0].weight.dtype
  (dtype('float32'), dtype('float32'))

  Args:
    module: a pax module (tree).
    half_dtype: `jnp.bfloat16` (default) or `jnp.float16`.

  Returns:
    A copy of the tree with the policies applied.
  """
  module_base.require_module("pax.apply_default_mp_policy", module)
  half, full, inner_norm = default_policies(half_dtype)
  inner = tuple((cls, inner_norm) for cls in NORM_CLASSES)

  def fn(m):
    if not isinstance(m, haiku_bridge.HaikuModule) or get_mp_policy(m):
      return m
    spec = m._require_initialized()  # pylint: disable=protected-access
    top = (spec.fn.cls if isinstance(spec.fn, haiku_bridge.HaikuModuleCall)
           else None)
    if top is not None and issubclass(top, NORM_CLASSES):
      return _apply(m, full)
    if not _has_params(m):
      return m
    return _apply(m, half, inner)

  return module.apply(fn)
