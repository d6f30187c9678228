"""Cached computations for the pages: pure functions of hashable inputs (YAML text, paths, seeds).

A scenario crosses the cache boundary as its YAML text plus the directory its relative paths
resolve from; what comes back is plain data (dicts and frames), never a widget. Errors a user can
cause are ``CapsimError``s and are not cached, so fixing the input recomputes.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import whatif
from sim.results.output import json_safe
from sim.scenario.keys import updated
from sim.scenario.load import scenario_from_yaml_text


@dataclass
class RunView:
    """What the pages show of one run."""

    summary: dict
    cdf: pd.DataFrame  # latency_s, fraction (served requests in the measurement window)
    windows: pd.DataFrame  # whatif.windowed_latency columns
    series: pd.DataFrame  # the engine's sampled time series (replication 0)
    requests: pd.DataFrame  # every request record, for downloads
    horizon_s: float
    warmup_s: float
    window_s: float

    def summary_json(self, scenario_name: str) -> str:
        data = {k: json_safe(v) for k, v in self.summary.items()}
        data["scenario"] = scenario_name
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


@st.cache_data(max_entries=16, show_spinner="Simulating…")
def simulate(yaml_text: str, base_dir: str, seed: int) -> RunView:
    """One replication of the scenario, condensed for plotting."""
    from sim.runner import run

    scenario = scenario_from_yaml_text(yaml_text, base_dir)
    whatif.check_size(scenario)
    result = run(scenario, seed=seed, replications=1)
    req = result.requests.drop(columns=["replication"], errors="ignore")
    horizon = scenario.run.duration_s if scenario.run.duration_s is not None else float(req["arrival_s"].max())
    inside = whatif.measured(req, scenario.run.warmup_s, horizon)
    window = whatif.timeline_window_s(horizon)
    series = result.timeseries.drop(columns=["replication"], errors="ignore")
    return RunView(summary=dict(result.summary), cdf=whatif.latency_cdf(whatif.served_latency_s(inside)),
                   windows=whatif.windowed_latency(req, window, horizon), series=series, requests=req,
                   horizon_s=float(horizon), warmup_s=scenario.run.warmup_s, window_s=window)


@st.cache_data(max_entries=8, show_spinner="Sweeping batching settings…")
def batching_grid(yaml_text: str, base_dir: str, seed: int, max_batch_sizes: tuple[int, ...],
                  queue_delays_s: tuple[float, ...], max_requests: int) -> pd.DataFrame:
    """Latency, throughput and cost over max batch size × queue delay (shortened runs)."""
    scenario = whatif.shortened(scenario_from_yaml_text(yaml_text, base_dir), max_requests)
    frame = whatif.sweep(scenario, whatif.batching_grid_updates(max_batch_sizes, queue_delays_s), seed)
    return frame.rename(columns={"batching.max_batch_size": "max_batch_size",
                                 "batching.max_queue_delay_s": "max_queue_delay_s"})


@st.cache_data(max_entries=8, show_spinner="Simulating the load curve…")
def theory_vs_sim(yaml_text: str, base_dir: str, seed: int, loads: tuple[float, ...],
                  max_requests: int) -> tuple[pd.DataFrame, dict]:
    """Mean latency vs offered load: queueing formulas beside the simulator, Poisson traffic."""
    scenario = scenario_from_yaml_text(yaml_text, base_dir)
    return whatif.theory_vs_sim(scenario, loads, seed, max_requests)


@st.cache_data(max_entries=16, show_spinner="Sweeping the LLM fleet…")
def llm_sweep(yaml_text: str, base_dir: str, seed: int, updates_json: str, max_requests: int) -> pd.DataFrame:
    """Token-level figures of an llm scenario shortened to about ``max_requests`` requests, one run per
    updates dict of ``updates_json`` (a JSON list; the same traffic), with ``error`` where one does not run."""
    from dashboard import llm

    scenario = whatif.shortened(scenario_from_yaml_text(yaml_text, base_dir), max_requests)
    return llm.sweep(scenario, json.loads(updates_json), seed)


@st.cache_data(max_entries=16, show_spinner=False)
def replica_capacity_rps(yaml_text: str, base_dir: str) -> float:
    """Most requests/s one replica of the scenario serves: its most efficient batch size, back to back."""
    from sim.planner.search import replica_capacity_rps as capacity

    one = updated(scenario_from_yaml_text(yaml_text, base_dir), {"autoscaler": {"type": "static"}, "fleet.replicas": 1})
    return capacity(one)


@st.cache_data(max_entries=16, show_spinner=False)
def profile_table(path: str) -> tuple[pd.DataFrame, dict]:
    """Per-batch-size figures of a profile file plus its header facts."""
    from sim.profiles.profile import load_profile

    profile = load_profile(path)
    facts = {"model": profile.model_name, "dtype": profile.dtype, "device": profile.device,
             "device_name": profile.device_name or profile.device, "kind": profile.kind,
             "weight_bytes": profile.weight_bytes, "cold_start_load_s": profile.cold_start_load_s(),
             "load": {k: v for k, v in profile.load.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
             "memory": {k: v for k, v in (profile.raw.get("memory") or {}).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    return whatif.profile_table(profile), facts


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@st.cache_data(max_entries=4, show_spinner="Planning…")
def plan_table(yaml_text: str, base_dir: str, seed: int, slo_s: float, search: str, estimates: bool,
               batch_sizes: tuple[int, ...], queue_delays_s: tuple[float, ...], max_requests: int
               ) -> tuple[pd.DataFrame, dict | None, list[str], list[str]]:
    """``sim.planner.search`` on a shortened copy of the scenario: (ranked table with ``on_front``, best row,
    notes, varied keys). Roofline estimates for catalog GPUs live in a temporary directory for the search."""
    from sim.planner import search as planner
    from sim.planner.candidates import gpu_candidates

    scenario = updated(scenario_from_yaml_text(yaml_text, base_dir),
        {"slo.latency_s": slo_s, "run.replications": 1})
    scenario = whatif.shortened(scenario, max_requests)
    with tempfile.TemporaryDirectory(prefix="capsim-planner-") as estimates_dir:
        candidates = gpu_candidates(scenario, None, estimates, estimates_dir)
        space = planner.Space(candidates, list(batch_sizes), list(queue_delays_s))
        runner = planner.Evaluator(scenario, 1, seed, progress=False)
        result = planner.plan(scenario, space, runner, search)
    table = result.table.copy()
    front = planner.pareto_front(table, "slo_upper_s")
    table["on_front"] = table.index.isin(front.index)
    best = result.best
    return table, (None if best is None else best.to_dict()), list(result.notes), list(result.params)
