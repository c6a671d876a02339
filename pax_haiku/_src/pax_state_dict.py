"""Weights saved by PAX (`pax3` 0.5.x) in pax_haiku modules, and the reverse.

PAX saves a model as `module.state_dict()`: a nested dict
`{attribute: array | nested dict}` that mirrors the module's attributes
(tuples and lists of submodules stay tuples and lists; PAX programs pickle it,
e.g. `pickle.dump({"state_dict": net.state_dict()}, f)`). pax_haiku's layers
hold Haiku's parameters instead, so this file converts between the two forms
layer by layer:

- `state_dict(module)`: the PAX form of a pax_haiku module;
- `load_state_dict(module, state_dict)`: a copy of `module` with the weights
  of a PAX state_dict;
- `load_pax_pickle(module, file)`: the same from a PAX pickle file;
- `flatten_state_dict` / `unflatten_state_dict`: the nested form <-> flat
  `{"a/b/0/weight": array}` (what an `.npz` file can hold).

What differs between PAX and Haiku, and how loading bridges it:

- BatchNorm: PAX's moving averages are plain EMAs started from the first
  batch; Haiku's are zero-debiased (`hidden`, `average`, `counter`). Loading
  sets `average` to PAX's average, so eval-mode outputs are identical; for a
  PAX EMA that has seen at least one batch (debias flag 1) `hidden` is the
  average and `counter` is 2**30, so `decay**counter` is 0 and later training
  steps update the averages exactly as PAX would. A PAX EMA that never saw a
  batch gets counter 0: its first update matches PAX, later ones follow
  Haiku's debiasing.
- LSTM: Haiku adds 1 to the forget gate's pre-activation, PAX adds its
  `forget_gate_bias` (0.0 by default, not saved in the state_dict): loading
  subtracts 1 from the forget-gate bias. A PAX LSTM built with another
  `forget_gate_bias=b` needs `b` added to that slice of the bias.
- GRU: PAX's two Linears over `[x, h]` (`xh_zr_fc`, `xh_h_fc`) become Haiku's
  `w_i`, `w_h`, `b` (same gate order z, r, candidate).
- VanillaRNN: PAX's Linear over `[x, h]` becomes Haiku's two Linears. PAX
  applies `tanh`, Haiku `relu`: build the pax_haiku core with
  `pax.VanillaRNN(i, h, activation=jnp.tanh, double_bias=False)` to
  reproduce PAX (with `double_bias=True` the second bias is set to zero).
- Sequential: PAX's `modules` is pax_haiku's `layers`.
- MultiHeadAttention: PAX's `{query,key,value,output}_projection` Linears are
  Haiku's `query`, `key`, `value`, `linear`.
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
- Shapes that differ only by axes of size 1 (BatchNorm's `(1, C, 1, 1)`
  against Haiku's `(1, 1, 1, C)`, a channels-first conv bias) are reshaped.

Any other mismatch (a missing or extra entry, a shape that does not fit) is
a `ValueError` naming the entry's path.
"""

import pickle
from typing import Any, Callable, Dict, IO, List, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from pax_haiku._src import haiku_bridge
from pax_haiku._src import module as module_lib
from pax_haiku._src import module_base
from pax_haiku._src import module_layout
from pax_haiku._src.nets import mlp as mlp_lib
from pax_haiku._src.nets import resnet as resnet_lib
from pax_haiku._src.nets import transformer as transformer_lib
from pax_haiku._src.nn import attention
from pax_haiku._src.nn import batch_norm
from pax_haiku._src.nn import conv
from pax_haiku._src.nn import embed
from pax_haiku._src.nn import layer_norm
from pax_haiku._src.nn import linear
from pax_haiku._src.nn import recurrent
from pax_haiku._src.nn import sequential

PaxStateDict = Dict[str, Any]
_ARRAYS = (np.ndarray, jax.Array, np.generic)
# Counter of a loaded, already-updated EMA: large enough that
# `decay ** counter` is exactly 0 in float32 for any decay < 1.
_DEBIASED_COUNTER = 2**30


def _join(path: str, key: Any) -> str:
  return f"{path}/{key}" if path else str(key)


def _show(path: str) -> str:
  return f"`{path}`" if path else "the top level"


# ----------------------------------------------------------------------------
# Flat <-> nested.
# ----------------------------------------------------------------------------


