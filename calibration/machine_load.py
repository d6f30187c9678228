"""Is this machine quiet enough to judge a live server? Its load average, and a CPU probe.

A live validation run measures a real server and its load generator (two busy threads); any other
process on their cores delays them, and the figures then measure the machine. Two looks before such a
run: the 1-minute load average against the cores (what ran lately), and a probe that keeps as many
processes busy as the suite has threads for a moment and measures which share of a core each got (what
runs now: a process busy-looping on one of two cores leaves each about two thirds).

    python -m calibration.machine_load [--force]      # exit 1 when too busy, unless --force
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from dataclasses import dataclass

SUITE_THREADS = 2  # the server's one torch thread and the load generator
MIN_IDLE_CORES = 1.5  # the load average must leave this many cores idle (2 cores: at most 0.5)
MIN_CPU_SHARE = 0.9  # each probe process must have had this share of a core
PROBE_S = 1.5


@dataclass(frozen=True)
class MachineLoad:
    cores: int
    load_average_1min: float
    cpu_share: tuple[float, ...]  # per probe process: CPU time / wall time while it spun

    def load_average_quiet(self) -> bool:
        return self.load_average_1min <= self.cores - MIN_IDLE_CORES

    def probe_quiet(self) -> bool:
        return min(self.cpu_share) >= MIN_CPU_SHARE

    def quiet(self) -> bool:
        return self.load_average_quiet() and self.probe_quiet()

    def describe(self) -> str:
        shares = " / ".join(f"{s:.0%}" for s in self.cpu_share)
        return (f"1-minute load average {self.load_average_1min:.2f} on {self.cores} cores (quiet: <= "
                f"{self.cores - MIN_IDLE_CORES:g}); CPU probe: {len(self.cpu_share)} busy processes got {shares} "
                f"of a core (quiet: each >= {MIN_CPU_SHARE:.0%})")


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; the share of it this process was on a core."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        sum(range(10_000))
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def measure(workers: int = SUITE_THREADS, seconds: float = PROBE_S) -> MachineLoad:
    """The load average (read first, before the probe adds to it) and the probe's CPU shares."""
    load = os.getloadavg()[0]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        shares = pool.map(_spin, [seconds] * workers)
    return MachineLoad(os.cpu_count() or 1, load, tuple(shares))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Say whether this machine is quiet enough to judge a live server.")
    parser.add_argument("--force", action="store_true", help="exit 0 even when too busy (the figures then "
                        "measure the machine as well)")
    args = parser.parse_args(argv)
    load = measure()
    if load.quiet():
        print(f"machine load: QUIET enough to judge a live server: {load.describe()}")
        return 0
    print(f"machine load: TOO BUSY to judge a live server: {load.describe()}. Other work on the cores would "
          "show up as simulator error.")
    if args.force:
        print("machine load: FORCE=1 given: running anyway; read the figures as the machine's as well as the "
              "simulator's")
        return 0
    print("machine load: wait for a quiet moment, or run `make validate FORCE=1` to run anyway")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
