"""Random-access sources of `(inputs, label)` examples.

A source is what a dataset factory returns for its train and test splits:
anything with `len(source)` and `source[i] -> (inputs, label)` (grain's
`RandomAccessDataSource` protocol; a list of tuples is one). A source may
also define `read_batch(indices) -> (inputs, label)` returning the examples
at `indices` already stacked (leading dimension `len(indices)`); the
pipeline then reads a batch with one call instead of one per example.

`ArraySource` (examples are rows of arrays, e.g. from an `.npz` file) and
`WindowSource` (next-token windows of a token array) do, so the shipped data
costs microseconds per batch.

>>> src = ArraySource(np.arange(12.0).reshape(6, 2), np.arange(6) % 2)
>>> len(src), src[1][0].tolist(), int(src[1][1])
(6, [2.0, 3.0], 1)
>>> x, y = src.read_batch(np.array([5, 0]))
>>> x.tolist(), y.tolist()
([[10.0, 11.0], [0.0, 1.0]], [1, 0])
>>> w = WindowSource(np.arange(10, dtype=np.uint8), seq_len=4)
>>> len(w), [a.tolist() for a in w[2]]
(6, [[2, 3, 4, 5], [3, 4, 5, 6]])
"""

import os
from typing import Any, Sequence, Tuple

import numpy as np

__all__ = ["ArraySource", "WindowSource", "read_examples"]


class ArraySource:
  """Example `i` is `(inputs[i], labels[i])` of two arrays."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray):
    """Wraps two arrays with the same leading (example) dimension.

    Raises:
      ValueError: if they differ in length or are scalars.
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.ndim == 0 or labels.ndim == 0 or (
        inputs.shape[0] != labels.shape[0]):
      raise ValueError(
          "ArraySource takes inputs and labels with the same leading "
          f"(example) dimension; got shapes {inputs.shape} and "
          f"{labels.shape}.")
    self.inputs, self.labels = inputs, labels

  @classmethod
  def from_npz(cls, path: str, inputs: str = "inputs",
               labels: str = "labels") -> "ArraySource":
    """The arrays `inputs` and `labels` of an `.npz` file.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: if the file lacks one of the two arrays.
    """
    if not os.path.exists(path):
      raise FileNotFoundError(f"No such .npz file: {path!r}")
    with np.load(path) as f:
      missing = [k for k in (inputs, labels) if k not in f.files]
      if missing:
        raise ValueError(
            f"{path!r} has arrays {sorted(f.files)}, not {missing}; pass "
            "the names it uses: ArraySource.from_npz(path, inputs=..., "
            "labels=...).")
      return cls(f[inputs], f[labels])

  def __len__(self) -> int:
    return self.inputs.shape[0]

  def __getitem__(self, i: int) -> Tuple[Any, Any]:
    return self.inputs[i], self.labels[i]

  def read_batch(self, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return self.inputs[indices], self.labels[indices]


class WindowSource:
  """Next-token windows of a 1-D token array, as int32.

  Example `i` starts at token `s = i * stride`: inputs are tokens
  `[s, s + seq_len)`, the label the same window one token later. With
  `stride=seq_len` the windows tile the array and every token after the
  first is a label exactly once (what evaluation uses).
  """

  def __init__(self, tokens: np.ndarray, seq_len: int, stride: int = 1):
    """Windows of `seq_len` tokens (plus one for the labels).

    Raises:
      ValueError: if `tokens` is not a 1-D integer array holding at least
        one window, or `seq_len`/`stride` is not >= 1.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError("WindowSource takes a 1-D integer token array, got "
                       f"shape {tokens.shape} dtype {tokens.dtype}.")
    for name, value in (("seq_len", seq_len), ("stride", stride)):
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"WindowSource {name} must be an integer >= 1, got "
                         f"{value!r}.")
    if tokens.shape[0] < seq_len + 1:
      raise ValueError(f"The token array has {tokens.shape[0]} tokens, fewer "
                       f"than a window of seq_len + 1 = {seq_len + 1}; use a "
                       "shorter seq_len or more data.")
    self.tokens, self.seq_len, self.stride = tokens, int(seq_len), int(stride)
    self._offsets = np.arange(self.seq_len + 1)

  def __len__(self) -> int:
    return (self.tokens.shape[0] - self.seq_len - 1) // self.stride + 1

  def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
    if not -len(self) <= i < len(self):
      raise IndexError(f"window {i} out of range ({len(self)} windows)")
    s = (i % len(self)) * self.stride
    w = self.tokens[s:s + self.seq_len + 1].astype(np.int32)
    return w[:-1], w[1:]

  def read_batch(self, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    starts = np.asarray(indices, np.int64) * self.stride
    w = self.tokens[starts[:, None] + self._offsets].astype(np.int32)
    return w[:, :-1], w[:, 1:]


def read_examples(source: Any, indices: Sequence[int]) -> Any:
  """The examples of `source` at `indices`, stacked on a new leading axis.

  Uses `source.read_batch` when it has one, else `source[i]` per index.
  """
  indices = np.asarray(indices, np.int64)
  read_batch = getattr(source, "read_batch", None)
  if read_batch is not None:
    return read_batch(indices)
  examples = [source[int(i)] for i in indices]
  return tuple(np.stack([np.asarray(e[j]) for e in examples])
               for j in range(2))
