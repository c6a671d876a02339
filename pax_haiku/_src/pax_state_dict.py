"""Weights saved by PAX (`pax3` 0.5.x) in pax_haiku modules, and the reverse.

PAX saves a model as `module.state_dict()`: a nested dict
`{attribute: array | nested dict}` that mirrors the module's attributes
(tuples and lists of submodules stay tuples and lists; PAX programs pickle it,
e.g. `pickle.dump({"state_dict": net.state_dict()}, f)`). pax_haiku's layers
hold Haiku's parameters instead, so this file converts between the two forms
layer by layer:

- `state_dict(module)`: the PAX form of a pax_haiku module;
- `load_state_dict(module, state_dict)`: a copy of `module` with the weights
  of a PAX state_dict;
- `load_pax_pickle(module, file)`: the same from a PAX pickle file;
- `flatten_state_dict` / `unflatten_state_dict`: the nested form <-> flat
  `{"a/b/0/weight": array}` (what an `.npz` file can hold).

The layouts of single layers (BatchNorm, LSTM, GRU, VanillaRNN,
MultiHeadAttention, ...) are converted in `pax_layer_converters`, those of
nets (MLP, ResNet, Transformer) in `pax_net_converters`; their docstrings
say what differs between PAX and Haiku. Modules without a converter are
walked attribute by attribute; `pax.Sequential`'s `layers` is PAX's
`modules`. A `pax.from_haiku` module is stored under its Haiku paths.

Any mismatch (a missing or extra entry, a shape that does not fit) is a
`ValueError` naming the entry's path.
"""

from typing import Any, IO, Mapping, Optional, Union

import jax

from pax_haiku._src import haiku_bridge
from pax_haiku._src import module as module_lib
from pax_haiku._src import module_base
from pax_haiku._src import module_layout
from pax_haiku._src import pax_layer_converters as layers_lib
from pax_haiku._src import pax_layer_loader as loader_lib
from pax_haiku._src import pax_net_converters as nets_lib
from pax_haiku._src import pax_state_dict_flat as flat_lib
from pax_haiku._src.nn import sequential
# Re-exported: callers import them from here (the module's public API).
from pax_haiku._src.pax_pickle import read_pax_pickle
from pax_haiku._src.pax_state_dict_flat import flatten_state_dict
from pax_haiku._src.pax_state_dict_flat import PaxStateDict
from pax_haiku._src.pax_state_dict_flat import unflatten_state_dict

# Registry: class -> (load(module, sd, path) -> module, dump(module, leaves)).
# First match wins, in this order.
_CONVERTERS = layers_lib.LAYER_CONVERTERS + nets_lib.NET_CONVERTERS

# Short names for the path helpers that every error message uses.
_join = flat_lib.join
_show = flat_lib.show


def _converter(module: Any):
  for cls, load, dump in _CONVERTERS:
    if isinstance(module, cls):
      return load, dump
  return None


def _field_name(module: Any, name: str) -> str:
  """pax_haiku attribute -> PAX attribute (`layers` -> `modules`)."""
  if isinstance(module, sequential.Sequential) and name == "layers":
    return "modules"
  return name


# ----------------------------------------------------------------------------
# Public functions.
# ----------------------------------------------------------------------------


def state_dict(module: module_lib.Module) -> PaxStateDict:
  """PAX's `module.state_dict()` form of a pax_haiku module.

  A nested dict `{attribute: array | dict}` in PAX's layout (attribute names,
  shapes and conventions of the PAX layer of the same kind), e.g. for a
  Sequential of Linears:

  >>> from pax_haiku._src import pax_state_dict
  >>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
  >>> sd = pax_state_dict.state_dict(net)
  >>> [sorted(m) for m in sd["modules"]]
  [['bias', 'weight'], [], ['bias', 'weight']]

  Args:
    module: a pax_haiku module.

  Returns:
    The state_dict; `load_state_dict` reads it back.
  """
  module_base.require_module("state_dict", module)
  return _dump(module)


def _dump(module: Any) -> Any:
  conv_ = _converter(module)
  if conv_ is not None:
    leaves = {key: module.__dict__[attr]
              for key, attr in loader_lib.own_leaves(module).items()}
    return conv_[1](module, leaves)
  if isinstance(module, haiku_bridge.HaikuModule):
    # `pax.from_haiku` modules: Haiku paths as keys.
    return {attr: module.__dict__[attr]
            for attr in loader_lib.own_leaves(module).values()}
  out = {}
  for name in module_layout.data_fields(module):
    value = getattr(module, name)
    out[_field_name(module, name)] = jax.tree_util.tree_map(
        _dump_leaf, value, is_leaf=module_lib.is_module)
  return out


def _dump_leaf(x: Any) -> Any:
  if module_lib.is_module(x):
    return _dump(x)
  # PAX: other leaves are None.
  return x if isinstance(x, loader_lib.ARRAYS) else None


