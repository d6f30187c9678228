"""Profiles from served runs (sim/profiles/fromrun.py), the idle response and dispatch delays in the service
model, and `capsim validate --from-run`: exact checks on runs the simulator itself produced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_validate import deterministic_profile, fake_run

import sim
from sim.cli import main
from sim.errors import CapsimError
from sim.profiles.fromrun import GAP_EDGES_S, batch_gaps, idle_response, profile_from_runs, ratio_at
from sim.profiles.profile import profile_from_dict, write_profile
from sim.serving.service import IdleResponse
from sim.validation import validate as v


def one_request_scenario(profile, arrivals, host_overhead=True):
    trace = profile.parent / "arrivals.csv"
    trace.write_text("arrival_s\n" + "".join(f"{t!r}\n" for t in arrivals))
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(trace)}},
        "service": {"type": "profile", "profile": str(profile), "host_overhead": host_overhead},
        "batching": {"max_batch_size": 1}, "run": {"duration_s": 1.0, "seed": 0}})


def with_sections(tmp_path, **sections):
    doc = json.loads(deterministic_profile(tmp_path / "base.json").read_text())
    doc.update(sections)
    return write_profile(doc, tmp_path / "with.json")


def test_batch_gaps_are_per_replica_idle_times():
    batches = pd.DataFrame({"replica": [0, 1, 0, 1], "start_s": [0.0, 0.5, 1.5, 0.7], "end_s": [1.0, 0.6, 2.0, 0.9],
                            "size": [1, 1, 2, 1]})
    g = batch_gaps(batches)
    assert g["gap_s"].tolist()[1] == pytest.approx(0.5) and g["gap_s"].tolist()[3] == pytest.approx(0.1)
    assert np.isnan(g["gap_s"].tolist()[0]) and np.isnan(g["gap_s"].tolist()[2])
    assert g["time_s"].tolist() == pytest.approx([1.0, 0.5, 0.1, 0.2])


def test_idle_response_recovers_a_known_slowdown_per_gap_bin():
    rng = np.random.default_rng(0)
    n = 4000
    size = rng.choice([1, 4, 16], n)
    gap = np.where(rng.random(n) < 0.3, rng.uniform(0, 40e-6, n), np.exp(rng.uniform(np.log(60e-6), np.log(0.5), n)))
    truth = lambda g: np.where(g < 1.5e-3, 1.0, np.where(g < 15e-3, 1.2, 1.5))  # noqa: E731
    base = 1e-3 * (1 + 0.1 * size)
    frame = pd.DataFrame({"size": size, "gap_s": gap, "time_s": base * truth(gap) * rng.uniform(0.99, 1.01, n)})
    response = idle_response(frame)
    assert response["back_to_back_count"] == int((gap < 50e-6).sum())
    for g, r in zip(response["gaps_s"], response["ratio"]):
        assert r == pytest.approx(float(truth(np.array([g]))[0]), abs=0.02), g
    assert len(response["gaps_s"]) == len(GAP_EDGES_S) - 2  # every bin but back to back was populated


def test_simulator_and_fromrun_apply_the_same_idle_response():
    response = {"gaps_s": [1e-4, 1e-3, 1e-2], "ratio": [1.05, 1.1, 1.4]}
    curve = IdleResponse(response["gaps_s"], response["ratio"])
    gaps = np.array([0.0, 5e-5, 1e-4, 3e-4, 1e-3, 5e-3, 1e-2, 1.0])
    assert [curve.ratio(g) for g in gaps] == pytest.approx(ratio_at(response, gaps).tolist())
    assert curve.ratio(0.0) == 1.0 and curve.ratio(5e-5) == pytest.approx(1.025) and curve.ratio(1.0) == 1.4
    assert curve.ratio(np.sqrt(1e-3 * 1e-2)) == pytest.approx(1.25)  # halfway in log(gap)


def test_a_batch_after_idle_is_slowed_by_the_profiles_idle_response(tmp_path):
    profile = with_sections(tmp_path, idle_response={"gaps_s": [0.01, 0.1], "ratio": [1.2, 2.0]})
    result = sim.run(one_request_scenario(profile, [0.1, 0.1 + 0.0025 + 0.01]))
    service = (result.batches["end_s"] - result.batches["start_s"]).tolist()
    assert service == pytest.approx([0.00125 * 2.0, 0.00125 * 1.2])  # idle 0.1 s, then idle 0.01 s


def test_dispatch_delay_is_drawn_after_idle_and_back_to_back(tmp_path):
    profile = with_sections(tmp_path, dispatch={"idle_s": [50e-6], "busy_s": [10e-6]})
    result = sim.run(one_request_scenario(profile, [0.1, 0.1]))
    service = (result.batches["end_s"] - result.batches["start_s"]).tolist()
    assert service == pytest.approx([0.00125 + 50e-6, 0.00125 + 10e-6])
    off = sim.run(one_request_scenario(profile, [0.1], host_overhead=False))
    assert (off.batches["end_s"] - off.batches["start_s"]).tolist() == pytest.approx([0.00125])


def test_profile_from_a_deterministic_run_holds_its_exact_batch_times(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, result = fake_run(tmp_path, profile, rate=1500)
    doc = profile_from_runs([v.load_run(run_dir)])
    p = profile_from_dict(doc)
    seen = sorted(int(b) for b, n in result.batches["size"].value_counts().items() if n >= 5)
    assert list(p.batch_sizes) == seen
    for b in seen:
        assert np.allclose(p.latency_s[b], 0.001 + 0.00025 * b, rtol=1e-4)
    assert all(r == pytest.approx(1.0, abs=1e-4) for r in doc["idle_response"]["ratio"])
    assert doc["calibration"]["method"] == "from-run" and doc["dispatch"] is None


def test_validate_from_run_self_replays_a_deterministic_run_exactly(tmp_path, capsys):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile, rate=1500)
    out = tmp_path / "report"
    assert main(["validate", str(run_dir), "--from-run", "self", "--replications", "1", "--no-plot",
                 "--out", str(out)]) == 0
    record = json.loads((out / "validation.json").read_text())["runs"][0]
    for key in (*v.METRICS, "busy_share"):
        assert abs(record["error"][key]) < 1e-3, key
    assert (out / f"{run_dir.name}-profile-from-self.json").is_file()


def test_delivery_delay_is_replayed_and_counted_from_the_schedule(tmp_path):
    """The 'real' server got every request 0.4 ms after its scheduled time: the replay must hand the
    simulated server the delivered times and count latency from the schedule, as the real side does."""
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, result = fake_run(tmp_path, profile, rate=900)  # the server saw these (delivered) times
    requests = result.requests.copy()
    delay = 0.0004
    requests["arrival_s"] -= delay
    requests["latency_s"] += delay
    requests.to_parquet(run_dir / "requests.parquet", index=False)
    pd.DataFrame({"id": requests["id"], "sent_s": requests["arrival_s"] + delay,
                  "received_s": requests["arrival_s"] + delay}).to_parquet(run_dir / "loadgen.parquet", index=False)
    run = v.load_run(run_dir)
    assert run.delivery_s() == pytest.approx(np.full(len(requests), delay))
    record = v.validate_run(run, profile, tmp_path / "out", replications=1, plot=False)
    for key in ("latency_mean_s", "latency_p50_s", "latency_p99_s", "mean_batch_size"):
        assert abs(record["error"][key]) < 1e-6, key


def test_from_run_others_never_uses_the_run_itself(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    a, _ = fake_run(tmp_path, profile, rate=1500)
    b, _ = fake_run(tmp_path, profile, rate=2500)
    runs = [v.load_run(a), v.load_run(b)]
    path = v.profile_from_run_for(runs[0], runs, "others", tmp_path / "out")
    assert json.loads(path.read_text())["calibration"]["runs"] == [str(b)]
    with pytest.raises(CapsimError, match="no other run"):
        v.profile_from_run_for(runs[0], runs[:1], "others", tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--from-run", "self", "--profile", "x.json"], "exactly one of"),
    (["--from-run", "others"], "no other run"),
])
def test_validate_from_run_bad_input_is_one_line(tmp_path, capsys, args, message):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile)
    assert main(["validate", str(run_dir), *args, "--no-plot", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_profile_from_runs_rejects_mixed_models_and_empty_input(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    a, _ = fake_run(tmp_path, profile, rate=1500)
    b, _ = fake_run(tmp_path, profile, rate=2500)
    settings = json.loads((b / "run.json").read_text())
    (b / "run.json").write_text(json.dumps({**settings, "threads": 2}))
    with pytest.raises(CapsimError, match="differ in model"):
        profile_from_runs([v.load_run(a), v.load_run(b)])
    with pytest.raises(CapsimError, match="no runs"):
        profile_from_runs([])


def test_the_largest_allowed_size_never_served_is_extrapolated_and_labelled(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json", sizes=(1, 2, 4, 8, 16, 32))
    run_dir, result = fake_run(tmp_path, profile, rate=800, max_batch=32)
    top = int(result.batches["size"].max())
    assert top < 32
    doc = profile_from_runs([v.load_run(run_dir)])
    assert doc["calibration"]["sizes_extrapolated"] == [32]
    p = profile_from_dict(doc)
    assert p.batch_sizes[-1] == 32
    assert np.allclose(p.latency_s[32], 0.001 + 0.00025 * 32, rtol=1e-3)  # exact line through the medians


def test_the_speed_level_path_is_walked_in_order_from_a_random_start(tmp_path):
    profile = with_sections(tmp_path, service_level={"path": [0.0, float(np.log(2.0)), float(np.log(3.0))]})
    result = sim.run(one_request_scenario(profile, [0.1 + 0.01 * k for k in range(7)]))
    factors = ((result.batches["end_s"] - result.batches["start_s"]) / 0.00125).round(9).tolist()
    start = [1.0, 2.0, 3.0].index(factors[0])
    assert factors == [[1.0, 2.0, 3.0][(start + k) % 3] for k in range(7)]


def test_an_ar1_speed_level_keeps_the_mean_scale_and_correlates(tmp_path):
    from sim.profiles.profile import load_profile
    from sim.serving.service import SpeedLevel

    profile = load_profile(with_sections(tmp_path, service_level={"sigma": 0.1, "rho": 0.95}))
    level = SpeedLevel.of(profile, np.random.default_rng(1))
    x = np.log([level.next() for _ in range(200_000)])
    assert x.std() == pytest.approx(0.1, rel=0.05)
    assert np.corrcoef(x[:-10], x[10:])[0, 1] == pytest.approx(0.95**10, abs=0.03)


def test_slow_level_fit_recovers_a_known_ar1_and_divides_it_out():
    from sim.profiles.fromrun import slow_level

    rng = np.random.default_rng(2)
    n, rho, sigma = 20_000, 0.97, 0.1
    level = np.zeros(n)
    for t in range(1, n):
        level[t] = rho * level[t - 1] + sigma * np.sqrt(1 - rho**2) * rng.standard_normal()
    frame = pd.DataFrame({"size": 1, "replica": 0, "time_s": 1e-3 * np.exp(level) * rng.uniform(0.97, 1.03, n)})
    levels, fit = slow_level(frame)
    assert fit["rho"] == pytest.approx(rho, abs=0.01) and fit["sigma"] == pytest.approx(sigma, rel=0.15)
    assert np.corrcoef(levels, level)[0, 1] > 0.9
    assert len(fit["path"]) == n



def test_a_from_run_profile_matches_the_json_schema(tmp_path):
    import jsonschema

    schema = json.loads((Path(sim.__file__).parent / "data" / "profile.schema.json").read_text())
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile, rate=2500)
    doc = profile_from_runs([v.load_run(run_dir)])
    doc["dispatch"] = {"idle_s": [3e-5], "busy_s": [1e-5], "method": "test"}
    jsonschema.validate(doc, schema)
    assert doc["service_level"] is None or len(doc["service_level"]["path"]) > 0


def test_a_speed_trace_is_integrated_over_each_batch():
    from sim.serving.service import SpeedTrace

    # The machine ran at full speed from 0 s, half speed from 1 s, double speed from 2 s.
    trace = SpeedTrace([0.0, 1.0, 2.0], [0.0, float(np.log(2.0)), float(np.log(0.5))])
    assert trace.duration(0.5, 1.0) == pytest.approx(1.5)  # 0.5 s at rate 1, then 1 s at rate 1/2
    assert trace.duration(0.0, 2.0) == pytest.approx(2.25)  # 1 + 0.5 of work by 2 s, the rest at rate 2
    assert trace.duration(-1.0, 0.5) == pytest.approx(0.5)  # before the first batch: its rate
    assert trace.duration(3.0, 1.0) == pytest.approx(0.5)  # after the last: its rate
    assert trace.duration(1.0, 0.0) == 0.0
    with pytest.raises(Exception, match="pair up"):
        SpeedTrace([0.0, 1.0], [0.0])


def hand_made_run(tmp_path, speed) -> Path:
    """A one-request-at-a-time 'real' run whose batches took 1 ms x speed(start): no queueing, so every
    latency is one batch time."""
    arrivals = np.round(np.arange(1, 41) * 0.025, 6)
    times = 1e-3 * np.array([speed(t) for t in arrivals])
    out = tmp_path / "hand"
    out.mkdir()
    pd.DataFrame({"id": np.arange(40), "arrival_s": arrivals, "start_s": arrivals, "end_s": arrivals + times,
                  "latency_s": times, "outcome": "served", "replica": 0}).to_parquet(out / "requests.parquet")
    pd.DataFrame({"replica": 0, "start_s": arrivals, "end_s": arrivals + times, "size": 1,
                  "first_call": False}).to_parquet(out / "batches.parquet")
    (out / "run.json").write_text(json.dumps({
        "model": "fixed", "device": "cpu", "dtype": "fp32", "threads": 1, "seed": 0, "duration_s": 1.05,
        "batching": {"max_batch_size": 1, "max_queue_delay_s": 0.0, "preferred_batch_sizes": []}}))
    return out


def test_replay_reproduces_a_run_whose_machine_slowed_down_midway(tmp_path):
    """The 'real' machine halved its speed at 0.5 s. The replay profile carries each batch's speed and
    start; the simulator takes the same batch times at the same moments, so every latency matches."""
    run_dir = hand_made_run(tmp_path, lambda t: 1.0 if t < 0.5 else 2.0)
    run = v.load_run(run_dir)
    doc = profile_from_runs([run], speed="trace")
    assert doc["service_level"]["phase"] == "aligned" and len(doc["service_level"]["path_start_s"]) == 40
    median = float(np.median(run.batches["end_s"] - run.batches["start_s"]))
    assert np.allclose(doc["batches"][0]["latency_s"], median)  # every sample at the size's median
    path = v.profile_from_run_for(run, [run], "replay", tmp_path / "out")
    result, _ = v.simulate(run, path, tmp_path / "out", replications=2)
    sim_latency = result.requests.sort_values(["replication", "arrival_s"])["latency_s"].to_numpy()
    # (the profile stores log speeds to 4 decimals: 1e-4 relative)
    assert sim_latency == pytest.approx(np.tile(run.requests["latency_s"].to_numpy(), 2), rel=1e-4)
    # The same batch times drawn at random (from-run self; 40 batches are too few for a level): the
    # slow ones land on other requests.
    self_path = v.profile_from_run_for(run, [run], "self", tmp_path / "out")
    assert json.loads(self_path.read_text())["service_level"] is None
    drawn, _ = v.simulate(run, self_path, tmp_path / "out", replications=1)
    drawn_latency = drawn.requests.sort_values("arrival_s")["latency_s"].to_numpy()
    assert not np.allclose(drawn_latency, run.requests["latency_s"].to_numpy(), rtol=1e-2)


def test_a_speed_trace_needs_one_run_and_a_known_phase(tmp_path):
    from sim.profiles.profile import load_profile
    from sim.serving.service import SpeedTrace

    profile = deterministic_profile(tmp_path / "fixed.json")
    a, _ = fake_run(tmp_path, profile, rate=1500)
    b, _ = fake_run(tmp_path, profile, rate=2500)
    with pytest.raises(CapsimError, match="one run"):
        profile_from_runs([v.load_run(a), v.load_run(b)], speed="trace")
    with pytest.raises(CapsimError, match="speed = 'jitter'"):
        profile_from_runs([v.load_run(a)], speed="jitter")
    for section, message in (({"phase": "sideways", "path": [0.0]}, "must be 'random'"),
                             ({"phase": "aligned", "path": [0.0]}, "path_start_s")):
        with pytest.raises(Exception, match=message):
            SpeedTrace.of(load_profile(with_sections(tmp_path, service_level=section)))


def test_profile_from_run_speed_trace_on_the_command_line(tmp_path, capsys):
    import jsonschema

    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, result = fake_run(tmp_path, profile, rate=1500)
    out = tmp_path / "trace.json"
    assert main(["profile", "from-run", str(run_dir), "--speed", "trace", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    schema = json.loads((Path(sim.__file__).parent / "data" / "profile.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["calibration"]["speed"] == "trace"
    assert len(doc["service_level"]["path"]) == len(result.batches)
    assert np.allclose(doc["service_level"]["path"], 0.0, atol=1e-4)  # a deterministic server: one speed


def test_each_replica_walks_the_speed_level_path_from_its_own_start(tmp_path):
    profile = with_sections(tmp_path, service_level={"path": [0.0, float(np.log(2.0)), float(np.log(3.0))]})
    trace = tmp_path / "arrivals.csv"
    trace.write_text("arrival_s\n" + "".join(f"{0.1 + 0.01 * k!r}\n" for k in range(12)))

    def batches(seed):
        return sim.run(sim.scenario_from_dict({
            "workload": {"arrivals": {"process": "trace", "path": str(trace)}},
            "service": {"type": "profile", "profile": str(profile)},
            "batching": {"max_batch_size": 1}, "fleet": {"replicas": 2, "router": "round_robin"},
            "run": {"duration_s": 1.0, "seed": seed}})).batches

    starts = set()
    for seed in range(8):
        b = batches(seed)
        pd.testing.assert_frame_equal(batches(seed), b)  # deterministic
        per_replica = []
        for rep in (0, 1):
            mine = b[b["replica"] == rep].sort_values("start_s")
            factors = ((mine["end_s"] - mine["start_s"]) / 0.00125).round(9).tolist()
            start = [1.0, 2.0, 3.0].index(factors[0])
            assert factors == [[1.0, 2.0, 3.0][(start + k) % 3] for k in range(6)]  # in order, per replica
            per_replica.append(start)
        starts.add(tuple(per_replica))
    assert any(a != b for a, b in starts)  # the replicas' phases are not tied together


def test_back_to_back_gaps_are_not_idleness():
    """The ratios are measured against batches after gaps under ``back_to_back_s`` (the serving
    loop's own ~10 us): those get exactly 1, and the ramp to the first bin starts there. Ramping from
    0 s put a 0.5% slowdown on every back-to-back batch of a from-run profile (b1 at 82% load: p50 -8%)."""
    curve = IdleResponse([1e-4, 1e-3], [1.1, 1.3], back_to_back_s=5e-5)
    assert curve.ratio(0.0) == 1.0 and curve.ratio(1e-5) == 1.0 and curve.ratio(5e-5) == 1.0
    assert curve.ratio(7.5e-5) == pytest.approx(1.05) and curve.ratio(1e-4) == pytest.approx(1.1)
    response = {"gaps_s": [1e-4, 1e-3], "ratio": [1.1, 1.3], "back_to_back_s": 5e-5}
    assert ratio_at(response, np.array([1e-5, 7.5e-5])).tolist() == pytest.approx([1.0, 1.05])


def test_a_speed_trace_replays_the_loops_gaps_as_time_without_work():
    from sim.serving.service import SpeedTrace

    # Batches start at 0 and 1.1 s; the loop spent 0.1 s before the second (1.0-1.1 s) doing no model work.
    trace = SpeedTrace([0.0, 1.1], [0.0, 0.0], loop_s=[0.1, 0.0])
    assert trace.duration(0.5, 1.0) == pytest.approx(1.1)  # 0.5 s of work, 0.1 s of loop, 0.5 s of work
    assert trace.duration(1.02, 0.5) == pytest.approx(0.58)  # starts inside the gap
    assert trace.duration(0.0, 1.0) == pytest.approx(1.0)  # ends exactly where the gap begins
    assert SpeedTrace([0.0, 1.1], [0.0, 0.0]).duration(0.5, 1.0) == pytest.approx(1.0)  # without loop gaps


def test_a_speed_trace_profile_refuses_to_stand_in_for_much_longer_traffic(tmp_path, capsys):
    run_dir = hand_made_run(tmp_path, lambda t: 1.0)
    trace = tmp_path / "trace.json"
    assert main(["profile", "from-run", str(run_dir), "--speed", "trace", "--out", str(trace)]) == 0
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"workload: {{arrivals: {{process: poisson, rate_rps: 50}}}}\n"
                        f"service: {{type: profile, profile: {trace}}}\nrun: {{duration_s: 3600}}\n")
    capsys.readouterr()
    assert main(["simulate", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert "run.duration_s = 3600" in err and "without --speed trace" in err and "Traceback" not in err
    scenario.write_text(scenario.read_text().replace("3600", "1.0"))  # the run's own span: fine
    assert main(["simulate", str(scenario)]) == 0
