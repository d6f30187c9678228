"""The roofline against the measured GPU profiles: the table and plot of docs/gpu.md.

    .venv/bin/python scripts/roofline_residuals.py [--plot docs/gpu_roofline.png]

Prints the markdown table (estimate, the whole-model roofline capsim used before, measured median and p10-p90,
residual) for every size of every shipped measured GPU profile of a built-in model, and draws the plot.
tests/test_roofline_residuals.py checks that docs/gpu.md holds these rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sim.hardware.gpus import DTYPE_BYTES, get_gpu
from sim.models.costs import model_cost
from sim.profiles.profile import as_profile
from sim.profiles.roofline import ROOFLINE_BOUND, residual_table
from sim.results.files import check_file, writing_file


def whole_model_roofline_s(model: str, gpu_key: str, dtype: str, b: int) -> float:
    """The estimate capsim made before (one roofline for the whole model: compute efficiency 0.5, memory
    0.8, PCIe 0.8, 8 us per op, 10 us per copy)."""
    cost, gpu, width = model_cost(model), get_gpu(gpu_key), DTYPE_BYTES[dtype]
    moved = (cost.parameters + cost.buffers) * width + cost.activation_elems * width * b
    io = (cost.input_bytes * (width / 4 if cost.float_input else 1) + cost.output_elems * width) * b
    return (max(cost.flops * b / (gpu.peak_flops(dtype) * 0.5), moved / (gpu.memory_bandwidth_bytes_per_s * 0.8))
            + cost.kernels * 8e-6 + io / (gpu.host_link_bytes_per_s * 0.8) + 2 * 10e-6)


def table_rows() -> list[str]:
    """One markdown row per profile and size (powers of two: the held-out profiles measured every size)."""
    rows = []
    for r in residual_table():
        if r["batch_size"] & (r["batch_size"] - 1):
            continue
        samples = as_profile(r["profile"]).latency_s[r["batch_size"]]
        p10, p90 = np.quantile(samples, [0.1, 0.9]) * 1e3
        before = whole_model_roofline_s(r["model"], r["gpu"], r["dtype"], r["batch_size"]) * 1e3
        rows.append(f"| {r['model']} {r['dtype']} {r['gpu']}{' (held out)' if r['held_out'] else ''} | {r['batch_size']} | {r['measured_s'] * 1e3:.3f} | "
                    f"{p10:.3f}-{p90:.3f} | {r['estimate_s'] * 1e3:.3f} | {r['residual']:+.0%} | {before:.3f} |")
    return rows


def plot(target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    rows = residual_table()
    names = list(dict.fromkeys(r["profile"] for r in rows))
    columns = 3
    fig, axes = plt.subplots(-(-len(names) // columns), columns, figsize=(5 * columns, 4.2 * -(-len(names) // columns)))
    for ax in np.atleast_1d(axes).flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(np.atleast_1d(axes).flat, names, strict=False):
        mine = [r for r in rows if r["profile"] == name]
        sizes = np.array([r["batch_size"] for r in mine])
        profile = as_profile(name)
        p10, p90 = (np.array([np.quantile(profile.latency_s[b], q) * 1e3 for b in sizes]) for q in (0.1, 0.9))
        estimate = np.array([r["estimate_s"] * 1e3 for r in mine])
        ax.fill_between(sizes, p10, p90, alpha=0.25, color="C0", label="measured p10-p90")
        ax.plot(sizes, [r["measured_s"] * 1e3 for r in mine], "o-", color="C0", label="measured median")
        ax.fill_between(sizes, estimate * (1 - ROOFLINE_BOUND), estimate * (1 + ROOFLINE_BOUND), alpha=0.12,
                        color="C1", label=f"estimate ±{ROOFLINE_BOUND:.0%}")
        ax.plot(sizes, estimate, "s-", color="C1", label="estimate (per-op roofline)")
        ax.plot(sizes, [whole_model_roofline_s(r["model"], r["gpu"], r["dtype"], r["batch_size"]) * 1e3 for r in mine],
                "x--", color="C2", label="whole-model roofline (before)")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="batch time (ms)",
               title=f"{mine[0]['model']} {mine[0]['dtype']} on {mine[0]['gpu']}"
                     + (" (held out)" if mine[0]["held_out"] else ""))
        ticks = [b for b in sizes if not b & (b - 1)]
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(True, alpha=0.3)
    np.atleast_1d(axes).flat[0].legend(fontsize=8)
    fig.tight_layout()
    try:
        with writing_file(target, "--plot") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", metavar="PNG", help="where to draw the plot (default: print the table only)")
    args = parser.parse_args()
    target = check_file(args.plot, "--plot") if args.plot else None
    print("| model, GPU | batch | measured median ms | measured p10-p90 ms | estimate ms | residual | "
          "whole-model roofline ms (before) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(table_rows()))
    if target is not None:
        print(f"plot: {plot(target)}")


if __name__ == "__main__":
    main()
