"""PAX <-> pax_haiku weight layouts of whole nets (MLP, ResNet, Transformer).

Each net is read and written layer by layer with the converters of
`pax_layer_converters`; `NET_CONVERTERS` registers them by class (see
`pax_state_dict`).

- nets.Transformer: PAX's `layers[i]` dicts map to Haiku's `layer_{i}_*`
  modules; PAX's `rng_seq` (dropout keys) is accepted and not loaded.
- nets.ResNet: PAX's ResNet takes NCHW images and pads explicitly
  (`(k - 1) // 2` on both sides, max-pool after a zero pad); Haiku's takes
  NHWC and pads 'SAME'. Build the pax_haiku net with
  `pax.nets.ResNet(..., data_format="NCHW", padding="pax")` (or the
  `ResNet18` ... presets with the same arguments) to reproduce PAX exactly;
  PAX's bottleneck blocks differ from Haiku's (their second conv already has
  all output channels) and do not load.
- nets.MLP: PAX 0.5.x has none; its state_dict form here is that of the
  equivalent `pax.Sequential(Linear, act, Linear, ...)`, so a PAX Sequential
  of Linears loads into `pax.nets.MLP`.
"""

from typing import Any, Callable, Dict, List, Mapping, Tuple

import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src import pax_layer_converters as layers_lib
from pax_haiku._src import pax_layer_loader as loader_lib
from pax_haiku._src import pax_state_dict_flat as flat_lib
from pax_haiku._src.nets import mlp as mlp_lib
from pax_haiku._src.nets import resnet as resnet_lib
from pax_haiku._src.nets import transformer as transformer_lib

# Short names for the path helpers that every error message uses.
_join = flat_lib.join
_show = flat_lib.show


def _load_mlp(module, sd, path):
  ld = loader_lib.Loader(module, sd, path)
  n = len(module.output_sizes)
  seq, seq_path = ld.sub("modules")
  if seq is None:
    raise loader_lib.missing(_join(path, "modules"), module)
  # Linears at the even positions of PAX's Sequential(Linear, act, ...).
  linears = _module_entries(seq)
  if len(linears) != n:
    raise ValueError(
        f"load_state_dict: {_show(seq_path)} holds {len(linears)} layers "
        f"with weights, {module!r} has {n} Linear layers.\nFix: build "
        "pax.nets.MLP(input_dim, [out sizes of the PAX Linears]).")
  for i, key in enumerate(linears):
    layers_lib.load_linear(ld, f"linear_{i}", "modules", key)
  return ld.done()


def _module_entries(seq: Any) -> List[Any]:
  """Keys/positions of a PAX Sequential's entries that hold weights."""
  if isinstance(seq, Mapping):
    keys = sorted(seq, key=lambda k: int(k) if str(k).isdigit() else k)
    return [k for k in keys if flat_lib.flatten_state_dict({"x": seq[k]})]
  return [i for i, v in enumerate(seq) if flat_lib.flatten_state_dict({"x": v})]


def _dump_mlp(module, leaves):
  mods: List[Any] = []
  for i in range(len(module.output_sizes)):
    if i:
      mods.append({})
    mods.append(layers_lib.dump_linear(leaves, f"linear_{i}"))
  return {"modules": tuple(mods)}


def _resnet_blocks(module) -> List[Tuple[int, int, bool]]:
  leaves = loader_lib.own_leaves(module)
  blocks = sorted({(int(r.split("/")[0].rsplit("_", 1)[1]),
                    int(r.split("/~/")[1].rsplit("_", 1)[1]))
                   for r, _ in leaves if r.startswith("block_group_")})
  return [(g, b, (f"block_group_{g}/~/block_{b}/~/shortcut_conv", "w")
           in leaves) for g, b in blocks]


def _resnet_layers(module, leaves) -> int:
  return len({r.split("/~/")[2] for r, _ in leaves
              if r.startswith("block_group_0/~/block_0/~/conv_")})


