"""`pax.experimental`: PAX 0.5.10's experimental API.

>>> sorted(pax.experimental.__all__)
['LazyModule', 'graph', 'load_weights_from_dict', 'save_weights_to_dict']
"""

from pax_haiku._src.pax_state_dict import load_state_dict as load_weights_from_dict
from pax_haiku._src.pax_state_dict import state_dict as save_weights_to_dict
from pax_haiku._src.utility_modules import LazyModule
from pax_haiku.experimental import graph

__all__ = (
    "graph",
    "LazyModule",
    "load_weights_from_dict",
    "save_weights_to_dict",
)
