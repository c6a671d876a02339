"""`module.summary()`: the tree of submodules with parameter counts."""

from typing import Any, List, Tuple

import jax
import numpy as np

from pax_haiku._src import functional
from pax_haiku._src import module_base as base
from pax_haiku._src import module_layout


def _count(tree: Any) -> int:
  return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))


def _own_leaves(module: base.BaseModule) -> List[Tuple[str, Any]]:
  out = []
  children, layout = module_layout.flat(module)
  for name, child in zip(layout.data, children):
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        child, is_leaf=module_layout.is_module)[0]:
      if not isinstance(leaf, base.BaseModule):
        out.append((name + jax.tree_util.keystr(path), leaf))
  return out


def _lines(module: base.BaseModule) -> List[str]:
  head = repr(module)
  n_params = _count(functional.select_parameters(module))
  n_state = _count(module) - n_params
  counts = []
  if n_params or n_state:
    counts.append(f"{n_params} params")
  if n_state:
    counts.append(f"{n_state} state")
  own = _own_leaves(module)
  subs = base.submodules(module)
  if counts:
    head += "  # " + ", ".join(counts)
    if own and not subs:
      desc = [f"{n} {tuple(np.shape(v))}" for n, v in own[:4]]
      head += ": " + ", ".join(desc) + (", ..." if len(own) > 4 else "")
  lines = [head]
  for i, sub in enumerate(subs):
    sub_lines = _lines(sub)
    last = i == len(subs) - 1
    lines.append(("└── " if last else "├── ") + sub_lines[0])
    lines.extend(("    " if last else "│   ") + l for l in sub_lines[1:])
  return lines


def summary(module: base.BaseModule) -> str:
  """The tree of submodules with parameter counts and shapes, and totals.

  >>> print(pax.Linear(2, 3).summary())
  Linear(in_dim=2, out_dim=3, with_bias=True)  # 9 params: bias (3,), weight (2, 3)
  Total: 9 parameters, 0 state values
  """
  lines = _lines(module)
  n_params = _count(functional.select_parameters(module))
  n_all = _count(module)
  lines.append(f"Total: {n_params} parameters, {n_all - n_params} "
               "state values")
  return "\n".join(lines)
