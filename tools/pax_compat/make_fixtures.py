"""Writes the PAX weight-compatibility fixtures used by tests/pax_weights_test.py.

Runs under REAL PAX (`pax3`, 0.5.x), never under pax_haiku: make a separate
virtualenv and run the script with its interpreter,

    python3 -m venv /path/to/venv
    /path/to/venv/bin/pip install jax==0.4.30 jaxlib==0.4.30 pax3==0.5.9 'numpy<2'
    /path/to/venv/bin/python tools/pax_compat/make_fixtures.py \
        --out tests/data/pax_weights

For each layer kind it builds a tiny PAX module, gives it random weights (and,
for BatchNorm, moving averages from a few training steps), runs it on a fixed
input and writes `<out>/<kind>.npz` with:

- `state_dict/<path>`: the leaves of `module.state_dict()`, the path joined
  by '/' (tuple/list positions as decimal strings; `None` leaves are left
  out and listed in the config's `none_paths`);
- `input/<name>`, `output/<name>`: the inputs and PAX's outputs (eval mode
  for layers with a train/eval difference; BatchNorm also stores one
  train-mode step: `output/train` and the moving averages after it);
- `config`: a JSON string: the PAX class, its constructor arguments, the
  versions used and notes.

Every file loads with `np.load(path, allow_pickle=False)`.

It also writes `<out>/mlp_checkpoint.pkl`, a PAX checkpoint pickled the way
PAX programs save one: `pickle.dump({"state_dict": net.state_dict(), ...})`.
Pickles run code when loaded: the test loads this file because the project
made it (trusted input); never unpickle files from elsewhere.
"""

import argparse
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pax

SEED = 42


def _rng(name):
  # A seed from the name (Python's str hash changes between runs).
  return np.random.RandomState(sum(i * ord(c) for i, c in enumerate(name, 1))
                               + SEED)


def randomize(module, name):
  """Random float weights (not moving averages, RNG keys or flags)."""
  rs = _rng(name)

  def walk(sd, path):
    if isinstance(sd, dict):
      return {k: walk(v, path + (str(k),)) for k, v in sd.items()}
    if isinstance(sd, (list, tuple)):
      return type(sd)(walk(v, path + (str(i),)) for i, v in enumerate(sd))
    if sd is None:
      return None
    skip = any(p.startswith("ema_") or p in ("rng_seq", "_rng_key", "debias")
               for p in path)
    if skip or not jnp.issubdtype(sd.dtype, jnp.floating):
      return sd
    value = rs.normal(size=sd.shape).astype(np.float32) * 0.5
    if path[-1] == "scale":
      value = value + 1.0
    return jnp.asarray(value)

  return module.load_state_dict(walk(module.state_dict(), ()))


def flatten(sd, prefix="state_dict"):
  """Nested state_dict -> ({path: np.ndarray}, [paths of None leaves])."""
  flat, nones = {}, []

  def walk(x, path):
    if isinstance(x, dict):
      for k, v in x.items():
        walk(v, f"{path}/{k}")
    elif isinstance(x, (list, tuple)):
      for i, v in enumerate(x):
        walk(v, f"{path}/{i}")
    elif x is None:
      nones.append(path)
    else:
      flat[path] = np.asarray(x)

  walk(sd, prefix)
  return flat, nones


def normal(name, shape):
  return _rng("input/" + name).normal(size=shape).astype(np.float32)


def train_steps(module, xs):
  """A few training-mode calls (fills BatchNorm moving averages)."""
  module = module.train()
  for x in xs:
    module, _ = pax.purecall(module, x)
  return module


def save(out_dir, kind, module, cls, args, kwargs, inputs, outputs,
         notes="", extra=None):
  flat, nones = flatten(module.state_dict())
  entries = dict(flat)
  for k, v in inputs.items():
    entries[f"input/{k}"] = np.asarray(v)
  for k, v in outputs.items():
    entries[f"output/{k}"] = np.asarray(v)
  for k, v in (extra or {}).items():
    entries[k] = np.asarray(v)
  config = {"kind": kind, "pax_class": cls, "args": args, "kwargs": kwargs,
            "none_paths": nones, "notes": notes,
            "pax_version": pax.__version__, "jax_version": jax.__version__}
  entries["config"] = np.asarray(json.dumps(config, sort_keys=True))
  path = os.path.join(out_dir, f"{kind}.npz")
  np.savez_compressed(path, **entries)
  print(f"{path}: {os.path.getsize(path)} bytes, {len(flat)} leaves")