def flatten_state_dict(state_dict: Mapping[str, Any],
                       sep: str = "/") -> Dict[str, Any]:
  """A nested PAX state_dict as `{path: array}` (None leaves left out).

  >>> from pax_haiku._src import pax_state_dict
  >>> sd = pax_state_dict.state_dict(pax.Sequential(pax.Linear(2, 3)))
  >>> sorted(pax_state_dict.flatten_state_dict(sd))
  ['modules/0/bias', 'modules/0/weight']

  Args:
    state_dict: a nested PAX state_dict.
    sep: joins the keys of a path.

  Returns:
    A flat dict; tuple/list positions become decimal strings.
  """
  out = {}

  def walk(x, path):
    if isinstance(x, Mapping):
      for k, v in x.items():
        walk(v, _join(path, k) if sep == "/" else (
            f"{path}{sep}{k}" if path else str(k)))
    elif isinstance(x, (list, tuple)):
      for i, v in enumerate(x):
        walk(v, f"{path}{sep}{i}" if path else str(i))
    elif x is not None:
      out[path] = x

  walk(state_dict, "")
  return out


def unflatten_state_dict(flat: Mapping[str, Any], sep: str = "/",
                         prefix: str = "") -> PaxStateDict:
  """`{"a/0/weight": array}` -> `{"a": {"0": {"weight": array}}}`.

  `load_state_dict` accepts such dicts where PAX has tuples or lists, so a
  PAX state_dict stored flat (e.g. in an `.npz` file) loads directly:

  >>> from pax_haiku._src import pax_state_dict
  >>> net = pax.Sequential(pax.Linear(2, 3))
  >>> flat = {"modules/0/weight": np.ones((2, 3), np.float32),
  ...         "modules/0/bias": np.zeros((3,), np.float32)}
  >>> net = pax_state_dict.load_state_dict(
  ...     net, pax_state_dict.unflatten_state_dict(flat))
  >>> float(net[0].weight.sum())
  6.0

  Args:
    flat: `{path: array}`.
    sep: the separator of path keys.
    prefix: keep only keys starting with `prefix` + sep, without it (e.g.
      `prefix="state_dict"` for the fixtures' npz files).

  Returns:
    The nested dict.
  """
  out: Dict[str, Any] = {}
  for key, value in flat.items():
    if prefix:
      if not key.startswith(prefix + sep):
        continue
      key = key[len(prefix) + len(sep):]
    parts = key.split(sep)
    node = out
    for part in parts[:-1]:
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ValueError(f"unflatten_state_dict: `{key}` is below a leaf.")
      node = child
    node[parts[-1]] = value
  return out


# ----------------------------------------------------------------------------
# Haiku-backed modules: their own leaves by (relative bundle, name).
# ----------------------------------------------------------------------------


def _relative(bundle: str, top: Optional[str]) -> str:
  if top is None:
    return bundle
  rest = bundle[len(top):].lstrip("/")
  return rest[2:] if rest.startswith("~/") else rest


def _own_leaves(module: haiku_bridge.HaikuModule
                ) -> Dict[Tuple[str, str], str]:
  spec = module._require_initialized()  # pylint: disable=protected-access
  return {(_relative(b, spec.top), n): a for a, b, n, _ in spec.leaves}


def _fit(value: Any, target: Any, path: str, module: Any) -> jax.Array:
  """`value` as `target`'s shape/dtype (reshaping size-1 axes only)."""
  if not isinstance(value, _ARRAYS):
    raise ValueError(
        f"load_state_dict: {_show(path)} should be an array for {module!r}, "
        f"got {type(value).__name__}.\nFix: pass the state_dict of the same "
        "PAX architecture.")
  value = np.asarray(value)
  want = tuple(np.shape(target))
  if value.shape != want:
    squeeze = lambda s: tuple(d for d in s if d != 1)
    if squeeze(value.shape) != squeeze(want):
      raise ValueError(
          f"load_state_dict: {_show(path)} has shape {value.shape}, but "
          f"{module!r} needs {want}.\nLikely cause: the pax_haiku module was "
          "built with other sizes than the PAX one.\nFix: build it with the "
          "PAX model's constructor arguments.")
    value = value.reshape(want)
  return jnp.asarray(value, dtype=jnp.result_type(target))


