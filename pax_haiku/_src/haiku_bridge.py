"""The Haiku -> pax direction of the bridge: Haiku code as pax modules.

`from_haiku(f)(*sample_args)` runs `hk.transform_with_state(f).init` once and
returns a `HaikuModule` whose attributes hold the params/state leaves and
whose `__call__` runs `apply`. The pax -> Haiku direction (`to_haiku`,
`haiku_call`) is in `to_haiku.py`.
"""

import collections
import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from pax_haiku._src import context
from pax_haiku._src import haiku_compat
from pax_haiku._src import haiku_init
from pax_haiku._src import haiku_naming
from pax_haiku._src import module as module_lib

RNG_NAME = "rng_key"

# Bounded: the cache holds its functions (and what they close over), and a
# program may build modules from any number of distinct functions.
TRANSFORMED_CACHE_SIZE = 256


# `_needs_rng` of a layer signature (`haiku_init.signature`), LRU-bounded.
_NEEDS_RNG: "collections.OrderedDict[Any, bool]" = collections.OrderedDict()


def sample_input(shape: Sequence[int], dtype: Any = float) -> np.ndarray:
  """Zeros of `shape` for a layer's `__init__` to run Haiku's init on.

  A NumPy array: building a layer then runs no device program for its
  sample input, where `jnp.zeros` compiles one per new shape (~35 ms each on
  two cores, a third of a small MLP's construction in a fresh process).
  `dtype` as JAX would make it (`float`: float32, or float64 with
  `jax_enable_x64`), so the init traces exactly as with `jnp.zeros`.
  """
  return np.zeros(tuple(shape), jax.dtypes.canonicalize_dtype(dtype))


@functools.lru_cache(maxsize=TRANSFORMED_CACHE_SIZE)
def _transformed(fn: Callable[..., Any]) -> hk.TransformedWithState:
  """`hk.transform_with_state(fn)`, reused across calls of the same `fn`."""
  return hk.transform_with_state(fn)


class HaikuModuleCall:
  """A Haiku function `lambda *a, **k: cls(*ctor_args, **ctor_kw)(*a, **k)`.

  Compares by value, so two pax modules built from the same `hk.Module`
  class and constructor arguments share a treedef (and a jit cache entry).
  """

  def __init__(self, cls: type, *ctor_args: Any, method: str = "__call__",
               **ctor_kwargs: Any):
    self.cls = cls
    self.ctor_args = ctor_args
    self.ctor_kwargs = ctor_kwargs
    self.method = method
    self.__name__ = getattr(cls, "__name__", "haiku_module")

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    module = self.cls(*self.ctor_args, **self.ctor_kwargs)
    return getattr(module, self.method)(*args, **kwargs)

  def __reduce__(self):
    # Rebuilt through the constructor: pickles whenever the class (by
    # reference) and the constructor arguments do.
    return (_haiku_module_call, (type(self), self.cls, self.ctor_args,
                                 self.ctor_kwargs, self.method))

  def _key(self):
    return (self.cls, self.ctor_args, sorted(self.ctor_kwargs.items()),
            self.method)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, HaikuModuleCall) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash((self.cls, self.method))

  def __repr__(self) -> str:
    args = [repr(a) for a in self.ctor_args]
    args += [f"{k}={v!r}" for k, v in self.ctor_kwargs.items()]
    return f"{self.__name__}({', '.join(args)})"


def _haiku_module_call(call_cls: type, cls: type, ctor_args: Tuple[Any, ...],
                       ctor_kwargs: Dict[str, Any],
                       method: str) -> HaikuModuleCall:
  """Unpickles a `HaikuModuleCall` or subclass (`method` is keyword-only)."""
  return call_cls(cls, *ctor_args, method=method, **ctor_kwargs)


