"""A dataset of your own: noisy concentric rings, kept in an `.npz` file.

`rings(config)` is the dataset factory the config names
(`--config.dataset=examples.custom_model.data:rings`). It writes the file
the first time (`generate`; deterministic in `config.dataset_config.seed`)
and returns `(train, test)` sources of `(point, ring)` examples: float32
points of shape (2,) and an int32 label, the ring the point was drawn
around.
"""

import os
from typing import Any, Tuple

import numpy as np

from tools.trainer import sources


def generate(path: str, num_examples: int, num_classes: int,
             seed: int) -> None:
  """Writes `train_inputs/labels` (80%) and `test_inputs/labels` to `path`."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=num_examples).astype(np.int32)
  angle = rng.uniform(0.0, 2.0 * np.pi, size=num_examples)
  radius = 1.0 + labels + rng.normal(0.0, 0.25, size=num_examples)
  points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)
  points = points.astype(np.float32)
  split = int(num_examples * 0.8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, train_inputs=points[:split], train_labels=labels[:split],
           test_inputs=points[split:], test_labels=labels[split:])
  os.replace(tmp, path)  # Whole or absent, even if two runs race.


def rings(config: Any) -> Tuple[sources.ArraySource, sources.ArraySource]:
  """The dataset factory: `config.dataset_config` has `path`,
  `num_examples`, `num_classes` and `seed`."""
  d = config.dataset_config
  if not os.path.exists(d.path):
    generate(d.path, d.num_examples, d.num_classes, d.seed)
  return (sources.ArraySource.from_npz(d.path, "train_inputs",
                                       "train_labels"),
          sources.ArraySource.from_npz(d.path, "test_inputs", "test_labels"))
