"""Raw Haiku + optax and pax_haiku training steps, and the `Impl` interface.

An `Impl` is one framework (in one calling style) training one workload. It
builds its model from the workload's framework-neutral weights, and offers:

- `compile_sample()`: builds a *fresh* jitted train step (a new Python
  function, so no JAX cache is shared with earlier builds), runs it once on
  the initial state and returns the seconds taken (trace + lower + XLA
  compile + one step). The step and its state are kept for the next calls.
- `eager_sample(n)`: `n` steps called from a Python loop, in the framework's
  natural calling style, then waits for the outputs; seconds per step.
- `hlo_text()`: the optimized HLO of the step (`lower(...).compile()`, cached
  by JAX after the first call, so it costs no second compile).
- `scan_compile_sample(steps)` / `scan_sample()` / `scan_hlo_text()`: the
  same for `steps` training steps fused in one jitted `jax.lax.scan`.
- `flatten_case()`, `args_flatten_case()`, `params_case()`: Python-only
  functions timed with `timeit` (see `run_all`).
"""

import gc
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

import pax_haiku as pax
from tools.bench import dataclass_floor
from tools.bench import measure
from tools.bench import workloads as wl_lib

Carry = Any


def stablehlo_op_count(text: str) -> int:
  """Operations in a StableHLO module's text (`Lowered.as_text()`)."""
  return len(re.findall(r"\b(?:stablehlo|chlo|mhlo|func|sdy)\.[a-z_]+",
                        text))


