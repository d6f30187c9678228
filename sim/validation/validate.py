"""Simulation against a real server: replay a ``capsim bench-serve`` run through the simulator.

The simulator gets the run's own arrival times (a trace), the same batching settings and replica
count, and a service model (a profile, ideally calibrated on the same machine with the same thread
count). Both sides are then reduced to the same figures by the same pure functions, and the relative
error ``(sim - real) / real`` of each is reported. No torch here: calibrating first is
``capsim validate --calibrate``, which runs ``capsim calibrate`` in a child process.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.profiles.fromrun import profile_from_runs
from sim.profiles.profile import Profile, as_profile, write_profile
from sim.results.files import write_text, writing_file
from sim.scenario.load import scenario_from_dict
from sim.serving.waiting import recorded_wait
from sim.theory.queueing import batching_capacity_rps

METRICS = ("latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s", "mean_batch_size",
           "throughput_rps")
LABELS = {"latency_mean_s": "mean", "latency_p50_s": "p50", "latency_p90_s": "p90", "latency_p99_s": "p99",
          "mean_batch_size": "batch", "throughput_rps": "throughput"}
# Stated tolerances (docs/validation.md): relative error bounds that hold at loads up to MAX_LOAD.
TOLERANCES = {"latency_p50_s": 0.10, "latency_p99_s": 0.20}
MAX_LOAD = 0.85
# A run is *disturbed* when the machine visibly held up the load generator or the server loop itself
# (other processes on the cores): its own timing diagnostics say so, whatever the simulator predicts.
DISTURBED_LAG_S = 1e-3


@dataclass(frozen=True)
class BenchRun:
    """One ``bench-serve`` run directory, read back."""

    path: Path
    settings: dict
    requests: pd.DataFrame
    batches: pd.DataFrame
    loadgen: pd.DataFrame | None = None

    def delivery_s(self) -> np.ndarray:
        """Per request (by id), how late the load generator delivered it to the server: received - scheduled
        arrival (zeros for runs without loadgen.parquet). A client-side delay, not the server's."""
        n = len(self.requests)
        if self.loadgen is None or "received_s" not in self.loadgen:
            return np.zeros(n)
        received = self.loadgen.set_index("id")["received_s"].reindex(self.requests["id"]).to_numpy()
        late = received - self.requests["arrival_s"].to_numpy()
        return np.where(np.isfinite(late), np.clip(late, 0.0, None), 0.0)

    @property
    def name(self) -> str:
        return self.path.name


