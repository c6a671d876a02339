"""Helpers shared by the Haiku-backed nets."""


def relative_attr(bundle: str, name: str) -> str:
  """Attribute name of a leaf: its Haiku path below the net's top scope.

  `res_net18/~/initial_conv` + `w` -> `initial_conv/w`;
  `transformer_lm/lm_head` + `w` -> `lm_head/w`;
  `transformer_lm` + `positional_embeddings` -> `positional_embeddings`.

  >>> from pax_haiku._src.nets import _common
  >>> _common.relative_attr("res_net18/~/block_group_0/~/block_0/~/conv_0", "w")
  'block_group_0/~/block_0/~/conv_0/w'
  """
  top, _, rest = bundle.partition("/")
  del top
  if rest.startswith("~/"):
    rest = rest[2:]
  return f"{rest}/{name}" if rest else name
