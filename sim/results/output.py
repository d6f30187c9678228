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
LLM_TABLE_ROWS = (  # token-level runs (an llm section): the same table in LLM terms
    ("requests_total", "requests measured", 1, "{:,.0f}"),
    ("throughput_rps", "throughput", 1, "{:,.2f} req/s"),
    ("output_tokens_per_s", "output tokens/s", 1, "{:,.0f} tok/s"),
    ("ttft_p50_s", "TTFT p50", 1e3, "{:,.1f} ms"),
    ("ttft_p99_s", "TTFT p99", 1e3, "{:,.1f} ms"),
    ("tpot_p50_s", "TPOT p50", 1e3, "{:,.2f} ms"),
    ("tpot_p99_s", "TPOT p99", 1e3, "{:,.2f} ms"),
    ("e2e_p50_s", "latency p50", 1, "{:,.2f} s"),
    ("e2e_p99_s", "latency p99", 1, "{:,.2f} s"),
    ("goodput_share", "within TTFT+TPOT SLO", 100, "{:,.2f} %"),
    ("goodput_rps", "goodput", 1, "{:,.2f} req/s"),
    ("preemptions", "preemptions", 1, "{:,.0f}"),
    ("kv_utilization_mean", "KV cache in use (mean)", 100, "{:,.1f} %"),
    ("prefill_tokens_per_s", "prompt tokens computed", 1, "{:,.0f} tok/s"),
    ("prefix_cache_hit_rate", "prompt tokens from the prefix cache", 100, "{:,.1f} %"),
    ("kv_cache_tokens", "KV cache per replica", 1, "{:,.0f} tokens"),
    ("mean_batch_size", "sequences per iteration", 1, "{:,.1f}"),
    ("replicas_mean", "replicas (mean)", 1, "{:,.2f}"),
    ("gpus_per_replica", "GPUs per replica", 1, "{:,.3g}"),
    ("gpu_hours", "GPU-hours", 1, "{:,.3f} h"),
    ("cost_usd", "cost of run", 1, "${:,.2f}"),
    ("cost_per_million_output_tokens_usd", "cost per 1M output tokens", 1, "${:,.2f}"),
)
OFFLINE_TABLE_ROWS = (  # a batch job (an offline section, sim/architectures/offline.py)
    ("items_total", "items", 1, "{:,.0f}"),
    ("items_unfinished", "items unfinished", 1, "{:,.0f}"),
    ("makespan_s", "makespan", 1, "{:,.1f} s"),
    ("deadline_slack_s", "slack to the deadline", 1, "{:,.1f} s"),
    ("first_ready_s", "first replica ready", 1, "{:,.1f} s"),
    ("throughput_items_per_s", "throughput", 1, "{:,.1f} items/s"),
    ("utilization", "utilisation", 100, "{:,.1f} %"),
    ("replicas_launched", "replicas launched", 1, "{:,.1f}"),
    ("interruptions", "spot interruptions", 1, "{:,.1f}"),
    ("items_redone", "items redone", 1, "{:,.0f}"),
    ("gpu_hours", "GPU-hours", 1, "{:,.3f} h"),
    ("price_usd_per_replica_hour", "price per replica-hour", 1, "${:,.2f}/h"),
    ("cost_usd", "cost of the job", 1, "${:,.2f}"),
    ("cost_per_million_items_usd", "cost per 1M items", 1, "${:,.2f}"),
)
STREAMING_TABLE_ROWS = (  # after TABLE_ROWS for a stream (sim/architectures/streaming.py); requests are events
    ("lag_events_mean", "consumer lag (mean)", 1, "{:,.0f} events"),
    ("lag_events_max", "consumer lag (max)", 1, "{:,.0f} events"),
    ("lag_s_max", "oldest uncommitted event (max)", 1, "{:,.2f} s"),
    ("lag_growth_events_per_s", "lag growth", 1, "{:,.1f} events/s"),
    ("producer_stall_s", "producer stalled", 1, "{:,.1f} s"),
    ("events_dropped", "events dropped", 1, "{:,.0f}"),
    ("checkpoint_pause_s", "checkpoint pauses", 1, "{:,.1f} s"),
    ("consumers_max", "consumers (max)", 1, "{:,.0f}"),
)
ONLINE_TABLE_ROWS = {  # after TABLE_ROWS, per section of an online architecture (sim/architectures/)
    "cache": (("cache_hit_ratio", "cache hit ratio", 100, "{:,.2f} %"),
              ("cache_hit_ratio_theory", "hit ratio, closed form", 100, "{:,.2f} %")),
    "edge": (("network_mean_s", "network round trip (mean)", 1e3, "{:,.2f} ms"),
             ("edge_share", "served at the edge", 100, "{:,.1f} %"),
             ("spill_share", "spilled to central", 100, "{:,.1f} %")),
    "failures": (("availability", "availability", 100, "{:,.2f} %"),
                 ("replica_failures", "replica failures", 1, "{:,.1f}"),
                 ("node_failures", "node failures", 1, "{:,.1f}"),
                 ("requests_failed", "failed (given up)", 1, "{:,.0f}"),
                 ("requests_retried", "retried", 1, "{:,.0f}"),
                 ("slo_violation_min", "SLO violation", 1, "{:,.1f} min")),
    "overlap": (("capacity_serial_rps", "capacity, serial loop", 1, "{:,.1f} req/s"),
                ("capacity_pipelined_rps", "capacity, pipelined", 1, "{:,.1f} req/s"),
                ("device_utilization", "device utilisation", 100, "{:,.1f} %")),
}


