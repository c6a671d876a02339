"""`pax.experimental.graph`: modules built from a graph of nodes.

A forward function is traced once on sample inputs: every `node >> f`
records `f` (a module, or a function wrapped in `pax.Lambda`) and computes
its value at once, `a & b` makes a tuple node and `a | b` an argument-list
node. `GraphModule(inputs, output)` then keeps the modules in order and a
static description of how values flow between them.
"""

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from pax_haiku._src import module as module_lib
from pax_haiku._src import pure as pure_lib
from pax_haiku._src.nn import lambda_module


def identity(x: Any) -> Any:
  return x


def _as_module(fx: Any) -> module_lib.Module:
  if isinstance(fx, module_lib.Module):
    return fx
  if not callable(fx):
    raise TypeError(f"A graph node needs a module or a function, got "
                    f"{type(fx).__name__}.")
  return lambda_module.Lambda(fx)


class Node:
  """A value computed from parent nodes by a module (or function).

  >>> x = pax.experimental.graph.InputNode(jnp.ones((2, 3)))
  >>> y = x >> pax.Linear(3, 4) >> jax.nn.relu
  >>> y.shape, y.parents[0].parents == (x,)
  ((2, 4), True)

  Attributes:
    parents: the nodes whose values are the inputs.
    fx: the module applied to them (functions become `pax.Lambda`).
    value: the value computed on the sample inputs.
  """

  def __init__(self, parents: Tuple["Node", ...], fx: Any, value: Any):
    self.parents = tuple(parents)
    self.fx = _as_module(fx)
    self.value = value

  def __rshift__(self, fn: Any) -> "Node":
    """`node >> f`: a node computing `f(node.value)`."""
    return Node((self,), fn, pure_lib.pure(_as_module(fn))(self.value))

  def __and__(self, other: "Node") -> "CatNode":
    """`a & b`: a node whose value is the tuple `(a.value, b.value)`."""
    _check_node(other, "&")
    if isinstance(other, CatNode):
      return CatNode((self,) + other.parents, identity,
                     (self.value,) + tuple(other.value))
    return CatNode((self, other), identity, (self.value, other.value))

  def __or__(self, other: "Node") -> "ArgsNode":
    """`(a | b) >> f`: a node computing `f(a.value, b.value)`."""
    _check_node(other, "|")
    if isinstance(other, ArgsNode):
      return ArgsNode((self,) + other.parents, identity,
                      (self.value,) + tuple(other.value))
    return ArgsNode((self, other), identity, (self.value, other.value))

  def binary_ops(self, fn: Callable[[Any, Any], Any],
                 other: "Node") -> "Node":
    """A node computing `fn(self.value, other.value)`.

    >>> x = pax.experimental.graph.InputNode(jnp.array(1))
    >>> int(x.binary_ops(jnp.subtract, x).value)
    0
    """
    _check_node(other, "binary_ops")

    @functools.wraps(fn)
    def pair_fn(xs):
      return fn(xs[0], xs[1])

    return Node((self, other), pair_fn, fn(self.value, other.value))

  @property
  def shape(self) -> Optional[Tuple[int, ...]]:
    """The shape of the value (None without one)."""
    return getattr(self.value, "shape", None)

  @property
  def dtype(self) -> Any:
    """The dtype of the value (None without one)."""
    return getattr(self.value, "dtype", None)

  def __eq__(self, other: Any) -> bool:
    return self is other

  def __hash__(self) -> int:
    return id(self)

  def __copy__(self):
    raise TypeError("Graph nodes cannot be copied: a node is identified by "
                    "the object itself.")

  def __deepcopy__(self, memo):
    raise TypeError("Graph nodes cannot be copied: a node is identified by "
                    "the object itself.")

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(fx={self.fx!r}, "
            f"parents={len(self.parents)}, shape={self.shape})")


def _check_node(other: Any, op: str) -> None:
  if not isinstance(other, Node):
    raise TypeError(f"`{op}` combines graph nodes, got "
                    f"{type(other).__name__}.")


class InputNode(Node):
  """An input of a graph: a node holding a sample input value.

  >>> x = pax.experimental.graph.InputNode(jnp.empty((3, 4)))
  >>> x.shape, x.parents
  ((3, 4), ())
  """

  def __init__(self, value: Any, fx: Any = identity):
    super().__init__((), fx, value)


class CatNode(Node):
  """A node whose value is the tuple of its parents' values."""

  def __rshift__(self, fn: Any) -> Node:
    return Node(self.parents, fn, pure_lib.pure(_as_module(fn))(self.value))

  def __and__(self, other: Node) -> "CatNode":
    _check_node(other, "&")
    if isinstance(other, CatNode):
      return CatNode(self.parents + other.parents, identity,
                     tuple(self.value) + tuple(other.value))
    return CatNode(self.parents + (other,), identity,
                   tuple(self.value) + (other.value,))


