"""Training data that needs no download.

Two data sets, both on disk on every machine that has this repository:

* `load_digits()`: the UCI optical handwritten digits (1797 8x8 grey images,
  10 classes), committed under `third_party/uci_digits/`. The train/test split
  is fixed (see `load_digits`).
* `load_chars()`: byte-level text made of the Python standard library's own
  top-level `*.py` source files (vocabulary: the 256 byte values, so no vocab
  file is needed). Whole files are held out for evaluation.

`tools/trainer/datasets.py` serves them to the binary as random-access
sources; `tools/trainer/pipeline.py` batches them.

>>> from tools.trainer import data
>>> images, labels = data.load_digits().train
>>> images.shape, labels.shape
((1437, 8, 8, 1), (1437,))
"""

import glob
import gzip
import hashlib
import os
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

__all__ = [
    "DIGITS_PATH",
    "DigitsData",
    "TextData",
    "VOCAB_SIZE",
    "fingerprint",
    "fixed_permutation",
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


def fixed_permutation(n: int, seed: int) -> np.ndarray:
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
  perm = fixed_permutation(_DIGITS_NUM_EXAMPLES, _DIGITS_SPLIT_SEED)
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
