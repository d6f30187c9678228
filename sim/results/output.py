"""Writing a run folder (atomically, through ``sim.results.files``) and printing its summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sim.results.files import writing_folder
from sim.runner import Result
from sim.scenario.load import dump_scenario

# Rows of the terminal table: (summary key, label, scale, unit format)
TABLE_ROWS = (
    ("requests_total", "requests measured", 1, "{:,.0f}"),
    ("throughput_rps", "throughput", 1, "{:,.1f} req/s"),
    ("latency_mean_s", "latency mean", 1e3, "{:,.2f} ms"),
    ("latency_p50_s", "latency p50", 1e3, "{:,.2f} ms"),
    ("latency_p90_s", "latency p90", 1e3, "{:,.2f} ms"),
    ("latency_p99_s", "latency p99", 1e3, "{:,.2f} ms"),
    ("latency_p999_s", "latency p99.9", 1e3, "{:,.2f} ms"),
    ("goodput_share", "within SLO", 100, "{:,.2f} %"),
    ("requests_rejected", "rejected", 1, "{:,.0f}"),
    ("requests_timed_out", "timed out", 1, "{:,.0f}"),
    ("mean_batch_size", "mean batch size", 1, "{:,.2f}"),
    ("utilization", "utilisation", 100, "{:,.1f} %"),
    ("replicas_mean", "replicas (mean)", 1, "{:,.2f}"),
    ("gpu_hours", "GPU-hours", 1, "{:,.3f} h"),
    ("cost_usd", "cost of run", 1, "${:,.2f}"),
    ("cost_per_hour_usd", "cost per hour", 1, "${:,.2f}/h"),
    ("cost_per_million_requests_usd", "cost per 1M requests", 1, "${:,.2f}"),
)


def fmt(summary: dict, key: str, scale: float, pattern: str) -> str:
    value = summary.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    text = pattern.format(value * scale)
    lo, hi = summary.get(f"{key}_ci95_low"), summary.get(f"{key}_ci95_high")
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        text += f" ± {pattern.format((hi - lo) / 2 * scale).split()[0].lstrip('$')}"
    return text


def print_summary(result: Result, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s, sc = result.summary, result.scenario
    reps = s.get("replications", 1)
    title = f"{sc.name} — seed {s.get('seed')}" + (f", {reps} replications (mean ± 95% CI)" if reps > 1 else "")
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, scale, pattern in TABLE_ROWS:
        table.add_row(label, fmt(s, key, scale, pattern))
    slo = f"p{sc.slo.percentile:g} ≤ {sc.slo.latency_s * 1e3:g} ms"
    table.add_row("SLO " + slo, "[green]met[/]" if s.get("slo_met") else "[red]missed[/]")
    console.print(table)
    if s.get("overloaded") and not s.get("unstable"):
        console.print(
            f"[bold yellow]OVERLOADED[/]: offered {s['offered_rps']:,.1f} req/s vs capacity {s['capacity_rps']:,.1f} "
            f"req/s; the queue limit / timeout sheds {100 * s['shed_share']:.1f}% of requests and the latencies "
            "above are those of the requests that got through."
        )
    if s.get("unstable"):
        console.print(
            f"[bold red]UNSTABLE[/]: offered {s['offered_rps']:,.1f} req/s vs capacity {s['capacity_rps']:,.1f} req/s; "
            f"backlog {s['backlog_at_end']:,} requests at the end, growing {s['backlog_growth_rps']:,.1f} req/s. "
            f"Latency percentiles are withheld: they grow with the horizon (observed p99 "
            f"{s['latency_p99_observed_s'] * 1e3:,.1f} ms is not a steady-state figure)."
        )


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value


# Every file a run folder may hold (``capsim plot`` adds the timeline).
RUN_FILES = frozenset({"summary.json", "requests.parquet", "batches.parquet", "timeseries.parquet",
                       "replicas.parquet", "scenario.yaml", "replications.json", "timeline.png"})


def is_run_folder(path: Path) -> bool:
    """True when ``path`` holds nothing but the files of a run folder."""
    return all(entry.name in RUN_FILES for entry in path.iterdir())


def write_run(result: Result, out_dir: str | Path, *, force: bool = False, flag: str = "--out",
              replaceable=None) -> Path:
    """summary.json, requests/batches/timeseries/replicas .parquet and the scenario as run, written
    atomically (``sim.results.files``): a non-empty ``out_dir`` is refused unless ``force`` (or
    ``replaceable(out_dir)``), and is then replaced as a whole."""
    out = Path(out_dir)
    summary = {k: json_safe(v) for k, v in result.summary.items()}
    summary["scenario"] = result.scenario.name
    with writing_folder(out, flag, force=force, replaceable=replaceable) as tmp:
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        result.requests.to_parquet(tmp / "requests.parquet", index=False)
        result.batches.to_parquet(tmp / "batches.parquet", index=False)
        result.timeseries.to_parquet(tmp / "timeseries.parquet", index=False)
        result.replicas.to_parquet(tmp / "replicas.parquet", index=False)
        (tmp / "scenario.yaml").write_text(dump_scenario(result.scenario))
        if result.per_replication and len(result.per_replication) > 1:
            rows = [{k: json_safe(v) for k, v in r.items()} for r in result.per_replication]
            (tmp / "replications.json").write_text(json.dumps(rows, indent=2) + "\n")
    return out