class ArgsNode(Node):
  """A node whose parents' values are the arguments of the next function."""

  def __rshift__(self, fn: Any) -> Node:
    module = _as_module(fn)

    def call(mod, xs):
      return mod(*xs)

    value = pure_lib.pure(call)(module, self.value)
    return Node((self,), _StarCall(module), value)

  def __or__(self, other: Node) -> "ArgsNode":
    _check_node(other, "|")
    if isinstance(other, ArgsNode):
      return ArgsNode(self.parents + other.parents, identity,
                      tuple(self.value) + tuple(other.value))
    return ArgsNode(self.parents + (other,), identity,
                    tuple(self.value) + (other.value,))


class _StarCall(module_lib.Module):
  """Calls its module with a tuple's items as arguments."""

  def __init__(self, module: module_lib.Module):
    super().__init__()
    self.module = module

  def __call__(self, xs):
    return self.module(*xs)

  def __repr__(self) -> str:
    return repr(self.module)


class _Step:
  """Static description of one node of a GraphModule (no values held)."""
  __slots__ = ("parents", "kind", "index")

  def __init__(self, parents: Tuple[int, ...], kind: str, index: int):
    self.parents = parents
    self.kind = kind  # "input" or "module".
    self.index = index

  def __eq__(self, other: Any) -> bool:
    return (type(other) is _Step and other.parents == self.parents and
            other.kind == self.kind and other.index == self.index)

  def __hash__(self) -> int:
    return hash((self.parents, self.kind, self.index))

  def __repr__(self) -> str:
    return f"_Step({self.kind}[{self.index}] <- {self.parents})"


class GraphModule(module_lib.Module):
  """A module running a graph of nodes recorded by `build_graph_module`.

  >>> G = pax.experimental.graph
  >>> x = G.InputNode(jnp.ones((1, 2)))
  >>> y = x >> pax.Linear(2, 3) >> jax.nn.relu
  >>> net = G.GraphModule((x,), y)
  >>> net(jnp.ones((5, 2))).shape
  (5, 3)

  Attributes:
    modules: the graph's modules (functions as `pax.Lambda`), in the order
      a run reaches them.
  """

  def __init__(self, inputs: Tuple[Node, ...], output: Node,
               name: Optional[str] = None):
    super().__init__(name=name)
    inputs = tuple(inputs)
    for node in inputs + (output,):
      _check_node(node, "GraphModule")
    modules: List[module_lib.Module] = []
    steps: List[_Step] = []
    index: Dict[int, int] = {}

    def visit(node: Node) -> int:
      if id(node) in index:
        return index[id(node)]
      if any(node is i for i in inputs):
        step = _Step((), "input", [id(i) for i in inputs].index(id(node)))
      elif not node.parents:
        raise ValueError(
            f"The graph reaches {node!r}, which is not one of the inputs.\n"
            "Fix: pass every InputNode the output depends on to GraphModule.")
      else:
        parents = tuple(visit(p) for p in node.parents)
        step = _Step(parents, "module", len(modules))
        modules.append(node.fx)
      steps.append(step)
      index[id(node)] = len(steps) - 1
      return index[id(node)]

    visit(output)
    self.modules = modules
    self.steps = tuple(steps)

  def __call__(self, *xs: Any) -> Any:
    values: List[Any] = []
    for step in self.steps:
      if step.kind == "input":
        values.append(xs[step.index])
        continue
      args = tuple(values[p] for p in step.parents)
      values.append(self.modules[step.index](
          args[0] if len(args) == 1 else args))
    return values[-1]


def build_graph_module(func: Callable[..., Node]) -> Callable[..., GraphModule]:
  """Builds a GraphModule by running `func` on InputNodes of sample inputs.

  >>> def residual(x):
  ...     y = x >> pax.Linear(x.shape[-1], x.shape[-1]) >> jax.nn.relu
  ...     return (x | y) >> jnp.add
  >>> net = pax.experimental.graph.build_graph_module(residual)(jnp.ones((3, 8)))
  >>> net(jnp.ones((3, 8))).shape
  (3, 8)

  Args:
    func: a function from nodes to a node, using `>>`, `&` and `|`.

  Returns:
    A function from sample inputs to the GraphModule.
  """
  if not callable(func):
    raise TypeError(f"build_graph_module expects a function, got "
                    f"{type(func).__name__}.")

  def builder(*inputs: Any) -> GraphModule:
    nodes = tuple(InputNode(x) for x in inputs)
    output = func(*nodes)
    if not isinstance(output, Node):
      raise TypeError(
          f"build_graph_module: the function must return a graph node, got "
          f"{type(output).__name__}.\nFix: return e.g. `x >> pax.Linear(2, 2)`.")
    return GraphModule(nodes, output)

  return builder
