"""Architectures of the built-in models and their analytic parameter, FLOP and byte counts (no torch)."""