def simple(out_dir, kind, cls, args, kwargs, inputs, call=None, train=None,
           notes=""):
  """Builds `pax.<cls>(*args, **kwargs)`, randomizes it, stores its output."""
  ctor = getattr(pax, cls)
  kw = {k: v for k, v in kwargs.items()}
  if "padding" in kw and isinstance(kw["padding"], list):
    kw["padding"] = [tuple(p) for p in kw["padding"]]
  module = ctor(*args, **kw)
  module = randomize(module, kind)
  if train is not None:
    module = train_steps(module, train)
  module = module.eval()
  if call is None:
    y = module(*inputs.values())
  else:
    y = call(module, *inputs.values())
  outputs = y if isinstance(y, dict) else {"y": y}
  save(out_dir, kind, module, cls, args, kwargs, inputs, outputs, notes)
  return module


def rnn(out_dir, kind, cls, input_dim, hidden_dim):
  module = randomize(getattr(pax, cls)(input_dim, hidden_dim), kind)
  xs = normal(kind, (4, 2, input_dim))  # [T, B, D]
  state = module.initial_state(2)
  hs = []
  for x in xs:
    state, h = module(state, jnp.asarray(x))
    hs.append(h)
  outputs = {"hidden_seq": jnp.stack(hs)}
  if cls == "LSTM":
    outputs["final_cell"] = state.cell
  notes = ("Inputs are time-major [T, B, D]; the state starts from "
           "initial_state(B) and output/hidden_seq holds h at every step.")
  if cls == "LSTM":
    notes += " PAX's forget_gate_bias is its default, 0.0."
  save(out_dir, kind, module, cls, [input_dim, hidden_dim], {}, {"xs": xs},
       outputs, notes)


def batchnorm(out_dir, kind, cls, num_channels, data_format, shape):
  module = randomize(getattr(pax, cls)(num_channels, data_format=data_format),
                     kind)
  module = train_steps(module, [normal(f"{kind}/train{i}", shape) * (i + 1)
                                + i for i in range(3)])
  x = normal(kind, shape)
  y_eval = module.eval()(x)
  # One more training-mode step: output from the batch statistics, and the
  # moving averages after it.
  stepped, y_train = pax.purecall(module.train(), x)
  extra = {"after_train_step/ema_mean": stepped.ema_mean.averages,
           "after_train_step/ema_var": stepped.ema_var.averages}
  save(out_dir, kind, module.eval(), cls, [num_channels],
       {"data_format": data_format}, {"x": x},
       {"y": y_eval, "train": y_train},
       "state_dict after 3 training steps (EMA debias flag 1); output/y is "
       "eval mode, output/train one training step from that state.",
       extra=extra)


def resnet(out_dir):
  kwargs = dict(input_channels=3, blocks_per_group=[2, 2, 2, 2],
                num_classes=5, bottleneck=False,
                channels_per_group=[4, 8, 8, 8],
                use_projection=[False, True, True, True],
                initial_conv_config={"out_features": 4})
  kw = dict(kwargs, blocks_per_group=tuple(kwargs["blocks_per_group"]),
            channels_per_group=tuple(kwargs["channels_per_group"]),
            use_projection=tuple(kwargs["use_projection"]))
  # pax.nets exports only the ResNet18..200 presets (ResNet18's channels
  # would make a 45 MB fixture); their base class takes small channels.
  from pax._src.nets import ResNet  # pylint: disable=g-import-not-at-top
  module = randomize(ResNet(**kw), "resnet")
  module = train_steps(module, [normal(f"resnet/train{i}", (2, 3, 33, 33))
                                for i in range(2)])
  module = module.eval()
  x_odd = normal("resnet/odd", (2, 3, 65, 65))
  x_even = normal("resnet/even", (2, 3, 32, 32))
  save(out_dir, "resnet", module, "_src.nets.ResNet", [], kwargs,
       {"x": x_odd, "x_even": x_even},
       {"y": module(x_odd), "y_even": module(x_even)},
       "NCHW inputs. 65x65 keeps every stride-2 stage at an odd size; 32x32 "
       "has even sizes (where explicit (k-1)/2 padding and SAME differ).")


