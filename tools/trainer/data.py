"""Training data that needs no download, with a position you can checkpoint.

Two data sets, both on disk on every machine that has this repository:

* `load_digits()`: the UCI optical handwritten digits (1797 8x8 grey images,
  10 classes), committed under `third_party/uci_digits/`. The train/test split
  is fixed (see `load_digits`).
* `load_chars()`: byte-level text made of the Python standard library's own
  top-level `*.py` source files (vocabulary: the 256 byte values, so no vocab
  file is needed). Whole files are held out for evaluation.

Two batchers turn arrays into training batches. Neither keeps a stateful RNG:
every random choice is drawn from a generator seeded by `(seed, epoch)` or
`(seed, step)`, so a batcher's whole position is the small JSON-able dict
returned by `state()`. Saving that dict in a checkpoint and passing it to
`restore()` later continues with exactly the batches an uninterrupted run would
have seen. `next_chunk(k)` returns `k` batches stacked on a leading axis for a
training loop that runs `k` steps per `jax.lax.scan` call.

>>> from tools.trainer import data
>>> images, labels = data.load_digits().train
>>> batcher = data.ArrayBatcher((images, labels), batch_size=32, seed=0)
>>> x, y = batcher.next_chunk(4)
>>> x.shape, y.shape
((4, 32, 8, 8, 1), (4, 32))
>>> saved = batcher.state()
>>> saved
{'epoch': 0, 'index': 4, 'seed': 0, 'batch_size': 32}
>>> expected = batcher.next()
>>> other = data.ArrayBatcher((images, labels), batch_size=32, seed=0)
>>> other.restore(saved)
>>> bool((other.next()[0] == expected[0]).all())
True
"""

import glob
import gzip
import hashlib
import os
from typing import (Any, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np

__all__ = [
    "ArrayBatcher",
    "DIGITS_PATH",
    "DigitsData",
    "TextData",
    "VOCAB_SIZE",
    "WindowBatcher",
    "eval_batches",
    "eval_windows",
    "fingerprint",
    "load_chars",
    "load_digits",
    "stdlib_source_files",
]

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

#: Where `load_digits` reads the committed copy of the digits data.
DIGITS_PATH = os.path.join(_REPO_ROOT, "third_party", "uci_digits",
                           "digits.csv.gz")

#: Byte-level vocabulary size of `load_chars` data.
VOCAB_SIZE = 256

_DIGITS_NUM_EXAMPLES = 1797
_DIGITS_NUM_TEST = 360
_DIGITS_SPLIT_SEED = 0

Arrays = Union[Tuple[np.ndarray, ...], Mapping[str, np.ndarray]]


class DigitsData(NamedTuple):
  """`load_digits()` result: `train` and `test` are `(images, labels)`."""
  train: Tuple[np.ndarray, np.ndarray]
  test: Tuple[np.ndarray, np.ndarray]


class TextData(NamedTuple):
  """`load_chars()` result: 1-D uint8 byte arrays and the files they hold."""
  train: np.ndarray
  test: np.ndarray
  train_files: Tuple[str, ...]
  test_files: Tuple[str, ...]


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__} "
                    f"{value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on uint64 (same bits on every NumPy version)."""
  with np.errstate(over="ignore"):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _fixed_permutation(n: int, seed: int) -> np.ndarray:
  """A permutation of range(n) that depends on nothing but (n, seed).

  Unlike `np.random.Generator.permutation`, whose algorithm NumPy may change
  between releases, this sorts hashed indices, so the split never moves.
  """
  keys = _splitmix64(np.arange(n, dtype=np.uint64)
                     ^ _splitmix64(np.full(n, seed, dtype=np.uint64)))
  return np.argsort(keys, kind="stable")


