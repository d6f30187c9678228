"""`capsim plot RUN_DIR`: the run's timeline as one PNG of stacked panels."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's timeline (rate, replicas, queue, utilisation, latency, cost)")
    p.add_argument("run_dir", help="directory written by `capsim simulate --out`")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/timeline.png)")
    p.set_defaults(func=main)


def main(args) -> int:
    from sim.results.plots import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0