@dataclasses.dataclass(frozen=True)
class HaikuSpec:
  """Static description of a `HaikuModule` (one meta field of its treedef).

  Attributes:
    fn: the Haiku function.
    leaves: `(attribute, bundle, name, role)` for every params/state leaf;
      `bundle` is the Haiku module path as `fn` creates it.
    top: if every bundle starts with one top-level module name, that name
      (the module is then re-rooted under its parent's scope by replacing it).
    needs_rng: `fn` calls `hk.next_rng_key()`: a key is held as state.
    pass_training: `fn` takes `is_training`; pax passes `module.training`.
    mp_policy: the mixed precision policy `fn` runs under (set by
      `pax.apply_mp_policy`), or None.
  """
  fn: Callable[..., Any]
  leaves: Tuple[Tuple[str, str, str, str], ...]
  top: Optional[str]
  needs_rng: bool
  pass_training: bool
  mp_policy: Any = None

  def attr_of(self) -> Dict[Tuple[str, str, str], str]:
    return {(b, n, r): a for a, b, n, r in self.leaves}


def _top_level(bundles) -> Optional[str]:
  tops = {b.split("/")[0] for b in bundles}
  if len(tops) == 1 and "~" not in tops:
    return tops.pop()
  return None


def _accepts_is_training(fn: Callable[..., Any]) -> bool:
  target = fn.cls if isinstance(fn, HaikuModuleCall) else fn
  if isinstance(fn, HaikuModuleCall):
    target = getattr(fn.cls, fn.method)
  try:
    return "is_training" in inspect.signature(target).parameters
  except (TypeError, ValueError):
    return False


