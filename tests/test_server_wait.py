"""How a server waits for work (sim/serving/waiting.py): bench-serve's --wait, calibrate's --wait and idle
sweep, the profile's server.wait and the scenario's service.server_wait (docs/scenario.md)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from test_fromrun import with_sections
from test_validate import deterministic_profile, fake_run

import sim
from sim.cli import main
from sim.errors import CapsimError, ProfileError, ScenarioError
from sim.profiles.fromrun import profile_from_runs
from sim.profiles.profile import load_profile
from sim.validation import validate as v

SCHEMA = json.loads((Path(__file__).parent.parent / "sim/data/profile.schema.json").read_text())
SLOW_AFTER_IDLE = {"gaps_s": [0.001, 0.01], "ratio": [2.0, 2.0], "method": "test"}


def idle_run(profile, server_wait=None, idle_effects=None):
    """Batches of one, 20 ms apart: every batch starts after 20 ms idle. Its mean batch time."""
    service = {"type": "profile", "profile": str(profile), "host_overhead": False}
    service |= {"server_wait": server_wait} if server_wait else {}
    service |= {} if idle_effects is None else {"idle_effects": idle_effects}
    result = sim.run(sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "deterministic", "rate_rps": 50}}, "service": service,
        "batching": {"max_batch_size": 1}, "run": {"duration_s": 1.0, "seed": 0}}))
    return float((result.batches["end_s"] - result.batches["start_s"]).mean())


# ---------------------------------------------------------------- the simulator
def test_the_profile_s_own_wait_is_modelled_unless_the_scenario_says_none(tmp_path):
    poll = with_sections(tmp_path, idle_response=SLOW_AFTER_IDLE, server={"wait": "poll"})
    back_to_back = 0.00125  # 1 ms + 0.25 ms at batch 1
    assert idle_run(poll) == pytest.approx(2 * back_to_back)  # default: profile, i.e. its poll measurement
    assert idle_run(poll, "poll") == pytest.approx(2 * back_to_back)
    assert idle_run(poll, "none") == pytest.approx(back_to_back)
    assert idle_run(poll, idle_effects=False) == pytest.approx(back_to_back)  # the old switch still works


def test_a_stated_wait_the_profile_did_not_measure_is_a_one_line_error(tmp_path, write_scenario, capsys):
    unrecorded = with_sections(tmp_path, idle_response=SLOW_AFTER_IDLE)  # no server.wait: measured blocking
    assert idle_run(unrecorded, "block") == pytest.approx(0.0025)
    with pytest.raises(ProfileError, match=r"server_wait = 'poll': the profile 'fixed' .* under server wait "
                                           r"'block' .*capsim calibrate --wait poll"):
        idle_run(unrecorded, "poll")
    scenario = write_scenario({"workload": {"arrivals": {"process": "poisson", "rate_rps": 10}},
                               "service": {"type": "profile", "profile": "cpu-mlp-fp32", "server_wait": "poll"},
                               "run": {"duration_s": 1.0}})
    assert main(["simulate", str(scenario)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "service.server_wait = 'poll'" in err and "'none'" in err


def test_idle_effects_false_with_a_stated_wait_names_the_replacement():
    base = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 10}}, "run": {"duration_s": 1.0}}
    with pytest.raises(ScenarioError, match="give server_wait: none"):
        sim.scenario_from_dict({**base, "service": {"type": "profile", "profile": "cpu-mlp-fp32",
                                                    "idle_effects": False, "server_wait": "poll"}})
    with pytest.raises(ScenarioError, match="server_wait = 'spin': must be 'profile', 'block', 'poll' or 'none'"):
        sim.scenario_from_dict({**base, "service": {"type": "profile", "profile": "cpu-mlp-fp32",
                                                    "server_wait": "spin"}})


def test_server_wait_is_checked_by_the_reader_and_the_schema(tmp_path):
    good = json.loads(with_sections(tmp_path, server={"wait": "poll"}).read_text())
    jsonschema.validate(good, SCHEMA)
    for server in ({"wait": "spin"}, {}, "poll"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**good, "server": server}))
        with pytest.raises(ProfileError, match=r"bad.json: server(.wait)? = .*(must be 'block' or 'poll'|needs wait|an object)"):
            load_profile(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(bad.read_text()), SCHEMA)


def test_from_run_records_the_runs_wait_and_refuses_to_mix_them(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    a, _ = fake_run(tmp_path, profile, rate=1500)
    b, _ = fake_run(tmp_path, profile, rate=2500)
    for run, wait in ((a, "poll"), (b, "block")):
        settings = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**settings, "server": {"wait": wait}}))
    assert profile_from_runs([v.load_run(a)])["server"] == {"wait": "poll"}
    with pytest.raises(CapsimError, match=r"waited for work differently \(block, poll"):
        profile_from_runs([v.load_run(a), v.load_run(b)])


# ---------------------------------------------------------------- the real server and calibration
def test_a_polling_server_follows_the_same_batching_rules():
    pytest.importorskip("torch")
    from calibration.bench_serve import frames
    from calibration.server import ServeConfig, run_server

    arrivals = np.array([0.010, 0.011, 0.012, 0.100])
    config = ServeConfig(model="test-tiny", threads=1, max_batch_size=3, max_queue_delay_s=0.030, wait="poll")
    _, batches, loadgen = frames(run_server(config, arrivals), arrivals)
    assert batches["size"].tolist() == [3, 1]
    # the rules exactly (never early), the time loosely: a busy machine may start a batch late, but a full
    # batch still goes long before the delay would have sent it (0.010 + 0.030)
    assert 0.012 <= batches["start_s"].iloc[0] < 0.035
    assert batches["start_s"].iloc[1] >= loadgen["received_s"].iloc[3] + 0.030
    assert 0.130 <= batches["start_s"].iloc[1] < 0.160


def test_bench_serve_and_calibrate_record_the_wait(tmp_path, capsys):
    pytest.importorskip("torch")
    run_dir = tmp_path / "run"
    assert main(["bench-serve", "--model", "test-tiny", "--threads", "1", "--max-batch-size", "4", "--rate", "400",
                 "--duration", "0.5", "--wait", "poll", "--out", str(run_dir)]) == 0
    assert json.loads((run_dir / "run.json").read_text())["server"]["wait"] == "poll"
    out = tmp_path / "poll.json"
    assert main(["calibrate", "--model", "test-tiny", "--batch-sizes", "1,4,16", "--quick", "--skip-load",
                 "--no-progress", "--wait", "poll", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["server"] == {"wait": "poll"} and "--wait" in doc["calibration"]["command"]
    response = doc["idle_response"]
    assert 6 <= len(response["gaps_s"]) <= 8 and np.all(np.diff(response["gaps_s"]) > 0)
    # 2 rounds x sizes 1, 4, 16 x 8 gaps, each in the bin of the gap it waited (a late delivery moves it up)
    assert response["gaps_s"][0] >= 1e-4 and sum(response["counts"]) == 2 * 3 * 8
    assert all(r > 0 for r in response["ratio"]) and len(doc["dispatch"]["idle_s"]) == 48
    assert load_profile(out).raw["server"]["wait"] == "poll"
    for command, args in (("bench-serve", ["--rate", "5", "--out", str(tmp_path / "x")]),
                          ("calibrate", ["--out", str(tmp_path / "x.json")])):
        assert main([command, "--model", "test-tiny", "--wait", "spin", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"capsim {command}: error: --wait = 'spin': use block (blocked until work comes) or poll (a busy loop)"


def test_the_idle_sweep_bins_a_late_delivery_by_the_gap_it_waited():
    """On a busy machine the feeder can deliver late: a sample meant for 0.1 ms that waited 1.6 ms counts
    in the 1 ms bin (bins split halfway between the nominal gaps in log time), so the section's gaps
    increase strictly, as the profile reader requires, and an empty bin is left out."""
    pytest.importorskip("torch")
    from calibration.idle_sweep import IdleSweep

    sweep = IdleSweep("block", nominal_s=[1e-4, 1e-4, 1e-3, 1e-2], gap_s=[1.6e-3, 1.1e-4, 1.0e-3, 1.2e-2],
                      size=[1, 1, 1, 1], ratio=[1.5, 1.0, 1.1, 1.3], wake_s=[0.0] * 4)
    section = sweep.response()
    assert section["gaps_s"] == [1.1e-4, pytest.approx((1.0e-3 + 1.6e-3) / 2), 1.2e-2]
    assert section["ratio"] == [1.0, pytest.approx(1.3), 1.3] and section["counts"] == [1, 2, 1]
    gaps = section["gaps_s"]
    assert all(a < b for a, b in zip(gaps, gaps[1:]))
