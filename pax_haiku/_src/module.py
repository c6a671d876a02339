"""`pax.Module`: PAX-style stateful modules that are cheap JAX pytrees.

A module is an object you build, call, inspect and train. Attributes holding
arrays or submodules are its pytree data; other attributes are static
configuration (`module_layout` says how a module is a pytree node,
`module_base` how it is built, changed and copied).
Outside `pax.pure` a module is immutable; its Haiku view is `params` and
`state`.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import jax

from pax_haiku._src import context
from pax_haiku._src import functional
from pax_haiku._src import haiku_naming as naming
from pax_haiku._src import module_base as base
from pax_haiku._src import module_layout
from pax_haiku._src import pure as pure_lib
from pax_haiku._src import summary as summary_lib

T = TypeVar("T", bound="Module")

# Re-exported for the layers and tools that import only this module.
is_module = module_layout.is_module
iter_modules = base.iter_modules


def parameters_method(*trainable_attributes: str,
                      submodules: bool = True) -> Callable[[T], T]:
  """Returns a `parameters` method that keeps only the named trainable leaves.

  >>> class Linear(pax.Module):
  ...     parameters = pax.parameters_method("weight")
  ...     def __init__(self):
  ...         self.weight = jnp.array(1.0)
  >>> fc = Linear()
  >>> fc == fc.parameters()
  True

  Args:
    *trainable_attributes: names of trainable attributes (a name may also be a
      space separated list of names).
    submodules: include the submodules' trainable parameters if true.

  Returns:
    A method that returns a copy of the module with only trainable leaves
    (other leaves become `None`).
  """
  names = []
  for item in trainable_attributes:
    if not isinstance(item, str):
      raise TypeError(
          "parameters_method expects attribute names (str), got "
          f"{item!r}. Fix: pax.parameters_method('weight', 'bias').")
    names.extend(item.split())

  def parameters(self: T) -> T:
    """A copy holding only the trainable leaves (others become `None`)."""
    return functional.select_parameters(self)

  parameters._pax_trainable = tuple(names)
  parameters._pax_submodules = bool(submodules)
  return parameters


class Module(base.BaseModule):
  """Base class of pax modules: stateful objects that are JAX pytrees.

  Attributes holding arrays or submodules are pytree data; other attributes
  are static. Outside `pax.pure` a module is immutable.

  >>> class Counter(pax.Module):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.count = jnp.array(0)
  ...     def __call__(self, x):
  ...         self.count = self.count + 1
  ...         return x
  >>> counter, _ = pax.purecall(Counter(), 1.0)
  >>> int(counter.count), type(counter) is Counter
  (1, True)
  """
  __slots__ = ()

  _pax_trainable: Tuple[str, ...] = ()
  _pax_param_submodules: bool = True
  _training: bool
  _name: Optional[str]
  _frozen: bool

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    params = cls.__dict__.get("parameters")
    if params is not None:
      if not hasattr(params, "_pax_trainable"):
        raise TypeError(
            f"`{cls.__name__}.parameters` must be created with "
            "`pax.parameters_method(...)` so pax knows which attributes are "
            "trainable.\nFix: `parameters = pax.parameters_method('weight', "
            "'bias')` in the class body.")
      cls._pax_trainable = params._pax_trainable
      cls._pax_param_submodules = params._pax_submodules

  def __repr__(self) -> str:
    info = self._repr_info()
    name = f"({self._name}) " if self._name else ""
    cls = type(self).__name__
    if not info:
      return f"{name}{cls}"
    items = ", ".join(f"{k}={v}" for k, v in info.items() if v is not None)
    return f"{name}{cls}({items})"

  def _repr_info(self) -> Dict[str, Any]:
    return {}

  # -- properties ------------------------------------------------------------

  @property
  def name(self) -> Optional[str]:
    """The name given to the constructor (`name=`), or None."""
    return self._name

  @property
  def training(self) -> bool:
    """True in training mode (the default), False after `eval()`."""
    return self._training

  @property
  def params(self) -> Dict[str, Dict[str, Any]]:
    """The parameters of the whole subtree, as a Haiku params dict.

    Haiku's form, `{module_path: {name: array}}`, as `hk.transform`'s `init`
    returns it.
    """
    return naming.haiku_dicts(self)[0]

  @property
  def state(self) -> Dict[str, Dict[str, Any]]:
    """The non-trainable state of the whole subtree, as a Haiku state dict.

    Haiku's form, `{module_path: {name: array}}`, as
    `hk.transform_with_state`'s `init` returns it.
    """
    return naming.haiku_dicts(self)[1]

  # -- parameters ------------------------------------------------------------

  def parameters(self: T) -> T:
    """A copy holding only trainable leaves (other leaves become `None`)."""
    return functional.select_parameters(self)

  def update_parameters(self: T, params: Any) -> T:
    """Returns a copy with trainable leaves taken from `params`.

    Args:
      params: the output of `parameters()` (or a module of the same
        structure), or a Haiku params mapping `{module_path: {name: array}}`.
    """
    return functional.update_parameters(self, params=params)

  def update_state(self: T, state: Any) -> T:
    """Returns a copy with state leaves taken from a Haiku state mapping."""
    return naming.update_from_haiku(self, state, role=naming.STATE)

  # -- functional updates -----------------------------------------------------

  def copy(self: T) -> T:
    """A shallow copy: new module objects, the same array leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(self)
    return treedef.unflatten(leaves)

  def replace(self: T, **kwargs: Any) -> T:
    """Returns a copy with some attributes replaced.

    >>> net = pax.Linear(2, 2)
    >>> net = net.replace(bias=jnp.zeros((2,)))
    >>> net.bias.shape
    (2,)
    """
    module = self.copy()
    with context.allow_mutation([module]):
      for name, value in kwargs.items():
        if name not in module_layout.fields(module):
          public = [k for k in module_layout.fields(module) if not k.startswith("_")]
          raise ValueError(
              f"`{type(module).__name__}` has no attribute `{name}`; "
              f"replace only changes existing attributes "
              f"({', '.join(public)}).\nFix: add new "
              "attributes inside a `pax.pure` function instead.")
        setattr(module, name, value)
    base.check_no_shared_modules(module)
    return module

  def replace_node(self: T, node: Any, value: Any) -> T:
    """Returns a copy where the leaf/submodule `node` is replaced by `value`.

    >>> net = pax.Sequential(pax.Linear(2, 2), jax.nn.relu)
    >>> net = net.replace_node(net[0].weight, jnp.zeros((2, 3)))
    >>> net[0].weight.shape
    (2, 3)
    """
    leaves, treedef = jax.tree_util.tree_flatten(
        self, is_leaf=lambda x: x is node)
    count = sum(1 for x in leaves if x is node)
    if count != 1:
      raise ValueError(
          f"replace_node: the node must appear exactly once in the module, "
          f"found it {count} times.\nFix: pass an array or submodule taken "
          "from this module, e.g. `net.replace_node(net[0].weight, w)`.")
    return treedef.unflatten([value if x is node else x for x in leaves])

  def submodules(self) -> List["Module"]:
    """The direct submodules, in attribute order."""
    return base.submodules(self)

  def apply(self: T, fn: Callable[["Module"], "Module"]) -> T:
    """Applies `fn` to every submodule (bottom-up), then to the module itself.

    >>> net = pax.Sequential(pax.Linear(1, 1), jax.nn.relu)
    >>> net = net.apply(lambda m: m.replace(_training=False))
    >>> net[0].training
    False
    """
    return functional.map_modules(self, fn)

  def train(self: T) -> T:
    """A copy of the whole tree in training mode."""
    return functional.enable_train_mode(self)

  def eval(self: T) -> T:
    """A copy of the whole tree in evaluation mode."""
    return functional.enable_eval_mode(self)

  # -- PAX 0.5.10 methods -----------------------------------------------------

  @property
  def pytree_attributes(self) -> Tuple[str, ...]:
    """Names of the attributes holding arrays or modules (pytree data).

    >>> pax.Linear(2, 2).pytree_attributes
    ('bias', 'weight')
    """
    return module_layout.data_fields(self)

  @property
  def _pax_mp_policy(self) -> Any:
    """The module's mixed precision policy (PAX's attribute, absent if none)."""
    policy = self._mp_policy()
    if policy is None:
      raise AttributeError("_pax_mp_policy")
    return policy

  def _mp_policy(self) -> Any:
    """The policy of `pax.apply_mp_policy`, or None (`pax.get_mp_policy`)."""
    return module_layout.fields(self).get(base.MP_POLICY)

  def set_attribute(self: T, name: str, value: Any) -> T:
    """Returns a copy with attribute `name` set (added if new) to `value`.

    >>> fc = pax.Linear(2, 2).set_attribute("extra", pax.Linear(2, 1))
    >>> fc.extra
    Linear(in_dim=2, out_dim=1, with_bias=True)

    Args:
      name: the attribute name (a str).
      value: the new value; arrays and modules become pytree data.

    Returns:
      A new module; `self` is unchanged.
    """
    if not isinstance(name, str):
      raise TypeError(f"set_attribute expects an attribute name (str), got "
                      f"{type(name).__name__}.")
    module = self.copy()
    with context.allow_mutation([module]):
      setattr(module, name, value)
    base.check_instance_fields(module)
    return module

  def scan_bugs(self: T) -> T:
    """Checks the whole tree as PAX does and returns `self`.

    Raises ValueError for a module or an array reachable twice, or a class
    attribute holding arrays or modules.

    >>> net = pax.Sequential(pax.Linear(2, 2))
    >>> net.scan_bugs() is net
    True
    """
    for module in base.check_no_shared_modules(self):
      base.check_instance_fields(module)
    return self

  def apply_submodules(self: T, func: Callable[["Module"], "Module"]) -> T:
    """Applies `func` (with `apply`) to every submodule, not to `self`.

    >>> net = pax.Sequential(pax.Linear(1, 1)).eval()
    >>> net = net.apply_submodules(lambda m: m.train())
    >>> net.training, net[0].training
    (False, True)
    """
    if not callable(func):
      raise TypeError(f"apply_submodules expects a function, got "
                      f"{type(func).__name__}.")
    copy = self.copy()
    new = {}
    for name in module_layout.data_fields(copy):
      new[name] = jax.tree_util.tree_map(
          lambda x: x.apply(func) if isinstance(x, Module) else x,
          module_layout.fields(copy)[name], is_leaf=module_layout.is_module)
    if new:
      module_layout.set_fields(copy, **new)
    return copy

  def state_dict(self) -> Dict[str, Any]:
    """PAX's state_dict: `{attribute: array | nested dict}` in PAX's layout.

    Layers use the attribute names and shapes of the PAX layer of the same
    kind, so a PAX program's saved state_dict loads with `load_state_dict`.

    >>> sd = pax.Linear(2, 3).state_dict()
    >>> sorted(sd), sd["weight"].shape
    (['bias', 'weight'], (2, 3))
    """
    from pax_haiku._src import pax_state_dict  # pylint: disable=import-outside-toplevel
    return pax_state_dict.state_dict(self)

  def load_state_dict(self: T, state_dict: Dict[str, Any]) -> T:
    """Returns a copy holding the weights of a (PAX) state_dict.

    >>> a, b = pax.Linear(2, 3), pax.Linear(2, 3)
    >>> bool((b.load_state_dict(a.state_dict()).weight == a.weight).all())
    True
    """
    from pax_haiku._src import pax_state_dict  # pylint: disable=import-outside-toplevel
    return pax_state_dict.load_state_dict(self, state_dict)

  def __mod__(self, args: Any) -> Tuple["Module", Any]:
    """`module % x` is `pax.module_and_value(module)(x)` (a tuple: *args).

    >>> bn, y = pax.BatchNorm1D(3) % jnp.ones((2, 4, 3))
    >>> y.shape
    (2, 4, 3)
    """
    if isinstance(args, tuple):
      return pure_lib.module_and_value(self)(*args)
    return pure_lib.module_and_value(self)(args)

  def summary(self, return_list: bool = False) -> Union[str, List[str]]:
    """The tree of submodules with parameter counts and shapes.

    `return_list=True` returns the lines (PAX's argument).

    >>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 4))
    >>> print(net.summary())
    Sequential  # 25 params
    ├── Linear(in_dim=2, out_dim=3, with_bias=True)  # 9 params: bias (3,), weight (2, 3)
    ├── Lambda(relu)
    └── Linear(in_dim=3, out_dim=4, with_bias=True)  # 16 params: bias (4,), weight (3, 4)
    Total: 25 parameters, 0 state values
    """
    text = summary_lib.summary(self)
    return text.splitlines() if return_list else text

