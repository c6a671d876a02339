"""`pax.nets`: Haiku-backed networks as pax modules.

>>> sorted(n for n in pax.nets.__all__ if n.startswith("Transformer"))
['Transformer', 'TransformerLM']

`pax.nets.haiku_transformer` holds the plain Haiku (`hk.Module`) reference
implementation of the Transformer nets, for use inside `hk.transform`.
"""

from pax_haiku._src.nets import haiku_transformer
from pax_haiku._src.nets.mlp import MLP
from pax_haiku._src.nets.resnet import ResNet
from pax_haiku._src.nets.resnet import ResNet101
from pax_haiku._src.nets.resnet import ResNet152
from pax_haiku._src.nets.resnet import ResNet18
from pax_haiku._src.nets.resnet import ResNet200
from pax_haiku._src.nets.resnet import ResNet34
from pax_haiku._src.nets.resnet import ResNet50
from pax_haiku._src.nets.transformer import Transformer
from pax_haiku._src.nets.transformer import TransformerLM

__all__ = (
    "haiku_transformer",
    "MLP",
    "ResNet",
    "ResNet101",
    "ResNet152",
    "ResNet18",
    "ResNet200",
    "ResNet34",
    "ResNet50",
    "Transformer",
    "TransformerLM",
)
