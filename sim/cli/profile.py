"""``capsim profile``: show, list, estimate, import and build (from served runs) service-time profiles
(docs/profile.md).

No torch here; matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sim.errors import ProfileError


def register(subparsers) -> None:
    p = subparsers.add_parser("profile", help="show, list or estimate service-time profiles",
                              description="Inspect calibrated profiles (capsim.profile/1) and make "
                                          "roofline estimates for GPUs you do not have.")
    sub = p.add_subparsers(dest="profile_command", metavar="ACTION")
    show = sub.add_parser("show", help="print a profile as a table and plot it")
    show.add_argument("profile", metavar="FILE_OR_BUILTIN", help="a profile file or a shipped profile's name")
    show.add_argument("--plot", metavar="PNG", help="where to write the plot (default: <name>.png next to "
                      "the file, or in the current directory for a shipped profile)")
    show.add_argument("--no-plot", action="store_true", help="print the table only")
    show.set_defaults(func=show_cmd)
    listing = sub.add_parser("list", help="list the shipped profiles")
    listing.set_defaults(func=list_cmd)
    gpus = sub.add_parser("gpus", help="list the GPU catalog used by estimates")
    gpus.set_defaults(func=gpus_cmd)
    est = sub.add_parser("estimate", help="write a roofline-estimated profile for a catalog GPU",
                         description="Estimate a built-in model's profile on a catalog GPU (kind "
                                     "'estimate'): roofline latency times the distribution shape of a "
                                     "measured profile, or a measured GPU profile scaled by the roofline "
                                     "ratio. See docs/calibration.md.")
    est.add_argument("--model", required=True, help="built-in model: mlp, resnet50, bert-base, decoder, "
                     "mlp-2048, bert-encoder")
    est.add_argument("--gpu", required=True, help="catalog GPU (capsim profile gpus), e.g. H100-SXM")
    est.add_argument("--dtype", default="fp16", help="fp32, fp16 or bf16 (default fp16)")
    est.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128", help="comma-separated sizes")
    est.add_argument("--source", metavar="PROFILE", help="measured GPU profile of the same model to scale")
    est.add_argument("--shape", metavar="PROFILE", help="measured profile whose distribution shape and "
                     "host overhead to borrow (default: the shipped cpu-<model>-fp32 if there is one)")
    est.add_argument("--samples", type=int, default=100, help="samples per size without --shape (default 100)")
    est.add_argument("--seq-len", type=int, help="tokens per request (bert-base, bert-encoder, decoder)")
    est.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    est.set_defaults(func=estimate_cmd)
    fr = sub.add_parser("from-run", help="build a profile from served runs (capsim bench-serve directories)",
                        description="Observe -> calibrate: per batch size the batch times a real server took "
                                    "under traffic, its slowdown after idle gaps and its dispatch delays, "
                                    "from one or more `capsim bench-serve` run directories of one model on "
                                    "one device. See docs/validation.md.")
    fr.add_argument("runs", nargs="+", metavar="RUN_DIR", help="bench-serve run directories")
    fr.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    fr.add_argument("--speed", choices=("level", "trace", "regime"), default="level",
                    help="'level' (default): the server's slow speed level as a path walked from a random start, "
                         "for simulating other traffic; 'trace' (one run): every batch's speed at the moment it "
                         "ran, replayed at the same times (a replay of that run); 'regime': the regime model of "
                         "capsim profile from-log")
    fr.add_argument("--base", metavar="PROFILE", help="with --speed regime: a back-to-back profile of the same "
                    "model and device, for the sizes the runs never served")
    fr.set_defaults(func=from_run_cmd)
    _register_from_log(sub)
    _register_import(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


IMPORT_EPILOG = """\
formats (FILE):
  batch-json      {"env": {...}, "profile": {MODEL: {"BATCH_SIZE": [seconds, ...]}}}: back-to-back batch
                  times of a torch loop; pick the model with --model-key. env (torch, python, cpus, gpu,
                  nvidia_smi) fills the environment. Samples are kept as measured.
  csv             a header and one row per sample: batch_size,latency_s (seconds). Kept as measured.
  perf-analyzer   Triton perf_analyzer -f CSV, one file per client batch size (--batch-sizes, its -b):
                  Concurrency (or Request Rate), Inferences/Second, Client Send, Network+Server Send/Recv,
                  Server Queue, Server Compute Input/Infer/Output, Client Recv, p50/p90/p95/p99 latency,
                  Avg latency, all in microseconds. The row of --concurrency (default the lowest) is taken.
  model-analyzer  Triton Model Analyzer inference metrics CSV: Model, Batch, Concurrency, Model Config Path,
                  ..., Throughput (infer/sec), p99 Latency (ms) and p50 and/or Avg Latency (ms) (p90, p95
                  used when present), in milliseconds. One config (--config), one row per batch size.