class HaikuModule(module_lib.Module):
  """A pax module running Haiku code; params/state leaves are attributes.

  Built by `pax.from_haiku` (which is the usual way to make one); the
  Haiku-backed layers subclass it and choose readable attribute names with
  `_haiku_attr_name`.

  >>> net = pax.HaikuModule(lambda x: hk.Linear(3)(x), (jnp.ones((1, 2)),))
  >>> isinstance(net, pax.HaikuModule), net.params["linear"]["w"].shape
  (True, (2, 3))
  """

  _haiku_spec: Optional[HaikuSpec]

  def __init__(self, fn: Any = None, sample_args: Tuple[Any, ...] = (),
               sample_kwargs: Optional[Dict[str, Any]] = None, *,
               rng_key: Optional[jax.Array] = None, name: Optional[str] = None,
               needs_rng: bool = False, lazy: bool = False):
    """Builds the module: runs Haiku `init` on the sample inputs.

    Args:
      fn: a Haiku function, an `hk.Transformed`/`hk.TransformedWithState` or
        an `hk.Module` class (no constructor arguments; use
        `pax.from_haiku(cls, *ctor_args)` for those). None only for
        subclasses that call `_init_haiku` themselves.
      sample_args: positional sample inputs for `init`.
      sample_kwargs: keyword sample inputs for `init`.
      rng_key: key for `init` (default: `pax.next_rng_key()`).
      name: the module's scope name when nested in another module.
      needs_rng: hold an RNG key even if `init` does not reveal the need.
      lazy: defer `init` to the first call (inside `pax.pure`).
    """
    super().__init__(name=name)
    if fn is None:
      if type(self) is HaikuModule:
        raise TypeError(
            "pax.HaikuModule needs a Haiku function.\nFix: "
            "`pax.from_haiku(f)(sample_x)` (or `pax.HaikuModule(f, "
            "(sample_x,))`).")
      return
    fn = _haiku_fn(fn)
    if not isinstance(sample_args, (tuple, list)):
      raise TypeError(
          "pax.HaikuModule takes its sample inputs as a tuple, got "
          f"{type(sample_args).__name__}.\nFix: `pax.HaikuModule(f, (x,))`, "
          "or `pax.from_haiku(f)(x)`.")
    if lazy:
      self._haiku_lazy_fn = fn
      self._haiku_lazy_key = rng_key
      self._haiku_spec = None
      return
    self._init_haiku(fn, tuple(sample_args), dict(sample_kwargs or {}),
                     rng_key)
    if needs_rng and not self._haiku_spec.needs_rng:
      key = rng_key if rng_key is not None else context.next_rng_key()
      setattr(self, RNG_NAME, jax.random.fold_in(key, 1))
      self._haiku_spec = dataclasses.replace(self._haiku_spec, needs_rng=True)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    """Attribute that holds a leaf; layers override to give PAX names."""
    del role
    return f"{bundle}/{name}"

  def _init_haiku(self, fn: Callable[..., Any], args: Tuple[Any, ...],
                  kwargs: Dict[str, Any], rng_key: Optional[jax.Array]) -> None:
    """Runs Haiku `init` on sample inputs and stores the leaves (in `__init__`)."""
    if rng_key is None:
      rng_key = context.next_rng_key()
    _check_rng_key(rng_key)
    pass_training = _accepts_is_training(fn)
    if pass_training and "is_training" not in kwargs:
      kwargs = dict(kwargs, is_training=self.training)
    transformed = _transformed(fn)
    # `transformed.init`'s arrays, without compiling a program per shape;
    # layers (value-compared functions) of one signature trace once.
    reusable = isinstance(fn, HaikuModuleCall)
    params, state = haiku_init.init(fn, rng_key, args, kwargs,
                                    reusable=reusable)
    signature = (haiku_init.signature(fn, rng_key, args, kwargs)
                 if reusable else None)
    needs_rng = _NEEDS_RNG.get(signature) if signature is not None else None
    if needs_rng is None:
      needs_rng = _needs_rng(transformed, params, state, args, kwargs)
      if signature is not None:
        _NEEDS_RNG[signature] = needs_rng
        while len(_NEEDS_RNG) > TRANSFORMED_CACHE_SIZE:
          _NEEDS_RNG.popitem(last=False)
    leaves = []
    for role, tree in ((haiku_naming.PARAMS, params),
                       (haiku_naming.STATE, state)):
      # Sorted, as JAX flattens Haiku's dicts: the jitted step then sees its
      # arguments in raw Haiku's order and compiles to the same program.
      for bundle in sorted(tree):
        for name, value in sorted(tree[bundle].items()):
          attr = self._haiku_attr_name(bundle, name, role)
          if any(attr == a for a, _, _, _ in leaves):
            raise ValueError(
                f"`{type(self).__name__}` maps two Haiku leaves to the "
                f"attribute `{attr}` (the second is {bundle}/{name}).\nFix: "
                "make `_haiku_attr_name` return distinct names, e.g. include "
                "the bundle path.")
          leaves.append((attr, bundle, name, role))
          setattr(self, attr, value)
    top = _top_level(b for _, b, _, _ in leaves)
    if needs_rng:
      setattr(self, RNG_NAME, jax.random.fold_in(rng_key, 1))
    self._haiku_spec = HaikuSpec(fn, tuple(leaves), top, needs_rng,
                                 pass_training)

  def _mp_policy(self) -> Any:
    spec = getattr(self, "_haiku_spec", None)
    return None if spec is None else spec.mp_policy

  def _require_initialized(self) -> HaikuSpec:
    spec = getattr(self, "_haiku_spec", None)
    if spec is None:
      raise ValueError(
          f"`{self!r}` has no parameters yet (it was built lazily).\nFix: call "
          "it once inside `pax.purecall(module, x)` to create them, or build "
          "it eagerly with `pax.from_haiku(f)(sample_x)`.")
    return spec

  def haiku_dicts(self) -> Tuple[Dict[str, Dict[str, Any]],
                                 Dict[str, Dict[str, Any]]]:
    """This module's own `(params, state)` under its Haiku function's names."""
    spec = self._require_initialized()
    params: Dict[str, Dict[str, Any]] = {}
    state: Dict[str, Dict[str, Any]] = {}
    d = self.__dict__
    for attr, bundle, name, role in spec.leaves:
      out = params if role == haiku_naming.PARAMS else state
      out.setdefault(bundle, {})[name] = d[attr]
    return params, state

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    spec = getattr(self, "_haiku_spec", None)
    if spec is None:
      return self._lazy_init_and_call(args, kwargs)
    params, state = self.haiku_dicts()
    rng = None
    updates = {}
    if spec.needs_rng:
      next_key, rng = jax.random.split(self.__dict__[RNG_NAME])
      if self.training:  # Eval calls are repeatable and need no pure.
        updates[RNG_NAME] = next_key
    if spec.pass_training and "is_training" not in kwargs:
      kwargs["is_training"] = self.training
    try:
      out, new_state = _transformed(spec.fn).apply(params, state, rng, *args,
                                                   **kwargs)
    except haiku_compat.MissingRNGError as e:
      raise ValueError(
          f"The Haiku function of `{self!r}` asked for an RNG key "
          "(`hk.next_rng_key()`) that it did not ask for at init, so pax "
          "holds none for it.\nFix: build it with "
          "`pax.from_haiku(f, needs_rng=True)(x)`.") from e
    if self.training:
      d = self.__dict__
      for attr, bundle, name, role in spec.leaves:
        if role == haiku_naming.STATE:
          new = new_state[bundle][name]
          if new is not d[attr]:
            updates[attr] = new
    if updates:
      if not context.is_mutable(self):
        raise ValueError(
            f"Calling `{self!r}` updates its state (RNG key or Haiku state) "
            "but the module is immutable here.\nFix: `module, y = "
            "pax.purecall(module, x)` (or call it inside a `pax.pure` "
            "function), or call `module.eval()` for inference.")
      for attr, value in updates.items():
        setattr(self, attr, value)
    return out

  def _lazy_init_and_call(self, args, kwargs):
    if not context.is_mutable(self):
      self._require_initialized()
    self._init_haiku(self._haiku_lazy_fn, args, dict(kwargs),
                     self._haiku_lazy_key)
    del self._haiku_lazy_fn
    del self._haiku_lazy_key
    return self(*args, **kwargs)

  def _pax_scope_name(self) -> str:
    spec = getattr(self, "_haiku_spec", None)
    if spec is not None and spec.top is not None:
      return spec.top
    if self._name:
      return self._name
    fn = spec.fn if spec is not None else self._haiku_lazy_fn
    return _snake(getattr(fn, "__name__", "haiku_fn"))

  def _pax_leaf_key(self, field: str, path: str,
                    is_root: bool) -> Tuple[str, str, str]:
    spec = self._require_initialized()
    if field == RNG_NAME:
      bundle = "~" if is_root else path
      return bundle, RNG_NAME, haiku_naming.STATE
    for attr, bundle, name, role in spec.leaves:
      if attr == field:
        break
    else:
      raise ValueError(
          f"`{self!r}` has an array attribute `{field}` that its Haiku "
          "function does not create; Haiku-backed modules hold only their "
          "Haiku params and state.\nFix: store extra arrays in a parent "
          "pax.Module.")
    if is_root:
      return bundle, name, role
    if spec.top is not None:
      return path + bundle[len(spec.top):], name, role
    return (path if bundle == "~" else f"{path}/~/{bundle}"), name, role

  def _repr_info(self) -> Dict[str, Any]:
    spec = getattr(self, "_haiku_spec", None)
    fn = spec.fn if spec else getattr(self, "_haiku_lazy_fn", None)
    return {"fn": getattr(fn, "__name__", repr(fn))}


