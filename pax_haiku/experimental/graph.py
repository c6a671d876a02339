"""`pax.experimental.graph`: modules built from a graph of nodes.

>>> sorted(pax.experimental.graph.__all__)
['GraphModule', 'InputNode', 'Node', 'build_graph_module']
"""

from pax_haiku._src.graph_module import build_graph_module
from pax_haiku._src.graph_module import GraphModule
from pax_haiku._src.graph_module import InputNode
from pax_haiku._src.graph_module import Node

__all__ = (
    "build_graph_module",
    "GraphModule",
    "InputNode",
    "Node",
)