what an import cannot hold: first calls of each size, peak memory, a serving replay (all null), and the
host overhead apart from the batch time (inside latency_s). The Triton formats report percentiles, not
samples: each size's --samples samples are rebuilt from them (linear between percentiles, flat above
the highest, so the tail beyond p99 is lost; below p50 a line from a floor that matches the average);
their latency is the client's end to end (network and client included), the server parts are kept in
provenance.percentiles. Unknown fields stay null; `provenance` records the files (sha256), the format
and these losses. --cold-start adds a load section from a cold-start record (coldstart.json layout).

example: capsim profile import profile_h100_mlp_resnet50.json --format batch-json --model-key resnet50 \\
           --arch resnet50 --dtype fp16 --cold-start coldstart.json --out h100-resnet50-fp16.json
         capsim profile import pa_b1.csv pa_b8.csv --format perf-analyzer --batch-sizes 1,8 --model resnet50 \\
           --dtype fp16 --device-name "NVIDIA A100-SXM4-80GB" --out a100-triton.json
"""


def _register_import(sub) -> None:
    from sim.profiles.importers import FORMATS

    imp = sub.add_parser("import", help="turn measurements taken elsewhere into a profile (kind measured)",
                         description="Import batch times measured outside capsim (a torch loop's JSON, a CSV of "
                                     "samples, Triton perf_analyzer or Model Analyzer CSV) as a capsim.profile/1 "
                                     "file of kind measured, recording where they came from. See docs/profile.md.",
                         epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("files", nargs="+", metavar="FILE", help="the measurement file(s), see formats below")
    imp.add_argument("--format", required=True, choices=FORMATS, help="the files' format")
    imp.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    imp.add_argument("--dtype", required=True, choices=("fp32", "fp16", "bf16"), help="the model's dtype as measured")
    imp.add_argument("--model", metavar="NAME", help="model.name in the profile (default: --arch, else the "
                     "source's model key)")
    imp.add_argument("--model-key", metavar="KEY", help="batch-json: which model of the file")
    imp.add_argument("--arch", metavar="BUILTIN", help="a built-in architecture the measured model has: fills "
                     "parameters, weight_bytes and seq_len (counted, not measured) and lets estimates scale it")
    imp.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where it ran (default cuda; "
                     "batch-json with env.gpu: cuda)")
    imp.add_argument("--device-name", metavar="NAME", help="the GPU's name as torch reports it (default: the "
                     "source's, if any), e.g. 'NVIDIA H100 80GB HBM3'")
    imp.add_argument("--batch-sizes", metavar="1,8,...", help="perf-analyzer: each file's client batch size (-b)")
    imp.add_argument("--concurrency", type=float, metavar="N", help="Triton formats: the row of this "
                     "concurrency (or request rate); default the lowest")
    imp.add_argument("--config", metavar="NAME", help="model-analyzer: the Model Config Path to take")
    imp.add_argument("--samples", type=int, default=101, metavar="N", help="Triton formats: samples rebuilt per "
                     "size (default 101)")
    imp.add_argument("--cold-start", metavar="FILE", help="a cold-start record (coldstart.json layout) for the "
                     "load section")
    imp.add_argument("--measured-with", metavar="TEXT", help="how the source was measured, for provenance")
    imp.set_defaults(func=import_cmd)


def import_cmd(args: argparse.Namespace) -> int:
    from sim.models.archs import BUILTIN_ARCHS
    from sim.profiles.importers import ImportSpec, import_profile
    from sim.profiles.profile import write_profile
    from sim.results.files import check_file

    check_file(args.out)
    if args.arch is not None and args.arch not in BUILTIN_ARCHS:
        raise ProfileError(f"--arch = {args.arch!r}: built-in architectures are {', '.join(BUILTIN_ARCHS)}")
    if not 1 <= args.samples <= 10000:
        raise ProfileError(f"--samples = {args.samples}: an integer in 1..10000")
    for flag, formats in (("model_key", ("batch-json",)), ("batch_sizes", ("perf-analyzer",)),
                          ("concurrency", ("perf-analyzer", "model-analyzer")), ("config", ("model-analyzer",))):
        if getattr(args, flag) is not None and args.format not in formats:
            raise ProfileError(f"--{flag.replace('_', '-')} = {getattr(args, flag)!r}: only with --format "
                               f"{' or '.join(formats)}, not {args.format}")
    sizes = ()
    if args.batch_sizes is not None:
        try:
            sizes = tuple(int(s) for s in args.batch_sizes.split(","))
        except ValueError:
            raise ProfileError(f"--batch-sizes = {args.batch_sizes!r}: integers >= 1 separated by commas") from None
    spec = ImportSpec(format=args.format, dtype=args.dtype, model_name=args.model, model_key=args.model_key,
                      arch=args.arch, device=args.device, device_name=args.device_name, batch_sizes=sizes,
                      concurrency=args.concurrency, config=args.config, samples=args.samples,
                      measured_with=args.measured_with)
    doc = import_profile(args.files, spec, args.cold_start, command=_import_command(args))
    out = write_profile(doc, args.out)
    sizes = [b["batch_size"] for b in doc["batches"]]
    print(f"wrote {out} (kind measured, {doc['model']['name']} {doc['model']['dtype']}, batch sizes "
          f"{', '.join(map(str, sizes))}; samples {doc['provenance']['samples']}); see it with: capsim profile show {out}")
    return 0


def _import_command(args: argparse.Namespace) -> list[str]:
    """The command as given, files by their names (provenance lists their checksums)."""
    command = ["capsim", "profile", "import", *(Path(f).name for f in args.files)]
    for flag in ("format", "dtype", "model", "model_key", "arch", "device", "device_name", "batch_sizes",
                 "concurrency", "config", "samples", "cold_start", "measured_with"):
        value = getattr(args, flag)
        if value is not None:
            command += [f"--{flag.replace('_', '-')}", Path(value).name if flag == "cold_start" else f"{value:g}"
                        if isinstance(value, float) else str(value)]
    return command + ["--out", Path(args.out).name]


def from_run_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.profiles.fromrun import profile_from_runs
    from sim.profiles.profile import load_profile, write_profile
    from sim.profiles.report import profile_table
    from sim.results.files import check_file
    from sim.validation.validate import load_run

    check_file(args.out)
    base = _base_profile(args.base, args.speed)
    doc = profile_from_runs([load_run(r) for r in args.runs], source="capsim profile from-run", speed=args.speed,
                            base=base)
    path = write_profile(doc, args.out)
    _print_built(Console(), doc, load_profile(path), profile_table)
    return 0


def _register_from_log(sub) -> None:
    fl = sub.add_parser("from-log", help="build a profile from request logs of any server (CSV or Parquet)",
                        description="Observe -> calibrate from a request log: one row per served request with "
                                    "arrival_s, start_s, end_s and batch_size (optional replica, batch_id; rows of "
                                    "one batch share start and end). The regime model (default): a size curve "
                                    "within a speed regime, the regime path in wall time, first-call stalls, the "
                                    "idle response and dispatch delays. See docs/profile.md, 'Request logs'.")
    fl.add_argument("logs", nargs="+", metavar="LOG", help="request logs (.csv, or .parquet / .pq)")
    fl.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    fl.add_argument("--base", metavar="PROFILE", help="a back-to-back profile of the same model and device (file or "
                    "shipped name): its shape in batch size beyond the sizes the log served, and its sizes")
    fl.add_argument("--speed", choices=("regime", "level", "trace"), default="regime",
                    help="'regime' (default): the speed regime path replayed in wall time from a random phase; "
                         "'level': a slow level walked per batch (as from-run); 'trace' (one log): a replay of it")
    fl.add_argument("--max-batch-size", type=int, metavar="N", help="the server's max batch size (default: the "
                    "largest batch in the logs); the profile covers sizes up to it")
    fl.add_argument("--max-queue-delay-ms", type=float, default=0.0, metavar="MS",
                    help="how long the server let the oldest request wait for a fuller batch (default 0)")
    fl.add_argument("--warm-sizes", metavar="LIST", help="comma-separated batch sizes the server had run before the "
                    "log began (then every other size's first batch is a first call); default: a first batch "
                    "counts as a first call when it took more than 2x its neighbours")
    fl.add_argument("--model", help="model name (default: the base profile's, else the log's file name)")
    fl.add_argument("--device", choices=("cpu", "cuda"), help="default: the base profile's, else cuda")
    fl.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="default: the base profile's, else fp32")
    fl.set_defaults(func=from_log_cmd)


def from_log_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.profiles.fromlog import profile_from_log_files
    from sim.profiles.profile import load_profile, write_profile
    from sim.profiles.report import profile_table
    from sim.results.files import check_file

    check_file(args.out)
    if args.max_batch_size is not None and args.max_batch_size < 1:
        raise ProfileError(f"--max-batch-size = {args.max_batch_size}: an integer >= 1")
    if not (math.isfinite(args.max_queue_delay_ms) and args.max_queue_delay_ms >= 0):
        raise ProfileError(f"--max-queue-delay-ms = {args.max_queue_delay_ms:g}: a finite number of ms >= 0")
    warm = None if args.warm_sizes is None else _sizes(args.warm_sizes, "--warm-sizes")
    doc = profile_from_log_files(args.logs, base=_base_profile(args.base, args.speed), speed=args.speed,
                                 max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1e3,
                                 warm_sizes=warm, model=args.model, device=args.device, dtype=args.dtype)
    path = write_profile(doc, args.out)
    _print_built(Console(), doc, load_profile(path), profile_table)
    return 0


def _base_profile(ref: str | None, speed: str):
    from sim.profiles.profile import as_profile

    if ref is None:
        return None
    if speed != "regime":
        raise ProfileError(f"--base = {ref!r}: only with --speed regime (the other speed models keep the sizes "
                           "the runs served)")
    try:
        return as_profile(ref)
    except ProfileError as exc:
        text = str(exc)
        raise ProfileError("--base = " + text[len("profile = "):] if text.startswith("profile = ") else text) from None


def _ranges(sizes: list[int]) -> str:
    """``[9, 10, 11, 64]`` as ``9..11, 64``."""
    runs: list[list[int]] = []
    for b in sizes:
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return ", ".join(f"{r[0]}..{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _sizes(text: str, flag: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = [0]
    if not sizes or min(sizes) < 1:
        raise ProfileError(f"{flag} = {text!r}: batch sizes (integers >= 1) separated by commas")
    return sizes


def _print_built(console, doc: dict, profile, profile_table) -> None:
    """The profile's table and what the served batches said beyond it."""
    console.print(profile_table(profile))
    response = doc.get("idle_response") or {}
    if response.get("gaps_s"):
        curve = ", ".join(f"{g * 1e3:.2g} ms: {r:.2f}x" for g, r in zip(response["gaps_s"], response["ratio"]))
        console.print(f"idle response (time after an idle gap / back to back): {curve}")
    calibration = doc["calibration"]
    if calibration.get("sizes_left_out"):
        console.print(f"sizes served too rarely to keep (interpolated instead): {calibration['sizes_left_out']}")
    level = doc.get("service_level") or {}
    if level.get("phase") == "random_time":
        console.print(f"speed regimes: {len(level['path'])} levels over {level['span_s']:.3g} s, "
                      f"exp(level) {math.exp(min(level['path'])):.2f}x to {math.exp(max(level['path'])):.2f}x")
    if calibration.get("sizes_from_base"):
        console.print(f"sizes beyond those served, in the base profile's shape: {_ranges(calibration['sizes_from_base'])}")
    first = doc.get("first_call") or {}
    if first.get("stall_s"):
        stalls = sorted(first["stall_s"])
        console.print(f"first calls: {len(stalls)} stalls, median {stalls[len(stalls) // 2] * 1e3:.3g} ms; "
                      f"warm before the log: {first['warm_sizes']}")
    if calibration.get("back_to_back_s") is not None:
        console.print("back to back (due when the previous batch ended): loop gap up to "
                      f"{calibration['back_to_back_s'] * 1e6:.0f} us")
    console.print(f"wrote {profile.path} from {calibration['batches']} batches")


