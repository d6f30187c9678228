"""``capsim bench-serve``: a real dynamic-batching server on torch, fed open-loop, recorded per request.

Writes ``RUN_DIR/requests.parquet`` (the simulator's request columns: replication, id, arrival_s,
start_s, end_s, latency_s, queue_s, replica, batch_size, outcome), ``batches.parquet`` (the simulator's
batch columns), ``loadgen.parquet`` (per request: when the load generator released it and when the
server received it) and ``run.json`` (settings, environment, warm-up, timing diagnostics).
``capsim validate RUN_DIR`` replays the same arrivals through the simulator. See docs/validation.md.

Light at import time: torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError

EPILOG = """\
examples:
  capsim bench-serve --model calibration.validation_model:wide_mlp --threads 1 \\
      --max-batch-size 8 --max-queue-delay-ms 2 --rate 1500 --duration 5 --out runs/b8-1500
  capsim bench-serve --model mlp --replicas 2 --router least_outstanding --rate 4000 --out runs/two
  capsim bench-serve --model resnet50 --device cuda --dtype fp16 --max-batch-size 16 \\
      --max-queue-delay-ms 5 --rate 400 --duration 30 --out runs/h100-resnet
then: capsim validate RUN_DIR --calibrate
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-serve", help="run a real dynamic-batching server under open-loop load and record it",
        description="Serve a torch model with Triton-style dynamic batching (max batch size, max queue "
                    "delay, preferred sizes) under open-loop Poisson or trace arrivals, and write "
                    "per-request records in the simulator's format for `capsim validate`.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="NAME|module:factory",
                   help="a built-in model (capsim calibrate --list-models) or module:factory")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"), help="default: fp32")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads per replica (default: cores - 1 on cpu, leaving one for the "
                        "load generator; 1 on cuda; always 1 with --replicas > 1)")
    p.add_argument("--max-batch-size", type=int, default=1, metavar="B", help="default: 1")
    p.add_argument("--max-queue-delay-ms", type=float, default=0.0, metavar="T", help="default: 0")
    p.add_argument("--preferred-batch-sizes", default="", metavar="4,8",
                   help="sizes sent as soon as they can be formed (default: none)")
    p.add_argument("--rate", type=float, default=None, metavar="R", help="Poisson rate, requests/s")
    p.add_argument("--arrivals", default="poisson", choices=("poisson", "trace"), help="default: poisson")
    p.add_argument("--trace", metavar="FILE", help="CSV or Parquet with an arrival_s column (--arrivals trace)")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="arrival horizon in seconds (default 10; a trace is cut there)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the arrival times and weights")
    p.add_argument("--replicas", type=int, default=1, metavar="K",
                   help="replica processes behind a router (cpu; default 1 = in this process)")
    p.add_argument("--router", default="round_robin", choices=("round_robin", "least_outstanding"),
                   help="with --replicas > 1 (default: round_robin)")
    p.add_argument("--profile", metavar="FILE|BUILTIN",
                   help="warm up only this profile's batch sizes (default: every size 1..max)")
    p.add_argument("--warmup-rounds", type=int, default=3, metavar="N",
                   help="batches of each warm-up size before t0 (default 3)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="directory to write")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config, arrivals, settings = _parse(args)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CalibrationError("bench-serve needs torch: pip install 'capsim[calibration]'") from None
    from calibration.calibrate import resolve_device
    from calibration.models import check_model_name

    check_model_name(config.model)
    resolve_device(config.device)
    started, before = time.perf_counter(), _machine()
    if args.replicas > 1:
        from calibration.server_pool import run_pool

        raw = run_pool(config, arrivals, args.replicas, args.router, args.seed)
    else:
        from calibration.server import run_server

        raw = run_server(config, arrivals)
    after = _machine()
    raw["machine"] = {"cores": os.cpu_count(), "loadavg_1m_before": before["loadavg_1m"],
                      "loadavg_1m_after": after["loadavg_1m"],
                      "involuntary_switches": after["involuntary_switches"] - before["involuntary_switches"],
                      "note": "load average includes this run; involuntary context switches of this process "
                              "(and finished children) during warm-up and run: the machine was contended "
                              "when they are many"}
    out = write_run_dir(Path(args.out), raw, arrivals, config, settings, time.perf_counter() - started)
    run = json.loads((out / "run.json").read_text())
    s = run["observed"]
    print(f"wrote {out}/ ({s['requests']} requests, {s['served']} served, mean batch {s['mean_batch_size']:.2f}, "
          f"p50 {s['latency_p50_s'] * 1e3:.2f} ms, p99 {s['latency_p99_s'] * 1e3:.2f} ms, "
          f"load generator late by > 1 ms: {run['loadgen']['late_over_1ms_share'] * 100:.2f}%)")
    return 0


def _parse(args: argparse.Namespace):
    from calibration.cli import parse_batch_sizes
    from calibration.server import ServeConfig

    def positive(flag: str, value, minimum: float = 0.0, strict: bool = True):
        if value is None or not np.isfinite(value) or value < minimum or (strict and value == minimum):
            raise CalibrationError(f"{flag} = {value!r}: a number {'>' if strict else '>='} {minimum:g}")
        return value

    positive("--max-batch-size", args.max_batch_size, 1, strict=False)
    positive("--max-queue-delay-ms", args.max_queue_delay_ms, 0, strict=False)
    positive("--duration", args.duration)
    positive("--replicas", args.replicas, 1, strict=False)
    positive("--warmup-rounds", args.warmup_rounds, 1, strict=False)
    if args.replicas > 1 and args.device != "cpu":
        raise CalibrationError(f"--replicas = {args.replicas}: multi-replica mode is for --device cpu; on a "
                               "GPU run one bench-serve per GPU")
    preferred = parse_batch_sizes(args.preferred_batch_sizes) if args.preferred_batch_sizes else ()
    bad = [b for b in preferred if b > args.max_batch_size]
    if bad:
        raise CalibrationError(f"--preferred-batch-sizes = {args.preferred_batch_sizes!r}: {bad} exceed "
                               f"--max-batch-size {args.max_batch_size}")
    threads = args.threads or (max(1, (os.cpu_count() or 2) - 1) if args.device == "cpu" else 1)
    positive("--threads", threads, 1, strict=False)
    if args.replicas > 1:
        threads = 1
    arrivals, arrival_settings = _arrivals(args)
    warm_sizes: tuple[int, ...] = ()
    if args.profile:
        from sim.profile import as_profile

        warm_sizes = tuple(b for b in as_profile(args.profile).batch_sizes if b <= args.max_batch_size)
    config = ServeConfig(model=args.model, device=args.device, dtype=args.dtype, threads=threads,
                         max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1e3,
                         preferred_batch_sizes=preferred, warmup_sizes=warm_sizes,
                         warmup_rounds=args.warmup_rounds, seed=args.seed)
    settings = {"arrivals": arrival_settings, "rate_rps": args.rate, "seed": args.seed,
                "duration_s": args.duration, "replicas": args.replicas,
                "router": args.router if args.replicas > 1 else None, "profile": args.profile}
    return config, arrivals, settings


def _arrivals(args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """Arrival times drawn in advance: the simulator's own Poisson generator, or a trace cut at --duration."""
    from sim.arrivals import ARRIVALS, read_trace
    from sim.errors import CapsimError
    from sim.scenario import PoissonArrivals

    if args.arrivals == "trace":
        if not args.trace:
            raise CalibrationError("--arrivals trace needs --trace FILE (a CSV or Parquet with arrival_s)")
        try:
            times = read_trace(Path(args.trace))
        except CapsimError as exc:
            raise CalibrationError(f"--trace: {exc}") from None
        times = times[times < args.duration]
        if times.size == 0:
            raise CalibrationError(f"--trace {args.trace}: no arrival before --duration {args.duration}")
        return times, {"process": "trace", "path": str(args.trace)}
    if args.rate is None or not args.rate > 0:
        raise CalibrationError(f"--rate = {args.rate!r}: a Poisson rate > 0 requests/s is needed")
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0])
    times = ARRIVALS["poisson"](PoissonArrivals(rate_rps=args.rate), rng, args.duration, None)
    return np.asarray(times, float), {"process": "poisson", "rate_rps": args.rate}