def _load_resnet(module, sd, path):
  ld = loader_lib.Loader(module, sd, path)
  if getattr(module, "resnet_v2", False):
    raise ValueError("load_state_dict: PAX has no ResNet v2; build the "
                     "pax_haiku net with resnet_v2=False.")
  layers_lib.load_linear(ld, "initial_conv", "initial_conv")
  layers_lib.load_batch_norm(ld, "initial_batchnorm", "initial_batchnorm")
  n_layers = _resnet_layers(module, ld.targets)
  for g, b, proj in _resnet_blocks(module):
    keys = ("block_groups", g, "blocks", b)
    hk = f"block_group_{g}/~/block_{b}/~/"
    for i in range(n_layers):
      layers_lib.load_linear(ld, hk + f"conv_{i}", *keys, "layers", i, 0)
      layers_lib.load_batch_norm(ld, hk + f"batchnorm_{i}", *keys, "layers", i,
                                 1)
    if proj:
      layers_lib.load_linear(ld, hk + "shortcut_conv", *keys, "proj_conv")
      layers_lib.load_batch_norm(ld, hk + "shortcut_batchnorm", *keys,
                                 "proj_batchnorm")
  layers_lib.load_linear(ld, "logits", "logits")
  return ld.done()


def _dump_resnet(module, leaves):
  n_layers = _resnet_layers(module, leaves)
  groups: Dict[int, List[Any]] = {}
  for g, b, proj in _resnet_blocks(module):
    hk = f"block_group_{g}/~/block_{b}/~/"
    block: Dict[str, Any] = {"layers": tuple(
        (layers_lib.dump_linear(leaves, hk + f"conv_{i}"),
         layers_lib.dump_batch_norm(leaves, hk + f"batchnorm_{i}"))
        for i in range(n_layers))}
    if proj:
      block["proj_conv"] = layers_lib.dump_linear(leaves, hk + "shortcut_conv")
      block["proj_batchnorm"] = layers_lib.dump_batch_norm(
          leaves, hk + "shortcut_batchnorm")
    groups.setdefault(g, []).append(block)
  return {"initial_conv": layers_lib.dump_linear(leaves, "initial_conv"),
          "initial_batchnorm": layers_lib.dump_batch_norm(leaves,
                                                          "initial_batchnorm"),
          "block_groups": [{"blocks": groups[g]} for g in sorted(groups)],
          "logits": layers_lib.dump_linear(leaves, "logits")}


def _load_transformer(module, sd, path):
  ld = loader_lib.Loader(module, sd, path)
  ld.ignore("rng_seq")  # PAX's dropout keys; pax_haiku keeps its own.
  for i in range(module.num_layers):
    keys = ("layers", i)
    layers_lib.load_mha(ld, f"layer_{i}_attn", *keys, "attention")
    layers_lib.load_norm(ld, f"layer_{i}_ln_attn", *keys, "attn_layer_norm")
    layers_lib.load_norm(ld, f"layer_{i}_ln_mlp", *keys, "dense_layer_norm")
    layers_lib.load_linear(ld, f"layer_{i}_mlp_in", *keys, "dense_block",
                           "fc1")
    layers_lib.load_linear(ld, f"layer_{i}_mlp_out", *keys, "dense_block",
                           "fc2")
  layers_lib.load_norm(ld, "ln_final", "layer_norm_output")
  return ld.done()


def _dump_transformer(module, leaves):
  layers = []
  for i in range(module.num_layers):
    layers.append({
        "attention": layers_lib.dump_mha(leaves, f"layer_{i}_attn"),
        "attn_layer_norm": layers_lib.dump_norm(leaves, f"layer_{i}_ln_attn"),
        "dense_layer_norm": layers_lib.dump_norm(leaves, f"layer_{i}_ln_mlp"),
        "dense_block": {
            "fc1": layers_lib.dump_linear(leaves, f"layer_{i}_mlp_in"),
            "fc2": layers_lib.dump_linear(leaves, f"layer_{i}_mlp_out")}})
  key = module.__dict__.get(haiku_bridge.RNG_NAME)
  if key is None:
    key = jax.random.PRNGKey(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return {"rng_seq": {"_rng_key": key}, "layers": layers,
          "layer_norm_output": layers_lib.dump_norm(leaves, "ln_final")}


# Registry: class -> (load(module, sd, path) -> module, dump(module, leaves)).
NET_CONVERTERS: List[Tuple[type, Callable[..., Any], Callable[..., Any]]] = [
    (mlp_lib.MLP, _load_mlp, _dump_mlp),
    (resnet_lib.ResNet, _load_resnet, _dump_resnet),
    (transformer_lib.Transformer, _load_transformer, _dump_transformer),
]
