"""Shared fixtures: write small trace CSVs and scenario YAMLs into the test's tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


@pytest.fixture(autouse=True)
def _main_module_restored():
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it there. A process pool started later
    (forkserver or spawn) re-runs the parent's ``__main__`` file in each worker, and that file is a
    page that only runs inside AppTest: every worker would die. Put the real one back after each test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


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
