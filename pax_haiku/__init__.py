"""pax_haiku: PAX-style stateful modules that compile into pure Haiku transforms.

>>> import pax_haiku as pax
>>> net = pax.Linear(2, 3)
>>> sorted(net.params["linear"])
['b', 'w']
"""

from pax_haiku import experimental
from pax_haiku import nets
from pax_haiku import sharding
from pax_haiku import utils
from pax_haiku._src.compilation_cache import disable_compilation_cache
from pax_haiku._src.compilation_cache import enable_compilation_cache
from pax_haiku._src.context import next_rng_key
from pax_haiku._src.donate import jit_update
from pax_haiku._src.context import seed_rng_key
from pax_haiku._src.haiku_bridge import from_haiku
from pax_haiku._src.haiku_bridge import HaikuModule
from pax_haiku._src.mixed_precision import apply_default_mp_policy
from pax_haiku._src.mixed_precision import apply_mp_policy
from pax_haiku._src.mixed_precision import default_policies
from pax_haiku._src.mixed_precision import get_mp_policy
from pax_haiku._src.mixed_precision import unwrap_mp_policy
from pax_haiku._src.functional import assert_structure_equal
from pax_haiku._src.functional import enable_eval_mode
from pax_haiku._src.functional import enable_train_mode
from pax_haiku._src.functional import freeze_parameters
from pax_haiku._src.module import Module
from pax_haiku._src.module_layout import EmptyNode
from pax_haiku._src.utility_modules import ParameterModule
from pax_haiku._src.utility_modules import StateModule
from pax_haiku._src.module_base import module_class
from pax_haiku._src.module import parameters_method
from pax_haiku._src.functional import select_parameters
from pax_haiku._src.functional import unfreeze_parameters
from pax_haiku._src.functional import update_parameters
from pax_haiku._src.nn.attention import MultiHeadAttention
from pax_haiku._src.nn.batch_norm import BatchNorm1D
from pax_haiku._src.nn.batch_norm import BatchNorm2D
from pax_haiku._src.nn.conv import Conv1D
from pax_haiku._src.nn.conv import Conv1DTranspose
from pax_haiku._src.nn.conv import Conv2D
from pax_haiku._src.nn.conv import Conv2DTranspose
from pax_haiku._src.nn.dropout import dropout
from pax_haiku._src.nn.dropout import Dropout
from pax_haiku._src.nn.ema import EMA
from pax_haiku._src.nn.embed import Embed
from pax_haiku._src.nn.lambda_module import Identity
from pax_haiku._src.nn.lambda_module import Lambda
from pax_haiku._src.nn.layer_norm import GroupNorm
from pax_haiku._src.nn.layer_norm import LayerNorm
from pax_haiku._src.nn.linear import Linear
from pax_haiku._src.nn.pool import avg_pool
from pax_haiku._src.nn.pool import max_pool
from pax_haiku._src.nn.recurrent import GRU
from pax_haiku._src.nn.recurrent import LSTM
from pax_haiku._src.nn.recurrent import GRUState
from pax_haiku._src.nn.recurrent import LSTMState
from pax_haiku._src.nn.recurrent import VanillaRNNState
from pax_haiku._src.nn.recurrent import VanillaRNN
from pax_haiku._src.nn.rng_seq import RngSeq
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
from pax_haiku._src.to_haiku import haiku_call
from pax_haiku._src.to_haiku import to_haiku
from pax_haiku._src.transforms import grad
from pax_haiku._src.transforms import scan
from pax_haiku._src.transforms import value_and_grad
from pax_haiku._src.update import build_update_fn

__version__ = "0.1.0"

__all__ = (
    "apply_default_mp_policy",
    "apply_mp_policy",
    "assert_structure_equal",
    "avg_pool",
    "BatchNorm1D",
    "BatchNorm2D",
    "build_update_fn",
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "default_policies",
    "disable_compilation_cache",
    "dropout",
    "Dropout",
    "EMA",
    "Embed",
    "EmptyNode",
    "enable_compilation_cache",
    "enable_eval_mode",
    "enable_train_mode",
    "experimental",
    "freeze_parameters",
    "from_haiku",
    "from_optax",
    "get_mp_policy",
    "grad",
    "GroupNorm",
    "GRU",
    "haiku_call",
    "HaikuModule",
    "Identity",
    "jit_update",
    "Lambda",
    "LayerNorm",
    "Linear",
    "load",
    "load_haiku",
    "LSTM",
    "LSTMState",
    "GRUState",
    "VanillaRNNState",
    "max_pool",
    "Module",
    "module_and_value",
    "module_class",
    "MultiHeadAttention",
    "nets",
    "next_rng_key",
    "Optimizer",
    "ParameterModule",
    "parameters_method",
    "pure",
    "purecall",
    "RngSeq",
    "save",
    "save_haiku",
    "scan",
    "seed_rng_key",
    "select_parameters",
    "Sequential",
    "sharding",
    "StateModule",
    "to_haiku",
    "unfreeze_parameters",
    "unwrap_mp_policy",
    "update_parameters",
    "utils",
    "value_and_grad",
    "VanillaRNN",
)
