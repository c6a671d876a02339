"""The binary's built-in datasets, as dataset factories.

A dataset factory is `factory(config) -> (train, test)`, two random-access
sources of `(inputs, label)` examples (`tools/trainer/sources.py`); the
config names it with `--config.dataset=package.module:factory` or, for these,
by their aliases (`registry.DATASET_ALIASES`): `digits` and `chars`.

>>> from tools.trainer import config_schema
>>> train, test = digits(config_schema.base_config())
>>> len(train), len(test), train[0][0].shape, int(train[0][1])
(1437, 360, (8, 8, 1), 4)
"""

from typing import Any, Tuple

from tools.trainer import data
from tools.trainer import sources

__all__ = ["chars", "digits"]


def digits(config: Any) -> Tuple[sources.ArraySource, sources.ArraySource]:
  """UCI 8x8 digits (`data.load_digits`): images (8, 8, 1), labels 0..9."""
  del config  # The split is fixed.
  d = data.load_digits()
  return sources.ArraySource(*d.train), sources.ArraySource(*d.test)


def chars(config: Any) -> Tuple[sources.WindowSource, sources.WindowSource]:
  """Bytes of the Python standard library's sources (`data.load_chars`).

  Training examples are the windows of `config.seq_len` bytes starting at
  every position; test examples tile the held-out files (each byte is
  predicted once).
  """
  d = data.load_chars(max_bytes=config.max_bytes or None)
  return (sources.WindowSource(d.train, config.seq_len),
          sources.WindowSource(d.test, config.seq_len,
                               stride=config.seq_len))
