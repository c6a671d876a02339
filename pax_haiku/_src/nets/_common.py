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


def call_without_rng(module, *args, **kwargs):
  """Runs a Haiku-backed module's function without touching its RNG key.

  For eval-mode calls of nets whose Haiku function only draws random numbers
  in training mode (dropout): `HaikuModule.__call__` advances the held key on
  every call, even in eval mode, which would force `pax.purecall` for plain
  inference. The function gets `rng=None`, so a function that does need a
  key in eval mode fails with Haiku's missing-RNG error.
  """
  from pax_haiku._src import haiku_bridge  # pylint: disable=g-import-not-at-top
  spec = module._require_initialized()  # pylint: disable=protected-access
  params, state = module.haiku_dicts()
  if spec.pass_training:
    kwargs.setdefault("is_training", module.training)
  transformed = haiku_bridge._transformed(spec.fn)  # pylint: disable=protected-access
  out, _ = transformed.apply(params, state, None, *args, **kwargs)
  return out