def load_digits(path: Optional[str] = None) -> DigitsData:
  """Loads the UCI handwritten digits with a fixed train/test split.

  The 1797 examples are split by a fixed permutation (SplitMix64 hashes of
  the example indices with seed 0, sorted; independent of the NumPy version):
  the first 1437 permuted examples are the training set, the last 360 the
  test set. Every class has between 28 and 43 test examples.

  Args:
    path: the `digits.csv.gz` file (one example per line: 64 pixel counts in
      0..16 then the label). Defaults to `DIGITS_PATH`, the committed copy.

  Returns:
    `DigitsData(train=(images, labels), test=(images, labels))`; images are
    float32 in [0, 1] of shape (N, 8, 8, 1) (pixel count / 16), labels int32
    in 0..9 of shape (N,).

  Raises:
    FileNotFoundError: if the data file is missing.
    ValueError: if the file does not hold the expected 1797 x 65 table.

  >>> (x, y), (tx, ty) = load_digits()
  >>> x.shape, x.dtype, y.shape, y.dtype, tx.shape
  ((1437, 8, 8, 1), dtype('float32'), (1437,), dtype('int32'), (360, 8, 8, 1))
  >>> float(x.min()), float(x.max()), sorted(set(y.tolist())) == list(range(10))
  (0.0, 1.0, True)
  """
  path = DIGITS_PATH if path is None else path
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Digits data file {path!r} not found. It is committed to the "
        "repository as third_party/uci_digits/digits.csv.gz; check out the "
        "whole repository (under Bazel, add //third_party/uci_digits:digits "
        "to the target's data).")
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  if table.shape != (_DIGITS_NUM_EXAMPLES, 65):
    raise ValueError(f"{path!r} holds a table of shape {table.shape}; the UCI "
                     f"digits file has shape ({_DIGITS_NUM_EXAMPLES}, 65).")
  pixels, labels = table[:, :64], table[:, 64]
  if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or (
      labels.max() > 9):
    raise ValueError(f"{path!r} has pixel values outside 0..16 or labels "
                     "outside 0..9; it is not the UCI digits file.")
  images = (pixels.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
  labels = labels.astype(np.int32)
  perm = _fixed_permutation(_DIGITS_NUM_EXAMPLES, _DIGITS_SPLIT_SEED)
  num_train = _DIGITS_NUM_EXAMPLES - _DIGITS_NUM_TEST
  train_idx, test_idx = perm[:num_train], perm[num_train:]
  return DigitsData(train=(images[train_idx], labels[train_idx]),
                    test=(images[test_idx], labels[test_idx]))


def stdlib_source_files(directory: Optional[str] = None) -> list:
  """The top-level `*.py` files of the standard library, sorted by name.

  Args:
    directory: where to look; defaults to the directory of the `os` module.

  Returns:
    A sorted list of absolute paths (regular files only; no subdirectories).
  """
  if directory is None:
    directory = os.path.dirname(os.path.abspath(os.__file__))
  files = [p for p in glob.glob(os.path.join(directory, "*.py"))
           if os.path.isfile(p)]
  return sorted(files, key=os.path.basename)


def load_chars(max_bytes: Optional[int] = None,
               directory: Optional[str] = None,
               test_every: int = 10) -> TextData:
  """Loads byte-level text: the standard library's own Python sources.

  The top-level `*.py` files of the standard library (`stdlib_source_files`)
  are sorted by name; file number `i` (from 0) is a test file when
  `i % test_every == test_every - 1` (every 10th file by default) and a
  training file otherwise. Each split is its files' bytes concatenated in
  that order. The result is deterministic on a given Python installation
  (another Python version has other sources).

  Args:
    max_bytes: if given, each split is cut to at most this many bytes.
    directory: the source directory; defaults to the standard library's.
    test_every: hold out one file in this many (>= 2).

  Returns:
    `TextData(train, test, train_files, test_files)`; `train`/`test` are 1-D
    uint8 arrays of byte values (the vocabulary is the `VOCAB_SIZE` = 256
    byte values); the file tuples hold base names.

  Raises:
    ValueError: if no source files are found or a split would be empty.

  >>> text = load_chars(max_bytes=1000)
  >>> text.train.shape, text.train.dtype, text.test.shape
  ((1000,), dtype('uint8'), (1000,))
  >>> set(text.train_files) & set(text.test_files)
  set()
  """
  if max_bytes is not None:
    max_bytes = _check_int("max_bytes", max_bytes, 1)
  test_every = _check_int("test_every", test_every, 2)
  files = stdlib_source_files(directory)
  if len(files) < test_every:
    raise ValueError(
        f"Found {len(files)} top-level *.py files in "
        f"{directory or os.path.dirname(os.__file__)!r}; need at least "
        f"{test_every} to hold out one file in {test_every}. Pass the "
        "`directory` of a Python source tree.")
  splits = {"train": [], "test": []}
  names = {"train": [], "test": []}
  sizes = {"train": 0, "test": 0}
  for i, path in enumerate(files):
    split = "test" if i % test_every == test_every - 1 else "train"
    if max_bytes is not None and sizes[split] >= max_bytes:
      continue
    with open(path, "rb") as f:
      content = f.read()
    splits[split].append(content)
    names[split].append(os.path.basename(path))
    sizes[split] += len(content)
  out = {}
  for split, parts in splits.items():
    array = np.frombuffer(b"".join(parts), dtype=np.uint8)
    if max_bytes is not None:
      array = array[:max_bytes]
    out[split] = array.copy()
  return TextData(train=out["train"], test=out["test"],
                  train_files=tuple(names["train"]),
                  test_files=tuple(names["test"]))


def fingerprint(*arrays: np.ndarray) -> str:
  """A short sha256 hex digest of arrays' shapes, dtypes and bytes.

  Store it with a checkpoint to notice, on resume, that the data changed
  (for example `load_chars` on a machine with another Python version).

  >>> fingerprint(np.arange(3)) == fingerprint(np.arange(3))
  True
  >>> fingerprint(np.arange(3)) == fingerprint(np.arange(4))
  False
  """
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(list(key))


def _check_state(state: Any, expected: Mapping[str, int],
                 position_keys: Sequence[str], kind: str) -> Dict[str, int]:
  """Validates a `state()` dict before `restore()`."""
  if not isinstance(state, Mapping):
    raise TypeError(f"{kind}.restore() takes the dict returned by "
                    f"{kind}.state(), got {type(state).__name__}.")
  want = set(position_keys) | set(expected)
  if set(state) != want:
    raise ValueError(f"{kind}.restore() got keys {sorted(state)}, expected "
                     f"{sorted(want)} (the dict returned by {kind}.state()).")
  out = {}
  for key in sorted(want):
    out[key] = _check_int(f"state[{key!r}]", state[key], 0)
  for key, value in expected.items():
    if out[key] != value:
      raise ValueError(
          f"Cannot restore a {kind} position saved with {key}={out[key]} into "
          f"a {kind} with {key}={value}: the batches would differ from the "
          f"interrupted run. Resume with the same {key} (the same config), "
          "or start a new run in a fresh workdir.")
  return out


class ArrayBatcher:
  """Epoch-wise shuffled minibatches of in-memory arrays.

  Each epoch visits the examples in the order of a permutation drawn from
  `np.random.default_rng([seed, epoch])`; its `N // batch_size` batches are
  consecutive slices of that order (the last `N % batch_size` examples of
  each epoch's order are skipped, so every batch has the same shape). The
  position is `{"epoch": e, "index": i}`: the next batch is batch `i` of
  epoch `e`. `state()` also records `seed` and `batch_size`, and `restore()`
  refuses a state saved with other values.

  Batches have the structure of `arrays`: a tuple of arrays or a dict of
  arrays, all with the same leading dimension.

  >>> b = ArrayBatcher({"x": np.arange(10)}, batch_size=4, seed=1)
  >>> b.steps_per_epoch
  2
  >>> [b.next()["x"].shape for _ in range(3)], b.state()["epoch"]
  ([(4,), (4,), (4,)], 1)
  """

  def __init__(self, arrays: Arrays, batch_size: int, seed: int = 0,
               shuffle: bool = True):
    """Creates a batcher positioned at the start of epoch 0.

    Args:
      arrays: tuple/list or dict of NumPy arrays sharing the leading dim N.
      batch_size: examples per batch, 1 <= batch_size <= N.
      seed: non-negative int seeding every epoch's permutation.
      shuffle: if False every epoch uses the original order.
    """
    if isinstance(arrays, Mapping):
      self._keys = tuple(arrays)
      values = [arrays[k] for k in self._keys]
    elif isinstance(arrays, (tuple, list)):
      self._keys = None
      values = list(arrays)
    else:
      raise TypeError("ArrayBatcher takes a tuple or dict of arrays, got "
                      f"{type(arrays).__name__}; e.g. ArrayBatcher((images, "
                      "labels), batch_size=32).")
    if not values:
      raise ValueError("ArrayBatcher needs at least one array.")
    self._arrays = [np.asarray(v) for v in values]
    sizes = {a.shape[0] if a.ndim else None for a in self._arrays}
    if len(sizes) != 1 or None in sizes:
      raise ValueError("All arrays must have the same leading (example) "
                       "dimension; got shapes "
                       f"{[a.shape for a in self._arrays]}.")
    self._n = sizes.pop()
    self._batch_size = _check_int("batch_size", batch_size, 1)
    if self._batch_size > self._n:
      raise ValueError(f"batch_size={batch_size} is larger than the "
                       f"{self._n} examples; use batch_size <= {self._n}.")
    self._seed = _check_int("seed", seed, 0)
    self._shuffle = bool(shuffle)
    self._epoch = 0
    self._index = 0
    self._perm_cache: Tuple[int, Optional[np.ndarray]] = (-1, None)

  @property
  def num_examples(self) -> int:
    return self._n

  @property
  def batch_size(self) -> int:
    return self._batch_size

  @property
  def steps_per_epoch(self) -> int:
    return self._n // self._batch_size

  def _order(self, epoch: int) -> np.ndarray:
    if self._perm_cache[0] != epoch:
      if self._shuffle:
        order = _rng(self._seed, epoch).permutation(self._n)
      else:
        order = np.arange(self._n)
      self._perm_cache = (epoch, order)
    return self._perm_cache[1]

  def _take_indices(self, k: int) -> np.ndarray:
    """Indices of the next `k` batches, shape (k, batch_size); advances."""
    b = self._batch_size
    out = np.empty((k, b), dtype=np.int64)
    filled = 0
    while filled < k:
      take = min(k - filled, self.steps_per_epoch - self._index)
      order = self._order(self._epoch)
      start = self._index * b
      out[filled:filled + take] = order[start:start + take * b].reshape(
          take, b)
      filled += take
      self._index += take
      if self._index == self.steps_per_epoch:
        self._epoch += 1
        self._index = 0
    return out

  def _gather(self, idx: np.ndarray):
    taken = [a[idx] for a in self._arrays]
    if self._keys is None:
      return tuple(taken)
    return dict(zip(self._keys, taken))

  def next(self):
    """The next batch: arrays of shape (batch_size, ...)."""
    return self._gather(self._take_indices(1)[0])

  def next_chunk(self, k: int):
    """The next `k` batches stacked: arrays of shape (k, batch_size, ...)."""
    k = _check_int("k", k, 1)
    return self._gather(self._take_indices(k))

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self):
    return self.next()

  def state(self) -> Dict[str, int]:
    """The position as a JSON-able dict (see `restore`)."""
    return {"epoch": self._epoch, "index": self._index, "seed": self._seed,
            "batch_size": self._batch_size}

  def restore(self, state: Mapping[str, int]) -> None:
    """Moves to a position returned by `state()` (of this or another batcher).

    Raises:
      ValueError: if `state` was saved with another seed or batch size, or
        its index is out of range.
    """
    s = _check_state(state, {"seed": self._seed,
                             "batch_size": self._batch_size},
                     ("epoch", "index"), "ArrayBatcher")
    if s["index"] >= self.steps_per_epoch:
      raise ValueError(f"state['index']={s['index']} is out of range: an epoch "
                       f"has {self.steps_per_epoch} batches. Was the state "
                       "saved for other data?")
    self._epoch, self._index = s["epoch"], s["index"]


