"""Implementation of pax_haiku; import the public API from `pax_haiku`."""
