"""`capsim simulate`: the table, --out files, --seed, --replications, --set, the UNSTABLE banner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli import main

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
SMALL = {
    "name": "small",
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 400}},
    "service": {"type": "parametric", "base_s": 0.002, "per_item_s": 0.0005, "distribution": "exponential"},
    "batching": {"max_batch_size": 4, "max_queue_delay_s": 0.001},
    "fleet": {"replicas": 2},
    "run": {"duration_s": 5, "warmup_s": 0.5, "seed": 1},
}


@pytest.fixture
def small(write_scenario) -> str:
    return str(write_scenario(SMALL))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_simulate(capsys, path):
    horizon = yaml.safe_load(path.read_text())["run"]["duration_s"]
    code = main(["simulate", str(path), "--set", f"run.duration_s={min(horizon, 8)}", "--set", "run.warmup_s=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "latency p99" in out and "SLO p99" in out


def test_table_and_out_files(capsys, small, tmp_path):
    out_dir = tmp_path / "run"
    assert main(["simulate", small, "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    for label in ("requests measured", "throughput", "latency p50", "utilisation", "cost per 1M requests"):
        assert label in printed
    for name in ("summary.json", "requests.parquet", "batches.parquet", "timeseries.parquet", "replicas.parquet",
                 "scenario.yaml"):
        assert (out_dir / name).is_file(), name
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["scenario"] == "small" and summary["seed"] == 1
    assert summary["requests_served"] + summary["requests_rejected"] + summary["requests_timed_out"] == \
        summary["requests_total"]
    requests = pd.read_parquet(out_dir / "requests.parquet")
    assert list(requests.columns[:9]) == ["replication", "id", "arrival_s", "start_s", "end_s", "latency_s",
                                          "queue_s", "replica", "batch_size"]
    # The scenario as run is a valid scenario again.
    again = tmp_path / "again"
    assert main(["simulate", str(out_dir / "scenario.yaml"), "--quiet", "--out", str(again)]) == 0
    assert json.loads((again / "summary.json").read_text())["latency_mean_s"] == summary["latency_mean_s"]


def test_seed_and_set(small, tmp_path):
    def summary(*extra: str) -> dict:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert main(["simulate", small, "--quiet", "--out", str(out), *extra]) == 0
        return json.loads((out / "summary.json").read_text())

    base = summary()
    assert summary()["latency_mean_s"] == base["latency_mean_s"]
    assert summary("--seed", "2")["latency_mean_s"] != base["latency_mean_s"]
    three = summary("--set", "fleet.replicas=3")
    assert three["utilization"] < base["utilization"]
    assert three["replicas_mean"] == pytest.approx(3)


def test_replications(capsys, small, tmp_path):
    out = tmp_path / "reps"
    assert main(["simulate", small, "--replications", "3", "--out", str(out)]) == 0
    assert "3 replications" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replications"] == 3
    assert summary["latency_mean_s_ci95_low"] < summary["latency_mean_s"] < summary["latency_mean_s_ci95_high"]
    assert len(json.loads((out / "replications.json").read_text())) == 3


def test_overload_prints_unstable_and_writes_null_latencies(capsys, write_scenario, tmp_path):
    path = write_scenario({**SMALL, "workload": {"arrivals": {"process": "poisson", "rate_rps": 5000}}})
    out = tmp_path / "over"
    assert main(["simulate", str(path), "--out", str(out)]) == 0
    assert "UNSTABLE" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unstable"] is True and summary["latency_p99_s"] is None
    assert summary["backlog_growth_rps"] > 0 and math.isfinite(summary["latency_p99_observed_s"])


def test_results_doc_covers_every_column_and_summary_key(small, tmp_path):
    import re

    import sim

    doc = (Path(__file__).parent.parent / "docs" / "results.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_{}P]+)` \|", doc, flags=re.M))
    result = sim.run(sim.load_scenario(small), replications=2)
    for frame in (result.requests, result.batches, result.timeseries, result.replicas):
        assert set(frame.columns) <= documented, set(frame.columns) - documented
    keys = {k for k in result.summary if not k.endswith(("_ci95_low", "_ci95_high"))}
    keys = {"latency_p{P}_slo_s" if k.endswith("_slo_s") else k for k in keys}
    assert keys <= documented, keys - documented
