"""pax_haiku: PAX-style stateful modules that compile into pure Haiku transforms.

>>> import pax_haiku as pax
>>> net = pax.Linear(2, 3)
>>> sorted(net.params["linear"])
['b', 'w']
"""

from pax_haiku import utils
from pax_haiku._src.context import next_rng_key
from pax_haiku._src.context import seed_rng_key
from pax_haiku._src.haiku_bridge import from_haiku
from pax_haiku._src.haiku_bridge import haiku_call
from pax_haiku._src.haiku_bridge import HaikuModule
from pax_haiku._src.haiku_bridge import to_haiku
from pax_haiku._src.module import assert_structure_equal
from pax_haiku._src.module import enable_eval_mode
from pax_haiku._src.module import enable_train_mode
from pax_haiku._src.module import freeze_parameters
from pax_haiku._src.module import Module
from pax_haiku._src.module import module_class
from pax_haiku._src.module import parameters_method
from pax_haiku._src.module import select_parameters
from pax_haiku._src.module import unfreeze_parameters
from pax_haiku._src.module import update_parameters
from pax_haiku._src.nn.lambda_module import Identity
from pax_haiku._src.nn.lambda_module import Lambda
from pax_haiku._src.nn.linear import Linear
from pax_haiku._src.nn.sequential import Sequential
from pax_haiku._src.optim import from_optax
from pax_haiku._src.optim import Optimizer
from pax_haiku._src.pure import module_and_value
from pax_haiku._src.pure import pure
from pax_haiku._src.pure import purecall
from pax_haiku._src.serialization import load
from pax_haiku._src.serialization import load_haiku
from pax_haiku._src.serialization import save
from pax_haiku._src.serialization import save_haiku
from pax_haiku._src.transforms import grad
from pax_haiku._src.transforms import scan
from pax_haiku._src.transforms import value_and_grad
from pax_haiku._src.update import build_update_fn

__version__ = "0.1.0"

__all__ = (
    "assert_structure_equal",
    "build_update_fn",
    "enable_eval_mode",
    "enable_train_mode",
    "freeze_parameters",
    "from_haiku",
    "from_optax",
    "grad",
    "haiku_call",
    "HaikuModule",
    "Identity",
    "Lambda",
    "Linear",
    "load",
    "load_haiku",
    "Module",
    "module_and_value",
    "module_class",
    "next_rng_key",
    "Optimizer",
    "parameters_method",
    "pure",
    "purecall",
    "save",
    "save_haiku",
    "scan",
    "seed_rng_key",
    "select_parameters",
    "Sequential",
    "to_haiku",
    "unfreeze_parameters",
    "update_parameters",
    "utils",
    "value_and_grad",
)
