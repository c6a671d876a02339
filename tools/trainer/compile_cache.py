"""The training binary's persistent compilation cache (on by default).

A rerun or a resumed run of `tools/train.py` loads the compiled training
step, evaluation step and parameter initializers from disk instead of
compiling them again. The cache lives in the user's cache directory
(`$PAX_HAIKU_CACHE_DIR`, else `$XDG_CACHE_HOME/pax_haiku/jax`, else
`~/.cache/pax_haiku/jax`; a directory set for JAX with
`JAX_COMPILATION_CACHE_DIR` is used as is); `--config.compilation_cache=False`
turns it off.
"""

from typing import Any, Optional

from absl import logging
import jax

import pax_haiku as pax

KEY = "compilation_cache"


def setup(config: Any) -> Optional[str]:
  """Turns the cache on unless `config.compilation_cache` is False.

  Args:
    config: the training config.

  Returns:
    The cache directory, or None if the cache is off.

  Raises:
    ValueError: `compilation_cache` is not a bool. A cache directory that
      cannot be used is a warning, and the run goes on without the cache.
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
    # A directory the user gave JAX already (JAX_COMPILATION_CACHE_DIR) wins.
    return pax.enable_compilation_cache(
        jax.config.jax_compilation_cache_dir or None)
  except ValueError as e:
    # A cache only saves time: an unusable one (a read-only home in a
    # sandbox, say) must not stop the run.
    logging.warning("%s\nTraining goes on without the persistent "
                    "compilation cache (`--config.%s=False` skips it).",
                    e, KEY)
    return None
