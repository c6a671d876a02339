"""Semantic names for the leaves of a checkpointed pytree.

A checkpoint stores a nested dict of arrays whose keys say what each array
is, so that it can be opened without the code that wrote it and restored
into code whose attribute order changed:

* a pax module at key path `P` contributes its Haiku dicts:
  `P/params/<module_path>/<name>` and `P/state/<module_path>/<name>`
  (exactly `module.params` / `module.state`);
* a `pax.Optimizer` at `P` contributes its optax state under the state's
  own field names, with each params-shaped subtree (a module) named by the
  parameters' Haiku names: e.g. `P/1/mu/mlp/~/linear_0/w`, `P/1/count`;
* any other leaf is named by its key path (dict keys, sequence indices,
  attribute names).

It also holds what is checked per name: shape and dtype (`leaf_spec`,
`check_like`) and the restore target of a leaf (`restore_target`).

>>> import numpy as np
>>> import pax_haiku as pax
>>> from tools.trainer import checkpoint_names
>>> net = pax.Linear(2, 3)
>>> names = checkpoint_names.leaf_names({"model": net, "step": np.int32(0)})
>>> sorted("/".join(n) for n in names)
['model/params/linear/b', 'model/params/linear/w', 'step']
"""

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jax
import numpy as np

import pax_haiku as pax

__all__ = ["Name", "add_module_dicts", "check_like", "leaf_names",
           "leaf_spec", "name_str", "nest", "restore_target", "specs",
           "unnest"]

Name = Tuple[str, ...]


def name_str(name: Name) -> str:
  """`('model', 'params', 'linear', 'w')` -> `'model/params/linear/w'`."""
  return "/".join(name) if name else "<root>"


def _key(k: Any) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _is_node(x: Any) -> bool:
  return isinstance(x, pax.Module)


def _walk(tree: Any, prefix: Name, out: Dict[int, Name],
          in_optimizer: bool) -> None:
  """Fills `out`: leaf index (the int stored in the leaf) -> name."""
  for path, node in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=_is_node)[0]:
    here = prefix + tuple(_key(k) for k in path)
    if isinstance(node, pax.Optimizer):
      _walk(node.opt_state, here, out, True)
    elif isinstance(node, pax.Module):
      params, state = node.params, node.state
      # Inside an optimizer state a module is a params-shaped tree (mu, nu,
      # ...): its names follow the field directly, as the issue's
      # `mu/linear/w`.
      roles = ((() if in_optimizer else ("params",), params),
               (("state",), state))
      for role, mapping in roles:
        for bundle, inner in mapping.items():
          for name, index in inner.items():
            out[index] = here + role + (bundle, name)
    else:
      out[node] = here