def _machine() -> dict:
    import resource

    switches = sum(resource.getrusage(who).ru_nivcsw for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "involuntary_switches": switches}


# ---------------------------------------------------------------- assembling the records
def frames(raw: dict, arrival_s: np.ndarray):
    """(requests, batches, loadgen) frames in the simulator's column layout from the servers' records."""
    import pandas as pd

    n = arrival_s.size
    start, end = np.full(n, np.nan), np.full(n, np.nan)
    size = np.zeros(n, dtype=np.int32)
    received = np.full(n, np.nan)
    b_rows = []
    for k, rec in enumerate(raw["records"]):
        offset = len(b_rows)
        b_rows += [(offset + j, k, s, e, b, False, late) for j, (s, e, b, late) in
                   enumerate(zip(rec.batch_start_s, rec.batch_end_s, rec.batch_size, rec.batch_late_s))]
        for rid, j in rec.batch_of.items():
            start[rid], end[rid], size[rid] = rec.batch_start_s[j], rec.batch_end_s[j], rec.batch_size[j]
        for rid, t in rec.received_s.items():
            received[rid] = t
    served = np.isfinite(end)
    outcome = np.where(served, 0, 2).astype(np.int8)
    requests = pd.DataFrame({
        "replication": np.zeros(n, dtype=np.int64),
        "id": np.arange(n, dtype=np.int64),
        "arrival_s": arrival_s,
        "start_s": start,
        "end_s": end,
        "latency_s": end - arrival_s,
        "queue_s": start - arrival_s,
        "replica": np.where(served, raw["replica_of"], -1).astype(np.int32),
        "batch_size": size,
        "outcome": pd.Categorical.from_codes(outcome, categories=["served", "rejected", "timed_out"]),
    })
    b_rows.sort(key=lambda r: (r[2], r[1]))
    batches = pd.DataFrame(b_rows, columns=["batch", "replica", "start_s", "end_s", "size", "first_call",
                                           "late_s"])
    batches["batch"] = np.arange(len(batches), dtype=np.int64)
    loadgen = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "sent_s": raw["sent_s"], "received_s": received})
    return requests, batches, loadgen


