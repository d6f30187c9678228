"""Timeline figure of a run: stacked panels sharing the time axis (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sim.errors import CapsimError
from sim.results.files import check_file, writing_file
from sim.scenario.yaml_reader import read_text_file, read_yaml


def plot_timeline(ts: pd.DataFrame, out: str | Path, title: str = "", slo_latency_s: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "replication" in ts.columns:
        ts = ts[ts["replication"] == ts["replication"].min()]
    t = ts["time_s"].to_numpy()
    fig, axes = plt.subplots(6, 1, figsize=(11, 12), sharex=True, constrained_layout=True)
    ax = axes[0]
    ax.plot(t, ts["arrival_rate_rps"], label="arrivals", color="tab:blue", lw=1)
    ax.plot(t, ts["throughput_rps"], label="served", color="tab:green", lw=1, alpha=0.8)
    ax.set_ylabel("req/s")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    ax.step(t, ts["desired_replicas"], where="post", label="desired", color="black", lw=1.2)
    ax.step(t, ts["ready_replicas"], where="post", label="ready", color="tab:green", lw=1.2)
    ax.step(t, ts["loading_replicas"], where="post", label="starting", color="tab:orange", lw=1.2)
    ax.set_ylabel("replicas")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[2]
    ax.plot(t, ts["queue_len"], color="tab:purple", lw=1, label="queued")
    if ts["held"].any():
        ax.plot(t, ts["held"], color="tab:red", lw=1, label="held at activator")
    ax.set_ylabel("requests")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[3]
    ax.plot(t, 100 * ts["utilization"], color="tab:brown", lw=1)
    ax.set_ylabel("utilisation %")
    ax.set_ylim(0, 105)
    ax = axes[4]
    ax.plot(t, 1e3 * ts["latency_p50_s"], label="p50", color="tab:blue", lw=1)
    ax.plot(t, 1e3 * ts["latency_p99_s"], label="p99", color="tab:red", lw=1)
    if slo_latency_s:
        ax.axhline(1e3 * slo_latency_s, color="grey", ls="--", lw=1, label="SLO")
    ax.set_ylabel("latency ms")
    ax.set_yscale("log")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[5]
    ax.step(t, ts["cost_rate_usd_per_h"], where="post", color="tab:gray")
    ax.set_ylabel("cost $/h")
    ax.set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title or "capsim timeline")
    try:
        with writing_file(out) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return Path(out)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The timeline PNG of a run folder written by ``capsim simulate --out`` (default ``RUN_DIR/timeline.png``)."""
    run = Path(run_dir)
    ts_path = run / "timeseries.parquet"
    if not ts_path.is_file():
        raise CapsimError(f"run_dir = {str(run)!r}: no timeseries.parquet there; write one with "
                          "`capsim simulate SCENARIO --out DIR`")
    target = check_file(out or run / "timeline.png")
    try:
        ts = pd.read_parquet(ts_path)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    except (OSError, ValueError) as exc:
        raise CapsimError(f"run_dir = {str(run)!r}: not a readable run folder ({' '.join(str(exc).split())[:200]})") from None
    slo = None
    if (run / "scenario.yaml").is_file():
        data = read_yaml(read_text_file(run / "scenario.yaml"), str(run / "scenario.yaml"))
        slo = ((data or {}).get("slo") or {}).get("latency_s") if isinstance(data, dict) else None
    return plot_timeline(ts, target, title=str(summary.get("scenario", run.name)),
                         slo_latency_s=slo if isinstance(slo, int | float) else None)
