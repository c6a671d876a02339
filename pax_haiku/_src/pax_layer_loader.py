"""Reading a PAX state_dict into one Haiku-backed module, entry by entry.

`Loader` walks the PAX dict of one layer, puts each array into the Haiku
leaf it maps to (reshaping axes of size 1 only, see `fit`) and, when done,
checks that every Haiku leaf got a value and every PAX entry was used, so a
mismatch is a `ValueError` that names the entry's path.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from pax_haiku._src import haiku_bridge
from pax_haiku._src import pax_state_dict_flat as flat_lib

# The leaf types PAX saves in a state_dict (any other leaf is saved as None).
ARRAYS = (np.ndarray, jax.Array, np.generic)

# Short names for the path helpers that every error message uses.
_join = flat_lib.join
_show = flat_lib.show


def _relative(bundle: str, top: Optional[str]) -> str:
  if top is None:
    return bundle
  rest = bundle[len(top):].lstrip("/")
  return rest[2:] if rest.startswith("~/") else rest


def own_leaves(module: haiku_bridge.HaikuModule
               ) -> Dict[Tuple[str, str], str]:
  """The module's leaf attributes by (bundle relative to its top, name)."""
  spec = module._require_initialized()  # pylint: disable=protected-access
  return {(_relative(b, spec.top), n): a for a, b, n, _ in spec.leaves}


def fit(value: Any, target: Any, path: str, module: Any) -> jax.Array:
  """`value` as `target`'s shape/dtype (reshaping size-1 axes only)."""
  if not isinstance(value, ARRAYS):
    raise ValueError(
        f"load_state_dict: {_show(path)} should be an array for {module!r}, "
        f"got {type(value).__name__}.\nFix: pass the state_dict of the same "
        "PAX architecture.")
  value = np.asarray(value)
  want = tuple(np.shape(target))
  if value.shape != want:
    squeeze = lambda s: tuple(d for d in s if d != 1)
    if squeeze(value.shape) != squeeze(want):
      raise ValueError(
          f"load_state_dict: {_show(path)} has shape {value.shape}, but "
          f"{module!r} needs {want}.\nLikely cause: the pax_haiku module was "
          "built with other sizes than the PAX one.\nFix: build it with the "
          "PAX model's constructor arguments.")
    value = value.reshape(want)
  return jnp.asarray(value, dtype=jnp.result_type(target))


class Loader:
  """Reads a PAX dict into one Haiku-backed module, tracking what was used."""

  def __init__(self, module: haiku_bridge.HaikuModule, sd: Any, path: str):
    if not isinstance(sd, Mapping):
      raise ValueError(
          f"load_state_dict: {_show(path)} should be a dict of weights for "
          f"{module!r}, got {type(sd).__name__}.")
    self.module = module
    self.sd = sd
    self.path = path
    self.targets = own_leaves(module)
    self.new: Dict[str, Any] = {}
    self.used: set = set()
    self.ignored: List[str] = []

  def expects(self, rel: str, name: str) -> bool:
    return (rel, name) in self.targets

  def sub(self, *keys: Any) -> Tuple[Any, str]:
    """The nested entry at `keys` (tuple/list index or str index)."""
    node, path = self.sd, self.path
    for key in keys:
      path = _join(path, key)
      node = child(node, key, path, self.module)
    return node, path

  def take(self, *keys: Any) -> Tuple[np.ndarray, str]:
    value, path = self.sub(*keys)
    if value is None:
      raise missing(path, self.module)
    self.used.add(path)
    return value, path

  def ignore(self, *keys: Any) -> None:
    """Accepts (and does not load) whatever the state_dict has at `keys`."""
    path = self.path
    for key in keys:
      path = _join(path, key)
    self.ignored.append(path)

  def put(self, rel: str, name: str, value: Any, path: str) -> None:
    attr = self.targets.get((rel, name))
    if attr is None:
      raise ValueError(
          f"load_state_dict: unexpected entry {_show(path)}: {self.module!r} "
          "has no such weight.\nLikely cause: a layer option differs "
          "(e.g. with_bias, create_scale).\nFix: build the pax_haiku module "
          "with the PAX model's constructor arguments.")
    self.new[attr] = fit(value, self.module.__dict__[attr], path,
                         self.module)

  def done(self) -> haiku_bridge.HaikuModule:
    for (rel, name), attr in sorted(self.targets.items()):
      if attr not in self.new:
        raise ValueError(
            f"load_state_dict: no PAX entry for {self.module!r}'s weight "
            f"`{attr}` (Haiku `{rel or '.'}/{name}`) under {_show(self.path)}."
            "\nLikely cause: a layer option differs (e.g. with_bias).\nFix: "
            "build the pax_haiku module with the PAX model's constructor "
            "arguments.")
    for path in flat_lib.flatten_state_dict(self.sd):
      full = _join(self.path, path)
      if full not in self.used and not any(
          full == p or full.startswith(p + "/") for p in self.ignored):
        raise ValueError(
            f"load_state_dict: unexpected entry {_show(full)}: "
            f"{self.module!r} has no such weight.\nFix: build the pax_haiku "
            "module with the PAX model's constructor arguments, or drop the "
            "entry from the state_dict.")
    return self.module.replace(**self.new)


def child(node: Any, key: Any, path: str, module: Any) -> Any:
  """`node[key]` of a PAX dict or sequence; None if it has no such entry."""
  if isinstance(node, Mapping):
    if key in node:
      return node[key]
    if str(key) in node:
      return node[str(key)]
    return None
  if isinstance(node, (list, tuple)) and isinstance(key, int):
    return node[key] if key < len(node) else None
  if node is None:
    return None
  raise ValueError(
      f"load_state_dict: {_show(path.rsplit('/', 1)[0])} should be a dict or "
      f"sequence for {module!r}, got {type(node).__name__}.")


def missing(path: str, module: Any) -> ValueError:
  """The error for a PAX entry that `module` needs and the dict lacks."""
  return ValueError(
      f"load_state_dict: the state_dict has no entry {_show(path)}, which "
      f"{module!r} needs.\nLikely cause: the state_dict comes from another "
      "architecture, or a layer option differs (e.g. with_bias).\nFix: build "
      "the pax_haiku model with the PAX model's constructor arguments.")
