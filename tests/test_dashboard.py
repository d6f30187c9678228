"""The dashboard pages under streamlit's AppTest: defaults render, inputs move the numbers, bad input
shows an error (never an exception). Runs share st.cache_data within the process, so the baseline
is simulated once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
from dashboard_pages import page_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import whatif  # noqa: E402
from sim.planner.search import replica_capacity_rps  # noqa: E402
from sim.scenario.load import load_scenario  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
SID = whatif.scenario_key(load_scenario(Path(APP).parents[1] / "examples" / "fraud_mlp.yaml"))
STORY_SID = whatif.scenario_key(load_scenario("autoscaling/spike_cold_start"))


def _app(page: str | None = None, **state) -> AppTest:
    """The whole app (its default page, the What-if), or one page by its view module's name."""
    if page:
        return page_app(page, **state)
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_one_navigation_and_no_pages_folder_to_discover():
    """A ``pages/`` folder beside app.py would give a page opened by its URL a second, raw navigation."""
    assert not (Path(APP).parent / "pages").exists()
    source = Path(APP).read_text()
    for url in ("batching", "autoscaling", "calibration", "planner"):
        assert f'url_path="{url}"' in source


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _key(at: AppTest, suffix: str):
    return next(w for w in at.number_input if w.key and w.key.endswith(suffix))


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# ---------------------------------------------------------------- what-if
def test_what_if_default_renders_with_units():
    at = _app()
    assert not _errors(at)
    assert any("fraud-mlp" in c.value and "built-in default" in c.value for c in at.caption)
    for label in ("p50 latency", "p95 latency", "p99 latency"):
        assert _metric(at, label).endswith("ms")
    assert _metric(at, "Cost per hour").endswith("/h")
    assert _metric(at, "Within SLO").endswith("%")


def test_what_if_fewer_replicas_changes_numbers():
    at = _app()
    p99, cost = _metric(at, "p99 latency"), _metric(at, "Cost per hour")
    _key(at, ":replicas").set_value(1).run()
    assert not at.exception and not _errors(at)
    assert _metric(at, "p99 latency") != p99
    assert _metric(at, "Cost per hour") == "$0.34/h" != cost
    table = at.table[0].value
    assert list(table.columns) == ["baseline", "candidate", "change"]


def test_what_if_overload_warns_and_withholds_p99():
    """Unbounded queue (no limit, no timeout) under overload: unstable, no steady-state p99."""
    at = _app()
    _key(at, ":rate").set_value(40_000.0)  # one replica serves about 32,500 req/s at most
    _key(at, ":replicas").set_value(1)
    _key(at, ":duration").set_value(4.0)
    _key(at, ":qlim").set_value(0)
    _key(at, ":timeout").set_value(0.0)
    at.run()
    assert not at.exception
    assert any("unstable" in w.value for w in at.warning)
    assert _metric(at, "p99 latency") == "—"


def test_what_if_overload_with_bounded_queue_warns_of_shedding():
    """The default keeps a queue limit and a timeout: overload sheds requests, latency stays bounded."""
    at = _app()
    _key(at, ":rate").set_value(40_000.0)
    _key(at, ":replicas").set_value(1)
    _key(at, ":duration").set_value(4.0)
    at.run()
    assert not at.exception
    assert any("overloaded" in w.value and "shed" in w.value for w in at.warning)
    assert _metric(at, "p99 latency") != "—"


def test_what_if_too_large_a_run_is_an_error():
    at = _app()
    _key(at, ":rate").set_value(900_000.0)
    at.run()
    assert not at.exception
    assert any("dashboard allows" in e for e in _errors(at))


def test_what_if_bad_preferred_sizes_is_an_error():
    at = _app()
    next(t for t in at.text_input if t.key.endswith(":pref")).set_value("0, abc").run()
    assert not at.exception
    assert any("preferred_batch_sizes" in e for e in _errors(at))


def test_what_if_trace_with_nan_is_an_error_and_good_trace_runs():
    at = _app()
    next(s for s in at.selectbox if s.key.endswith(":pattern")).set_value("trace").run()
    uploader = next(u for u in at.file_uploader if u.key.endswith(":trace_file"))
    uploader.set_value(("bad.csv", b"arrival_s\n0.1\nnan\n0.3\n", "text/csv")).run()
    assert not at.exception
    assert any("bad.csv" in e and "row 2" in e for e in _errors(at))
    times = "\n".join(f"{i * 0.002:.4f}" for i in range(5000))
    next(u for u in at.file_uploader if u.key.endswith(":trace_file")).set_value(
        ("good.csv", f"arrival_s\n{times}\n".encode(), "text/csv")).run()
    assert not at.exception and not _errors(at)
    assert _metric(at, "p99 latency").endswith("ms")


