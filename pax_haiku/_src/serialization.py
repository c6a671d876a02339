"""Save/load params and state as Haiku dicts in a `.npz` file.

The file holds plain Haiku `{module_path: {name: array}}` params and state, so
weights saved from pax load into plain Haiku code (`pax.load_haiku`) and the
reverse (`pax.save_haiku` then `pax.load`). Writes are atomic (see
`atomic_write.atomic_file`): a crash never leaves a half-written file.
"""

import os
import zipfile
from typing import Any, Dict, Mapping, Tuple

import jax
import numpy as np

from pax_haiku._src import atomic_write
from pax_haiku._src import module as module_lib
from pax_haiku._src import module_base

_SEP = "::"  # Haiku names never contain it.
HaikuDict = Dict[str, Dict[str, Any]]


def save_haiku(path: str, params: Mapping[str, Mapping[str, Any]],
               state: Mapping[str, Mapping[str, Any]] = None) -> None:
  """Atomically writes Haiku `params` and `state` dicts to `path` (.npz)."""
  arrays = {}
  for role, tree in (("params", params), ("state", state or {})):
    for bundle, inner in tree.items():
      for name, value in inner.items():
        arrays[_SEP.join((role, bundle, name))] = np.asarray(
            jax.device_get(value))
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ValueError(
        f"Cannot save to {path!r}: the directory {directory!r} does not "
        f"exist.\nFix: create it first (os.makedirs({directory!r}, "
        "exist_ok=True)) or pass another path.")
  with atomic_write.atomic_file(path, "wb") as f:
    np.savez(f, **arrays)


def load_haiku(path: str) -> Tuple[HaikuDict, HaikuDict]:
  """Reads `(params, state)` Haiku dicts written by `save`/`save_haiku`."""
  params: HaikuDict = {}
  state: HaikuDict = {}
  try:
    data = np.load(path, allow_pickle=False)
    items = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    # numpy's own message may suggest `allow_pickle=True`: never do that for
    # a weights file (it runs arbitrary code), so it is not repeated here.
    reason = ("it is not a NumPy .npz archive" if "pickle" in str(e)
              else str(e))
    raise ValueError(
        f"Cannot read checkpoint {path!r}: {reason}. The file is missing, "
        "truncated or not a pax/Haiku .npz file.\nFix: pass a file written "
        "by `pax.save`/`pax.save_haiku` (re-save it if it was damaged).") from e
  for key, value in items.items():
    parts = key.split(_SEP)
    if len(parts) != 3 or parts[0] not in ("params", "state"):
      raise ValueError(f"{path!r} is not a pax/Haiku checkpoint (unexpected "
                       f"entry {key!r}).")
    out = params if parts[0] == "params" else state
    out.setdefault(parts[1], {})[parts[2]] = jax.numpy.asarray(value)
  return params, state


def save(path: str, module: module_lib.Module) -> None:
  """Atomically saves `module.params` and `module.state` to `path` (.npz).

  >>> import os, tempfile
  >>> net = pax.Linear(2, 2)
  >>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
  >>> pax.save(path, net)
  >>> net2 = pax.load(path, pax.Linear(2, 2))
  >>> bool((net2.weight == net.weight).all())
  True
  """
  module_base.require_module("pax.save", module)
  save_haiku(path, module.params, module.state)


def load(path: str, module: module_lib.Module) -> module_lib.Module:
  """Returns `module` with params and state loaded from `path`.

  The file's keys and shapes must match `module.params`/`module.state`;
  otherwise a ValueError names the first mismatching entry.
  """
  module_base.require_module("pax.load", module)
  params, state = load_haiku(path)
  module = module.update_parameters(params) if module.params or params else module
  module = module.update_state(state) if module.state or state else module
  return module