def table_rows(scenario) -> tuple:
    """The rows of the terminal table for the scenario's mode."""
    if getattr(scenario, "offline", None) is not None:
        return OFFLINE_TABLE_ROWS
    if getattr(scenario, "streaming", None) is not None:
        return TABLE_ROWS + STREAMING_TABLE_ROWS
    if getattr(scenario, "llm", None) is not None:
        return LLM_TABLE_ROWS + class_rows(scenario.workload.classes, scenario.llm.slo.percentile)
    return TABLE_ROWS + sum((rows for key, rows in ONLINE_TABLE_ROWS.items() if getattr(scenario, key, None)), ())


def class_rows(classes, percentile: float) -> tuple:
    """Per request class (``workload.classes``): its requests, TTFT and TPOT at the SLO's percentile, the
    share within both objectives (the summary's ``class__<name>__*`` keys)."""
    p = f"p{percentile:g}"
    rows = ()
    for c in classes or ():
        k = f"class__{c.name}__"
        rows += ((f"{k}requests", f"{c.name}: requests", 1, "{:,.0f}"),
                 (f"{k}ttft_{p}_slo_s", f"{c.name}: TTFT {p}", 1e3, "{:,.1f} ms"),
                 (f"{k}tpot_{p}_slo_s", f"{c.name}: TPOT {p}", 1e3, "{:,.2f} ms"),
                 (f"{k}goodput_share", f"{c.name}: within TTFT+TPOT SLO", 100, "{:,.2f} %"))
    return rows


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
    llm = getattr(sc, "llm", None)
    for key, label, scale, pattern in table_rows(sc):
        table.add_row(label, fmt(s, key, scale, pattern))
    slo = f"p{sc.slo.percentile:g} ≤ {sc.slo.latency_s * 1e3:g} ms"
    if llm is not None:
        slo = f"p{llm.slo.percentile:g} TTFT ≤ {llm.slo.ttft_s * 1e3:g} ms, TPOT ≤ {llm.slo.tpot_s * 1e3:g} ms"
    label, met = "SLO " + slo, s.get("slo_met")
    if getattr(sc, "offline", None) is not None:  # a batch job is held to its deadline
        label, met = f"deadline {sc.offline.deadline_s:,.0f} s", s.get("deadline_met")
    table.add_row(label, "[green]met[/]" if met else "[red]missed[/]")
    console.print(table)
    if llm is not None and s.get("step_time_estimated"):
        console.print(f"[bold yellow]ESTIMATE[/]: iteration times are a roofline estimate of {llm.model} on "
                      f"{llm.tensor_parallel * llm.pipeline_parallel} × {sc.fleet.gpu} (llm.step_time: roofline), "
                      "not a measurement.")
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
