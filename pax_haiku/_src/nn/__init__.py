"""Haiku-backed layers with PAX signatures."""
