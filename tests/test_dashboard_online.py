"""The online-architectures page under streamlit's AppTest: each tab renders its numbers beside its closed
form, an input moves them, and a scenario the page cannot build is a message (never an exception)."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from dashboard_pages import metric as _metric  # noqa: E402
from dashboard_pages import page_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import whatif  # noqa: E402
from sim.scenario.load import load_scenario  # noqa: E402

CACHE = whatif.scenario_key(load_scenario("architectures/caching"))
FAILURES = whatif.scenario_key(load_scenario("architectures/failures"))


def _app(**state) -> AppTest:
    return page_app("online_architectures", timeout=180, **state)


def _percent(text: str) -> float:
    return float(text.rstrip(" %").replace(",", ""))


def test_every_tab_shows_its_figures_beside_the_closed_form():
    at = _app()
    assert not at.error, [e.value for e in at.error]
    simulated, che = _percent(_metric(at, "Hit ratio (simulated)")), _percent(_metric(at, "Closed form"))
    assert abs(simulated - che) < 3  # Che's approximation, percentage points
    assert _metric(at, "Mean round trip").endswith("ms") and _metric(at, "Served at the edge").endswith("%")
    assert _metric(at, "Availability").endswith("%") and _metric(at, "MTBF / (MTBF + MTTR)").endswith("%")
    assert _metric(at, "Throughput gain").endswith("×")
    assert any("N+1 check" in m.value for m in at.markdown)
    assert len(at.get("vega_lite_chart")) >= 4


def test_a_bigger_cache_hits_more():
    at = _app()  # 20,000 entries
    small = _percent(_metric(at, "Hit ratio (simulated)"))
    at.number_input(key=f"{CACHE}:ca_cap").set_value(60_000).run()
    assert not at.exception
    assert _percent(_metric(at, "Hit ratio (simulated)")) > small + 5


def test_no_failures_at_all_is_a_message():
    at = _app(**{f"{FAILURES}:fa_mtbf": 0.0, f"{FAILURES}:fa_node": 0.0})
    assert any("give replica_mtbf_s or node_mtbf_s" in e.value for e in at.error)