class WindowBatcher:
  """Random windows of a 1-D token array (character-level language models).

  Batch number `s` (from 0) holds `batch_size` windows of `seq_len + 1`
  consecutive tokens starting at offsets drawn from
  `np.random.default_rng([seed, s])`; use `w[:, :-1]` as inputs and `w[:, 1:]`
  as targets. Tokens come out as int32. The position is `{"step": s}` (plus
  the `seed`, `batch_size` and `seq_len` it was made with).

  >>> b = WindowBatcher(np.arange(100, dtype=np.uint8), batch_size=2,
  ...                   seq_len=4, seed=0)
  >>> w = b.next()
  >>> w.shape, w.dtype, bool((np.diff(w, axis=1) == 1).all())
  ((2, 5), dtype('int32'), True)
  >>> b.next_chunk(3).shape, b.state()["step"]
  ((3, 2, 5), 4)
  """

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int,
               seed: int = 0):
    """Creates a batcher at step 0.

    Args:
      tokens: 1-D integer array (e.g. `load_chars().train`).
      batch_size: windows per batch (>= 1).
      seq_len: model sequence length; windows have seq_len + 1 tokens.
      seed: non-negative int.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError("WindowBatcher takes a 1-D integer token array, got "
                       f"shape {tokens.shape} dtype {tokens.dtype}.")
    self._tokens = tokens
    self._batch_size = _check_int("batch_size", batch_size, 1)
    self._seq_len = _check_int("seq_len", seq_len, 1)
    if tokens.shape[0] < self._seq_len + 1:
      raise ValueError(f"The token array has {tokens.shape[0]} tokens, fewer "
                       f"than a window of seq_len + 1 = {self._seq_len + 1}; "
                       "use a shorter seq_len or more data.")
    self._seed = _check_int("seed", seed, 0)
    self._step = 0
    self._offsets = np.arange(self._seq_len + 1)

  @property
  def batch_size(self) -> int:
    return self._batch_size

  @property
  def seq_len(self) -> int:
    return self._seq_len

  def _starts(self, step: int) -> np.ndarray:
    high = self._tokens.shape[0] - self._seq_len  # exclusive
    return _rng(self._seed, step).integers(0, high, size=self._batch_size)

  def next(self) -> np.ndarray:
    """The next batch: int32 windows of shape (batch_size, seq_len + 1)."""
    return self.next_chunk(1)[0]

  def next_chunk(self, k: int) -> np.ndarray:
    """The next `k` batches stacked: shape (k, batch_size, seq_len + 1)."""
    k = _check_int("k", k, 1)
    starts = np.stack([self._starts(self._step + i) for i in range(k)])
    self._step += k
    windows = self._tokens[starts[..., None] + self._offsets]
    return windows.astype(np.int32)

  def __iter__(self) -> Iterator[np.ndarray]:
    return self

  def __next__(self) -> np.ndarray:
    return self.next()

  def state(self) -> Dict[str, int]:
    """The position as a JSON-able dict (see `restore`)."""
    return {"step": self._step, "seed": self._seed,
            "batch_size": self._batch_size, "seq_len": self._seq_len}

  def restore(self, state: Mapping[str, int]) -> None:
    """Moves to a position returned by `state()`.

    Raises:
      ValueError: if `state` was saved with another seed, batch size or
        sequence length.
    """
    s = _check_state(state, {"seed": self._seed,
                             "batch_size": self._batch_size,
                             "seq_len": self._seq_len},
                     ("step",), "WindowBatcher")
    self._step = s["step"]


def eval_batches(arrays: Arrays, batch_size: int
                 ) -> Iterator[Tuple[Any, np.ndarray]]:
  """All examples in order, in fixed-shape batches, with a validity mask.

  The last batch is padded (by repeating the first example) to
  `batch_size`, so a jitted eval step compiles once; weight per-example
  results by the mask.

  Yields:
    `(batch, mask)`: `batch` has the structure of `arrays`, each of leading
    dim `batch_size`; `mask` is float32 (batch_size,), 1 for real examples.

  >>> [(b[0].tolist(), m.tolist()) for b, m in eval_batches((np.arange(5),), 3)]
  [([0, 1, 2], [1.0, 1.0, 1.0]), ([3, 4, 0], [1.0, 1.0, 0.0])]
  """
  batcher = ArrayBatcher(arrays, batch_size=1, shuffle=False)  # validates
  batch_size = _check_int("batch_size", batch_size, 1)
  n = batcher.num_examples
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = (idx < n).astype(np.float32)
    idx = np.where(idx < n, idx, 0)
    yield batcher._gather(idx), mask  # pylint: disable=protected-access


def eval_windows(tokens: np.ndarray, batch_size: int, seq_len: int,
                 max_batches: Optional[int] = None) -> Iterator[np.ndarray]:
  """Non-overlapping windows over a token array, in order, for evaluation.

  Window `j` holds tokens `[j * seq_len, j * seq_len + seq_len + 1)`, so
  every token after the first is predicted exactly once. Only full batches
  are yielded (the tail that does not fill a batch is skipped).

  Yields:
    int32 arrays of shape (batch_size, seq_len + 1).

  >>> [w.tolist() for w in eval_windows(np.arange(9), batch_size=2, seq_len=2)]
  [[[0, 1, 2], [2, 3, 4]], [[4, 5, 6], [6, 7, 8]]]
  """
  tokens = np.asarray(tokens)
  batch_size = _check_int("batch_size", batch_size, 1)
  seq_len = _check_int("seq_len", seq_len, 1)
  if tokens.ndim != 1:
    raise ValueError(f"eval_windows takes a 1-D token array, got shape "
                     f"{tokens.shape}.")
  num_windows = (tokens.shape[0] - 1) // seq_len
  num_batches = num_windows // batch_size
  if max_batches is not None:
    num_batches = min(num_batches, _check_int("max_batches", max_batches, 1))
  offsets = np.arange(seq_len + 1)
  for i in range(num_batches):
    starts = (np.arange(batch_size) + i * batch_size) * seq_len
    yield tokens[starts[:, None] + offsets].astype(np.int32)