def test_what_if_bad_profile_upload_is_an_error():
    at = _app()
    next(s for s in at.selectbox if s.key.endswith(":profile")).set_value("__upload__").run()
    next(u for u in at.file_uploader if u.key.endswith(":profile_file")).set_value(
        ("p.json", json.dumps({"schema": "capsim.profile/1", "kind": "measured"}).encode(), "application/json")).run()
    assert not at.exception
    assert any(e.startswith("p.json:") for e in _errors(at))


def test_bad_scenario_upload_keeps_the_old_one():
    at = _app()
    at.file_uploader(key="scenario_upload").set_value(("s.yaml", b"workload: [unclosed", "application/x-yaml")).run()
    assert not at.exception
    assert any("Scenario not loaded" in e and "not valid YAML" in e for e in _errors(at))
    assert _metric(at, "p99 latency").endswith("ms")


def test_uploaded_scenario_becomes_the_baseline():
    text = (Path(APP).parents[1] / "examples" / "fraud_mlp.yaml").read_text()
    text = text.replace("name: fraud-mlp", "name: fraud-small").replace("duration_s: 30", "duration_s: 5")
    at = _app()
    at.file_uploader(key="scenario_upload").set_value(("small.yaml", text.encode(), "application/x-yaml")).run()
    assert not at.exception and not _errors(at)
    assert any("fraud-small" in c.value and "uploaded small.yaml" in c.value for c in at.caption)


# ---------------------------------------------------------------- other pages
def test_batching_page_grid_and_theory():
    at = _app("batching", bt_sizes=[1, 16], bt_delays=[0.0, 1.0], bt_n=5_000)
    assert not _errors(at)
    before = at.dataframe[0].value
    assert len(before) == 4 and before["p99"].str.endswith("ms").all()
    assert any("1/(μ − λ)" in m.value for m in at.markdown)
    at.multiselect(key="bt_sizes").set_value([1, 32]).run()
    assert not at.exception
    assert not at.dataframe[0].value.equals(before)
    at.multiselect(key="bt_delays").set_value([]).run()
    assert not at.exception and _errors(at)


def test_autoscaling_page_defaults_to_a_spike_that_overwhelms_the_static_fleet():
    """The default fraud-mlp has a static fleet: the page starts from the spike_cold_start example, whose
    spike saturates the static fleet while the autoscaled one catches up after its cold start."""
    at = _app("autoscaling")
    assert not _errors(at)
    assert any("autoscaling/spike_cold_start" in c.value for c in at.caption)
    table = at.table[0].value
    assert list(table.columns) == ["static fleet", "autoscaled fleet"]
    within = table.loc["within SLO"].str.rstrip(" %").astype(float)
    assert within["static fleet"] < 50 < within["autoscaled fleet"]
    assert at.number_input(key=f"{STORY_SID}:as_weight_load_s").value >= 10  # replicas take tens of seconds to load
    text = " ".join(m.value for m in at.markdown)
    assert "serves at most 1,412 req/s" in text and "peaking near 2," in text


def test_autoscaling_page_on_the_loaded_scenario_reports_bad_bounds():
    at = _app("autoscaling", **{f"{SID}:as_start": "loaded", f"{SID}:as_rate": 1500.0, f"{SID}:as_duration": 20.0})
    assert not _errors(at)
    assert not any("spike_cold_start" in c.value for c in at.caption)
    capacity = 2 * replica_capacity_rps(load_scenario("fraud_mlp"))
    assert 6000 * _key(at, ":as_factor").value > capacity  # the default spike from the loaded rate overloads
    table = at.table[0].value
    assert list(table.columns) == ["static fleet", "autoscaled fleet"]
    _key(at, ":as_max").set_value(1).run()
    assert not at.exception
    _key(at, ":as_min").set_value(3).run()
    assert not at.exception
    assert any("max_replicas" in e for e in _errors(at))


def test_calibration_page_switches_profiles_and_rejects_bad_json():
    at = _app("calibration")
    assert not _errors(at)
    weights = _metric(at, "Weights")
    at.selectbox(key="cal_profile").set_value("h100-resnet50-fp16").run()
    assert not at.exception and _metric(at, "Weights") != weights
    at.selectbox(key="cal_profile").set_value("upload a profile JSON…").run()
    at.file_uploader(key="cal_upload").set_value(("x.json", b"{not json", "application/json")).run()
    assert not at.exception
    assert any("not valid JSON" in e for e in _errors(at))


def test_calibration_largest_batch_fits_its_card():
    at = _app("calibration")
    card = next(m for m in at.metric if m.label == "Largest batch that fits")
    assert card.value == "682k req" and "682,347 requests" in card.help


def test_planner_page_waits_for_the_button():
    at = _app("planner", **{f"{SID}:pl_sizes": [8], f"{SID}:pl_delays": [0.0], f"{SID}:pl_n": 5_000})
    assert any("Run the planner" in i.value for i in at.info)
    at.button(key=f"{SID}:pl_go").click().run()
    assert not at.exception and not _errors(at)
    assert any(s.value.startswith("Recommended:") and "/h" in s.value for s in at.success)
    assert at.dataframe[0].value["cost"].str.endswith("/h").all()