def load_run(run_dir: str | Path) -> BenchRun:
    path = Path(run_dir)
    files = [path / n for n in ("run.json", "requests.parquet", "batches.parquet")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CapsimError(f"{path}: not a bench-serve run directory (missing {', '.join(missing)})")
    loadgen = pd.read_parquet(path / "loadgen.parquet") if (path / "loadgen.parquet").is_file() else None
    return BenchRun(path, json.loads(files[0].read_text()), pd.read_parquet(files[1]), pd.read_parquet(files[2]),
                    loadgen)


# ---------------------------------------------------------------- figures, the same for both sides
def figures(requests: pd.DataFrame, batches: pd.DataFrame) -> dict[str, float]:
    """Latency mean and percentiles of served requests, mean batch size, throughput and busy share.

    Throughput is served requests over the makespan (first arrival to last completion), so a server
    that falls behind shows it; ``busy_share`` is summed batch time over the makespan per replica.
    """
    served = requests[requests["outcome"] == "served"]
    latency = served["latency_s"].to_numpy()
    if latency.size == 0:
        return {k: math.nan for k in (*METRICS, "busy_share")}
    span = float(served["end_s"].max() - requests["arrival_s"].min())
    replicas = max(int(batches["replica"].nunique()), 1)
    busy = float((batches["end_s"] - batches["start_s"]).sum())
    return {
        "latency_mean_s": float(latency.mean()),
        "latency_p50_s": float(np.percentile(latency, 50)),
        "latency_p90_s": float(np.percentile(latency, 90)),
        "latency_p99_s": float(np.percentile(latency, 99)),
        "mean_batch_size": float(batches["size"].mean()),
        "throughput_rps": latency.size / span if span > 0 else math.nan,
        "busy_share": busy / (span * replicas) if span > 0 else math.nan,
    }


def relative_errors(real: dict[str, float], sim: dict[str, float]) -> dict[str, float]:
    return {k: (sim[k] - real[k]) / real[k] if real[k] else math.nan for k in (*METRICS, "busy_share")}


def capacity_rps(profile: Profile, max_batch_size: int, replicas: int) -> float:
    """Most requests/s the profile says the fleet can serve (best batch size up to max, back to back;
    below the smallest measured size latency is taken as flat)."""
    return batching_capacity_rps(lambda b: profile.mean_service_s(_clamp(b, profile.batch_sizes)), max_batch_size,
                                 replicas)


def _clamp(b: int, sizes: tuple[int, ...]) -> int:
    """``b`` moved into the profile's measured range (below the smallest size latency is taken as flat)."""
    return min(max(int(b), sizes[0]), sizes[-1])


def service_ratio(run: BenchRun, profile: Profile) -> float:
    """Real batch time over the profile's mean for the same batch sizes (1.0 = the profile is right)."""
    sizes = run.batches["size"].to_numpy()
    real = float((run.batches["end_s"] - run.batches["start_s"]).sum())
    predicted = sum(profile.mean_service_s(_clamp(b, profile.batch_sizes)) * k
                    for b, k in zip(*np.unique(sizes, return_counts=True)))
    return real / predicted if predicted else math.nan


FROM_RUN_MODES = ("replay", "self", "others")


def profile_from_run_for(run: BenchRun, runs: list[BenchRun], mode: str, out_dir: Path) -> Path:
    """Write and return the from-run profile that validates ``run``:

    * ``"replay"``: ``run``'s own speed over time, replayed at the same moments (``speed="trace"``):
      the simulator must still form the batches, queue and time every request itself;
    * ``"self"``: ``run``'s own batch-time distributions and slow speed level, at a random phase;
    * ``"others"``: every other given run of the same model, device, dtype, threads and batching
      (held out: the run's own batches are never used).
    """
    if mode not in FROM_RUN_MODES:
        raise CapsimError(f"--from-run = {mode!r}: must be one of {', '.join(FROM_RUN_MODES)}")

    if mode in ("self", "replay"):
        sources = [run]
    else:
        key = _model_key(run)
        sources = [r for r in runs if r is not run and _model_key(r) == key]
        if not sources:
            raise CapsimError(f"--from-run others: no other run of {run.settings.get('model')} with the same "
                              f"device, dtype, threads and batching as {run.path} to build its profile from")
    needed = int(run.settings["batching"]["max_batch_size"])
    doc = profile_from_runs(sources, source=f"validate --from-run {mode}", max_batch_size=needed,
                            speed="trace" if mode == "replay" else "level")
    largest = max(entry["batch_size"] for entry in doc["batches"])
    if largest < needed:
        raise CapsimError(f"--from-run {mode}: run {run.name} batches up to {needed}, but the runs it is built from "
                          f"served batches of at most {largest} (too few sizes to extrapolate); add runs with max "
                          f"batch size {needed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{run.name}-profile-from-{mode}.json"
    write_profile(doc, path)
    return path


def _model_key(run: BenchRun) -> tuple:
    """Runs that may stand in for each other: the same model, device, dtype, threads, waiting and batching."""
    s = run.settings
    b = s.get("batching") or {}
    return (s.get("model"), s.get("device"), s.get("dtype"), s.get("threads"), recorded_wait(s),
            b.get("max_batch_size"), b.get("max_queue_delay_s"), tuple(b.get("preferred_batch_sizes") or ()))


# ---------------------------------------------------------------- the simulator side
def scenario_for(run: BenchRun, profile_path: Path, trace_path: Path, replications: int, seed: int,
                 arrivals: np.ndarray | None = None, warmed_up: bool = True):
    """The scenario that replays ``run``: its arrivals (default: the schedule) as a trace, its batching
    and fleet, the profile (``warmed_up``: as bench-serve warms every size before serving)."""
    s = run.settings
    batching = s["batching"]
    arrivals = run.requests["arrival_s"].to_numpy() if arrivals is None else np.sort(arrivals)
    pd.DataFrame({"arrival_s": arrivals}).to_parquet(trace_path, index=False)
    horizon = max(float(s.get("duration_s") or 0.0), float(arrivals.max()) + 1e-9)
    data = {
        "name": f"validate-{run.name}",
        "workload": {"arrivals": {"process": "trace", "path": str(trace_path.resolve())}},
        "service": {"type": "profile", "profile": str(Path(profile_path).resolve()), "warmed_up": warmed_up,
                    "host_overhead": True},
        "batching": {"max_batch_size": batching["max_batch_size"],
                     "max_queue_delay_s": batching["max_queue_delay_s"],
                     "preferred_batch_sizes": batching.get("preferred_batch_sizes", [])},
        "fleet": {"replicas": int(s.get("replicas", 1)), "router": s.get("router") or "round_robin"},
        "run": {"duration_s": horizon, "seed": seed, "replications": replications},
    }
    return scenario_from_dict(data, source=f"validate {run.path}")


def simulate(run: BenchRun, profile_path: Path, work_dir: Path, replications: int = 5, seed: int = 0,
             warmed_up: bool = True):
    """Replications of the replay (the same arrivals, fresh service draws); frames pooled across them.

    The simulated server gets each request when the real one did (scheduled arrival + the load
    generator's delivery delay, ~50 us on a CPU); each simulated latency is then counted from the
    scheduled arrival again, as the real one is, so both sides carry the same client-side delay.
    """
    import sim

    work_dir.mkdir(parents=True, exist_ok=True)
    scheduled = run.requests.sort_values("arrival_s")
    delivery = run.delivery_s()[np.argsort(run.requests["arrival_s"].to_numpy(), kind="stable")]
    delivered = scheduled["arrival_s"].to_numpy() + delivery
    order = np.argsort(delivered, kind="stable")  # the k-th simulated arrival is request order[k]
    scenario = scenario_for(run, profile_path, work_dir / f"{run.name}-arrivals.parquet", replications, seed,
                            arrivals=delivered, warmed_up=warmed_up)
    result = sim.run(scenario)
    shift = delivery[order][result.requests["id"].to_numpy()]
    result.requests["arrival_s"] = result.requests["arrival_s"] - shift
    result.requests["latency_s"] = result.requests["latency_s"] + shift
    per_rep = [figures(result.requests[result.requests["replication"] == r],
                       result.batches[result.batches["replication"] == r]) for r in range(replications)]
    pooled = figures(result.requests, result.batches)
    # Throughput and busy share are per-replication quantities: average them instead of pooling spans.
    for key in ("throughput_rps", "busy_share"):
        pooled[key] = float(np.mean([f[key] for f in per_rep]))
    pooled["replications"] = {k: [f[k] for f in per_rep] for k in ("latency_p50_s", "latency_p90_s", "latency_p99_s")}
    return result, pooled


def validate_run(run: BenchRun, profile_path: Path, out_dir: Path, replications: int = 5, seed: int = 0,
                 plot: bool = True) -> dict:
    """Figures of the real run and of its simulated replay, their relative errors and a QQ plot."""
    profile = as_profile(profile_path)
    s = run.settings
    result, sim_fig = simulate(run, profile_path, out_dir, replications, seed)
    real_fig = figures(run.requests, run.batches)
    batching = s["batching"]
    replicas = int(s.get("replicas", 1))
    duration = float(s.get("duration_s") or run.requests["arrival_s"].max())
    offered = len(run.requests) / duration
    load = offered / capacity_rps(profile, batching["max_batch_size"], replicas)
    per_replication = sim_fig.pop("replications")
    errors = relative_errors(real_fig, sim_fig)
    record = {
        "run": run.name,
        "model": s.get("model"), "device": s.get("device"), "threads": s.get("threads"), "replicas": replicas,
        "router": s.get("router"), "max_batch_size": batching["max_batch_size"],
        "max_queue_delay_ms": batching["max_queue_delay_s"] * 1e3,
        "preferred_batch_sizes": batching.get("preferred_batch_sizes", []),
        "requests": int(len(run.requests)), "offered_rps": offered, "load": load,
        "profile": _relative(profile_path, out_dir), "service_ratio": service_ratio(run, profile),
        "server_wait": recorded_wait(s), "profile_wait": recorded_wait(profile.raw),
        "batch_late_median_s": s.get("server", {}).get("batch_late_median_s"),
        "batch_late_p99_s": s.get("server", {}).get("batch_late_p99_s"),
        "loadgen_lag_p99_s": s.get("loadgen", {}).get("lag_p99_s"),
        "machine": s.get("machine", {}),
        "real": real_fig, "sim": sim_fig, "error": errors, "sim_replications": per_replication,
        "within_tolerance": within_tolerance(errors, load),
        "disturbed": disturbance(s),
    }
    if plot:
        sim_lat = result.requests.loc[result.requests["outcome"] == "served", "latency_s"].to_numpy()
        real_lat = run.requests.loc[run.requests["outcome"] == "served", "latency_s"].to_numpy()
        png = out_dir / f"{run.name}-qq.png"
        qq_plot(real_lat, sim_lat, png, f"{run.name}: load {load:.0%}, max batch {batching['max_batch_size']}, "
                f"delay {batching['max_queue_delay_s'] * 1e3:g} ms")
        record["qq_png"] = png.name
    return record


def _relative(path: Path, folder: Path) -> str:
    """A file inside the report's folder by its name (the report may be moved), any other in full."""
    path = Path(path)
    return path.name if path.parent.resolve() == Path(folder).resolve() else str(path)


def disturbance(settings: dict, steps: str = "batches", late_key: str = "batch_late_p99_s") -> list[str]:
    """Why a run's timing cannot be trusted (empty when it can): late releases or late starts of its
    ``steps`` (batches; an LLM server's iterations), whose p99 lateness the server keeps as ``late_key``."""
    reasons = []
    lag = (settings.get("loadgen") or {}).get("lag_p99_s")
    late = (settings.get("server") or {}).get(late_key)
    if lag is not None and lag > DISTURBED_LAG_S:
        reasons.append(f"load generator released 1% of requests more than {lag * 1e3:.1f} ms late")
    if late is not None and late > DISTURBED_LAG_S:
        reasons.append(f"1% of {steps} started more than {late * 1e3:.1f} ms after they were due")
    return reasons


def within_tolerance(errors: dict[str, float], load: float, tolerances: dict[str, float] = TOLERANCES) -> bool | None:
    """True/False against ``tolerances`` for runs at load <= MAX_LOAD; None (not judged) above it."""
    if not load <= MAX_LOAD:
        return None
    return all(abs(errors[k]) <= tol for k, tol in tolerances.items())


def overall(records: list[dict], metrics: tuple[str, ...] = METRICS) -> dict:
    """Per metric over runs: mean absolute, largest absolute relative error, and which run had it."""
    out: dict = {}
    for key in (*metrics, "busy_share"):
        errs = [(abs(r["error"][key]), r["run"]) for r in records if math.isfinite(r["error"][key])]
        if errs:
            worst = max(errs)
            out[key] = {"mean_abs": float(np.mean([e for e, _ in errs])), "max_abs": worst[0], "worst_run": worst[1]}
    judged = [r["within_tolerance"] for r in records if r["within_tolerance"] is not None]
    out["runs_judged"] = len(judged)
    out["runs_within_tolerance"] = int(sum(judged))
    out["runs_disturbed"] = sum(1 for r in records if r.get("disturbed"))
    return out


# ---------------------------------------------------------------- output
def qq_plot(real_s: np.ndarray, sim_s: np.ndarray, path: Path, title: str) -> Path:
    """Quantiles of simulated against real latency (ms), 1st..99.9th percentile, with y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.concatenate([np.linspace(1, 99, 99), [99.5, 99.9]])
    rq, sq = np.percentile(real_s, q) * 1e3, np.percentile(sim_s, q) * 1e3
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=80)
    lo, hi = min(rq.min(), sq.min()) * 0.9, max(rq.max(), sq.max()) * 1.1
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="y = x")
    ax.fill_between([lo, hi], [lo * 0.8, hi * 0.8], [lo * 1.2, hi * 1.2], color="0.9", label="±20%")
    ax.scatter(rq, sq, s=8, color="C0", label="percentiles 1..99.9")
    ax.scatter(rq[[49, 98]], sq[[49, 98]], s=30, color="C3", zorder=3, label="p50, p99")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="real latency (ms)",
           ylabel="simulated latency (ms)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        with writing_file(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def error_table(records: list[dict], width: int = 160):
    """A rich table: one row per run, real p50/p99 and the relative errors (Δ, in %), red where outside
    the stated tolerance. Below ``width`` 128 (an 80-column terminal, a CI log) only the judged figures;
    the run's name is never cut."""
    from rich import box
    from rich.table import Table

    wide = width >= 128
    keys = METRICS if wide else ("latency_p50_s", "latency_p99_s", "mean_batch_size")
    table = Table(title="simulation vs real: Δ = (sim - real) / real", header_style="bold", box=box.SIMPLE_HEAD,
                  caption="load: offered / the profile's capacity; D: disturbed by the machine", show_edge=False,
                  collapse_padding=True)
    table.add_column("run", no_wrap=True, min_width=max((len(r["run"]) for r in records), default=3))
    if wide:
        table.add_column("batch/delay", no_wrap=True)
    for col in ("load", "p50 ms", "p99 ms", *(f"Δ{LABELS[k]}" for k in keys), *(("service",) if wide else ()), "ok"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in records:
        cells = []
        for key in keys:
            e = r["error"][key]
            bad = key in TOLERANCES and r["load"] <= MAX_LOAD and abs(e) > TOLERANCES[key]
            cells.append(f"[red]{e:+.1%}[/]" if bad else f"{e:+.1%}")
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r["within_tolerance"]]
        ok += " [yellow]D[/]" if r.get("disturbed") else ""
        setting = [f"{r['max_batch_size']}/{r['max_queue_delay_ms']:g}ms"
                   + (f" ×{r['replicas']}" if r["replicas"] > 1 else "")] if wide else []
        table.add_row(r["run"], *setting, f"{r['load']:.0%}",
                      f"{r['real']['latency_p50_s'] * 1e3:.2f}", f"{r['real']['latency_p99_s'] * 1e3:.2f}",
                      *cells, *((f"{r['service_ratio']:.2f}×",) if wide else ()), ok)
    return table


def write_report(records: list[dict], out_dir: Path) -> Path:
    doc = {"schema": "capsim.validation/1", "tolerances": {k: v for k, v in TOLERANCES.items()},
           "tolerance_max_load": MAX_LOAD, "error_definition": "(sim - real) / real",
           "runs": records, "overall": overall(records)}
    return write_text(out_dir / "validation.json", json.dumps(_rounded(doc), indent=1) + "\n")


def _rounded(obj):
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj
