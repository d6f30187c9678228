"""The token-level simulator against a real LLM server: replay a ``capsim bench-serve --llm`` run.

The simulator gets the run's own arrivals (as the server received them) and token counts as a trace,
the same scheduler knobs and KV blocks, and a ``calibrated`` iteration-time model from an LLM
iteration profile: ``capsim calibrate --mode llm`` (a back-to-back grid), or one built from served runs
(``--from-run``: ``replay`` = the run's own speed over time, ``self`` = its own iterations' fit and
residuals, ``others`` = the other runs' iterations). Both sides are reduced by the same functions to
TTFT and TPOT percentiles, end-to-end latency, throughput and the mean decode batch, and the relative
error ``(sim - real) / real`` of each is reported (docs/validation.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.llm.calibrated import CalibratedStepTime
from sim.llm.capacity import replica_capacity_rps
from sim.profiles.llm import TERMS, load_iteration_profile, profile_from_llm_runs, write_iteration_profile
from sim.results.files import write_text
from sim.scenario.load import scenario_from_dict
from sim.validation.validate import (
    MAX_LOAD,
    BenchRun,
    _relative,
    _rounded,
    disturbance,
    qq_plot,
    within_tolerance,
)
from sim.validation.validate import (
    overall as overall_of,
)

METRICS = ("ttft_mean_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_mean_s", "tpot_p50_s", "tpot_p90_s",
           "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "throughput_rps", "output_tokens_per_s", "mean_decode_batch")
# Stated tolerances (docs/validation.md): at loads up to MAX_LOAD.
TOLERANCES = {"ttft_p50_s": 0.10, "ttft_p99_s": 0.20, "tpot_p50_s": 0.10, "tpot_p99_s": 0.20}
FROM_RUN_MODES = ("replay", "self", "others")


def is_llm_run(run: BenchRun) -> bool:
    return run.settings.get("mode") == "llm"


# ---------------------------------------------------------------- figures, the same for both sides
def figures(requests: pd.DataFrame, iterations: pd.DataFrame) -> dict[str, float]:
    """TTFT, TPOT and end-to-end figures of served requests, throughput (served requests and their output
    tokens over the makespan: first arrival to last completion), the mean decode batch of iterations
    that decode, and the share of the makespan an iteration ran."""
    served = requests[requests["outcome"] == "served"]
    if served.empty:
        return {k: math.nan for k in (*METRICS, "busy_share")}
    ttft, e2e = served["ttft_s"].to_numpy(), served["latency_s"].to_numpy()
    tpot = served["tpot_s"].to_numpy()
    tpot = tpot[np.isfinite(tpot)]
    span = float(served["end_s"].max() - requests["arrival_s"].min())
    decode = iterations["decode_tokens"].to_numpy()
    out = {"ttft_mean_s": float(ttft.mean()), "tpot_mean_s": float(tpot.mean()) if tpot.size else math.nan}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = float(np.percentile(values, q)) if values.size else math.nan
    out.update({
        "throughput_rps": len(served) / span if span > 0 else math.nan,
        "output_tokens_per_s": float(served["output_tokens"].sum()) / span if span > 0 else math.nan,
        "mean_decode_batch": float(decode[decode > 0].mean()) if (decode > 0).any() else math.nan,
        "busy_share": float((iterations["end_s"] - iterations["start_s"]).sum()) / span if span > 0 else math.nan,
    })
    return {k: out[k] for k in (*METRICS, "busy_share")}


def relative_errors(real: dict[str, float], sim: dict[str, float]) -> dict[str, float]:
    return {k: (sim[k] - real[k]) / real[k] if real[k] else math.nan for k in (*METRICS, "busy_share")}


def capacity_rps(profile_path: Path, run: BenchRun) -> float:
    """The mean-field ceiling of requests/s (``sim.llm.capacity``) for the run's knobs and mean token
    counts, with the profile's mean iteration times. *Load* is a share of the rate the server sustained
    saturated (``pilot_rps`` in run.json, which the suite's burst pilot measures) where the run has one,
    else of this ceiling (a ceiling: it ignores the spread of lengths and, without chunked prefill, the
    prefill-only iterations, so it reads low loads)."""
    knobs, req = run.settings["llm"], run.requests
    step = CalibratedStepTime.of(load_iteration_profile(profile_path))
    return replica_capacity_rps(step, kv_tokens=knobs["kv_blocks"] * knobs["block_size"],
                                block_size=knobs["block_size"], max_num_seqs=knobs["max_num_seqs"],
                                max_num_batched_tokens=knobs["max_num_batched_tokens"],
                                mean_input_tokens=float(req["input_tokens"].mean()),
                                mean_output_tokens=float(req["output_tokens"].mean()))


def iteration_ratio(run: BenchRun, profile_path: Path) -> float:
    """Real iteration time over the profile's mean prediction for the same compositions (1.0 = the
    profile describes the server under this traffic)."""
    profile = load_iteration_profile(profile_path)
    it = run.batches
    terms = np.column_stack([it[k].to_numpy() for k in TERMS]).astype(float)
    predicted = profile.fit.predict_many(terms).sum() * float(profile.residuals.mean())
    return float((it["end_s"] - it["start_s"]).sum() / predicted) if predicted > 0 else math.nan


# ---------------------------------------------------------------- from-run profiles
def profile_from_run_for(run: BenchRun, runs: list[BenchRun], mode: str, out_dir: Path) -> Path:
    """The from-run LLM profile that validates ``run`` (``replay``, ``self`` or ``others``, module docstring)."""
    if mode not in FROM_RUN_MODES:
        raise CapsimError(f"--from-run = {mode!r}: must be one of {', '.join(FROM_RUN_MODES)}")
    if mode == "others":
        key = _machine_key(run)
        sources = [r for r in runs if r is not run and _machine_key(r) == key]
        if not sources:
            raise CapsimError(f"--from-run others: no other LLM run of {run.settings.get('model')} with "
                              f"{run.settings.get('threads')} threads to build {run.name}'s profile from")
    else:
        sources = [run]
    doc = profile_from_llm_runs(sources, f"validate --from-run {mode}", speed_trace=mode == "replay")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{run.name}-profile-from-{mode}.json"
    write_iteration_profile(doc, path)
    return path


def _machine_key(run: BenchRun) -> tuple:
    """LLM runs whose iterations may stand in for each other: the same model and threads (the iteration
    model is the machine's, whatever the scheduler's knobs)."""
    s = run.settings
    return s.get("model"), s.get("threads"), s.get("dtype")


# ---------------------------------------------------------------- the simulator side
def scenario_for(run: BenchRun, profile_path: Path, trace_path: Path, replications: int, seed: int,
                 arrival_s: np.ndarray, order: np.ndarray):
    """The llm scenario that replays ``run``: requests ``order`` arriving at ``arrival_s`` (sorted) with
    their token counts, the run's scheduler knobs and KV blocks, the profile's iteration times."""
    s, knobs = run.settings, run.settings["llm"]
    req = run.requests
    pd.DataFrame({"arrival_s": arrival_s, "input_tokens": req["input_tokens"].to_numpy()[order],
                  "output_tokens": req["output_tokens"].to_numpy()[order]}).to_parquet(trace_path, index=False)
    horizon = max(float(s.get("duration_s") or 0.0), float(arrival_s.max()) + 1e-9)
    data = {
        "name": f"validate-{run.name}",
        "workload": {"arrivals": {"process": "trace", "path": str(trace_path.resolve())},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"}},
        "llm": {"model": s["model"], "dtype": s.get("dtype", "fp32"), "max_num_seqs": knobs["max_num_seqs"],
                "max_num_batched_tokens": knobs["max_num_batched_tokens"],
                "enable_chunked_prefill": knobs["enable_chunked_prefill"], "block_size": knobs["block_size"],
                "max_model_len": knobs["max_model_len"], "num_gpu_blocks_override": knobs["kv_blocks"],
                "step_time": {"type": "calibrated", "profile": str(Path(profile_path).resolve())}},
        "fleet": {"replicas": 1},
        "run": {"duration_s": horizon, "seed": seed, "replications": replications},
    }
    return scenario_from_dict(data, source=f"validate {run.path}")


def simulate(run: BenchRun, profile_path: Path, work_dir: Path, replications: int = 5, seed: int = 0):
    """Replications of the replay: requests reach the simulated server when they reached the real one
    (schedule + the load generator's delivery delay); times are counted from the schedule again on both
    sides. The simulated tables, and each figure as the mean over replications of the figure of one
    replication: the same estimator over the same number of requests as the real run's (a run of ~100
    requests has its p99 between its two longest; pooling identical replications would move it to the
    longest)."""
    import sim

    work_dir.mkdir(parents=True, exist_ok=True)
    delivery = run.delivery_s()  # by request id (ids are in arrival order)
    delivered = run.requests["arrival_s"].to_numpy() + delivery
    order = np.argsort(delivered, kind="stable")  # the k-th simulated arrival is request order[k]
    scenario = scenario_for(run, profile_path, work_dir / f"{run.name}-arrivals.parquet", replications, seed,
                            delivered[order], order)
    result = sim.run(scenario)
    requests = result.requests
    shift = delivery[order][requests["id"].to_numpy()]
    for column in ("arrival_s",):
        requests[column] = requests[column] - shift
    for column in ("latency_s", "ttft_s", "queue_s"):
        requests[column] = requests[column] + shift
    per_rep = [figures(requests[requests["replication"] == r], result.batches[result.batches["replication"] == r])
               for r in range(replications)]
    mean = {key: float(np.mean([f[key] for f in per_rep])) for key in per_rep[0]}
    mean["replications"] = {k: [f[k] for f in per_rep] for k in TOLERANCES}
    return result, mean


def validate_run(run: BenchRun, profile_path: Path, out_dir: Path, replications: int = 5, seed: int = 0,
                 plot: bool = True) -> dict:
    """Figures of the real LLM run and of its simulated replay, their relative errors, QQ plots."""
    s, knobs = run.settings, run.settings["llm"]
    result, sim_fig = simulate(run, profile_path, out_dir, replications, seed)
    real_fig = figures(run.requests, run.batches)
    duration = float(s.get("duration_s") or run.requests["arrival_s"].max())
    offered = len(run.requests) / duration
    capacity_load = offered / capacity_rps(profile_path, run)
    load = offered / s["pilot_rps"] if s.get("pilot_rps") else capacity_load
    per_replication = sim_fig.pop("replications")
    errors = relative_errors(real_fig, sim_fig)
    record = {
        "run": run.name, "mode": "llm", "model": s.get("model"), "threads": s.get("threads"),
        **{k: knobs[k] for k in ("max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "kv_blocks")},
        "requests": int(len(run.requests)), "offered_rps": offered, "load": load,
        "load_basis": "pilot" if s.get("pilot_rps") else "profile", "capacity_load": capacity_load,
        "profile": _relative(profile_path, out_dir), "iteration_ratio": iteration_ratio(run, profile_path),
        "mean_input_tokens": float(run.requests["input_tokens"].mean()),
        "mean_output_tokens": float(run.requests["output_tokens"].mean()),
        "preemptions": {"real": int(run.requests["preemptions"].sum()),
                        "sim_per_replication": float(result.requests["preemptions"].sum()) / replications},
        "loadgen_lag_p99_s": (s.get("loadgen") or {}).get("lag_p99_s"),
        "iteration_late_p99_s": (s.get("server") or {}).get("iteration_late_p99_s"),
        "machine": s.get("machine", {}),
        "real": real_fig, "sim": sim_fig, "error": errors, "sim_replications": per_replication,
        "within_tolerance": within_tolerance(errors, load, TOLERANCES), "disturbed": disturbance(s, "iterations", "iteration_late_p99_s"),
    }
    if plot:
        served_sim = result.requests[result.requests["outcome"] == "served"]
        served_real = run.requests[run.requests["outcome"] == "served"]
        for name in ("ttft", "tpot"):
            png = out_dir / f"{run.name}-{name}-qq.png"
            real, simulated = (f[f"{name}_s"].to_numpy() for f in (served_real, served_sim))
            qq_plot(real[np.isfinite(real)], simulated[np.isfinite(simulated)], png,
                    f"{run.name} {name.upper()}: load {load:.0%}, {knobs['max_num_seqs']} seqs, "
                    f"{knobs['max_num_batched_tokens']} tokens")
            record[f"{name}_qq_png"] = png.name
    return record


def overall(records: list[dict]) -> dict:
    """Per LLM metric over runs: mean and largest absolute relative error, which run had it, the counts."""
    return overall_of(records, METRICS)


# ---------------------------------------------------------------- output
def error_table(records: list[dict], width: int = 160):
    """A rich table: per run the real TTFT and TPOT p50/p99 and the relative errors, red outside tolerance."""
    from rich import box
    from rich.table import Table

    wide = width >= 128
    keys = (*TOLERANCES, *(("output_tokens_per_s", "mean_decode_batch") if wide else ()))
    labels = {"ttft_p50_s": "TTFT p50", "ttft_p99_s": "TTFT p99", "tpot_p50_s": "TPOT p50", "tpot_p99_s": "TPOT p99",
              "output_tokens_per_s": "tok/s", "mean_decode_batch": "decode batch"}
    table = Table(title="LLM simulation vs real: Δ = (sim - real) / real", header_style="bold",
                  box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True,
                  caption="load: offered / the saturated pilot's rate (else the profile's capacity); D: disturbed")
    table.add_column("run", no_wrap=True, min_width=max((len(r["run"]) for r in records), default=3))
    for col in ("load", "TTFT ms p50/p99", "TPOT ms p50/p99", *(f"Δ{labels[k]}" for k in keys), "ok"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in records:
        cells = []
        for key in keys:
            e = r["error"][key]
            bad = key in TOLERANCES and r["load"] <= MAX_LOAD and not abs(e) <= TOLERANCES[key]
            cells.append(f"[red]{e:+.1%}[/]" if bad else f"{e:+.1%}")
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r["within_tolerance"]]
        ok += " [yellow]D[/]" if r.get("disturbed") else ""
        real = r["real"]
        table.add_row(r["run"], f"{r['load']:.0%}", f"{real['ttft_p50_s'] * 1e3:.1f} / {real['ttft_p99_s'] * 1e3:.1f}",
                      f"{real['tpot_p50_s'] * 1e3:.1f} / {real['tpot_p99_s'] * 1e3:.1f}", *cells, ok)
    return table


def write_report(records: list[dict], out_dir: Path) -> Path:
    doc = {"schema": "capsim.validation/1", "mode": "llm", "tolerances": dict(TOLERANCES),
           "tolerance_max_load": MAX_LOAD, "error_definition": "(sim - real) / real", "runs": records,
           "overall": overall(records)}
    return write_text(out_dir / "validation.json", json.dumps(_rounded(doc), indent=1) + "\n")
