"""How long a what-if rerun takes: the cached compute function cold and warm, and full AppTest reruns.

The scenario is the built-in default (examples/fraud_mlp.yaml, 6,000 req/s) cut to about 100,000
requests. A *what-if rerun* is what a user waits for after changing one input: the baseline is
cached, the candidate is simulated cold, and the page is drawn. Target: under 2 s.

    .venv/bin/python benchmarks/dashboard_rerun.py [--requests 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

from sim.scenario.keys import updated

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logging.getLogger("streamlit").setLevel(logging.ERROR)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests in the scenario (default 100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement; the median is shown")
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    from dashboard import compute, state
    from sim.scenario.load import dump_scenario, load_scenario

    for name in ("streamlit", "streamlit.runtime.caching.cache_data_api",
                 "streamlit.runtime.scriptrunner_utils.script_run_context"):
        logging.getLogger(name).setLevel(logging.ERROR)

    base = load_scenario(ROOT / "examples" / "fraud_mlp.yaml")
    duration = args.requests / base.workload.arrivals.rate_rps
    scenario = updated(base, {"run.duration_s": duration, "run.warmup_s": 0.1 * duration})
    text, base_dir, seed = dump_scenario(scenario), scenario.base_dir, scenario.run.seed

    rows: list[tuple[str, list[float]]] = []
    cold, warm = [], []
    for i in range(args.repeats):
        compute.simulate.clear()
        cold.append(_timed(lambda i=i: compute.simulate(text, base_dir, seed + i)))
        warm.append(_timed(lambda i=i: compute.simulate(text, base_dir, seed + i)))
    n = len(compute.simulate(text, base_dir, seed).requests)
    rows += [("compute.simulate, cold (simulate + condense)", cold), ("compute.simulate, warm (cache hit)", warm)]

    first, what_if, unchanged = [], [], []
    for i in range(args.repeats):
        compute.simulate.clear()
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.session_state["capsim_baseline"] = state.Baseline(text, base_dir, "benchmark")
        first.append(_timed(at.run))
        box = next(w for w in at.number_input if w.key.endswith(":replicas"))
        box.set_value(1 + i % 2 + 2)  # 3 or 4 replicas: a candidate not simulated before
        what_if.append(_timed(at.run))
        unchanged.append(_timed(at.run))
        assert not at.exception, at.exception
    rows += [("AppTest first load (baseline cold)", first),
             ("AppTest what-if rerun (candidate cold, baseline warm)", what_if),
             ("AppTest rerun, nothing changed (all warm)", unchanged)]

    print(f"dashboard rerun benchmark: {n:,} requests per run, median of {args.repeats}")
    width = max(len(r[0]) for r in rows)
    for label, times in rows:
        med = statistics.median(times)
        print(f"  {label:<{width}}  {med:7.3f} s   (min {min(times):.3f}, max {max(times):.3f})")
    verdict = statistics.median(what_if) < 2.0
    print(f"what-if rerun under 2 s: {'yes' if verdict else 'NO'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
