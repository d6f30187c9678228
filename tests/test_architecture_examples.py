"""The online-architecture examples run with `capsim simulate`, write the usual run folder with their figures
in summary.json, and every column and summary key they add is documented in docs/results.md. Plain runs
are unchanged by the architectures: the same seed gives the same records with or without the code path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
FIGURES = {
    "caching": ("cache_hit_ratio", "cache_hit_ratio_theory", "cache_hits", "cache_lookups"),
    "edge": ("network_mean_s", "edge_share", "spill_share"),
    "failures": ("availability", "replica_failures", "node_failures", "requests_failed", "requests_retried",
                 "slo_violation_min"),
    "overlap": ("host_utilization", "device_utilization", "capacity_serial_rps", "capacity_pipelined_rps",
                "overlap_gain"),
}
SHORT = {"caching": ["run.duration_s=6", "run.warmup_s=2"], "edge": ["run.duration_s=10"],
         "failures": ["run.duration_s=300"], "overlap": ["run.duration_s=6", "run.warmup_s=1"]}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_example_writes_its_figures_and_documented_columns(name, tmp_path, capsys):
    out = tmp_path / name
    sets = [arg for s in SHORT[name] for arg in ("--set", s)]
    assert main(["simulate", f"architectures/{name}", *sets, "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(FIGURES[name]) <= set(summary)
    documented = set(re.findall(r"^\| `([a-z0-9_{}P]+)` \|", DOC.read_text(), flags=re.M))
    for table in ("requests", "batches", "timeseries", "replicas"):
        columns = set(pd.read_parquet(out / f"{table}.parquet").columns)
        assert columns <= documented, (table, columns - documented)
    keys = {"latency_p{P}_slo_s" if k.endswith("_slo_s") else k for k in summary if k != "scenario"}
    assert keys <= documented, keys - documented


@pytest.mark.parametrize("section", [{"failures": {"replica_mtbf_s": 1e9}},
                                     {"overlap": {"mode": "serial", "host_s": 0.0}}])
def test_an_architecture_that_changes_nothing_leaves_the_records_as_they_were(section):
    """Failures that never come, or a serial loop with no host work: the same seed gives the plain run's
    requests and batches (the architectures draw from their own stream and touch nothing else)."""
    plain = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 3000}},
             "service": {"type": "parametric", "base_s": 0.003, "per_item_s": 0.0004, "distribution": "lognormal",
                         "cv": 0.5},
             "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.001, "timeout_s": 0.02},
             "fleet": {"replicas": 3, "router": "power_of_two"}, "run": {"duration_s": 5, "seed": 4}}
    a, b = sim.run(sim.scenario_from_dict(plain)), sim.run(sim.scenario_from_dict({**plain, **section}))
    pd.testing.assert_frame_equal(a.requests, b.requests[a.requests.columns])
    pd.testing.assert_frame_equal(a.batches, b.batches[a.batches.columns])
    assert a.summary["latency_p99_s"] == b.summary["latency_p99_s"]