class _Loader:
  """Reads a PAX dict into one Haiku-backed module, tracking what was used."""

  def __init__(self, module: haiku_bridge.HaikuModule, sd: Any, path: str):
    if not isinstance(sd, Mapping):
      raise ValueError(
          f"load_state_dict: {_show(path)} should be a dict of weights for "
          f"{module!r}, got {type(sd).__name__}.")
    self.module = module
    self.sd = sd
    self.path = path
    self.targets = _own_leaves(module)
    self.new: Dict[str, Any] = {}
    self.used: set = set()
    self.ignored: List[str] = []

  def expects(self, rel: str, name: str) -> bool:
    return (rel, name) in self.targets

  def sub(self, *keys: Any) -> Tuple[Any, str]:
    """The nested entry at `keys` (tuple/list index or str index)."""
    node, path = self.sd, self.path
    for key in keys:
      path = _join(path, key)
      node = _child(node, key, path, self.module)
    return node, path

  def take(self, *keys: Any) -> Tuple[np.ndarray, str]:
    value, path = self.sub(*keys)
    if value is None:
      raise _missing(path, self.module)
    self.used.add(path)
    return value, path

  def ignore(self, *keys: Any) -> None:
    """Accepts (and does not load) whatever the state_dict has at `keys`."""
    path = self.path
    for key in keys:
      path = _join(path, key)
    self.ignored.append(path)

  def put(self, rel: str, name: str, value: Any, path: str) -> None:
    attr = self.targets.get((rel, name))
    if attr is None:
      raise ValueError(
          f"load_state_dict: unexpected entry {_show(path)}: {self.module!r} "
          "has no such weight.\nLikely cause: a layer option differs "
          "(e.g. with_bias, create_scale).\nFix: build the pax_haiku module "
          "with the PAX model's constructor arguments.")
    self.new[attr] = _fit(value, self.module.__dict__[attr], path,
                          self.module)

  def done(self) -> haiku_bridge.HaikuModule:
    for (rel, name), attr in sorted(self.targets.items()):
      if attr not in self.new:
        raise ValueError(
            f"load_state_dict: no PAX entry for {self.module!r}'s weight "
            f"`{attr}` (Haiku `{rel or '.'}/{name}`) under {_show(self.path)}."
            "\nLikely cause: a layer option differs (e.g. with_bias).\nFix: "
            "build the pax_haiku module with the PAX model's constructor "
            "arguments.")
    for path in flatten_state_dict(self.sd):
      full = _join(self.path, path)
      if full not in self.used and not any(
          full == p or full.startswith(p + "/") for p in self.ignored):
        raise ValueError(
            f"load_state_dict: unexpected entry {_show(full)}: "
            f"{self.module!r} has no such weight.\nFix: build the pax_haiku "
            "module with the PAX model's constructor arguments, or drop the "
            "entry from the state_dict.")
    return self.module.replace(**self.new)


def _child(node: Any, key: Any, path: str, module: Any) -> Any:
  if isinstance(node, Mapping):
    if key in node:
      return node[key]
    if str(key) in node:
      return node[str(key)]
    return None
  if isinstance(node, (list, tuple)) and isinstance(key, int):
    return node[key] if key < len(node) else None
  if node is None:
    return None
  raise ValueError(
      f"load_state_dict: {_show(path.rsplit('/', 1)[0])} should be a dict or "
      f"sequence for {module!r}, got {type(node).__name__}.")


def _missing(path: str, module: Any) -> ValueError:
  return ValueError(
      f"load_state_dict: the state_dict has no entry {_show(path)}, which "
      f"{module!r} needs.\nLikely cause: the state_dict comes from another "
      "architecture, or a layer option differs (e.g. with_bias).\nFix: build "
      "the pax_haiku model with the PAX model's constructor arguments.")


# ----------------------------------------------------------------------------
# Per-layer conversions. `_load_*(loader, prefix, *keys)` reads the PAX layer
# at `keys` into Haiku bundle `prefix`; `_dump_*(leaves, prefix)` writes it.
# ----------------------------------------------------------------------------


def _get(leaves: Dict[Tuple[str, str], Any], rel: str, name: str) -> Any:
  return leaves.get((rel, name))


def _load_linear(ld: _Loader, rel: str, *keys: Any) -> None:
  w, p = ld.take(*keys, "weight")
  ld.put(rel, "w", w, p)
  if ld.expects(rel, "b"):
    b, p = ld.take(*keys, "bias")
    ld.put(rel, "b", b, p)


def _dump_linear(leaves, rel: str) -> Dict[str, Any]:
  out = {"weight": _get(leaves, rel, "w")}
  if (rel, "b") in leaves:
    out["bias"] = _get(leaves, rel, "b")
  return out


def _load_norm(ld: _Loader, rel: str, *keys: Any) -> None:
  for name in ("scale", "offset"):
    if ld.expects(rel, name):
      value, p = ld.take(*keys, name)
      ld.put(rel, name, value, p)


def _dump_norm(leaves, rel: str) -> Dict[str, Any]:
  return {n: _get(leaves, rel, n) for n in ("scale", "offset")
          if (rel, n) in leaves}


