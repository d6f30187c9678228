"""`capsim bench-serve`: the real batching server's rules, records and command line (test models, seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sim.cli import main

torch = pytest.importorskip("torch")

SIM_REQUEST_COLUMNS = ["replication", "id", "arrival_s", "start_s", "end_s", "latency_s", "queue_s", "replica",
                       "batch_size", "outcome"]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def serve(arrivals, **config):
    from calibration.bench_serve import frames
    from calibration.server import ServeConfig, run_server

    cfg = ServeConfig(model="test-tiny", threads=1, **config)
    raw = run_server(cfg, np.asarray(arrivals, float))
    return frames(raw, np.asarray(arrivals, float))


def test_size_table_follows_triton():
    from sim.serving.batching import size_now_table

    assert size_now_table(4, ()) == [0, 0, 0, 0, 4]
    assert size_now_table(8, (2, 6)) == [0, 0, 2, 2, 2, 2, 6, 6, 6]
    assert size_now_table(1, ()) == [0, 1]


def test_a_full_batch_goes_at_once_and_a_lone_request_waits_the_delay():
    # three requests 1 ms apart with max 3: sent when the third arrives, long before the 50 ms delay;
    # then one request alone: sent when its 30 ms delay has passed.
    requests, batches, loadgen = serve([0.010, 0.011, 0.012, 0.100], max_batch_size=3, max_queue_delay_s=0.030)
    assert batches["size"].tolist() == [3, 1]
    # the rules exactly (never early), the time loosely: a busy machine may start a batch late, but a full
    # batch still goes long before the delay would have sent it (0.010 + 0.030)
    assert 0.012 <= batches["start_s"].iloc[0] < 0.035
    assert 0.130 <= batches["start_s"].iloc[1] < 0.160
    assert batches["start_s"].iloc[1] >= loadgen["received_s"].iloc[3] + 0.030
    assert requests["arrival_s"].tolist() == [0.010, 0.011, 0.012, 0.100]  # the schedule, not the release


def test_preferred_size_is_sent_as_soon_as_formed():
    arrivals = 0.01 + 0.0005 * np.arange(8)
    _, batches, _ = serve(arrivals, max_batch_size=8, max_queue_delay_s=0.5, preferred_batch_sizes=(4,))
    assert batches["size"].tolist() == [4, 4]
    assert batches["start_s"].max() < 0.1


def test_the_clock_starts_after_the_request_inputs_are_made(monkeypatch):
    # Inputs that take a second to make (a pool of large images) must not eat into the schedule: the load
    # generator releases the first request on time, not a second late.
    from calibration.harness import Harness

    made = Harness.requests

    def slow(self, n):
        if n > 8:  # the server's input pool, not a warm-up batch
            import time

            time.sleep(1.0)
        return made(self, n)

    monkeypatch.setattr(Harness, "requests", slow)
    _, _, loadgen = serve([0.01, 0.02], max_batch_size=1)
    assert (loadgen["sent_s"] - np.array([0.01, 0.02])).max() < 0.5


def test_records_are_complete_fifo_and_bounded():
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1 / 2000, 1000))
    requests, batches, _ = serve(arrivals, max_batch_size=8, max_queue_delay_s=0.001)
    assert (requests["outcome"] == "served").all()
    assert requests["batch_size"].between(1, 8).all() and batches["size"].sum() == len(requests)
    assert (requests["start_s"] >= requests["arrival_s"]).all() and (requests["end_s"] > requests["start_s"]).all()
    assert requests["start_s"].is_monotonic_increasing  # FIFO on one replica
    np.testing.assert_allclose(requests["latency_s"], requests["end_s"] - requests["arrival_s"])
    # no batch smaller than the max starts before its oldest request waited the delay, unless it emptied a
    # queue that had reached the max (impossible here: then it would be the max)
    small = batches[batches["size"] < 8]
    firsts = requests.groupby("start_s")["arrival_s"].min()
    assert (small["start_s"].to_numpy() >= firsts.loc[small["start_s"]].to_numpy() + 0.001 - 1e-4).all()


def test_cli_writes_the_simulators_record_format(tmp_path):
    out = tmp_path / "run"
    assert main(["bench-serve", "--model", "test-tiny", "--threads", "1", "--max-batch-size", "4",
                 "--max-queue-delay-ms", "1", "--rate", "800", "--duration", "1", "--seed", "5",
                 "--out", str(out)]) == 0
    requests = pd.read_parquet(out / "requests.parquet")
    assert list(requests.columns) == SIM_REQUEST_COLUMNS
    assert list(pd.read_parquet(out / "batches.parquet").columns)[:6] == [
        "batch", "replica", "start_s", "end_s", "size", "first_call"]
    run = json.loads((out / "run.json").read_text())
    assert run["threads"] == 1 and run["model"] == "test-tiny" and run["seed"] == 5
    assert run["batching"] == {"max_batch_size": 4, "max_queue_delay_s": 0.001, "preferred_batch_sizes": [],
                               "delay_counted_from": "when the server received the oldest request"}
    assert run["warmup"][0]["sizes"] == [1, 2, 3, 4] and set(run["warmup"][0]["first_call_s"]) == {"1", "2", "3", "4"}
    assert run["arrivals"] == {"process": "poisson", "rate_rps": 800.0}
    # the arrivals are the simulator's own Poisson stream for the seed: drawn in advance, reproducible
    again = tmp_path / "again"
    assert main(["bench-serve", "--model", "test-tiny", "--threads", "1", "--rate", "800", "--duration", "1",
                 "--seed", "5", "--out", str(again)]) == 0
    np.testing.assert_array_equal(pd.read_parquet(again / "requests.parquet")["arrival_s"], requests["arrival_s"])


def test_trace_arrivals_and_profile_warmup_sizes(tmp_path):
    trace = tmp_path / "trace.csv"
    pd.DataFrame({"arrival_s": [0.01, 0.02, 0.5, 2.5]}).to_csv(trace, index=False)
    out = tmp_path / "run"
    assert main(["bench-serve", "--model", "test-tiny", "--threads", "1", "--arrivals", "trace", "--trace",
                 str(trace), "--duration", "1", "--max-batch-size", "8", "--profile", "cpu-mlp-fp32",
                 "--out", str(out)]) == 0
    assert pd.read_parquet(out / "requests.parquet")["arrival_s"].tolist() == [0.01, 0.02, 0.5]
    assert json.loads((out / "run.json").read_text())["warmup"][0]["sizes"] == [1, 2, 4, 8]


@pytest.mark.parametrize("args, message", [
    (["--arrivals", "trace"], "--trace FILE"),
    (["--rate", "100", "--max-batch-size", "4", "--preferred-batch-sizes", "8"], "exceed"),
    (["--rate", "100", "--replicas", "2", "--device", "cuda"], "multi-replica"),
    (["--rate", "0"], "--rate"),
    (["--rate", "100", "--max-batch-size", "0"], "--max-batch-size"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["bench-serve", "--model", "test-tiny", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_two_replica_processes_behind_least_outstanding(tmp_path):
    out = tmp_path / "two"
    assert main(["bench-serve", "--model", "test-tiny", "--replicas", "2", "--router", "least_outstanding",
                 "--max-batch-size", "4", "--max-queue-delay-ms", "1", "--rate", "1000", "--duration", "1",
                 "--out", str(out)]) == 0
    requests = pd.read_parquet(out / "requests.parquet")
    assert (requests["outcome"] == "served").all()
    assert set(requests["replica"]) == {0, 1}
    for _, group in requests.groupby("replica"):  # FIFO within each replica
        assert group["start_s"].is_monotonic_increasing
    run = json.loads((out / "run.json").read_text())
    assert run["threads"] == 1 and run["replicas"] == 2 and len(run["warmup"]) == 2


def test_command_modules_do_not_import_torch():
    code = ("import sys, calibration.bench_serve, sim.cli.validate, sim.validation.validate; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
