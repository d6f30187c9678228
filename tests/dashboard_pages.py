"""The dashboard tests' one way to run a page under Streamlit's AppTest and read what it shows."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def page_script(page: str) -> None:
    """One page as dashboard/app.py's navigation runs it: the ``render`` of its view module."""
    import importlib

    importlib.import_module(f"dashboard.views.{page}").render()


def page_app(page: str, timeout: float = 120, **state) -> AppTest:
    """``dashboard.views.<page>`` run once with ``state`` in its session; it raised nothing."""
    at = AppTest.from_function(page_script, args=(page,), default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    """The value of the metric labelled ``label``."""
    return next(m.value for m in at.metric if m.label == label)