def _load_batch_norm(ld: _Loader, rel: str, *keys: Any) -> None:
  _load_norm(ld, rel, *keys)
  for pax_name, hk_name in (("ema_mean", "mean_ema"), ("ema_var", "var_ema")):
    ema = _ema_bundle(ld.targets, rel, hk_name)
    avg, p = ld.take(*keys, pax_name, "averages")
    ld.put(ema, "average", avg, p)
    debias, _ = ld.sub(*keys, pax_name, "debias")
    ld.ignore(*keys, pax_name, "debias")
    # PAX's EMA without debiasing (debias=None) is always "updated".
    updated = debias is None or float(np.asarray(debias)) > 0
    ld.put(ema, "hidden", avg if updated else np.zeros_like(np.asarray(avg)),
           p)
    ld.put(ema, "counter",
           np.asarray(_DEBIASED_COUNTER if updated else 0, np.int32), p)


def _ema_bundle(leaves, rel: str, hk_name: str) -> str:
  for cand in (_join(rel, "~/" + hk_name) if rel else hk_name,
               _join(rel, hk_name)):
    if (cand, "average") in leaves:
      return cand
  raise KeyError(hk_name)


def _dump_batch_norm(leaves, rel: str) -> Dict[str, Any]:
  out = _dump_norm(leaves, rel)
  for pax_name, hk_name in (("ema_mean", "mean_ema"), ("ema_var", "var_ema")):
    ema = _ema_bundle(leaves, rel, hk_name)
    counter = _get(leaves, ema, "counter")
    out[pax_name] = {
        "averages": _get(leaves, ema, "average"),
        "debias": jnp.asarray(1.0 if int(counter) > 0 else 0.0)}
  return out


def _load_mha(ld: _Loader, rel: str, *keys: Any) -> None:
  for pax_name, hk_name in _MHA_NAMES:
    _load_linear(ld, _join(rel, hk_name) if rel else hk_name, *keys, pax_name)


def _dump_mha(leaves, rel: str) -> Dict[str, Any]:
  return {pax_name: _dump_linear(leaves,
                                 _join(rel, hk_name) if rel else hk_name)
          for pax_name, hk_name in _MHA_NAMES}


_MHA_NAMES = (("query_projection", "query"), ("key_projection", "key"),
              ("value_projection", "value"), ("output_projection", "linear"))


def _forget_slice(n: int) -> slice:
  return slice(2 * n, 3 * n)  # Gates i, g, f, o (PAX and Haiku alike).


# -- whole modules -------------------------------------------------------------


def _load_simple(fn):
  def load(module, sd, path):
    ld = _Loader(module, sd, path)
    fn(ld, "")
    return ld.done()
  return load


def _load_embed(ld: _Loader, rel: str) -> None:
  w, p = ld.take("weight")
  ld.put(rel, "embeddings", w, p)


def _load_lstm(ld: _Loader, rel: str) -> None:
  n = ld.module.hidden_dim
  w, pw = ld.take("fc", "weight")
  b, pb = ld.take("fc", "bias")
  b = np.array(b, dtype=np.float32 if np.asarray(b).dtype == np.float64
               else np.asarray(b).dtype)
  if b.shape == (4 * n,):
    b[_forget_slice(n)] -= 1.0  # Haiku adds 1, PAX's default adds 0.
  ld.put("linear", "w", w, pw)
  ld.put("linear", "b", b, pb)


def _load_gru(ld: _Loader, rel: str) -> None:
  d = ld.module.input_dim
  w_zr, p = ld.take("xh_zr_fc", "weight")
  b_zr, pb = ld.take("xh_zr_fc", "bias")
  w_a, p2 = ld.take("xh_h_fc", "weight")
  b_a, pb2 = ld.take("xh_h_fc", "bias")
  w_zr, w_a = np.asarray(w_zr), np.asarray(w_a)
  if w_zr.shape[0] != w_a.shape[0] or w_zr.ndim != 2 or w_a.ndim != 2:
    raise ValueError(f"load_state_dict: {_show(p)} and {_show(p2)} do not "
                     f"form a GRU for {ld.module!r}.")
  ld.put("", "w_i", np.concatenate([w_zr[:d], w_a[:d]], axis=1), p)
  ld.put("", "w_h", np.concatenate([w_zr[d:], w_a[d:]], axis=1), p2)
  ld.put("", "b", np.concatenate([np.asarray(b_zr), np.asarray(b_a)]), pb)