def _snake(name: str) -> str:
  name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
  name = haiku_compat.camel_to_snake(name).strip("_") or "haiku_fn"
  return name if name[0].isalpha() else "fn_" + name


def _check_rng_key(rng_key: Any) -> None:
  if not (isinstance(rng_key, jax.Array) and (
      jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key) or
      (rng_key.dtype == jnp.uint32 and rng_key.shape[-1:] == (2,)))):
    raise TypeError(
        f"rng_key must be a JAX PRNG key, got {type(rng_key).__name__} "
        f"{getattr(rng_key, 'shape', '')}.\nFix: "
        "`rng_key=jax.random.PRNGKey(0)` (or leave it out to use "
        "`pax.next_rng_key()`).")


def _needs_rng(transformed, params, state, args, kwargs) -> bool:
  try:
    # Inputs are closed over: they may hold Python flags like is_training.
    jax.eval_shape(lambda p, s: transformed.apply(p, s, None, *args, **kwargs),
                   params, state)
  except haiku_compat.MissingRNGError:
    return True
  return False


def _haiku_fn(f: Any, ctor_args: Tuple[Any, ...] = (),
              ctor_kwargs: Optional[Dict[str, Any]] = None
              ) -> Callable[..., Any]:
  """The function to `hk.transform_with_state` for `f` (see `from_haiku`)."""
  ctor_kwargs = ctor_kwargs or {}
  if isinstance(f, (hk.Transformed, hk.TransformedWithState)):
    if ctor_args or ctor_kwargs:
      raise TypeError("Constructor arguments are only for hk.Module classes.")
    return haiku_compat.get_original_fn(f)
  if isinstance(f, type) and issubclass(f, hk.Module):
    return HaikuModuleCall(f, *ctor_args, **ctor_kwargs)
  if isinstance(f, hk.Module):
    raise TypeError(
        "pax.from_haiku got an hk.Module instance; Haiku modules can only be "
        "created inside a transform.\nFix: pass the class and its arguments, "
        f"`pax.from_haiku({type(f).__name__}, ...)`, or a function that "
        "creates and calls it.")
  if callable(f):
    if ctor_args or ctor_kwargs:
      raise TypeError(
          "Constructor arguments are only for hk.Module classes; pass sample "
          "inputs to the builder instead: `pax.from_haiku(f)(x)`.")
    return f
  raise TypeError(
      f"pax.from_haiku expects a Haiku function, transform or hk.Module "
      f"class, got {type(f).__name__}.")


