"""`pax.utils`: training utilities (filled by the utilities module)."""

__all__ = ()
