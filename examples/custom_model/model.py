"""A model of your own: a residual MLP with layer norm, as a pax.Module.

The training binary builds it through `--config.model=
examples.custom_model.model:build` (see config.py): `build(config)` gets
the whole config and reads its own keys from `config.model_config`.
"""

from typing import Any

import jax

import pax_haiku as pax


class ResidualMLP(pax.Module):
  """Linear embedding, `depth` pre-norm residual blocks, linear head."""

  def __init__(self, in_dim: int, width: int, depth: int, num_classes: int):
    super().__init__()
    self.embed = pax.Linear(in_dim, width)
    self.norms = [pax.LayerNorm(width) for _ in range(depth)]
    self.blocks = [pax.Linear(width, width) for _ in range(depth)]
    self.head = pax.Linear(width, num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.embed(x)
    for norm, block in zip(self.norms, self.blocks):
      h = h + jax.nn.gelu(block(norm(h)))
    return self.head(h)


def build(config: Any) -> ResidualMLP:
  """The model factory: `config.model_config` has `width` and `depth`."""
  m = config.model_config
  return ResidualMLP(in_dim=2, width=m.width, depth=m.depth,
                     num_classes=config.dataset_config.num_classes)
