"""One small instance of every public pax module class, built from picklable
parts (module-level functions, `hk.Module` classes), for the tests that must
cover every module kind (identity, pickling, copies)."""

import inspect
from typing import Any, Callable, Dict, List, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax

KEY = jax.random.PRNGKey(0)


def relu(x):  # Picklable by reference (jax.nn.relu is not).
  return jnp.maximum(x, 0.0)


def haiku_mlp(x):  # A Haiku function at module level: picklable.
  return hk.nets.MLP([4, 2])(x)


def haiku_dropout(x):
  return hk.dropout(hk.next_rng_key(), 0.5, x)


def _x(*shape):
  # NumPy's RNG: jax.random would compile one program per input shape.
  return jnp.asarray(np.random.RandomState(0).normal(size=shape), jnp.float32)


class ScaledByStatic(pax.Module):
  """A user module with a static int, an array and a submodule."""

  def __init__(self, k: int = 2):
    super().__init__()
    self.k = k
    self.w = jnp.ones(3)
    self.fc = pax.Linear(3, 3)

  def __call__(self, x):
    return self.fc(x) * self.w * self.k


class Steps(pax.StateModule):
  """A PAX state module: its arrays are never trained."""

  def __init__(self):
    super().__init__()
    self.count = jnp.array(0)

  def __call__(self, x):
    self.count = self.count + 1
    return x


class Scale(pax.ParameterModule):
  """A PAX parameter module: its own arrays are all trainable."""

  def __init__(self):
    super().__init__()
    self.s = jnp.full((3,), 2.0)
    self.steps = Steps()

  def __call__(self, x):
    return self.steps(x) * self.s


def _tiny_resnet():
  return pax.nets.ResNet(3, 4, blocks_per_group=(1, 1, 1, 1),
                         channels_per_group=(4, 4, 4, 4),
                         initial_conv_config={"output_channels": 4},
                         rng_key=KEY)


# name -> (build, sample inputs or None if not callable on its own)
ZOO: Dict[str, Tuple[Callable[[], Any], Any]] = {
    "Module": (pax.Module, None),
    "ScaledByStatic": (ScaledByStatic, lambda: (_x(2, 3),)),
    "Linear": (lambda: pax.Linear(3, 4), lambda: (_x(2, 3),)),
    "Conv1D": (lambda: pax.Conv1D(4, 3, 3), lambda: (_x(2, 5, 4),)),
    "Conv2D": (lambda: pax.Conv2D(4, 3, 3), lambda: (_x(2, 5, 5, 4),)),
    "Conv1DTranspose": (lambda: pax.Conv1DTranspose(3, 4, 3),
                        lambda: (_x(2, 5, 3),)),
    "Conv2DTranspose": (lambda: pax.Conv2DTranspose(3, 4, 3),
                        lambda: (_x(2, 3, 3, 3),)),
    "BatchNorm1D": (lambda: pax.BatchNorm1D(3), lambda: (_x(2, 5, 3),)),
    "BatchNorm2D": (lambda: pax.BatchNorm2D(3), lambda: (_x(2, 4, 4, 3),)),
    "ParameterModule": (Scale, lambda: (_x(2, 3),)),
    "StateModule": (Steps, lambda: (_x(2, 3),)),
    "LayerNorm": (lambda: pax.LayerNorm(3), lambda: (_x(2, 3),)),
    "GroupNorm": (lambda: pax.GroupNorm(2, 4), lambda: (_x(2, 5, 4),)),
    "Embed": (lambda: pax.Embed(10, 4),
              lambda: (jnp.array([[1, 2, 3]], jnp.int32),)),
    "LSTM": (lambda: pax.LSTM(3, 4), None),
    "GRU": (lambda: pax.GRU(3, 4), None),
    "VanillaRNN": (lambda: pax.VanillaRNN(3, 4), None),
    "MultiHeadAttention": (lambda: pax.MultiHeadAttention(2, 2),
                           lambda: (_x(2, 5, 4), _x(2, 5, 4), _x(2, 5, 4))),
    "Dropout": (lambda: pax.Dropout(0.5), lambda: (_x(2, 3),)),
    "Sequential": (lambda: pax.Sequential(pax.Linear(3, 4), relu,
                                          pax.LayerNorm(4)),
                   lambda: (_x(2, 3),)),
    "Lambda": (lambda: pax.Lambda(relu), lambda: (_x(2, 3),)),
    "Identity": (pax.Identity, lambda: (_x(2, 3),)),
    "RngSeq": (lambda: pax.RngSeq(seed=1), lambda: (2,)),
    "EMA": (lambda: pax.EMA(_x(3), 0.9), lambda: (_x(3),)),
    "Optimizer": (lambda: pax.from_optax(optax.adam(1e-3))(
        pax.Linear(3, 4).parameters()), None),
    "HaikuModule[function]": (
        lambda: pax.from_haiku(haiku_mlp)(_x(1, 3), rng_key=KEY),
        lambda: (_x(2, 3),)),
    "HaikuModule[hk.Module class]": (
        lambda: pax.from_haiku(hk.Linear, 3)(_x(1, 2), rng_key=KEY),
        lambda: (_x(2, 2),)),
    "HaikuModule[transform]": (
        lambda: pax.from_haiku(hk.transform_with_state(haiku_dropout))(
            _x(1, 3), rng_key=KEY),
        lambda: (_x(2, 3),)),
    "HaikuModule[lazy]": (lambda: pax.from_haiku(hk.Linear, 3).lazy(KEY),
                          None),
    "mixed precision Linear": (
        lambda: pax.apply_mp_policy(pax.Linear(3, 4), "p=f32,c=bf16,o=f32"),
        lambda: (_x(2, 3),)),
    "mixed precision ScaledByStatic": (
        lambda: pax.apply_mp_policy(ScaledByStatic(), "p=f32,c=bf16,o=f32"),
        lambda: (_x(2, 3),)),
    "nets.MLP": (lambda: pax.nets.MLP(3, [4, 2], activation=relu,
                                      rng_key=KEY), lambda: (_x(2, 3),)),
    "nets.ResNet": (_tiny_resnet, lambda: (_x(1, 8, 8, 3),)),
    "nets.Transformer": (
        lambda: pax.nets.Transformer(8, 2, 1, rng_key=KEY),
        lambda: (_x(1, 3, 8),)),
    "nets.TransformerLM": (
        lambda: pax.nets.TransformerLM(11, 8, 2, 1, 6, rng_key=KEY),
        lambda: (jnp.array([[1, 2, 3]], jnp.int32),)),
}

# Public classes built by another entry (each with the entry).
COVERED_BY = {
    "HaikuModule": "HaikuModule[function]",
    "ResNet": "nets.ResNet",
    "ResNet18": "nets.ResNet (ResNet18 is too big to pickle in a unit test; "
                "a subclass with a preset configuration)",
    "ResNet34": "nets.ResNet", "ResNet50": "nets.ResNet",
    "ResNet101": "nets.ResNet", "ResNet152": "nets.ResNet",
    "ResNet200": "nets.ResNet",
    "MLP": "nets.MLP", "Transformer": "nets.Transformer",
    "TransformerLM": "nets.TransformerLM",
}


def public_module_classes() -> List[Tuple[str, type]]:
  """Every `pax.Module` subclass exported by `pax` and `pax.nets`."""
  out = []
  for namespace in (pax, pax.nets):
    for name in namespace.__all__:
      value = getattr(namespace, name)
      if inspect.isclass(value) and issubclass(value, pax.Module):
        out.append((name, value))
  return out