def transformer(out_dir):
  module = randomize(pax.nets.Transformer(8, 2, 2, 0.0), "transformer")
  module = module.eval()
  x = normal("transformer", (2, 5, 8))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  _, y = pax.purecall(module, jnp.asarray(x))
  _, y_mask = pax.purecall(module, jnp.asarray(x), jnp.asarray(mask))
  save(out_dir, "transformer", module, "nets.Transformer", [8, 2, 2, 0.0], {},
       {"h": x, "mask": mask}, {"y": y, "y_mask": y_mask},
       "dim=8, num_heads=2, num_layers=2, dropout_rate=0.0; eval mode.")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="tests/data/pax_weights")
  out = parser.parse_args().out
  os.makedirs(out, exist_ok=True)
  pax.seed_rng_key(SEED)

  simple(out, "linear", "Linear", [3, 4], {}, {"x": normal("linear", (2, 3))})
  simple(out, "linear_no_bias", "Linear", [3, 4], {"with_bias": False},
         {"x": normal("linear_no_bias", (2, 3))})
  simple(out, "conv1d", "Conv1D", [3, 4, 3], {"stride": 1},
         {"x": normal("conv1d", (2, 8, 3))})
  simple(out, "conv2d", "Conv2D", [3, 4, 3], {"stride": 2},
         {"x": normal("conv2d", (2, 6, 6, 3))})
  simple(out, "conv2d_nchw", "Conv2D", [3, 4, [3, 2]],
         {"data_format": "NCHW", "padding": [[1, 1], [0, 1]], "rate": 1},
         {"x": normal("conv2d_nchw", (2, 3, 6, 5))})
  simple(out, "conv2d_no_bias", "Conv2D", [3, 4, 3],
         {"with_bias": False, "padding": "VALID"},
         {"x": normal("conv2d_no_bias", (2, 5, 5, 3))})
  simple(out, "conv1d_transpose", "Conv1DTranspose", [4, 3, 3],
         {"stride": 2}, {"x": normal("conv1d_transpose", (2, 5, 4))})
  simple(out, "conv2d_transpose", "Conv2DTranspose", [4, 3, 3],
         {"stride": 2}, {"x": normal("conv2d_transpose", (2, 4, 4, 4))})
  batchnorm(out, "batchnorm1d", "BatchNorm1D", 3, "NWC", (4, 5, 3))
  batchnorm(out, "batchnorm2d", "BatchNorm2D", 3, "NCHW", (4, 3, 3, 2))
  simple(out, "layernorm", "LayerNorm", [5, -1, True, True], {},
         {"x": normal("layernorm", (2, 3, 5))})
  simple(out, "groupnorm", "GroupNorm", [2, 4], {},
         {"x": normal("groupnorm", (2, 3, 3, 4))})
  simple(out, "embed", "Embed", [7, 3], {},
         {"ids": np.array([[0, 1, 2, 6], [3, 3, 5, 4]], np.int32)})
  rnn(out, "lstm", "LSTM", 3, 4)
  rnn(out, "gru", "GRU", 3, 4)
  rnn(out, "vanilla_rnn", "VanillaRNN", 3, 4)
  mask = np.ones((2, 1, 4, 5), bool)
  mask[1, 0, :, 3:] = False
  simple(out, "multi_head_attention", "MultiHeadAttention", [2, 3, 1.0], {},
         {"query": normal("mha/q", (2, 4, 6)), "key": normal("mha/k", (2, 5, 6)),
          "value": normal("mha/v", (2, 5, 6)), "mask": mask})

  seq = pax.Sequential(pax.Linear(3, 5), jax.nn.relu,
                       pax.LayerNorm(5, -1, True, True), pax.Linear(5, 2))
  seq = randomize(seq, "sequential").eval()
  x = normal("sequential", (2, 3))
  save(out, "sequential", seq, "Sequential", [], {}, {"x": x}, {"y": seq(x)},
       "Sequential(Linear(3, 5), jax.nn.relu, LayerNorm(5, -1, True, True), "
       "Linear(5, 2))")

  # PAX 0.5.x has no nets.MLP; an MLP there is a Sequential of Linears.
  mlp = pax.Sequential(pax.Linear(3, 6), jax.nn.relu, pax.Linear(6, 5),
                       jax.nn.relu, pax.Linear(5, 2))
  mlp = randomize(mlp, "mlp").eval()
  x = normal("mlp", (2, 3))
  save(out, "mlp", mlp, "Sequential", [], {}, {"x": x}, {"y": mlp(x)},
       "Sequential(Linear(3, 6), relu, Linear(6, 5), relu, Linear(5, 2)): "
       "PAX has no nets.MLP; pax_haiku's nets.MLP(3, [6, 5, 2]) loads it.")
  with open(os.path.join(out, "mlp_checkpoint.pkl"), "wb") as f:
    pickle.dump({"step": 7, "state_dict": mlp.state_dict()}, f)
  print(f"{out}/mlp_checkpoint.pkl: "
        f"{os.path.getsize(os.path.join(out, 'mlp_checkpoint.pkl'))} bytes")

  resnet(out)
  transformer(out)


if __name__ == "__main__":
  main()