def _load_vanilla_rnn(ld: _Loader, rel: str) -> None:
  d = ld.module.input_dim
  w, p = ld.take("fc", "weight")
  b, pb = ld.take("fc", "bias")
  w = np.asarray(w)
  ld.put("linear", "w", w[:d], p)
  ld.put("linear_1", "w", w[d:], p)
  ld.put("linear", "b", b, pb)
  if ld.expects("linear_1", "b"):  # double_bias=True: PAX has one bias.
    ld.put("linear_1", "b", np.zeros_like(np.asarray(b)), pb)


def _dump_conv(leaves):
  return _dump_linear(leaves, "")


def _dump_lstm(module, leaves):
  n = module.hidden_dim
  b = np.array(_get(leaves, "linear", "b"))
  b[_forget_slice(n)] += 1.0
  return {"fc": {"weight": _get(leaves, "linear", "w"),
                 "bias": jnp.asarray(b)}}


def _dump_gru(module, leaves):
  n = module.hidden_dim
  w_i, w_h, b = (np.asarray(_get(leaves, "", k)) for k in ("w_i", "w_h", "b"))
  w = np.concatenate([w_i, w_h], axis=0)
  return {"xh_zr_fc": {"weight": jnp.asarray(w[:, :2 * n]),
                       "bias": jnp.asarray(b[:2 * n])},
          "xh_h_fc": {"weight": jnp.asarray(w[:, 2 * n:]),
                      "bias": jnp.asarray(b[2 * n:])}}


def _dump_vanilla_rnn(module, leaves):
  w = jnp.concatenate([_get(leaves, "linear", "w"),
                       _get(leaves, "linear_1", "w")], axis=0)
  b = _get(leaves, "linear", "b")
  if ("linear_1", "b") in leaves:
    b = b + _get(leaves, "linear_1", "b")
  return {"fc": {"weight": w, "bias": b}}


# -- nets ------------------------------------------------------------------------


def _load_mlp(module, sd, path):
  ld = _Loader(module, sd, path)
  n = len(module.output_sizes)
  seq, seq_path = ld.sub("modules")
  if seq is None:
    raise _missing(_join(path, "modules"), module)
  # Linears at the even positions of PAX's Sequential(Linear, act, ...).
  linears = _module_entries(seq)
  if len(linears) != n:
    raise ValueError(
        f"load_state_dict: {_show(seq_path)} holds {len(linears)} layers "
        f"with weights, {module!r} has {n} Linear layers.\nFix: build "
        "pax.nets.MLP(input_dim, [out sizes of the PAX Linears]).")
  for i, key in enumerate(linears):
    _load_linear(ld, f"linear_{i}", "modules", key)
  return ld.done()


def _module_entries(seq: Any) -> List[Any]:
  """Keys/positions of a PAX Sequential's entries that hold weights."""
  if isinstance(seq, Mapping):
    keys = sorted(seq, key=lambda k: int(k) if str(k).isdigit() else k)
    return [k for k in keys if flatten_state_dict({"x": seq[k]})]
  return [i for i, v in enumerate(seq) if flatten_state_dict({"x": v})]


def _dump_mlp(module, leaves):
  mods: List[Any] = []
  for i in range(len(module.output_sizes)):
    if i:
      mods.append({})
    mods.append(_dump_linear(leaves, f"linear_{i}"))
  return {"modules": tuple(mods)}


def _resnet_blocks(module) -> List[Tuple[int, int, bool]]:
  leaves = _own_leaves(module)
  blocks = sorted({(int(r.split("/")[0].rsplit("_", 1)[1]),
                    int(r.split("/~/")[1].rsplit("_", 1)[1]))
                   for r, _ in leaves if r.startswith("block_group_")})
  return [(g, b, (f"block_group_{g}/~/block_{b}/~/shortcut_conv", "w")
           in leaves) for g, b in blocks]


def _resnet_layers(module, leaves) -> int:
  return len({r.split("/~/")[2] for r, _ in leaves
              if r.startswith("block_group_0/~/block_0/~/conv_")})


def _load_resnet(module, sd, path):
  ld = _Loader(module, sd, path)
  if getattr(module, "resnet_v2", False):
    raise ValueError("load_state_dict: PAX has no ResNet v2; build the "
                     "pax_haiku net with resnet_v2=False.")
  _load_linear(ld, "initial_conv", "initial_conv")
  _load_batch_norm(ld, "initial_batchnorm", "initial_batchnorm")
  n_layers = _resnet_layers(module, ld.targets)
  for g, b, proj in _resnet_blocks(module):
    keys = ("block_groups", g, "blocks", b)
    hk = f"block_group_{g}/~/block_{b}/~/"
    for i in range(n_layers):
      _load_linear(ld, hk + f"conv_{i}", *keys, "layers", i, 0)
      _load_batch_norm(ld, hk + f"batchnorm_{i}", *keys, "layers", i, 1)
    if proj:
      _load_linear(ld, hk + "shortcut_conv", *keys, "proj_conv")
      _load_batch_norm(ld, hk + "shortcut_batchnorm", *keys, "proj_batchnorm")
  _load_linear(ld, "logits", "logits")
  return ld.done()


