"""`capsim plot RUN_DIR`: the run's timeline as one PNG of stacked panels."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plot", help="draw a run's timeline (rate, replicas, queue, utilisation, latency, cost)")
    p.add_argument("run_dir", help="directory written by `capsim simulate --out`")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/timeline.png)")
    p.set_defaults(func=main)


def main(args) -> int:
    import json
    from pathlib import Path

    import pandas as pd

    from sim.errors import CapsimError
    from sim.results.plots import plot_timeline

    run = Path(args.run_dir)
    ts_path = run / "timeseries.parquet"
    if not ts_path.is_file():
        raise CapsimError(f"run_dir = {str(run)!r}: no timeseries.parquet there; write one with "
                          "`capsim simulate SCENARIO --out DIR`")
    ts = pd.read_parquet(ts_path)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    slo = None
    if (run / "scenario.yaml").is_file():
        import yaml

        slo = (yaml.safe_load((run / "scenario.yaml").read_text()).get("slo") or {}).get("latency_s")
    out = plot_timeline(ts, args.out or run / "timeline.png", title=str(summary.get("scenario", run.name)),
                        slo_latency_s=slo)
    print(f"wrote {out}")
    return 0
