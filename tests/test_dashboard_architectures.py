"""The Offline and streaming page under streamlit's AppTest, and its pure functions: defaults render with
units, an input moves the numbers, the hand formula sits beside the simulated makespan, bad input is an
error message (never an exception)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from dashboard_pages import metric as _metric  # noqa: E402
from dashboard_pages import page_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import architectures as arch  # noqa: E402
from dashboard import whatif  # noqa: E402
from sim.scenario.keys import updated  # noqa: E402
from sim.scenario.load import load_scenario  # noqa: E402

OFFLINE = load_scenario(arch.EXAMPLES["offline"])
STREAMING = load_scenario(arch.EXAMPLES["streaming"])
OFF, ST = whatif.scenario_key(OFFLINE), whatif.scenario_key(STREAMING)
SMALL = {f"{OFF}:off_items": 400_000, f"{ST}:st_duration": 30.0}  # quick runs


def _app(**state) -> AppTest:
    return page_app("offline_streaming", **{**SMALL, **state})


def test_page_is_in_the_navigation():
    source = (Path(__file__).resolve().parents[1] / "dashboard" / "app.py").read_text()
    assert 'url_path="offline-streaming"' in source and "offline_streaming.render" in source


def test_defaults_render_both_tabs_with_units():
    at = _app()
    assert not [e.value for e in at.error]
    assert _metric(at, "Makespan").endswith(" s") and _metric(at, "Deadline") in ("met", "missed")
    assert _metric(at, "Cost of the job").startswith("$") and _metric(at, "GPU-hours").endswith(" h")
    assert _metric(at, "p99 latency").endswith(("ms", " s")) and _metric(at, "Lag growth").endswith("events/s")
    text = " ".join(m.value for m in at.markdown)
    assert "Hand formula" in text and "(λ − μ)⁺" in text
    assert len(at.dataframe) == 1  # the job on other fleets


def test_fewer_replicas_lengthen_the_job_and_the_formula_follows():
    at = _app()
    makespan = _metric(at, "Makespan")
    at.number_input(key=f"{OFF}:off_replicas").set_value(1).run()
    assert not at.exception and not [e.value for e in at.error]
    assert float(_metric(at, "Makespan").split()[0].replace(",", "")) > float(makespan.split()[0].replace(",", ""))
    formula = arch.offline_formula(updated(OFFLINE, {"offline.items": 400_000, "fleet.replicas": 1}))
    assert f"**{formula['makespan_s']:,.1f} s**" in " ".join(m.value for m in at.markdown)


def test_bad_checkpoint_is_an_error_message():
    at = _app(**{f"{ST}:st_ckpt": 1.0, f"{ST}:st_pause": 2.0})
    assert any("checkpoint_pause_s" in e.value for e in at.error)
    assert _metric(at, "Makespan").endswith(" s")  # the other tab still runs


def test_stream_updates_scale_the_producer_and_keda():
    inputs = arch.StreamInputs(rate_per_s=900.0, duration_s=60.0, partitions=0, partition_capacity_events=100,
                               backpressure="drop", consumers=2, keda=True, lag_threshold=50, max_replicas=6,
                               checkpoint_interval_s=0.0, checkpoint_pause_s=1.0)
    s = updated(STREAMING, arch.stream_updates(STREAMING, inputs))
    assert arch.stream_theory(s)["rate_per_s"] == pytest.approx(900.0)
    assert s.streaming.partitions is None and s.streaming.checkpoint_interval_s is None
    assert s.streaming.checkpoint_pause_s == 0 and s.autoscaler.type == "keda" and s.autoscaler.max_replicas == 6
    assert arch.fleet_counts(2) == (1, 2, 3, 4, 6)


def test_an_offline_baseline_opens_this_page_and_pauses_the_traffic_pages():
    text = (Path(__file__).resolve().parents[1] / "examples" / "architectures" / "offline_spot.yaml").read_text()
    text = text.replace("dataset_bytes: 10.0e9", "dataset_bytes: 2.0e8")
    at = _app()
    at.file_uploader(key="scenario_upload").set_value(("job.yaml", text.encode(), "application/x-yaml")).run()
    assert not at.exception and not [e.value for e in at.error]
    assert any("offline-spot" in c.value for c in at.caption) and _metric(at, "Makespan").endswith(" s")
    what_if = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    what_if.session_state["capsim_baseline"] = at.session_state["capsim_baseline"]
    what_if.run()
    assert not what_if.exception and any("offline batch job" in i.value for i in what_if.info)
