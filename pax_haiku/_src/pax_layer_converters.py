"""PAX <-> pax_haiku weight layouts of single layers.

`load_*(loader, rel, *keys)` reads the PAX layer at `keys` of the loader's
state_dict into the Haiku bundle `rel` of the loader's module;
`dump_*(leaves, rel)` writes the PAX form of bundle `rel`. `LAYER_CONVERTERS`
registers the whole-layer ones by class (see `pax_state_dict`).

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
- MultiHeadAttention: PAX's `{query,key,value,output}_projection` Linears are
  Haiku's `query`, `key`, `value`, `linear`.
- Shapes that differ only by axes of size 1 (BatchNorm's `(1, C, 1, 1)`
  against Haiku's `(1, 1, 1, C)`, a channels-first conv bias) are reshaped.
"""

from typing import Any, Callable, Dict, List, Tuple

import jax.numpy as jnp
import numpy as np

from pax_haiku._src import pax_layer_loader as loader_lib
from pax_haiku._src import pax_state_dict_flat as flat_lib
from pax_haiku._src.nn import attention
from pax_haiku._src.nn import batch_norm
from pax_haiku._src.nn import conv
from pax_haiku._src.nn import embed
from pax_haiku._src.nn import layer_norm
from pax_haiku._src.nn import linear
from pax_haiku._src.nn import recurrent

# Short names for the path helpers that every error message uses.
_join = flat_lib.join
_show = flat_lib.show

# Counter of a loaded, already-updated EMA: large enough that
# `decay ** counter` is exactly 0 in float32 for any decay < 1.
_DEBIASED_COUNTER = 2**30


# ----------------------------------------------------------------------------
# Per-layer conversions. `load_*(loader, prefix, *keys)` reads the PAX layer
# at `keys` into Haiku bundle `prefix`; `dump_*(leaves, prefix)` writes it.
# ----------------------------------------------------------------------------


def _get(leaves: Dict[Tuple[str, str], Any], rel: str, name: str) -> Any:
  return leaves.get((rel, name))


def load_linear(ld: loader_lib.Loader, rel: str, *keys: Any) -> None:
  """A PAX Linear or conv (`weight`, `bias`) into Haiku's `w`, `b`."""
  w, p = ld.take(*keys, "weight")
  ld.put(rel, "w", w, p)
  if ld.expects(rel, "b"):
    b, p = ld.take(*keys, "bias")
    ld.put(rel, "b", b, p)


def dump_linear(leaves, rel: str) -> Dict[str, Any]:
  """Haiku's `w`, `b` of bundle `rel` as PAX's `weight`, `bias`."""
  out = {"weight": _get(leaves, rel, "w")}
  if (rel, "b") in leaves:
    out["bias"] = _get(leaves, rel, "b")
  return out


def load_norm(ld: loader_lib.Loader, rel: str, *keys: Any) -> None:
  """PAX's `scale` / `offset` (those the Haiku layer has)."""
  for name in ("scale", "offset"):
    if ld.expects(rel, name):
      value, p = ld.take(*keys, name)
      ld.put(rel, name, value, p)


def dump_norm(leaves, rel: str) -> Dict[str, Any]:
  """Haiku's `scale` / `offset` of bundle `rel` (those it has)."""
  return {n: _get(leaves, rel, n) for n in ("scale", "offset")
          if (rel, n) in leaves}


def load_batch_norm(ld: loader_lib.Loader, rel: str, *keys: Any) -> None:
  """A PAX BatchNorm, its EMAs made Haiku's debiased ones."""
  load_norm(ld, rel, *keys)
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


def dump_batch_norm(leaves, rel: str) -> Dict[str, Any]:
  """A Haiku BatchNorm in PAX's form (EMA debias flag 1 once updated)."""
  out = dump_norm(leaves, rel)
  for pax_name, hk_name in (("ema_mean", "mean_ema"), ("ema_var", "var_ema")):
    ema = _ema_bundle(leaves, rel, hk_name)
    counter = _get(leaves, ema, "counter")
    out[pax_name] = {
        "averages": _get(leaves, ema, "average"),
        "debias": jnp.asarray(1.0 if int(counter) > 0 else 0.0)}
  return out


def load_mha(ld: loader_lib.Loader, rel: str, *keys: Any) -> None:
  """PAX's `*_projection` Linears into Haiku's attention Linears."""
  for pax_name, hk_name in _MHA_NAMES:
    load_linear(ld, _join(rel, hk_name) if rel else hk_name, *keys, pax_name)


def dump_mha(leaves, rel: str) -> Dict[str, Any]:
  """Haiku's attention Linears as PAX's `*_projection` Linears."""
  return {pax_name: dump_linear(leaves,
                                _join(rel, hk_name) if rel else hk_name)
          for pax_name, hk_name in _MHA_NAMES}


_MHA_NAMES = (("query_projection", "query"), ("key_projection", "key"),
              ("value_projection", "value"), ("output_projection", "linear"))


def _forget_slice(n: int) -> slice:
  return slice(2 * n, 3 * n)  # Gates i, g, f, o (PAX and Haiku alike).


# -- whole modules -------------------------------------------------------------


def _load_simple(fn):
  def load(module, sd, path):
    ld = loader_lib.Loader(module, sd, path)
    fn(ld, "")
    return ld.done()
  return load


def _load_embed(ld: loader_lib.Loader, rel: str) -> None:
  w, p = ld.take("weight")
  ld.put(rel, "embeddings", w, p)


def _load_lstm(ld: loader_lib.Loader, rel: str) -> None:
  n = ld.module.hidden_dim
  w, pw = ld.take("fc", "weight")
  b, pb = ld.take("fc", "bias")
  b = np.array(b, dtype=np.float32 if np.asarray(b).dtype == np.float64
               else np.asarray(b).dtype)
  if b.shape == (4 * n,):
    b[_forget_slice(n)] -= 1.0  # Haiku adds 1, PAX's default adds 0.
  ld.put("linear", "w", w, pw)
  ld.put("linear", "b", b, pb)


def _load_gru(ld: loader_lib.Loader, rel: str) -> None:
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


def _load_vanilla_rnn(ld: loader_lib.Loader, rel: str) -> None:
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
  return dump_linear(leaves, "")


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


# Registry: class -> (load(module, sd, path) -> module, dump(module, leaves)).
LAYER_CONVERTERS: List[Tuple[type, Callable[..., Any], Callable[..., Any]]] = [
    (linear.Linear, _load_simple(load_linear),
     lambda m, lv: dump_linear(lv, "")),
    (conv._ConvBase, _load_simple(load_linear),  # pylint: disable=protected-access
     lambda m, lv: _dump_conv(lv)),
    (batch_norm._BatchNorm, _load_simple(load_batch_norm),  # pylint: disable=protected-access
     lambda m, lv: dump_batch_norm(lv, "")),
    (layer_norm.LayerNorm, _load_simple(load_norm),
     lambda m, lv: dump_norm(lv, "")),
    (layer_norm.GroupNorm, _load_simple(load_norm),
     lambda m, lv: dump_norm(lv, "")),
    (embed.Embed, _load_simple(_load_embed),
     lambda m, lv: {"weight": _get(lv, "", "embeddings")}),
    (recurrent.LSTM, _load_simple(_load_lstm), _dump_lstm),
    (recurrent.GRU, _load_simple(_load_gru), _dump_gru),
    (recurrent.VanillaRNN, _load_simple(_load_vanilla_rnn), _dump_vanilla_rnn),
    (attention.MultiHeadAttention, _load_simple(load_mha),
     lambda m, lv: dump_mha(lv, "")),
]