# ---------------------------------------------------------------- the command
def test_dashboard_command_line():
    from sim.cli import build_parser
    from sim.cli import dashboard as dashboard_cmd

    args = build_parser().parse_args(["dashboard", "--port", "8599", "--headless"])
    assert args.func is dashboard_cmd.main
    cmd = dashboard_cmd.command(args.port, args.address, args.headless)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[cmd.index("--server.port") + 1] == "8599"
    assert cmd[cmd.index("--server.headless") + 1] == "true"


# ---------------------------------------------------------------- uploads and the files a scenario may read
FRAUD = (Path(APP).parents[1] / "examples" / "fraud_mlp.yaml").read_text()
ONLY_OURS = "files uploaded in this session or shipped with capsim"


def _fraud_with(**sections) -> bytes:
    data = yaml.safe_load(FRAUD)
    for dotted, value in sections.items():
        section, _, key = dotted.partition("__")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    return yaml.safe_dump(data).encode()


def _upload_scenario(at: AppTest, data: bytes, name: str = "s.yaml") -> None:
    at.file_uploader(key="scenario_upload").set_value((name, data, "application/x-yaml")).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("sections,key", [
    ({"workload__arrivals": {"process": "trace", "path": "/etc/passwd"}}, "workload.arrivals.path"),
    ({"workload__arrivals": {"process": "trace", "path": "~/.ssh/id_rsa"}}, "workload.arrivals.path"),
    ({"service__profile": "../../../../etc/capsim.json"}, "service.profile"),
    ({"autoscaler": {"from_manifest": "/etc/hosts"}}, "autoscaler.from_manifest"),
])
def test_scenario_naming_a_server_file_is_refused(sections, key):
    at = _app()
    _upload_scenario(at, _fraud_with(**sections))
    errors = [e for e in _errors(at) if "Scenario not loaded" in e]
    assert errors and key in errors[0] and ONLY_OURS in errors[0]
    assert any("fraud-mlp" in c.value and "built-in default" in c.value for c in at.caption)
    assert _metric(at, "p99 latency").endswith("ms")


def test_scenario_may_name_shipped_files():
    at = _app()
    _upload_scenario(at, _fraud_with(
        name="fraud-hpa", run__duration_s=5, batching__max_batch_size=8,
        autoscaler={"from_manifest": "k8s/hpa.yaml", "deployment": "k8s/deployment.yaml"}))
    assert not _errors(at)
    assert any("fraud-hpa" in c.value and "uploaded s.yaml" in c.value for c in at.caption)


def _upload_trace(at: AppTest) -> Path:
    """Replay a trace on the What-if page; return where this session stored it."""
    next(s for s in at.selectbox if s.key.endswith(":pattern")).set_value("trace").run()
    times = "\n".join(f"{i * 0.002:.4f}" for i in range(2000))
    next(u for u in at.file_uploader if u.key.endswith(":trace_file")).set_value(
        ("t.csv", f"arrival_s\n{times}\n".encode(), "text/csv")).run()
    assert not at.exception and not _errors(at)
    return next(at.session_state["capsim_uploads"].path.glob("*.csv"))


def test_scenario_may_name_a_trace_uploaded_in_this_session_only():
    at = _app()
    trace = _upload_trace(at)
    assert trace.parent.stat().st_mode & 0o777 == 0o700
    scenario = _fraud_with(name="replay", workload__arrivals={"process": "trace", "path": str(trace)},
                           run={"duration_s": 4.0, "warmup_s": 0.4, "seed": 1})
    _upload_scenario(at, scenario, "replay.yaml")
    assert not _errors(at)
    assert any("replay" in c.value and "uploaded replay.yaml" in c.value for c in at.caption)

    other = _app()  # another session: the same path is not one of its uploads
    _upload_scenario(other, scenario, "replay.yaml")
    assert any("Scenario not loaded" in e and ONLY_OURS in e for e in _errors(other))
    assert other.session_state["capsim_uploads"].path != trace.parent


def test_upload_over_the_size_limit_is_refused(monkeypatch):
    from dashboard import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 100)
    at = _app()
    _upload_scenario(at, FRAUD.encode(), "big.yaml")
    assert any("big.yaml" in e and "at most 50 MB" in e for e in _errors(at))
    next(s for s in at.selectbox if s.key.endswith(":pattern")).set_value("trace").run()
    next(u for u in at.file_uploader if u.key.endswith(":trace_file")).set_value(
        ("big.csv", b"arrival_s\n" + b"0.001\n" * 100, "text/csv")).run()
    assert not at.exception
    assert any("big.csv" in e and "at most 50 MB" in e for e in _errors(at))


def test_the_server_limits_uploads_as_the_code_does():
    import tomllib

    from dashboard import uploads

    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == uploads.MAX_UPLOAD_MB
