"""PAX state_dicts as nested dicts and as flat `{"a/b/0/weight": array}` dicts.

A PAX state_dict mirrors the module's attributes (tuples and lists of
submodules stay tuples and lists); its flat form is what an `.npz` file can
hold. `join` / `show` build and print the entry paths that every error
message of `pax_state_dict` names.
"""

from typing import Any, Dict, Mapping

PaxStateDict = Dict[str, Any]


def join(path: str, key: Any) -> str:
  """`path/key` (just `key` at the top level)."""
  return f"{path}/{key}" if path else str(key)


def show(path: str) -> str:
  """An entry path for error messages."""
  return f"`{path}`" if path else "the top level"


def flatten_state_dict(state_dict: Mapping[str, Any],
                       sep: str = "/") -> Dict[str, Any]:
  """A nested PAX state_dict as `{path: array}` (None leaves left out).

  >>> from pax_haiku._src import pax_state_dict
  >>> sd = pax_state_dict.state_dict(pax.Sequential(pax.Linear(2, 3)))
  >>> sorted(pax_state_dict.flatten_state_dict(sd))
  ['modules/0/bias', 'modules/0/weight']

  Args:
    state_dict: a nested PAX state_dict.
    sep: joins the keys of a path.

  Returns:
    A flat dict; tuple/list positions become decimal strings.
  """
  out = {}

  def walk(x, path):
    if isinstance(x, Mapping):
      for k, v in x.items():
        walk(v, join(path, k) if sep == "/" else (
            f"{path}{sep}{k}" if path else str(k)))
    elif isinstance(x, (list, tuple)):
      for i, v in enumerate(x):
        walk(v, f"{path}{sep}{i}" if path else str(i))
    elif x is not None:
      out[path] = x

  walk(state_dict, "")
  return out


def unflatten_state_dict(flat: Mapping[str, Any], sep: str = "/",
                         prefix: str = "") -> PaxStateDict:
  """`{"a/0/weight": array}` -> `{"a": {"0": {"weight": array}}}`.

  `load_state_dict` accepts such dicts where PAX has tuples or lists, so a
  PAX state_dict stored flat (e.g. in an `.npz` file) loads directly:

  >>> from pax_haiku._src import pax_state_dict
  >>> net = pax.Sequential(pax.Linear(2, 3))
  >>> flat = {"modules/0/weight": np.ones((2, 3), np.float32),
  ...         "modules/0/bias": np.zeros((3,), np.float32)}
  >>> net = pax_state_dict.load_state_dict(
  ...     net, pax_state_dict.unflatten_state_dict(flat))
  >>> float(net[0].weight.sum())
  6.0

  Args:
    flat: `{path: array}`.
    sep: the separator of path keys.
    prefix: keep only keys starting with `prefix` + sep, without it (e.g.
      `prefix="state_dict"` for the fixtures' npz files).

  Returns:
    The nested dict.
  """
  out: Dict[str, Any] = {}
  for key, value in flat.items():
    if prefix:
      if not key.startswith(prefix + sep):
        continue
      key = key[len(prefix) + len(sep):]
    parts = key.split(sep)
    node = out
    for part in parts[:-1]:
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ValueError(f"unflatten_state_dict: `{key}` is below a leaf.")
      node = child
    node[parts[-1]] = value
  return out
