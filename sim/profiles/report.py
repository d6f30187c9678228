"""A profile for people: its table in the terminal, a few lines of what it says, and its plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.results.files import writing_file

MIB = 1024**2


def profile_table(profile):
    """Per measured batch size: latency, forward time, throughput, first call and memory (a rich table)."""
    from rich.table import Table

    title = f"{profile.model_name} {profile.dtype} on {profile.device_name or profile.device} ({profile.kind})"
    table = Table(title=title)
    for column in ("batch", "p50 ms", "p99 ms", "forward p50 ms", "throughput req/s", "first call ms",
                   "peak memory MiB"):
        table.add_column(column, justify="right")
    for b in profile.batch_sizes:
        lat = profile.latency_s[b]
        fwd = profile.forward_s.get(b)
        first = profile.first_call_s.get(b)
        peak = profile.peak_memory_bytes.get(b)
        table.add_row(str(b), f"{np.median(lat) * 1e3:.3f}", f"{np.quantile(lat, 0.99) * 1e3:.3f}",
                      f"{np.median(fwd) * 1e3:.3f}" if fwd is not None else "-",
                      f"{b / profile.mean_service_s(b):,.0f}",
                      f"{first * 1e3:.2f}" if first is not None else "-",
                      f"{peak / MIB:,.1f}" if peak is not None else "-")
    return table


def profile_summary(profile) -> list[str]:
    """What the profile says beyond its table: file, host overhead, serving replay, cold start, estimate."""
    lines = [f"file: {profile.path}",
             "throughput = batch / (mean latency + mean host overhead), back to back"]
    if profile.host_overhead_s.size:
        lines.append(f"host overhead per batch: median {np.median(profile.host_overhead_s) * 1e6:.1f} us")
    replay = profile.raw.get("serving_replay") or {}
    if replay.get("median_ratio_to_benchmark") is not None:
        lines.append(f"serving replay (idle gaps, mixed sizes): median latency "
                     f"{replay['median_ratio_to_benchmark']:.2f}x the back-to-back benchmark")
    cold = profile.cold_start_load_s()
    lines.append(f"cold start (load + runtime start + warm-up): {cold:.2f} s" if cold is not None
                 else "cold start: not fully measured (see load.notes)")
    if profile.load:
        lines += cold_start_lines(profile)
    provenance = profile.raw.get("provenance") or {}
    if provenance:
        sources = ", ".join(s.get("file", "?") for s in provenance.get("sources") or [])
        lines.append(f"imported ({provenance.get('format')}, samples {provenance.get('samples')}) from {sources}: "
                     f"{provenance.get('measured_with') or 'measured elsewhere'}")
        lines.append("not in the source: " + "; ".join(provenance.get("lost") or []))
    if profile.is_estimate:
        est = profile.raw.get("estimate") or {}
        lines.append(f"[bold yellow]ESTIMATE, not a measurement[/]: {est.get('method')} on {est.get('gpu')}; "
                     f"{est.get('notes', '')}")
        lines.append(uncertainty_line(est.get("uncertainty")))
    return lines


def uncertainty_line(uncertainty: dict | None) -> str:
    """The stated uncertainty of a roofline estimate, as recorded in its profile."""
    if not uncertainty or uncertainty.get("bound") is None:
        return "uncertainty: not stated (an estimate made before estimates were checked against measurements)"
    worst = ", ".join(f"{name} {max(abs(r) for r in res.values()):.0%}"
                      for name, res in (uncertainty.get("residuals") or {}).items() if res)
    return (f"uncertainty: within ±{uncertainty['bound']:.0%} of measured medians at every size where checked "
            f"(largest residual by profile: {worst or 'none'}); docs/gpu.md")


def cold_start_lines(profile) -> list[str]:
    """The cold start of a replica serving this profile, phase by phase (scenario defaults for the phases
    a profile cannot say: provisioning, image pull, the readiness probe)."""
    from sim.scaling.lifecycle import cold_start_phases
    from sim.scenario.scaling import ColdStart

    rows = cold_start_phases(ColdStart(), profile, warmed_up=True)
    lines = ["cold start of a replica, phase by phase (scenario defaults where the profile cannot say; "
             "docs/autoscaling.md):"]
    lines += [f"  {name:<16} {seconds:7.2f} s  {basis}" for name, seconds, basis in rows]
    lines.append(f"  {'ready after':<16} {sum(r[1] for r in rows):7.2f} s")
    return lines


def plot_profile(profile, target: Path) -> Path:
    """Latency (p50 with a p10-p99 band, first calls) and throughput against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    sizes = np.array(profile.batch_sizes)
    lat = [profile.latency_s[b] for b in sizes]
    p10, p50, p99 = (np.array([np.quantile(x, q) * 1e3 for x in lat]) for q in (0.1, 0.5, 0.99))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.fill_between(sizes, p10, p99, alpha=0.25, label="p10-p99")
    ax1.plot(sizes, p50, marker="o", label="p50 end to end")
    firsts = [(b, profile.first_call_s[b] * 1e3) for b in sizes if b in profile.first_call_s]
    if firsts:
        ax1.scatter(*zip(*firsts, strict=True), marker="x", color="C3", label="first call")
    ax1.set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency (ms)", title="latency")
    ax2.plot(sizes, [b / profile.mean_service_s(int(b)) for b in sizes], marker="o")
    ax2.set(xscale="log", xlabel="batch size", ylabel="requests/s", title="throughput (back to back)")
    for ax in (ax1, ax2):
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.grid(True, alpha=0.3)
    ax1.legend()
    kind = "ESTIMATE" if profile.is_estimate else "measured"
    fig.suptitle(f"{profile.model_name} {profile.dtype} on {profile.device_name or profile.device} ({kind})")
    fig.tight_layout()
    try:
        with writing_file(target, "--plot") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return target
