"""Reading PAX's pickle checkpoints (JAX arrays pickled by JAX 0.4.30).

PAX programs save `pickle.dump({"state_dict": net.state_dict()}, f)`; the
JAX arrays in such a file unpickle through `jax._src.array`'s private
`_reconstruct_array` with the aval state of the pickling JAX version, which
newer JAX does not take, so they are read back as NumPy arrays instead
(`pax_state_dict.load_pax_pickle` then loads the state_dict into a module).
"""

import pickle
from typing import Any, IO, Union


class _PaxUnpickler(pickle.Unpickler):
  """Reads JAX arrays pickled by older JAX versions as NumPy arrays."""

  def find_class(self, module: str, name: str) -> Any:
    if module == "jax._src.array" and name == "_reconstruct_array":
      return _reconstruct_as_numpy
    return super().find_class(module, name)


def _reconstruct_as_numpy(fun, args, arr_state, aval_state):
  del aval_state  # weak_type / named_shape of the pickling JAX version.
  value = fun(*args)
  value.__setstate__(arr_state)
  return value


def read_pax_pickle(file: Union[str, IO[bytes]]) -> Any:
  """Unpickles a PAX checkpoint file, JAX arrays read as NumPy arrays.

  Pickle files run code when loaded: only read files you trust (ones you
  or your colleagues saved).

  Args:
    file: a path or a binary file object.

  Returns:
    The unpickled object (for PAX's examples, a dict holding the
    state_dict under "state_dict").
  """
  if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
    with open(file, "rb") as f:
      return _PaxUnpickler(f).load()
  return _PaxUnpickler(file).load()
