"""The training binary's persistent compilation cache (on by default).

A rerun or a resumed run of `tools/train.py` loads the compiled training
step, evaluation step and parameter initializers from disk instead of
compiling them again. The cache lives in the user's cache directory
(`$PAX_HAIKU_CACHE_DIR`, else `$XDG_CACHE_HOME/pax_haiku/jax`, else
`~/.cache/pax_haiku/jax`); `--config.compilation_cache=False` turns it off.
"""

from typing import Any, Optional

import pax_haiku as pax

KEY = "compilation_cache"


def setup(config: Any) -> Optional[str]:
  """Turns the cache on unless `config.compilation_cache` is False.

  Args:
    config: the training config.

  Returns:
    The cache directory, or None if the cache is off.

  Raises:
    ValueError: `compilation_cache` is not a bool, or the directory cannot be
      used.
  """
  enabled = config.get(KEY, True)
  if not isinstance(enabled, bool):
    raise ValueError(
        f"`{KEY}` must be True or False, got {enabled!r}.\nFix: "
        f"`--config.{KEY}=False` to turn the persistent compilation cache "
        "off (it is on by default).")
  if not enabled:
    return None
  try:
    return pax.enable_compilation_cache()
  except ValueError as e:
    raise ValueError(
        f"{e}\nOr run without the cache: `--config.{KEY}=False`.") from e
