"""Shared fixtures: write small trace CSVs and scenario YAMLs into the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_trace(tmp_path: Path) -> Callable[..., Path]:
    """``write_trace([0.0, 0.001], name="t.csv", column="arrival_s")`` → path of a one-column CSV."""

    def write(times, name: str = "trace.csv", column: str = "arrival_s") -> Path:
        path = tmp_path / name
        path.write_text(column + "\n" + "".join(f"{t!r}\n" if isinstance(t, float) else f"{t}\n" for t in times))
        return path

    return write


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[..., Path]:
    """``write_scenario(dict_or_text, name="s.yaml")`` → path of a YAML file (text is written as is)."""

    def write(content, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
