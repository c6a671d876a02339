"""`pax.utils`: training utilities.

>>> sorted(pax.utils.__all__)
['build_update_fn', 'grad', 'scan', 'value_and_grad']
"""

from pax_haiku._src.transforms import grad
from pax_haiku._src.transforms import scan
from pax_haiku._src.transforms import value_and_grad
from pax_haiku._src.update import build_update_fn

__all__ = (
    "build_update_fn",
    "grad",
    "scan",
    "value_and_grad",
)