def show_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.profiles.profile import as_profile
    from sim.profiles.report import plot_profile, profile_summary, profile_table
    from sim.results.files import check_file

    profile = as_profile(args.profile)
    target = None
    if not args.no_plot:
        target = check_file(args.plot or _default_plot_path(profile.path), "--plot")
    console = Console()
    console.print(profile_table(profile))
    for line in profile_summary(profile):
        console.print(line)
    if target is not None:
        console.print(f"plot: {plot_profile(profile, target)}")
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim.profiles.profile import builtin_profile_path, list_builtin_profiles, load_profile

    table = Table(title="shipped profiles (sim/data/profiles)", header_style="bold")
    for column in ("name", "kind", "device", "sizes", "from"):
        table.add_column(column, no_wrap=True)
    for name in list_builtin_profiles():
        p = load_profile(builtin_profile_path(name))
        table.add_row(name, p.kind, _device(p), f"{p.batch_sizes[0]}..{p.batch_sizes[-1]}", _origin(p))
    Console().print(table)
    print("capsim profile show NAME: its table, what it lacks and its plot")
    return 0


def _device(profile) -> str:
    """The catalog's short name of a GPU profile's device ("H100-SXM"), else the device as recorded."""
    from sim.hardware.gpus import profile_gpu

    return profile_gpu(profile) or (profile.device_name if profile.device == "cuda" else None) or profile.device


