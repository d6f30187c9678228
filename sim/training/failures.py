"""A checkpointed job under random failures, simulated: what ``sim.theory.reliability`` states in closed form.

The job does ``interval_s`` of work, then writes a checkpoint (``checkpoint_s``), until ``work_s`` is done.
Failures come as a Poisson process of rate ``1 / mtbf_s`` at any moment, restarts included: a failure
loses everything since the last checkpoint and costs a restart of ``restart_s`` before the segment is
tried again. tests/test_training_theory.py holds the mean of many seeded runs to Daly's expected time.
"""

from __future__ import annotations

import numpy as np


def _survive(rng: np.random.Generator, duration_s: float, mtbf_s: float) -> float:
    """Wall time until ``duration_s`` runs without a failure: failed tries plus the one that succeeds."""
    spent = 0.0
    while True:
        failure_at = rng.exponential(mtbf_s)
        if failure_at >= duration_s:
            return spent + duration_s
        spent += failure_at


def simulate_wall_s(rng: np.random.Generator, work_s: float, interval_s: float, checkpoint_s: float,
                    restart_s: float, mtbf_s: float) -> float:
    """One run's wall time."""
    wall, done = 0.0, 0.0
    while done < work_s:
        segment = min(interval_s, work_s - done)
        while True:
            failure_at = rng.exponential(mtbf_s)
            if failure_at >= segment + checkpoint_s:
                wall += segment + checkpoint_s
                break
            wall += failure_at + _survive(rng, restart_s, mtbf_s)
        done += segment
    return wall


def simulate_mean_wall_s(rng: np.random.Generator, runs: int, work_s: float, interval_s: float, checkpoint_s: float,
                         restart_s: float, mtbf_s: float) -> tuple[float, float]:
    """Mean wall time of ``runs`` independent runs and its standard error."""
    walls = np.array([simulate_wall_s(rng, work_s, interval_s, checkpoint_s, restart_s, mtbf_s) for _ in range(runs)])
    return float(walls.mean()), float(walls.std(ddof=1) / np.sqrt(runs))
