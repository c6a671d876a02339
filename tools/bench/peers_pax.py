"""PAX (the `pax3` package, https://github.com/NTT123/pax): availability.

PAX 0.5.x reads JAX internals that newer JAX releases removed
(`jax.core.thread_local_state`), so it cannot run in the same process as
pax_haiku on the pinned JAX; the benchmark then skips it with the reason
printed by `unavailable_reason()`. Nothing else here touches PAX.
"""

from typing import Optional

import jax

INSTALL = "pip install pax3 (needs an older JAX than this repository pins)"


def _probe() -> Optional[str]:
  try:
    import pax  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return f"pax3 is not installed ({e}); `{INSTALL}`"
  except Exception as e:  # pylint: disable=broad-except
    return (f"PAX (pax3) does not import with jax {jax.__version__}: "
            f"{type(e).__name__}: {e}")
  if not (hasattr(pax, "nn") and hasattr(pax, "pure")):
    return (f"the importable `pax` module ({getattr(pax, '__file__', '?')}) "
            "is not PAX (pax3)")
  try:
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    net = pax.nn.Linear(2, 2)
    net(jnp.ones((1, 2)))
  except Exception as e:  # pylint: disable=broad-except
    return (f"PAX (pax3 {getattr(pax, '__version__', '?')}) does not run on "
            f"jax {jax.__version__}: {type(e).__name__}: {e}")
  return ("PAX (pax3) runs on this JAX, but the benchmark has no PAX models: "
          "PAX needs an older JAX than pax_haiku pins, so its rows are not "
          "written yet")


def unavailable_reason() -> Optional[str]:
  """Why the PAX rows cannot run here (always a reason, see module doc)."""
  return _probe()


def version() -> Optional[str]:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version("pax3")
  except Exception:  # pylint: disable=broad-except
    return None


IMPLS = []
