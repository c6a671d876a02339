"""JAX's floor for flattening a module tree: the same nodes, no pax code.

A pax module is one `jax.tree_util.register_dataclass` node per module (its
layout class; see `pax_haiku/_src/module.py`). `bare_mirror(model)` rebuilds
the model's tree with bare dataclass nodes that hold the same data fields
(`types.SimpleNamespace` subclasses with SimpleNamespace's C `__init__` and one
meta field, as a pax layout class has). Flattening and unflattening the mirror
costs what JAX's C++ pytree code charges for that node structure; pax_haiku
can at best match it. Comparing both with the raw Haiku params dict separates
what the node structure costs (a dataclass node is rebuilt by calling its
class with keyword arguments, dearer than building a dict) from what pax
adds on top.

>>> import pax_haiku as pax
>>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
>>> bare = bare_mirror(net)
>>> len(jax.tree_util.tree_leaves(bare)) == len(jax.tree_util.tree_leaves(net))
True
>>> type(bare).__name__
'BareSequential'
"""

import types
from typing import Any, Dict, Tuple

import jax

import pax_haiku as pax

_CLASSES: Dict[Tuple[str, Tuple[str, ...]], type] = {}


def bare_class(name: str, data_fields: Tuple[str, ...]) -> type:
  """A registered bare dataclass node class with `data_fields` (cached)."""
  key = (name, tuple(data_fields))
  cls = _CLASSES.get(key)
  if cls is None:
    cls = type(f"Bare{name}", (types.SimpleNamespace,),
               {"__init__": types.SimpleNamespace.__init__})
    cls.layout = cls  # The one meta field, like pax's `_pax_layout`.
    jax.tree_util.register_dataclass(cls, data_fields=list(data_fields),
                                     meta_fields=["layout"])
    _CLASSES[key] = cls
  return cls


def _mirror_module(module: pax.Module) -> Any:
  fields = type(module)._pax_data_fields  # pylint: disable=protected-access
  cls = bare_class(module.__class__.__name__, fields)
  return cls(**{f: bare_mirror(getattr(module, f)) for f in fields})


def bare_mirror(tree: Any) -> Any:
  """`tree` with every pax module replaced by a bare dataclass node."""
  return jax.tree_util.tree_map(
      lambda x: _mirror_module(x) if isinstance(x, pax.Module) else x, tree,
      is_leaf=lambda x: isinstance(x, pax.Module))