class HaikuBuilder:
  """Returned by `pax.from_haiku(f)`: call it on sample inputs to build."""

  def __init__(self, fn: Callable[..., Any], name: Optional[str],
               needs_rng: bool):
    self.fn = fn
    self.name = name
    self.needs_rng = needs_rng

  def __call__(self, *sample_args: Any, rng_key: Optional[jax.Array] = None,
               **sample_kwargs: Any) -> HaikuModule:
    """Builds the module, creating params/state by `init` on the samples."""
    return HaikuModule(self.fn, sample_args, sample_kwargs, rng_key=rng_key,
                       name=self.name, needs_rng=self.needs_rng)

  def lazy(self, rng_key: Optional[jax.Array] = None) -> HaikuModule:
    """A module whose params are created on its first call (inside pure).

    >>> lazy = pax.from_haiku(hk.Linear, 3).lazy()
    >>> net, y = pax.purecall(lazy, jnp.ones((2, 5)))
    >>> net.params["linear"]["w"].shape
    (5, 3)
    """
    return HaikuModule(self.fn, rng_key=rng_key, name=self.name,
                       needs_rng=self.needs_rng, lazy=True)


def from_haiku(f: Any, *ctor_args: Any, name: Optional[str] = None,
               needs_rng: bool = False, **ctor_kwargs: Any) -> HaikuBuilder:
  """Wraps Haiku code as a pax module.

  >>> def f(x):
  ...     return hk.nets.MLP([8, 2])(x)
  >>> net = pax.from_haiku(f)(jnp.ones((1, 4)), rng_key=jax.random.PRNGKey(0))
  >>> sorted(net.params)
  ['mlp/~/linear_0', 'mlp/~/linear_1']
  >>> net(jnp.ones((3, 4))).shape
  (3, 2)

  Args:
    f: a Haiku function, an `hk.Transformed` / `hk.TransformedWithState`, or
      an `hk.Module` class (its constructor arguments follow it:
      `pax.from_haiku(hk.Linear, 3)`).
    *ctor_args: constructor arguments when `f` is an `hk.Module` class.
    name: the module's scope name when nested in another module.
    needs_rng: hold an RNG key even if `init` does not reveal the need.
    **ctor_kwargs: constructor keyword arguments for an `hk.Module` class.

  Returns:
    A builder: `builder(*sample_args, rng_key=None, **sample_kwargs)` runs
    `init` and returns the module; `builder.lazy()` defers `init` to the
    first call.
  """
  return HaikuBuilder(_haiku_fn(f, ctor_args, ctor_kwargs), name,
                      needs_rng)

