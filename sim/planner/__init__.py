"""Capacity planning: the cheapest configuration that meets an SLO, and its report."""
