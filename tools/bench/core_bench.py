"""Core speed: pytree flatten+unflatten and parameters()/update_parameters().

Model: a 48-layer width-64 MLP built from `pax.Linear` (in `pax.Sequential`),
against the same model's plain Haiku params dict. Rounds are interleaved and
medians reported, so load on the shared machine hits both sides alike.

Run (repo root): python3 -m tools.bench.core_bench [--rounds 15] [--json f]
Also timed: the same net with `jax.nn.relu` between its layers (benchmark
Wdeep's model), where every function layer is a `pax.Lambda` node too.
Targets (issue 2): flatten+unflatten <= 1.5x the dict; parameters() +
update_parameters() <= 0.1 ms.

The floor: the same tree built from bare `jax.tree_util.register_dataclass`
classes (no pax code: `types.SimpleNamespace` subclasses, a data field per
array and one meta field, standing for a pax node's layout). JAX unflattens such a
node by calling the class with keyword arguments, which costs more than
building a dict; pax can at best match this floor.
"""

import json
import statistics
import sys
import timeit

from absl import app
from absl import flags
import haiku as hk
import jax
import jax.numpy as jnp

import pax_haiku as pax
from tools.bench import dataclass_floor

_ROUNDS = flags.DEFINE_integer("rounds", 15, "Interleaved timing rounds.")
_JSON = flags.DEFINE_string("json", None, "Also write results to this file.")

DEPTH, WIDTH = 48, 64


def build():
  pax.seed_rng_key(0)
  net = pax.Sequential(*[pax.Linear(WIDTH, WIDTH) for _ in range(DEPTH)])
  f = hk.transform(lambda x: hk.nets.MLP([WIDTH] * DEPTH)(x))
  params = f.init(jax.random.PRNGKey(0), jnp.ones((1, WIDTH)))
  return net, params


def with_activations(net):
  """`net` with `jax.nn.relu` between its layers (one `pax.Lambda` node
  each), as benchmark Wdeep builds it."""
  layers = []
  for i, layer in enumerate(net.layers):
    if i:
      layers.append(jax.nn.relu)
    layers.append(layer)
  return pax.Sequential(*layers)


def bare_tree(net, layout_field=True):
  """`net` as bare dataclass nodes (the floor; see `dataclass_floor`)."""
  return dataclass_floor.bare_mirror(net, layout_field)


def per_call_us(fn, number):
  return timeit.timeit(fn, number=number) / number * 1e6


def round_trip(tree):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef.unflatten(leaves)


def measure(rounds):
  net, params = build()
  grads = jax.tree_util.tree_map(jnp.ones_like, net.parameters())
  bare = bare_tree(net)
  relu_net = with_activations(net)
  relu_bare = bare_tree(relu_net)
  relu_bare_no_meta = bare_tree(relu_net, layout_field=False)
  cases = {
      "haiku_dict_flatten_unflatten": lambda: round_trip(params),
      "bare_dataclass_flatten_unflatten": lambda: round_trip(bare),
      "pax_flatten_unflatten": lambda: round_trip(net),
      "bare_dataclass_with_relu_flatten_unflatten": lambda: round_trip(
          relu_bare),
      "bare_dataclass_with_relu_no_meta_flatten_unflatten": lambda: (
          round_trip(relu_bare_no_meta)),
      "pax_with_relu_flatten_unflatten": lambda: round_trip(relu_net),
      "pax_parameters_plus_update": lambda: net.update_parameters(
          net.parameters()),
      "pax_parameters_plus_update_new_leaves": lambda: (
          net.parameters(), net.update_parameters(grads)),
  }
  for fn in cases.values():  # Warm caches.
    fn()
  samples = {k: [] for k in cases}
  for _ in range(rounds):
    for name, fn in cases.items():
      samples[name].append(per_call_us(fn, 500))
  med = {k: statistics.median(v) for k, v in samples.items()}
  med["flatten_ratio_vs_haiku_dict"] = (
      med["pax_flatten_unflatten"] / med["haiku_dict_flatten_unflatten"])
  med["floor_ratio_vs_haiku_dict"] = (
      med["bare_dataclass_flatten_unflatten"] /
      med["haiku_dict_flatten_unflatten"])
  med["pax_ratio_vs_floor"] = (
      med["pax_flatten_unflatten"] / med["bare_dataclass_flatten_unflatten"])
  # The same with a function layer between every two (Wdeep's model).
  med["with_relu_flatten_ratio_vs_haiku_dict"] = (
      med["pax_with_relu_flatten_unflatten"] /
      med["haiku_dict_flatten_unflatten"])
  med["with_relu_floor_ratio_vs_haiku_dict"] = (
      med["bare_dataclass_with_relu_flatten_unflatten"] /
      med["haiku_dict_flatten_unflatten"])
  # What the aux data per node costs (a pax node carries its layout).
  med["with_relu_floor_no_meta_ratio_vs_haiku_dict"] = (
      med["bare_dataclass_with_relu_no_meta_flatten_unflatten"] /
      med["haiku_dict_flatten_unflatten"])
  return med


def main(argv):
  del argv
  res = measure(_ROUNDS.value)
  print(f"48-layer width-64 MLP, medians of {_ROUNDS.value} interleaved rounds "
        f"(jax {jax.__version__}):")
  for k, v in res.items():
    unit = "x" if "ratio" in k else "us"
    print(f"  {k:52s} {v:8.2f} {unit}")
  ok_flat = res["flatten_ratio_vs_haiku_dict"] <= 1.5
  ok_params = res["pax_parameters_plus_update_new_leaves"] <= 100.0
  print(f"target flatten+unflatten <= 1.5x (Linear layers only): "
        f"{'met' if ok_flat else 'MISSED'}")
  print(f"target parameters()+update_parameters() <= 100 us: "
        f"{'met' if ok_params else 'MISSED'}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(res, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
