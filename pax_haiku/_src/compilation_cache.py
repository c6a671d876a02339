"""`pax.enable_compilation_cache()`: JAX's persistent compilation cache.

Building a pax module compiles a few small programs (its parameter
initializers, and a forward pass for values such as BatchNorm statistics);
a training step compiles a large one. With the persistent cache on, a later
process that compiles the same program loads it from disk instead.
"""

import os
from typing import Optional

import jax
from jax.experimental.compilation_cache import compilation_cache as _cc

ENV_DIR = "PAX_HAIKU_CACHE_DIR"


def default_cache_dir() -> str:
  """`$PAX_HAIKU_CACHE_DIR`, else `$XDG_CACHE_HOME/pax_haiku/jax`, else
  `~/.cache/pax_haiku/jax`."""
  if os.environ.get(ENV_DIR):
    return os.environ[ENV_DIR]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "pax_haiku", "jax")


def enable_compilation_cache(path: Optional[str] = None) -> str:
  """Turns on JAX's persistent compilation cache; returns its directory.

  Every compiled program is cached, however small or fast to compile (JAX's
  defaults skip programs compiled in under a second, which are exactly the
  ones module construction compiles). The same as::

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

  >>> import tempfile
  >>> path = pax.enable_compilation_cache(tempfile.mkdtemp())
  >>> jax.config.jax_compilation_cache_dir == path
  True
  >>> pax.disable_compilation_cache()

  Args:
    path: the cache directory (created if missing); default
      `default_cache_dir()`.

  Returns:
    The absolute path of the cache directory.

  Raises:
    ValueError: the directory cannot be created or written.
  """
  if path is not None and not isinstance(path, (str, os.PathLike)):
    raise TypeError(
        "pax.enable_compilation_cache: path must be a directory path, got "
        f"{type(path).__name__}.\nFix: `pax.enable_compilation_cache()` "
        "(default directory) or `pax.enable_compilation_cache('/tmp/jax')`.")
  path = os.path.abspath(os.path.expanduser(
      os.fspath(path) if path is not None else default_cache_dir()))
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise PermissionError(f"{path} is not writable")
  except OSError as e:
    raise ValueError(
        f"Cannot use {path} as the compilation cache: {e}.\nFix: pass a "
        "writable directory, `pax.enable_compilation_cache('/tmp/jax')`, or "
        f"set ${ENV_DIR}.") from e
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # JAX decides once, at its first compilation, whether a cache is in use.
  _cc.reset_cache()
  return path


def disable_compilation_cache() -> None:
  """Turns the persistent compilation cache off again (JAX's default)."""
  jax.config.update("jax_compilation_cache_dir", None)
  _cc.reset_cache()
