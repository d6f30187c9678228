"""Service-time variability as objects with ``sample``, ``mean``, ``variance`` and a readable repr.

Every distribution here is *unit-mean*: the service model scales it by the mean service time of a
batch, so ``cv`` (coefficient of variation) is the one shape parameter users reason about.
Nothing is truncated: tails are exactly those of the named family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Deterministic:
    """Always 1: the service time equals its mean."""

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.ones(size)

    @property
    def mean(self) -> float:
        return 1.0

    @property
    def variance(self) -> float:
        return 0.0


@dataclass(frozen=True)
class Exponential:
    """Unit-mean exponential (cv = 1): the M in M/M/1."""

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(1.0, size)

    @property
    def mean(self) -> float:
        return 1.0

    @property
    def variance(self) -> float:
        return 1.0


@dataclass(frozen=True)
class Lognormal:
    """Unit-mean lognormal with coefficient of variation ``cv``."""

    cv: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        sigma2 = math.log1p(self.cv**2)
        return rng.lognormal(-sigma2 / 2.0, math.sqrt(sigma2), size)

    @property
    def mean(self) -> float:
        return 1.0

    @property
    def variance(self) -> float:
        return self.cv**2


@dataclass(frozen=True)
class Gamma:
    """Unit-mean gamma with coefficient of variation ``cv`` (shape 1/cv²)."""

    cv: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / shape, size)

    @property
    def mean(self) -> float:
        return 1.0

    @property
    def variance(self) -> float:
        return self.cv**2


def unit_distribution(name: str, cv: float | None) -> Deterministic | Exponential | Lognormal | Gamma:
    """The unit-mean distribution a scenario names (validated upstream)."""
    if name == "deterministic":
        return Deterministic()
    if name == "exponential":
        return Exponential()
    if name == "lognormal":
        return Lognormal(cv if cv is not None else 1.0)
    if name == "gamma":
        return Gamma(cv if cv is not None else 1.0)
    raise ValueError(f"unknown distribution {name!r}")


class BufferedStream:
    """Draws variates from a vectorised sampler in blocks; ``next()`` returns one float.

    Drawing one scalar at a time from ``np.random.Generator`` costs about a microsecond; the engine
    draws per batch, so it takes them from blocks instead. The sequence is a pure function of the
    generator's state, so runs stay deterministic.
    """

    __slots__ = ("_draw", "_rng", "_block", "_buf", "_pos")

    def __init__(self, draw, rng: np.random.Generator, block: int = 8192) -> None:
        self._draw = draw
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._draw(self._rng, self._block).tolist()
            self._pos = 0
        value = self._buf[self._pos]
        self._pos += 1
        return value