def _dump_resnet(module, leaves):
  n_layers = _resnet_layers(module, leaves)
  groups: Dict[int, List[Any]] = {}
  for g, b, proj in _resnet_blocks(module):
    hk = f"block_group_{g}/~/block_{b}/~/"
    block: Dict[str, Any] = {"layers": tuple(
        (_dump_linear(leaves, hk + f"conv_{i}"),
         _dump_batch_norm(leaves, hk + f"batchnorm_{i}"))
        for i in range(n_layers))}
    if proj:
      block["proj_conv"] = _dump_linear(leaves, hk + "shortcut_conv")
      block["proj_batchnorm"] = _dump_batch_norm(leaves,
                                                 hk + "shortcut_batchnorm")
    groups.setdefault(g, []).append(block)
  return {"initial_conv": _dump_linear(leaves, "initial_conv"),
          "initial_batchnorm": _dump_batch_norm(leaves, "initial_batchnorm"),
          "block_groups": [{"blocks": groups[g]} for g in sorted(groups)],
          "logits": _dump_linear(leaves, "logits")}


def _load_transformer(module, sd, path):
  ld = _Loader(module, sd, path)
  ld.ignore("rng_seq")  # PAX's dropout keys; pax_haiku keeps its own.
  for i in range(module.num_layers):
    keys = ("layers", i)
    _load_mha(ld, f"layer_{i}_attn", *keys, "attention")
    _load_norm(ld, f"layer_{i}_ln_attn", *keys, "attn_layer_norm")
    _load_norm(ld, f"layer_{i}_ln_mlp", *keys, "dense_layer_norm")
    _load_linear(ld, f"layer_{i}_mlp_in", *keys, "dense_block", "fc1")
    _load_linear(ld, f"layer_{i}_mlp_out", *keys, "dense_block", "fc2")
  _load_norm(ld, "ln_final", "layer_norm_output")
  return ld.done()


