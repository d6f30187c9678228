"""Request classes (``workload.classes``): which named share of the traffic each request belongs to, and its
scheduling priority. Without classes every request is in one class, ``default``, of priority 0."""

from __future__ import annotations

import numpy as np

DEFAULT = "default"


def class_names(scenario) -> list[str]:
    """The classes' names in the scenario's order (``["default"]`` without classes)."""
    classes = scenario.workload.classes
    return [c.name for c in classes] if classes else [DEFAULT]


def class_priorities(scenario) -> np.ndarray:
    """Each class's priority, in the scenario's order."""
    classes = scenario.workload.classes
    return np.array([c.priority for c in classes] if classes else [0], dtype=np.int64)


def draw_classes(scenario, rng: np.random.Generator, n: int) -> np.ndarray:
    """The class (an index into :func:`class_names`) of each of ``n`` arrivals, drawn by the shares."""
    classes = scenario.workload.classes
    if not classes:
        return np.zeros(n, dtype=np.int64)
    shares = np.array([c.share for c in classes], dtype=float)
    return rng.choice(len(classes), size=n, p=shares / shares.sum()).astype(np.int64)


def strictest_tpot_s(scenario) -> float:
    """The smallest TPOT objective a run must meet: a class's own, or ``llm.slo.tpot_s``."""
    slo, classes = scenario.llm.slo, scenario.workload.classes
    return min(c.objectives(slo)[1] for c in classes) if classes else slo.tpot_s
