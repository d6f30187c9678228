"""Errors meant for people: each names the key, the value and what is allowed."""

from __future__ import annotations


class CapsimError(Exception):
    """Base of every error capsim reports to a user as one clear line (CLI exit code 2)."""


class ScenarioError(CapsimError):
    """A scenario (YAML or built in code) that cannot be simulated as written."""


class ProfileError(CapsimError):
    """A profile file that is missing, malformed or unusable for the requested batch sizes."""


class TraceError(CapsimError):
    """An arrival trace that is missing, empty, unsorted or holds non-finite times."""


SHOWN_CHARS = 60


def shown(value: object) -> str:
    """A value's repr cut to a readable length: an error never echoes an unbounded value."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def bad_value(key: str, value: object, allowed: str) -> str:
    """One message in the house format: ``key = value: allowed``."""
    return f"{key} = {shown(value)}: {allowed}"