def write_run_dir(out: Path, raw: dict, arrival_s: np.ndarray, config, settings: dict, wall_s: float) -> Path:
    import torch

    from calibration.writer import environment

    requests, batches, loadgen = frames(raw, arrival_s)
    out.mkdir(parents=True, exist_ok=True)
    requests.to_parquet(out / "requests.parquet", index=False)
    batches.to_parquet(out / "batches.parquet", index=False)
    loadgen.to_parquet(out / "loadgen.parquet", index=False)
    lag = (loadgen["sent_s"] - requests["arrival_s"]).to_numpy()
    served = requests[requests["outcome"] == "served"]
    lat = served["latency_s"].to_numpy()
    late = batches["late_s"].to_numpy()
    service = (batches["end_s"] - batches["start_s"]).to_numpy()
    run = {
        "schema": "capsim.bench-serve/1",
        "model": config.model, "device": config.device, "dtype": config.dtype,
        "threads": raw["threads"],
        "batching": {"max_batch_size": config.max_batch_size, "max_queue_delay_s": config.max_queue_delay_s,
                     "preferred_batch_sizes": list(config.preferred_batch_sizes),
                     "delay_counted_from": "when the server received the oldest request"},
        **settings,
        "warmup": raw["warmup"],
        "environment": environment(torch.device(config.device)),
        "clock": "time.perf_counter (CLOCK_MONOTONIC), seconds from a common t0; arrival_s is the schedule",
        "loadgen": {"lag_mean_s": _r(np.mean(lag)), "lag_p99_s": _r(np.percentile(lag, 99)),
                    "lag_max_s": _r(np.max(lag)), "late_over_1ms_share": _r(float(np.mean(lag > 1e-3)))},
        "server": {"batch_late_median_s": _r(np.median(late)) if late.size else None,
                   "batch_late_p99_s": _r(np.percentile(late, 99)) if late.size else None,
                   "batch_late_note": "batch start - when the batching rules made it due (wake-ups, GIL, "
                                      "scheduling); the simulator starts batches exactly when due",
                   "busy_s": _r(float(service.sum())),
                   "abandoned": sum(len(r.abandoned) for r in raw["records"])},
        "observed": {"requests": int(len(requests)), "served": int(len(served)), "batches": int(len(batches)),
                     "mean_batch_size": _r(float(batches["size"].mean())) if len(batches) else None,
                     "latency_p50_s": _r(np.percentile(lat, 50)) if lat.size else None,
                     "latency_p99_s": _r(np.percentile(lat, 99)) if lat.size else None},
        "machine": raw.get("machine", {}),
        "wall_s": round(wall_s, 2),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return out


def _r(x) -> float:
    return float(f"{float(x):.6g}")
