"""The GPU leave-one-out tables of docs/validation.md, from the committed H100 development set.

Per set (MLP, BERT, BERT prewarmed): calibrate ``capsim profile from-log``'s regime model on one run plus the
back-to-back profile, predict every other run through ``sim.run`` (sim/validation/h100.py), and print the
per-run table with the two baselines (the back-to-back profile alone; ``capsim profile from-run``'s level
model of the same run) and the counts within tolerance at peak load <= 85%. ``--seeds`` adds the model's
counts under other seeds (how much of a count is chance). Then the split-half agreement of the same runs: the
real server's first half as a prediction of its second, and the same for a stationary simulated server.

    .venv/bin/python scripts/validate_h100.py [--cal 3] [--replications 4] [--seeds 0,1,2,3,4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.validation import h100  # noqa: E402

HOWS = ("model", "back_to_back", "from_run_level")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cal", type=int, default=h100.CALIBRATION_RUN, help="calibration run index (default 3)")
    parser.add_argument("--replications", type=int, default=4)
    parser.add_argument("--seeds", default="", help="more seeds for the model's counts, comma-separated")
    parser.add_argument("--out", type=Path, help="also write every figure as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="capsim-h100-"))
    everything, totals = {}, {how: [0, 0, 0] for how in HOWS}
    for name in h100.SETS:
        rows = h100.leave_one_out(name, work / name, replications=args.replications, cal=args.cal, baselines=True)
        everything[name] = rows
        print(f"\n### {name}, calibrated on {name}/{args.cal}\n\n{h100.markdown(rows, HOWS)}\n")
        for how in HOWS:
            counts = h100.counts(rows, how)
            totals[how] = [a + b for a, b in zip(totals[how], counts)]
            print(f"{how}: p50 {counts[0]}/{counts[2]}, p99 {counts[1]}/{counts[2]}")
    print("\nall sets: " + "; ".join(f"{how} p50 {t[0]}/{t[2]}, p99 {t[1]}/{t[2]}" for how, t in totals.items()))
    halves = {how: [0, 0, 0] for how in ("real_halves", "stationary_halves")}
    for name in h100.SETS:
        rows = h100.repeatability(name, work / f"{name}-halves", cal=args.cal)
        everything[f"{name}-halves"] = rows
        for how in halves:
            halves[how] = [a + b for a, b in zip(halves[how], h100.counts(rows, how))]
    print("split halves: " + "; ".join(f"{how} p50 {t[0]}/{t[2]}, p99 {t[1]}/{t[2]}" for how, t in halves.items()))
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        total = [0, 0, 0]
        for name in h100.SETS:
            counts = h100.counts(h100.leave_one_out(name, work / f"{name}-seed{seed}", replications=args.replications,
                                                    cal=args.cal, seed=seed))
            total = [a + b for a, b in zip(total, counts)]
        print(f"seed {seed}: model p50 {total[0]}/{total[2]}, p99 {total[1]}/{total[2]}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"h100-loo-cal{args.cal}.json").write_text(json.dumps(everything, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
