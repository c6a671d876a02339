"""JAX's floor for flattening a module tree: the same nodes, no pax code.

A pax module is one pytree node per module, flattened by a C attribute getter
with its `Layout` as aux data (see `pax_haiku/_src/module_layout.py`).
`bare_mirror(model)` rebuilds the model's tree with bare dataclass nodes that
hold the same data fields (`types.SimpleNamespace` subclasses with
SimpleNamespace's C `__init__` and one meta field standing for the layout):
the cheapest node JAX's C++ pytree code offers for that structure. Flattening and unflattening the mirror
costs what JAX's C++ pytree code charges for that node structure; pax_haiku
can at best match it. Comparing both with the raw Haiku params dict separates
what the node structure costs (a dataclass node is rebuilt by calling its
class with keyword arguments, dearer than building a dict) from what pax
adds on top.

`bare_mirror(model, layout_field=False)` drops the meta field: what the same
nodes would cost with no aux data at all. A module's static values must be
in its treedef for jit's caches to tell modules apart, so this second floor
only shows what that aux data costs.

>>> import pax_haiku as pax
>>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
>>> bare = bare_mirror(net)
>>> len(jax.tree_util.tree_leaves(bare)) == len(jax.tree_util.tree_leaves(net))
True
>>> type(bare).__name__
'BareSequential'
>>> no_meta = bare_mirror(net, layout_field=False)
>>> jax.tree_util.tree_structure(no_meta).node_data()[1]
()
"""

import types
from typing import Any, Dict, Tuple

import jax

import pax_haiku as pax
from pax_haiku._src import module_layout

_CLASSES: Dict[Tuple[str, Tuple[str, ...], bool], type] = {}


def bare_class(name: str, data_fields: Tuple[str, ...],
               layout_field: bool = True) -> type:
  """A registered bare dataclass node class with `data_fields` (cached).

  Args:
    name: the class name (prefixed with `Bare`).
    data_fields: the node's children.
    layout_field: give it one meta field holding the class, as pax's
      `_pax_layout`.
  """
  key = (name, tuple(data_fields), layout_field)
  cls = _CLASSES.get(key)
  if cls is None:
    cls = type(f"Bare{name}", (types.SimpleNamespace,),
               {"__init__": types.SimpleNamespace.__init__})
    meta = []
    if layout_field:
      cls.layout = cls
      meta.append("layout")
    jax.tree_util.register_dataclass(cls, data_fields=list(data_fields),
                                     meta_fields=meta)
    _CLASSES[key] = cls
  return cls


def _mirror_module(module: pax.Module, layout_field: bool) -> Any:
  fields = module_layout.data_fields(module)
  cls = bare_class(module.__class__.__name__, fields, layout_field)
  return cls(**{f: bare_mirror(getattr(module, f), layout_field)
                for f in fields})


def bare_mirror(tree: Any, layout_field: bool = True) -> Any:
  """`tree` with every pax module replaced by a bare dataclass node.

  Args:
    tree: a pytree holding pax modules.
    layout_field: give each node pax's one meta field (False: none).
  """
  return jax.tree_util.tree_map(
      lambda x: (_mirror_module(x, layout_field)
                 if isinstance(x, pax.Module) else x), tree,
      is_leaf=lambda x: isinstance(x, pax.Module))