def _dump_transformer(module, leaves):
  layers = []
  for i in range(module.num_layers):
    layers.append({
        "attention": _dump_mha(leaves, f"layer_{i}_attn"),
        "attn_layer_norm": _dump_norm(leaves, f"layer_{i}_ln_attn"),
        "dense_layer_norm": _dump_norm(leaves, f"layer_{i}_ln_mlp"),
        "dense_block": {"fc1": _dump_linear(leaves, f"layer_{i}_mlp_in"),
                        "fc2": _dump_linear(leaves, f"layer_{i}_mlp_out")}})
  key = module.__dict__.get(haiku_bridge.RNG_NAME)
  if key is None:
    key = jax.random.PRNGKey(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return {"rng_seq": {"_rng_key": key}, "layers": layers,
          "layer_norm_output": _dump_norm(leaves, "ln_final")}


# Registry: class -> (load(module, sd, path) -> module, dump(module, leaves)).
_CONVERTERS: List[Tuple[type, Callable[..., Any], Callable[..., Any]]] = [
    (linear.Linear, _load_simple(_load_linear),
     lambda m, lv: _dump_linear(lv, "")),
    (conv._ConvBase, _load_simple(_load_linear),  # pylint: disable=protected-access
     lambda m, lv: _dump_conv(lv)),
    (batch_norm._BatchNorm, _load_simple(_load_batch_norm),  # pylint: disable=protected-access
     lambda m, lv: _dump_batch_norm(lv, "")),
    (layer_norm.LayerNorm, _load_simple(_load_norm),
     lambda m, lv: _dump_norm(lv, "")),
    (layer_norm.GroupNorm, _load_simple(_load_norm),
     lambda m, lv: _dump_norm(lv, "")),
    (embed.Embed, _load_simple(_load_embed),
     lambda m, lv: {"weight": _get(lv, "", "embeddings")}),
    (recurrent.LSTM, _load_simple(_load_lstm), _dump_lstm),
    (recurrent.GRU, _load_simple(_load_gru), _dump_gru),
    (recurrent.VanillaRNN, _load_simple(_load_vanilla_rnn), _dump_vanilla_rnn),
    (attention.MultiHeadAttention, _load_simple(_load_mha),
     lambda m, lv: _dump_mha(lv, "")),
    (mlp_lib.MLP, _load_mlp, _dump_mlp),
    (resnet_lib.ResNet, _load_resnet, _dump_resnet),
    (transformer_lib.Transformer, _load_transformer, _dump_transformer),
]


def _converter(module: Any):
  for cls, load, dump in _CONVERTERS:
    if isinstance(module, cls):
      return load, dump
  return None


def _field_name(module: Any, name: str) -> str:
  """pax_haiku attribute -> PAX attribute (`layers` -> `modules`)."""
  if isinstance(module, sequential.Sequential) and name == "layers":
    return "modules"
  return name


# ----------------------------------------------------------------------------
# Public functions.
# ----------------------------------------------------------------------------


def state_dict(module: module_lib.Module) -> PaxStateDict:
  """PAX's `module.state_dict()` form of a pax_haiku module.

  A nested dict `{attribute: array | dict}` in PAX's layout (attribute names,
  shapes and conventions of the PAX layer of the same kind), e.g. for a
  Sequential of Linears:

  >>> from pax_haiku._src import pax_state_dict
  >>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
  >>> sd = pax_state_dict.state_dict(net)
  >>> [sorted(m) for m in sd["modules"]]
  [['bias', 'weight'], [], ['bias', 'weight']]

  Args:
    module: a pax_haiku module.

  Returns:
    The state_dict; `load_state_dict` reads it back.
  """
  module_base.require_module("state_dict", module)
  return _dump(module)


def _dump(module: Any) -> Any:
  conv_ = _converter(module)
  if conv_ is not None:
    leaves = {key: module.__dict__[attr]
              for key, attr in _own_leaves(module).items()}
    return conv_[1](module, leaves)
  if isinstance(module, haiku_bridge.HaikuModule):
    # `pax.from_haiku` modules: Haiku paths as keys.
    return {attr: module.__dict__[attr]
            for attr in _own_leaves(module).values()}
  out = {}
  for name in module_layout.data_fields(module):
    value = getattr(module, name)
    out[_field_name(module, name)] = jax.tree_util.tree_map(
        _dump_leaf, value, is_leaf=module_lib.is_module)
  return out


def _dump_leaf(x: Any) -> Any:
  if module_lib.is_module(x):
    return _dump(x)
  return x if isinstance(x, _ARRAYS) else None  # PAX: other leaves are None.


def load_state_dict(module: module_lib.Module,
                    state_dict: Mapping[str, Any]) -> module_lib.Module:  # pylint: disable=redefined-outer-name
  """Returns a copy of `module` holding the weights of a PAX state_dict.

  `state_dict` is what PAX's `module.state_dict()` returned for the same
  architecture (PAX 0.5.x), nested or as `unflatten_state_dict` of its flat
  form. Layouts are converted where Haiku stores weights differently (see
  the module docstring).

  >>> from pax_haiku._src import pax_state_dict
  >>> pax_linear_sd = {"weight": np.ones((2, 3), np.float32),
  ...                  "bias": np.zeros((3,), np.float32)}
  >>> fc = pax_state_dict.load_state_dict(pax.Linear(2, 3), pax_linear_sd)
  >>> fc(jnp.ones((1, 2))).tolist()
  [[2.0, 2.0, 2.0]]

  Args:
    module: a pax_haiku module of the same architecture as the PAX model.
    state_dict: the PAX state_dict.

  Returns:
    A new module; `module` is unchanged.

  Raises:
    ValueError: naming the entry's path, for a missing or unexpected entry
      or a shape that does not fit.
  """
  module_base.require_module("load_state_dict", module)
  if not isinstance(state_dict, Mapping):
    raise TypeError(
        "load_state_dict expects a PAX state_dict (a dict), got "
        f"{type(state_dict).__name__}.\nFix: pass `checkpoint['state_dict']` "
        "or use `load_pax_pickle(module, path)` for a pickle file.")
  return _load(module, state_dict, "")


def _load(module: Any, sd: Any, path: str) -> Any:
  conv_ = _converter(module)
  if conv_ is not None:
    return conv_[0](module, sd, path)
  if isinstance(module, haiku_bridge.HaikuModule):
    ld = _Loader(module, sd, path)
    for attr in _own_leaves(module).values():
      value, p = ld.take(attr)
      ld.new[attr] = _fit(value, module.__dict__[attr], p, module)
    return ld.done()
  if sd is None:
    sd = {}
  if not isinstance(sd, Mapping):
    raise ValueError(
        f"load_state_dict: {_show(path)} should be a dict for {module!r}, got "
        f"{type(sd).__name__}.")
  fields = module_layout.data_fields(module)
  pax_names = {_field_name(module, n): n for n in fields}
  extra = [k for k in sd if k not in pax_names and
           flatten_state_dict({"x": sd[k]})]
  if extra:
    raise ValueError(
        f"load_state_dict: unexpected entry {_show(_join(path, extra[0]))}: "
        f"{module!r} has no attribute `{extra[0]}` with weights.\nFix: build "
        "the same architecture as the PAX model (attribute names must match "
        "PAX's).")
  new = {}
  for pax_name, name in pax_names.items():
    new[name] = _load_tree(getattr(module, name), sd.get(pax_name),
                           _join(path, pax_name), module)
  return module.replace(**new)


def _load_tree(value: Any, sd: Any, path: str, owner: Any) -> Any:
  if module_lib.is_module(value):
    if sd is None and not jax.tree_util.tree_leaves(value):
      return value
    if sd is None:
      raise _missing(path, value)
    return _load(value, sd, path)
  if isinstance(value, _ARRAYS):
    if sd is None:
      raise _missing(path, owner)
    return _fit(sd, value, path, owner)
  if isinstance(value, (list, tuple)):
    out = [_load_tree(v, _child(sd, i, _join(path, i), owner),
                      _join(path, i), owner) for i, v in enumerate(value)]
    if hasattr(value, "_fields"):
      return type(value)(*out)
    return type(value)(out)
  if isinstance(value, Mapping):
    return type(value)((k, _load_tree(v, _child(sd, k, _join(path, k), owner),
                                      _join(path, k), owner))
                       for k, v in value.items())
  return value


class _PaxUnpickler(pickle.Unpickler):
  """Reads JAX arrays pickled by older JAX versions as NumPy arrays."""

  def find_class(self, module: str, name: str) -> Any:
    if module == "jax._src.array" and name == "_reconstruct_array":
      return _reconstruct_as_numpy
    return super().find_class(module, name)


def _reconstruct_as_numpy(fun, args, arr_state, aval_state):
  del aval_state  # weak_type / named_shape of the pickling JAX version.
  value = fun(*args)
  value.__setstate__(arr_state)
  return value


def read_pax_pickle(file: Union[str, IO[bytes]]) -> Any:
  """Unpickles a PAX checkpoint file, JAX arrays read as NumPy arrays.

  Pickle files run code when loaded: only read files you trust (ones you
  or your colleagues saved).

  Args:
    file: a path or a binary file object.

  Returns:
    The unpickled object (for PAX's examples, a dict holding the
    state_dict under "state_dict").
  """
  if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
    with open(file, "rb") as f:
      return _PaxUnpickler(f).load()
  return _PaxUnpickler(file).load()


def load_pax_pickle(module: module_lib.Module, file: Union[str, IO[bytes]],
                    key: Optional[str] = "state_dict") -> module_lib.Module:
  """Loads a PAX pickle checkpoint (TRUSTED input only) into `module`.

  PAX programs save checkpoints with
  `pickle.dump({"state_dict": net.state_dict(), ...}, f)`; this reads such a
  file (JAX arrays pickled by PAX's JAX version come back as NumPy arrays)
  and hands `checkpoint[key]` to `load_state_dict`. A file holding the
  state_dict itself loads with `key=None`. Pickle files run code when
  loaded: never load one you do not trust.

  >>> from pax_haiku._src import pax_state_dict
  >>> import io, pickle
  >>> f = io.BytesIO(pickle.dumps({"state_dict": {
  ...     "weight": np.ones((2, 3), np.float32),
  ...     "bias": np.zeros((3,), np.float32)}}))
  >>> fc = pax_state_dict.load_pax_pickle(pax.Linear(2, 3), f)
  >>> float(fc.weight.sum())
  6.0

  Args:
    module: a pax_haiku module of the PAX model's architecture.
    file: a path or a binary file object.
    key: the entry holding the state_dict, or None.

  Returns:
    A new module with the checkpoint's weights.
  """
  data = read_pax_pickle(file)
  if key is not None:
    if not isinstance(data, Mapping) or key not in data:
      keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
      raise ValueError(
          f"load_pax_pickle: the checkpoint has no `{key}` entry (it holds "
          f"{keys}).\nFix: pass key= the entry that holds the state_dict, "
          "or key=None if the file is the state_dict itself.")
    data = data[key]
  return load_state_dict(module, data)