def round_trip(tree: Any) -> Any:
  """pytree flatten + unflatten (what `jax.jit` does to its arguments)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef.unflatten(leaves)


class Impl:
  """One framework training one workload (see the module docstring).

  Subclasses set `name`/`family` and implement the `_`-prefixed methods.

  Attributes:
    name: row label in the report, e.g. `equinox (filter_jit)`.
    family: `haiku`, `pax_haiku`, `equinox`, `flax_nnx` or `pax`.
    measures_scan: whether this row runs the fused-scan measurement (one
      calling style per framework does: a single call of a many-step scan
      does not depend on how the Python wrapper flattens its arguments).
  """

  name = ""
  family = ""
  measures_scan = True

  def __init__(self, workload: wl_lib.Workload, weights: wl_lib.Weights,
               x: jax.Array, y: jax.Array):
    self.workload = workload
    self.weights = weights
    self.x = x
    self.y = y
    self.tx = wl_lib.make_optimizer()
    self.step = None
    self.carry = None
    self.loss0: Optional[float] = None
    self.scan = None
    self.scan_carry = None
    self.xs = self.ys = None

  # -- subclass interface ---------------------------------------------------

  def _build_step(self) -> Callable[..., Any]:
    raise NotImplementedError

  def _initial_carry(self) -> Carry:
    raise NotImplementedError

  def _loop(self, step: Callable[..., Any], carry: Carry,
            n: int) -> Tuple[Carry, jax.Array]:
    """`n` steps called from a Python loop.

    The default suits a jitted `step(*carry, x, y) -> (*carry, loss)` (raw
    Haiku, pax_haiku, Equinox); frameworks whose step has another calling
    convention override it.
    """
    x, y = self.x, self.y
    for _ in range(n):
      *carry, loss = step(*carry, x, y)
    return tuple(carry), loss

  def _lower(self, step: Callable[..., Any], carry: Carry) -> Any:
    return step.lower(*carry, self.x, self.y)

  def _build_scan(self) -> Callable[..., Any]:
    raise NotImplementedError

  def _scan_call(self, scan: Callable[..., Any], carry: Carry, xs: Any,
                 ys: Any) -> Tuple[Carry, jax.Array]:
    return scan(carry, xs, ys)

  def _scan_lower(self, scan: Callable[..., Any], carry: Carry, xs: Any,
                  ys: Any) -> Any:
    return scan.lower(carry, xs, ys)

  def flatten_case(self) -> Optional[Callable[[], Any]]:
    """flatten + unflatten of the model (None: not applicable)."""
    return None

  def flatten_floor_case(self, layout_field: bool = True
                         ) -> Optional[Callable[[], Any]]:
    """flatten + unflatten of the model's node structure without the
    framework's code (see `dataclass_floor`; None: not measured).

    Args:
      layout_field: keep one meta field per node, standing for a pax node's
        layout (False: the floor with no aux data at all).
    """
    return None

  def args_flatten_case(self) -> Optional[Callable[[], Any]]:
    """flatten + unflatten of everything the train step receives."""
    return None

  def params_case(self) -> Optional[Callable[[], Any]]:
    """Taking the trainable parameters out of the model and putting new
    ones back (pax: `parameters()` + `update_parameters()`)."""
    return None

  # -- measurements ---------------------------------------------------------

  def warm_trace(self) -> None:
    """Traces and lowers a fresh step without compiling it.

    Fills JAX's caches of the inner jitted functions every framework uses
    (`jax.nn.relu`, `optax` internals, ...) so that no framework's measured
    compile pays for tracing them first, at a fraction of a compile's cost.
    """
    self._lower(self._build_step(), self._initial_carry())

  def compile_sample(self) -> float:
    """Seconds of the first call of a freshly built jitted step."""
    carry = self._initial_carry()
    start = time.perf_counter()
    step = self._build_step()
    carry, loss = self._loop(step, carry, 1)
    measure.block((carry, loss))
    seconds = time.perf_counter() - start
    self.step, self.carry = step, carry
    self.loss0 = float(loss)
    return seconds

  def eager_sample(self, n: int) -> float:
    """Seconds per step over `n` steps called from a Python loop.

    Also adds the Python garbage collections (per generation) that ran
    during the sample to `self.gc_collections` (and the steps to
    `self.gc_steps`): a step that allocates many GC-tracked objects (e.g.
    pytree nodes rebuilt from the jitted step's outputs) triggers
    collections, and a full one walks every live Python object.
    """
    before = [g["collections"] for g in gc.get_stats()]
    start = measure.sample_clock()
    carry, loss = self._loop(self.step, self.carry, n)
    measure.block((carry, loss))
    seconds = measure.sample_clock() - start
    after = [g["collections"] for g in gc.get_stats()]
    self.gc_collections = [c + a - b for c, a, b in zip(
        getattr(self, "gc_collections", [0] * len(after)), after, before)]
    self.gc_steps = getattr(self, "gc_steps", 0) + n
    self.carry = carry
    return seconds / n

  def hlo_text(self) -> str:
    return measure.compiled_text(self._lower(self.step, self.carry))

  def scan_compile_sample(self, xs: Any, ys: Any) -> float:
    """Seconds of the first call of a freshly built fused scan."""
    self.xs, self.ys = xs, ys
    carry = self._initial_carry()
    start = time.perf_counter()
    scan = self._build_scan()
    carry, losses = self._scan_call(scan, carry, xs, ys)
    measure.block((carry, losses))
    seconds = time.perf_counter() - start
    self.scan, self.scan_carry = scan, carry
    return seconds

  def scan_sample(self) -> float:
    """Seconds per fused step (one call of the whole scan)."""
    start = measure.sample_clock()
    carry, losses = self._scan_call(self.scan, self.scan_carry, self.xs,
                                    self.ys)
    measure.block((carry, losses))
    seconds = measure.sample_clock() - start
    self.scan_carry = carry
    return seconds / self.xs.shape[0]

  def scan_hlo_text(self) -> str:
    return measure.compiled_text(
        self._scan_lower(self.scan, self.scan_carry, self.xs, self.ys))


# ----------------------------------------------------------------------------
# Raw Haiku + optax.
# ----------------------------------------------------------------------------


class HaikuImpl(Impl):
  """Hand-written `hk.transform_with_state` + optax step, `jax.jit`-ed.

  `step(params, state, opt_state, x, y) -> (params, state, opt_state, loss)`
  with `jax.value_and_grad` of `transformed.apply` and `optax.adam`.
  """

  name = "haiku"
  family = "haiku"

  def __init__(self, workload, weights, x, y, params=None, state=None):
    super().__init__(workload, weights, x, y)
    self.transformed = hk.transform_with_state(workload.haiku_forward())
    self.params, self.state = params, state
    self.opt_state = self.tx.init(params)

  def _step_body(self):
    transformed, tx = self.transformed, self.tx

    def step(params, state, opt_state, x, y):

      def loss_fn(p, s):
        logits, s = transformed.apply(p, s, None, x)
        return wl_lib.cross_entropy(logits, y), s

      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, state)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return params, state, opt_state, loss

    return step

  def _build_step(self):
    return jax.jit(self._step_body())

  def _initial_carry(self):
    return (self.params, self.state, self.opt_state)

  def _build_scan(self):
    body = self._step_body()

    def scan(carry, xs, ys):

      def one(c, batch):
        *c, loss = body(*c, *batch)
        return tuple(c), loss

      return jax.lax.scan(one, carry, (xs, ys))

    return jax.jit(scan)

  def stablehlo_op_count(self) -> int:
    """Operations of the step's StableHLO (before XLA optimizes it)."""
    return stablehlo_op_count(self._lower(self.step, self.carry).as_text())

  def step_in_leaf_order(self, param_leaves: List[jax.Array]
                         ) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
    """This same step with its params in another order: `(step, args)`.

    The control experiment for a difference between pax_haiku and raw
    Haiku: the params (and the params-shaped Adam moments) enter and leave
    the jitted function as lists in the order of `param_leaves` (arrays
    identical to this impl's initial params, e.g. a pax model's leaves)
    instead of the sorted-key order in which JAX flattens Haiku's params
    dict. Same computation, other argument order.

    Args:
      param_leaves: every params array, each exactly once, in the new order.

    Returns:
      A jitted `step(params, state, opt_state, x, y) -> (params, state,
      opt_state, loss)` taking list-valued params, and its initial args.
    """
    leaves, treedef = jax.tree_util.tree_flatten(self.params)
    index = {id(leaf): i for i, leaf in enumerate(leaves)}
    perm = [index.get(id(leaf), -1) for leaf in param_leaves]
    if sorted(perm) != list(range(len(leaves))):
      raise ValueError("param_leaves must be a permutation of the params")
    body = self._step_body()

    def to_list(tree):
      flat = treedef.flatten_up_to(tree)
      return [flat[i] for i in perm]

    def to_tree(items):
      flat = [None] * len(items)
      for i, item in zip(perm, items):
        flat[i] = item
      return treedef.unflatten(flat)

    def is_params(node):
      return jax.tree_util.tree_structure(node) == treedef

    def lists(tree):  # params-shaped subtrees -> lists in the new order
      return jax.tree_util.tree_map(
          lambda n: to_list(n) if is_params(n) else n, tree,
          is_leaf=is_params)

    def trees(tree):  # the reverse
      return jax.tree_util.tree_map(
          lambda n: to_tree(n) if isinstance(n, list) else n, tree,
          is_leaf=lambda n: isinstance(n, list))

    def step(params, state, opt_state, x, y):
      params, state, opt_state, loss = body(
          to_tree(params), state, trees(opt_state), x, y)
      return to_list(params), state, lists(opt_state), loss

    args = (to_list(self.params), self.state, lists(self.tx.init(self.params)),
            self.x, self.y)
    return jax.jit(step), args

  def hlo_text_in_leaf_order(self, param_leaves: List[jax.Array]) -> str:
    """Optimized HLO of `step_in_leaf_order(param_leaves)`."""
    step, args = self.step_in_leaf_order(param_leaves)
    return measure.compiled_text(step.lower(*args))

  def flatten_case(self):
    params = self.params
    return lambda: round_trip(params)

  def args_flatten_case(self):
    args = (self.params, self.state, self.opt_state, self.x, self.y)
    return lambda: round_trip(args)

  def params_case(self):
    return None  # The params are already a separate dict.


# ----------------------------------------------------------------------------
# pax_haiku.
# ----------------------------------------------------------------------------


class LSTMClassifier(pax.Module):
  """W4 in pax_haiku: `pax.LSTM` unrolled with `pax.scan`, linear head."""

  def __init__(self, input_dim: int, hidden_dim: int, classes: int):
    super().__init__()
    self.lstm = pax.LSTM(input_dim, hidden_dim)
    self.head = pax.Linear(hidden_dim, classes)

  def __call__(self, xs: jax.Array) -> jax.Array:
    state = self.lstm.initial_state(xs.shape[0])
    _, hs = pax.scan(self.lstm, state, xs, time_major=False)
    return self.head(hs[:, -1])


def replace_leaves(module: pax.Module,
                   pairs: List[Tuple[jax.Array, jax.Array]]) -> pax.Module:
  """A copy of `module` where each leaf `old` (by identity) becomes `new`."""
  mapping = {id(old): new for old, new in pairs}
  if len(mapping) != len(pairs):
    raise ValueError("replace_leaves: a leaf is listed twice")
  leaves, treedef = jax.tree_util.tree_flatten(module)
  out = []
  for leaf in leaves:
    new = mapping.pop(id(leaf), leaf)
    if jnp.shape(new) != jnp.shape(leaf):
      raise ValueError(f"shape {jnp.shape(new)} != {jnp.shape(leaf)}")
    out.append(new)
  if mapping:
    raise ValueError(f"replace_leaves: {len(mapping)} leaves not found")
  return treedef.unflatten(out)


def build_pax_model(workload: wl_lib.Workload, weights: wl_lib.Weights,
                    haiku_params: Any, variant: str = "sequential"
                    ) -> pax.Module:
  """The pax_haiku model of `workload`, holding `weights`.

  Args:
    workload: the workload.
    weights: framework-neutral weights.
    haiku_params: the raw Haiku params (W3 loads them by name).
    variant: for MLPs, `sequential` (`pax.Sequential` of `pax.Linear` and
      `jax.nn.relu`, the PAX idiom) or `nets_mlp` (`pax.nets.MLP`).

  Returns:
    The model.
  """
  pax.seed_rng_key(0)
  c = workload.config
  if workload.kind == "mlp":
    sizes = c["sizes"]
    if variant == "nets_mlp":
      net = pax.nets.MLP(sizes[0], list(sizes[1:]))
      return net.update_parameters({
          f"mlp/~/linear_{i}": {"w": w, "b": b}
          for i, (w, b) in enumerate(weights["layers"])})
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      if i:
        layers.append(jax.nn.relu)
      layers.append(pax.Linear(d_in, d_out))
    net = pax.Sequential(*layers)
    linears = [l for l in net.layers if isinstance(l, pax.Linear)]
    pairs = []
    for layer, (w, b) in zip(linears, weights["layers"]):
      pairs += [(layer.weight, w), (layer.bias, b)]
    return replace_leaves(net, pairs)
  if workload.kind == "transformer":
    net = pax.nets.TransformerLM(c["vocab"], c["dim"], c["heads"],
                                 c["layers"], c["seq"])
    return net.update_parameters(haiku_params)
  if workload.kind == "lstm":
    net = LSTMClassifier(c["inputs"], c["hidden"], c["classes"])
    (w, b), (hw, hb) = weights["lstm"], weights["head"]
    return replace_leaves(net, [(net.lstm.weight, w), (net.lstm.bias, b),
                                (net.head.weight, hw), (net.head.bias, hb)])
  raise ValueError(workload.kind)


def pax_loss_fn(model, x, y):
  """`loss_fn(model, x, y) -> (loss, (aux, model))` for build_update_fn."""
  loss = wl_lib.cross_entropy(model(x), y)
  return loss, (loss, model)


class PaxHaikuImpl(Impl):
  """`jax.jit(pax.build_update_fn(loss_fn))`:
  `model, optimizer, loss = step(model, optimizer, x, y)`; the fused scan
  is `jax.lax.scan` of `build_update_fn(..., scan_mode=True)`."""

  name = "pax_haiku"
  family = "pax_haiku"

  def __init__(self, workload, weights, x, y, haiku_params=None,
               variant="sequential"):
    super().__init__(workload, weights, x, y)
    self.model = build_pax_model(workload, weights, haiku_params, variant)
    self.optimizer = pax.from_optax(self.tx)(self.model.parameters())
    if variant != "sequential":
      self.name = f"pax_haiku [{variant}]"

  def _build_step(self):
    # build_update_fn makes new closures: nothing is shared with earlier
    # builds through JAX's caches.
    return jax.jit(pax.build_update_fn(pax_loss_fn))

  def _initial_carry(self):
    return (self.model, self.optimizer)

  def _build_scan(self):

    def batch_loss(model, batch):
      return pax_loss_fn(model, *batch)

    update = pax.build_update_fn(batch_loss, scan_mode=True)
    return jax.jit(lambda carry, xs, ys: jax.lax.scan(update, carry,
                                                      (xs, ys)))

  def flatten_case(self):
    model = self.model
    return lambda: round_trip(model)

  def flatten_floor_case(self, layout_field=True):
    bare = dataclass_floor.bare_mirror(self.model, layout_field)
    return lambda: round_trip(bare)

  def args_flatten_case(self):
    args = (self.model, self.optimizer, self.x, self.y)
    return lambda: round_trip(args)

  def params_case(self):
    model = self.model
    grads = jax.tree_util.tree_map(jnp.ones_like, model.parameters())
    return lambda: (model.parameters(), model.update_parameters(grads))


def haiku_and_pax_impls(workload: wl_lib.Workload, weights: wl_lib.Weights,
                        params: Any, state: Any, x: Any, y: Any, *,
                        pax_haiku: bool = True, pax_variants: bool = True
                        ) -> List[Impl]:
  """Raw Haiku's row, then pax_haiku's (if `pax_haiku`), and on MLP
  workloads `pax.nets.MLP`'s beside `pax.Sequential`'s (if `pax_variants`)."""
  impls: List[Impl] = [HaikuImpl(workload, weights, x, y, params=params,
                                 state=state)]
  if pax_haiku:
    impls.append(PaxHaikuImpl(workload, weights, x, y, haiku_params=params))
    if pax_variants and workload.kind == "mlp":
      impls.append(PaxHaikuImpl(workload, weights, x, y, haiku_params=params,
                                variant="nets_mlp"))
  return impls
