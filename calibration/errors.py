"""Calibration's errors for people (the CLI prints them as one line and exits 2)."""

from __future__ import annotations

from sim.errors import CapsimError


class CalibrationError(CapsimError):
    """A calibration that cannot run as asked: unknown model, bad option, missing device."""