def load_state_dict(module: module_lib.Module,
                    state_dict: Mapping[str, Any]) -> module_lib.Module:  # pylint: disable=redefined-outer-name
  """Returns a copy of `module` holding the weights of a PAX state_dict.

  `state_dict` is what PAX's `module.state_dict()` returned for the same
  architecture (PAX 0.5.x), nested or as `unflatten_state_dict` of its flat
  form. Layouts are converted where Haiku stores weights differently (see
  the module docstring).

  >>> from pax_haiku._src import pax_state_dict
  >>> pax_linear_sd = {"weight": np.ones((2, 3), np.float32),
  ...                  "bias": np.zeros((3,), np.float32)}
  >>> fc = pax_state_dict.load_state_dict(pax.Linear(2, 3), pax_linear_sd)
  >>> fc(jnp.ones((1, 2))).tolist()
  [[2.0, 2.0, 2.0]]

  Args:
    module: a pax_haiku module of the same architecture as the PAX model.
    state_dict: the PAX state_dict.

  Returns:
    A new module; `module` is unchanged.

  Raises:
    ValueError: naming the entry's path, for a missing or unexpected entry
      or a shape that does not fit.
  """
  module_base.require_module("load_state_dict", module)
  if not isinstance(state_dict, Mapping):
    raise TypeError(
        "load_state_dict expects a PAX state_dict (a dict), got "
        f"{type(state_dict).__name__}.\nFix: pass `checkpoint['state_dict']` "
        "or use `load_pax_pickle(module, path)` for a pickle file.")
  return _load(module, state_dict, "")


def _load(module: Any, sd: Any, path: str) -> Any:
  conv_ = _converter(module)
  if conv_ is not None:
    return conv_[0](module, sd, path)
  if isinstance(module, haiku_bridge.HaikuModule):
    ld = loader_lib.Loader(module, sd, path)
    for attr in loader_lib.own_leaves(module).values():
      value, p = ld.take(attr)
      ld.new[attr] = loader_lib.fit(value, module.__dict__[attr], p, module)
    return ld.done()
  if sd is None:
    sd = {}
  if not isinstance(sd, Mapping):
    raise ValueError(
        f"load_state_dict: {_show(path)} should be a dict for {module!r}, got "
        f"{type(sd).__name__}.")
  fields = module_layout.data_fields(module)
  pax_names = {_field_name(module, n): n for n in fields}
  extra = [k for k in sd if k not in pax_names and
           flatten_state_dict({"x": sd[k]})]
  if extra:
    raise ValueError(
        f"load_state_dict: unexpected entry {_show(_join(path, extra[0]))}: "
        f"{module!r} has no attribute `{extra[0]}` with weights.\nFix: build "
        "the same architecture as the PAX model (attribute names must match "
        "PAX's).")
  new = {}
  for pax_name, name in pax_names.items():
    new[name] = _load_tree(getattr(module, name), sd.get(pax_name),
                           _join(path, pax_name), module)
  return module.replace(**new)


def _load_tree(value: Any, sd: Any, path: str, owner: Any) -> Any:
  if module_lib.is_module(value):
    if sd is None and not jax.tree_util.tree_leaves(value):
      return value
    if sd is None:
      raise loader_lib.missing(path, value)
    return _load(value, sd, path)
  if isinstance(value, loader_lib.ARRAYS):
    if sd is None:
      raise loader_lib.missing(path, owner)
    return loader_lib.fit(sd, value, path, owner)
  if isinstance(value, (list, tuple)):
    out = [_load_tree(v, loader_lib.child(sd, i, _join(path, i), owner),
                      _join(path, i), owner) for i, v in enumerate(value)]
    if hasattr(value, "_fields"):
      return type(value)(*out)
    return type(value)(out)
  if isinstance(value, Mapping):
    return type(value)(
        (k, _load_tree(v, loader_lib.child(sd, k, _join(path, k), owner),
                       _join(path, k), owner))
        for k, v in value.items())
  return value



def load_pax_pickle(module: module_lib.Module, file: Union[str, IO[bytes]],
                    key: Optional[str] = "state_dict") -> module_lib.Module:
  """Loads a PAX pickle checkpoint (TRUSTED input only) into `module`.

  PAX programs save checkpoints with
  `pickle.dump({"state_dict": net.state_dict(), ...}, f)`; this reads such a
  file (JAX arrays pickled by PAX's JAX version come back as NumPy arrays)
  and hands `checkpoint[key]` to `load_state_dict`. A file holding the
  state_dict itself loads with `key=None`. Pickle files run code when
  loaded: never load one you do not trust.

  >>> from pax_haiku._src import pax_state_dict
  >>> import io, pickle
  >>> f = io.BytesIO(pickle.dumps({"state_dict": {
  ...     "weight": np.ones((2, 3), np.float32),
  ...     "bias": np.zeros((3,), np.float32)}}))
  >>> fc = pax_state_dict.load_pax_pickle(pax.Linear(2, 3), f)
  >>> float(fc.weight.sum())
  6.0

  Args:
    module: a pax_haiku module of the PAX model's architecture.
    file: a path or a binary file object.
    key: the entry holding the state_dict, or None.

  Returns:
    A new module with the checkpoint's weights.
  """
  data = read_pax_pickle(file)
  if key is not None:
    if not isinstance(data, Mapping) or key not in data:
      keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
      raise ValueError(
          f"load_pax_pickle: the checkpoint has no `{key}` entry (it holds "
          f"{keys}).\nFix: pass key= the entry that holds the state_dict, "
          "or key=None if the file is the state_dict itself.")
    data = data[key]
  return load_state_dict(module, data)
