"""Haiku-backed nets: MLP, ResNets and a Transformer language model."""
