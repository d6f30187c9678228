"""``capsim profile``: show, list, estimate and build (from served runs) service-time profiles (docs/profile.md).

No torch here; matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import argparse
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
    est.add_argument("--model", required=True, help="built-in model: mlp, resnet50, bert-base, decoder")
    est.add_argument("--gpu", required=True, help="catalog GPU (capsim profile gpus), e.g. H100-SXM")
    est.add_argument("--dtype", default="fp16", help="fp32, fp16 or bf16 (default fp16)")
    est.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128", help="comma-separated sizes")
    est.add_argument("--source", metavar="PROFILE", help="measured GPU profile of the same model to scale")
    est.add_argument("--shape", metavar="PROFILE", help="measured profile whose distribution shape and "
                     "host overhead to borrow (default: the shipped cpu-<model>-fp32 if there is one)")
    est.add_argument("--samples", type=int, default=100, help="samples per size without --shape (default 100)")
    est.add_argument("--seq-len", type=int, help="tokens per request (bert-base, decoder)")
    est.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    est.set_defaults(func=estimate_cmd)
    fr = sub.add_parser("from-run", help="build a profile from served runs (capsim bench-serve directories)",
                        description="Observe -> calibrate: per batch size the batch times a real server took "
                                    "under traffic, its slowdown after idle gaps and its dispatch delays, "
                                    "from one or more `capsim bench-serve` run directories of one model on "
                                    "one device. See docs/validation.md.")
    fr.add_argument("runs", nargs="+", metavar="RUN_DIR", help="bench-serve run directories")
    fr.add_argument("--out", required=True, metavar="FILE", help="profile to write")
    fr.add_argument("--speed", choices=("level", "trace"), default="level",
                    help="'level' (default): the server's slow speed level as a path walked from a random start, "
                         "for simulating other traffic; 'trace' (one run): every batch's speed at the moment it "
                         "ran, replayed at the same times (a replay of that run)")
    fr.set_defaults(func=from_run_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def from_run_cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sim.profiles.fromrun import profile_from_runs
    from sim.profiles.profile import load_profile, write_profile
    from sim.profiles.report import profile_table
    from sim.results.files import check_file
    from sim.validation.validate import load_run

    check_file(args.out)
    doc = profile_from_runs([load_run(r) for r in args.runs], source="capsim profile from-run", speed=args.speed)
    path = write_profile(doc, args.out)
    console = Console()
    console.print(profile_table(load_profile(path)))
    response = doc.get("idle_response") or {}
    if response.get("gaps_s"):
        curve = ", ".join(f"{g * 1e3:.2g} ms: {r:.2f}x" for g, r in zip(response["gaps_s"], response["ratio"]))
        console.print(f"idle response (time after an idle gap / back to back): {curve}")
    left = doc["calibration"]["sizes_left_out"]
    if left:
        console.print(f"sizes served too rarely to keep (interpolated instead): {left}")
    console.print(f"wrote {path} from {doc['calibration']['batches']} batches")
    return 0


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

    table = Table(title="shipped profiles (sim/data/profiles)")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "model", "dtype", "device", "batch sizes"):
        table.add_column(column)
    for name in list_builtin_profiles():
        p = load_profile(builtin_profile_path(name))
        table.add_row(name, p.kind, p.model_name, p.dtype, p.device_name or p.device,
                      f"{p.batch_sizes[0]}..{p.batch_sizes[-1]} ({len(p.batch_sizes)})")
    Console().print(table)
    return 0


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