def leaf_names(tree: Any) -> List[Name]:
  """The name of each leaf of `tree`, in `jax.tree_util` flattening order.

  Raises:
    ValueError: if two leaves get the same name, or one name is a prefix of
      another (both could not be stored in one nested dict).
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  index_tree = jax.tree_util.tree_unflatten(treedef, list(range(len(leaves))))
  out: Dict[int, Name] = {}
  _walk(index_tree, (), out, False)
  if sorted(out) != list(range(len(leaves))):
    missing = sorted(set(range(len(leaves))) - set(out))
    raise ValueError(f"Could not name checkpoint leaves {missing[:5]} of a "
                     f"{type(tree).__name__}; pass a pytree of arrays and pax "
                     "modules.")
  names = [out[i] for i in range(len(leaves))]
  seen = set(names)
  if len(seen) != len(names):
    dup = next(n for n in names if names.count(n) > 1)
    raise ValueError(f"Two checkpoint leaves have the same name "
                     f"{name_str(dup)!r}; give the modules distinct names.")
  for n in names:
    for i in range(1, len(n)):
      if n[:i] in seen:
        raise ValueError(
            f"Checkpoint leaf name {name_str(n[:i])!r} is also a prefix of "
            f"{name_str(n)!r}; rename one of them.")
  return names


def nest(names: Sequence[Name], values: Sequence[Any]) -> Dict[str, Any]:
  """The nested dict `{n[0]: {n[1]: ... value}}` of `names` and `values`.

  >>> nest([("a", "b"), ("a", "c"), ("d",)], [1, 2, 3])
  {'a': {'b': 1, 'c': 2}, 'd': 3}
  """
  root: Dict[str, Any] = {}
  for name, value in zip(names, values):
    node = root
    for part in name[:-1]:
      node = node.setdefault(part, {})
    node[name[-1]] = value
  return root


def unnest(tree: Any) -> Dict[Name, Any]:
  """The inverse of `nest`: `{name: value}` of a nested dict's leaves.

  Empty dicts (e.g. the `state` of a model without state) have no leaves.

  >>> unnest({"a": {"b": 1, "c": {}}, "d": 3})
  {('a', 'b'): 1, ('d',): 3}
  """
  out: Dict[Name, Any] = {}

  def visit(node: Any, prefix: Name) -> None:
    if isinstance(node, dict):
      for k, v in node.items():
        visit(v, prefix + (str(k),))
    else:
      out[prefix] = node

  visit(tree, ())
  return out


# -- shapes and dtypes -----------------------------------------------------


def leaf_spec(leaf: Any, name: str) -> Dict[str, Any]:
  """`{"shape": [...], "dtype": "..."}` of a leaf a checkpoint can store.

  Raises:
    TypeError: for a typed PRNG key or a non-numeric leaf.
    ValueError: for a leaf with no elements (orbax cannot store those).
  """
  dtype = getattr(leaf, "dtype", None)
  if dtype is None:
    leaf = np.asarray(leaf)
    dtype = leaf.dtype
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    raise TypeError(
        f"Checkpoint leaf {name} is a typed PRNG key array; store its raw "
        "data instead: jax.random.key_data(key) (and rebuild it with "
        "jax.random.wrap_key_data after restoring).")
  dtype = np.dtype(dtype)
  if dtype.kind not in "biufcV" or (dtype.kind == "V" and dtype.names):
    raise TypeError(
        f"Checkpoint leaf {name} has dtype {dtype} which a checkpoint cannot "
        "store. Leaves must be numeric arrays (bool, int, float, complex, "
        "bfloat16, ...); convert other leaves, or keep them in the JSON "
        "metadata instead.")
  shape = [int(d) for d in getattr(leaf, "shape", np.shape(leaf))]
  if 0 in shape:
    raise ValueError(
        f"Checkpoint leaf {name} has shape {tuple(shape)} with no elements, "
        "which orbax cannot store. Leave it out of the checkpointed tree "
        "(rebuild it after restoring) or store its shape in the metadata.")
  return {"shape": shape, "dtype": dtype.name}


def specs(names: List[Name], leaves: List[Any]
          ) -> Dict[str, Dict[str, Any]]:
  """`{name_str: {"shape", "dtype", "path"}}` of named leaves."""
  out = {}
  for n, leaf in zip(names, leaves):
    text = name_str(n)
    out[text] = dict(leaf_spec(leaf, text), path=list(n))
  return out


def add_module_dicts(tree: Any, nested: Dict[str, Any]) -> Dict[str, Any]:
  """Adds empty `params`/`state` dicts of top-level modules (plain readers
  can then always write `tree["model"]["state"]`)."""
  for path, node in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, pax.Module))[0]:
    if isinstance(node, pax.Module) and not isinstance(node, pax.Optimizer):
      where = nested
      for k in path:
        where = where.setdefault(_key(k), {})
      where.setdefault("params", {})
      where.setdefault("state", {})
  return nested


def restore_target(leaf: Any) -> Any:
  """What orbax restores a leaf like `leaf` as: a `jax.ShapeDtypeStruct`
  with its sharding (a `jax.Array` on those devices), else a NumPy array."""
  sharding = getattr(leaf, "sharding", None)
  dtype = getattr(leaf, "dtype", None)
  shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
  dtype = np.dtype(np.asarray(leaf).dtype if dtype is None else dtype)
  if sharding is not None:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  return np.zeros(shape, dtype)


def check_like(saved: Mapping[str, Any], names: List[Name],
               like_leaves: List[Any], path: str) -> None:
  """Raises a ValueError naming the first array that differs from `like`."""
  hint = ("The checkpoint was probably written for a different model or "
          "config. Resume with the config it was written with, or use a new "
          "workdir (or move the checkpoints away) to start from scratch.")
  expected = [name_str(n) for n in names]
  for i, (name, leaf) in enumerate(zip(expected, like_leaves)):
    want = leaf_spec(leaf, name)
    if name not in saved:
      if len(saved) < len(expected):
        raise ValueError(
            f"Checkpoint {path} has {len(saved)} leaves but {len(expected)} "
            f"are expected; the first missing one is leaf {i} ({name}, shape "
            f"{tuple(want['shape'])} dtype {want['dtype']}). {hint}")
      raise ValueError(
          f"Checkpoint {path} does not match the expected structure at leaf "
          f"{i} ({name}): the checkpoint has no array of that name (expected "
          f"shape {tuple(want['shape'])} dtype {want['dtype']}). {hint}")
    got = saved[name]
    if list(got["shape"]) != want["shape"] or got["dtype"] != want["dtype"]:
      raise ValueError(
          f"Checkpoint {path} does not match the expected structure at leaf "
          f"{i} ({name}): the checkpoint has shape {tuple(got['shape'])} dtype "
          f"{got['dtype']} but expected shape {tuple(want['shape'])} dtype "
          f"{want['dtype']}. {hint}")
  extra = sorted(set(saved) - set(expected))
  if extra:
    raise ValueError(
        f"Checkpoint {path} has {len(saved)} leaves but {len(expected)} are "
        f"expected; the first extra one is {extra[0]} (shape "
        f"{tuple(saved[extra[0]]['shape'])}). {hint}")