def _origin(profile) -> str:
    """Where a profile's numbers come from, in a few words."""
    provenance, estimate = profile.raw.get("provenance") or {}, profile.raw.get("estimate") or {}
    if provenance:
        return f"import: {provenance.get('format')}"
    if estimate:
        return "roofline"
    method = (profile.raw.get("calibration") or {}).get("method")
    return method or ("calibrate" if profile.raw.get("calibration") else "measured")


def gpus_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim.hardware.gpus import gpu_catalog

    table = Table(title="GPU catalog (sim/data/gpus.yaml; dense peaks, sources in the file)")
    for column in ("gpu", "fp32 TF", "fp16 TF", "bf16 TF", "memory GiB", "bandwidth GB/s", "$/hour"):
        table.add_column(column, justify="right" if column != "gpu" else "left")
    for key, g in gpu_catalog().items():
        peaks = [f"{g.peak_tflops.get(d):g}" if g.peak_tflops.get(d) else "-" for d in ("fp32", "fp16", "bf16")]
        table.add_row(key, *peaks, f"{g.memory_bytes / 1024**3:g}", f"{g.memory_bandwidth_bytes_per_s / 1e9:g}",
                      f"{g.usd_per_hour:.2f}")
    Console().print(table)
    return 0


def estimate_cmd(args: argparse.Namespace) -> int:
    from sim.profiles.profile import list_builtin_profiles, write_profile
    from sim.profiles.roofline import estimate_profile
    from sim.results.files import check_file

    check_file(args.out)
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",")]
    except ValueError:
        raise ProfileError(f"--batch-sizes = {args.batch_sizes!r}: integers >= 1 separated by commas") from None
    shape = args.shape
    if shape is None and args.source is None and f"cpu-{args.model}-fp32" in list_builtin_profiles():
        shape = f"cpu-{args.model}-fp32"
    doc = estimate_profile(args.model, args.gpu, args.dtype, sizes, args.source, shape_profile=shape,
                           samples=args.samples, seq_len=args.seq_len)
    out = write_profile(doc, args.out)
    print(f"wrote {out} (kind estimate, {doc['estimate']['method']} on {doc['estimate']['gpu']}); "
          f"see it with: capsim profile show {out}")
    return 0


def _default_plot_path(path: Path) -> Path:
    from sim.profiles.profile import BUILTIN_DIR

    if path.parent.resolve() == BUILTIN_DIR.resolve() or not _writable(path.parent):
        return Path.cwd() / f"{path.stem}.png"
    return path.with_suffix(".png")


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)
