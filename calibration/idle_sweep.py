"""The idle response, measured the way the server waits for work: how much slower a batch runs after idle.

A back-to-back benchmark keeps the model's weights and the allocator's blocks hot; a served batch that
starts after its server sat idle for ``g`` can be slower. How much depends on ``g`` (on this project's
2-core VM, for the validation MLP at batch 1: about 1.0x up to 1 ms, 1.05x at 3 ms, 1.2x at 10 ms,
1.4-1.8x at 30 ms; on an H200 the BERT-style encoder 1.41x at 30 ms and more after longer
idle in served runs) and may depend on how the server waited (``--wait``: blocked, or polling on its
core), so the sweep waits exactly as the server does, through the server's own
:class:`calibration.server.Inbox`:

for ``rounds`` rounds, for each swept size (the smallest, a middle and the largest profiled size) and
each gap in ``GAPS_S`` (in a fresh random order per round): ``BACK_TO_BACK`` batches back to back;
then the server waits in its inbox for the next request, which a feeder thread (the load generator's
part) puts there once the gap has passed since the last batch ended; then one batch of that size on
that request. Per batch after a gap: ``ratio`` = its latency / the median of the back-to-back batches
right before it (drift between rounds cancels), ``gap_s`` = the idle time it followed, ``wake_s`` = when
the server ran again - when the request was put (the waiting's own dispatch delay).

The profile gets ``idle_response`` (per gap bin, by the gap waited, the median ratio and gap: the format a from-run
profile has, applied by ``sim.serving.service.IdleResponse``) and ``dispatch.idle_s`` (the wake-ups).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.harness import Harness
from calibration.server import Clock, Inbox

GAPS_S = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)  # a GPU at a few requests/s idles 0.1 s and more
BACK_TO_BACK = 3  # batches right before each gap: the reference its ratio is taken against
BACK_TO_BACK_S = 50e-6  # below this a served gap is back to back (sim.profiles.speed's first bin edge)


@dataclass
class IdleSweep:
    """Per unit of work after a gap: its nominal and measured gap, its key (a batch size, an iteration's
    composition), its ratio to back to back, and the wake-up. ``unit`` names the work in the method."""

    wait: str
    unit: str = "batch"
    nominal_s: list[float] = field(default_factory=list)
    gap_s: list[float] = field(default_factory=list)
    size: list = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    wake_s: list[float] = field(default_factory=list)

    def response(self) -> dict | None:
        """The ``idle_response`` section: per gap bin, the median measured gap and median ratio.

        A sample counts in the bin of the gap it actually waited (the nominal gaps' bins, split halfway
        between neighbours in log time), not the one it was meant to wait: on a busy machine the feeder
        can deliver late, and the bins' gaps must increase as the profile requires. Empty bins are left
        out."""
        if not self.ratio:
            return None
        gaps, ratio = np.asarray(self.gap_s, float), np.asarray(self.ratio, float)
        levels = np.asarray(sorted(set(self.nominal_s)))
        edges = np.sqrt(levels[:-1] * levels[1:])
        bins = np.searchsorted(edges, gaps)
        kept = [b for b in range(len(levels)) if np.any(bins == b)]
        units = self.unit + ("es" if self.unit.endswith("ch") else "s")
        return {"gaps_s": [float(np.median(gaps[bins == b])) for b in kept],
                "ratio": [float(np.median(ratio[bins == b])) for b in kept],
                "counts": [int(np.sum(bins == b)) for b in kept],
                "back_to_back_s": BACK_TO_BACK_S,
                "back_to_back_count": BACK_TO_BACK * len(self.ratio),
                "method": f"capsim calibrate idle sweep, server wait {self.wait!r}: per gap bin (by the gap waited) "
                          "the median over "
                          f"{units} {sorted(set(self.size))} and rounds of a {self.unit}'s latency after waiting "
                          f"that long for a request / the median of the {BACK_TO_BACK} same {units} back to "
                          "back before it"}

    def dispatch(self) -> dict | None:
        """The ``dispatch`` section: how long the waiting server took to run once a request was put."""
        if not self.wake_s:
            return None
        return {"idle_s": sorted(self.wake_s), "busy_s": [],
                "method": f"capsim calibrate idle sweep: when the server waiting as {self.wait!r} ran again - when "
                          "the feeder thread put the request in its inbox; back to back not measured"}


def swept_sizes(sizes: tuple[int, ...]) -> list[int]:
    """The smallest, a middle (geometric) and the largest of the profiled sizes."""
    ordered = sorted(sizes)
    middle = min(ordered, key=lambda b: abs(np.log(b) - np.log(ordered[0] * ordered[-1]) / 2))
    return sorted({ordered[0], middle, ordered[-1]})


def run_idle_sweep(h: Harness, sizes: tuple[int, ...], rounds: int, wait: str, seed: int = 0,
                   step: Callable[[], None] = lambda: None) -> IdleSweep:
    """The sweep over ``swept_sizes(sizes)`` and ``GAPS_S``, ``rounds`` times; ``step`` after each batch."""
    return sweep_work(lambda b: h.requests(b), lambda reqs: h.through_loop(reqs).latency_s, swept_sizes(sizes),
                      rounds, wait, seed, step)


def sweep_work(make: Callable[[Any], Any], run: Callable[[Any], float], keys: list, rounds: int, wait: str,
               seed: int = 0, step: Callable[[], None] = lambda: None, unit: str = "batch",
               gaps_s: tuple[float, ...] = GAPS_S) -> IdleSweep:
    """The sweep of any served unit of work: for each of ``keys`` (a batch size; an LLM iteration's
    composition index) ``make(key)`` builds one unit's input outside the timing and ``run(input)`` serves it
    and returns its latency; ``IdleSweep.size`` records the keys. ``rounds`` times over ``keys`` and
    ``gaps_s``; ``step`` after each unit."""
    clock = Clock(time.perf_counter())
    inbox = Inbox(wait, clock)
    deliveries: queue.SimpleQueue = queue.SimpleQueue()
    put_at: list[float] = []

    def feed() -> None:  # the load generator's part: sleep to the gap's end, then deliver
        while (due := deliveries.get()) is not None:
            clock.wait_until(due)
            put_at.append(clock.now())
            inbox.put((len(put_at) - 1, put_at[-1]))

    feeder = threading.Thread(target=feed, name="capsim-idle-feeder", daemon=True)
    feeder.start()
    rng = np.random.default_rng(seed)
    out = IdleSweep(wait, unit)
    try:
        for _ in range(rounds):
            for key in keys:
                for gap in rng.permutation(gaps_s).tolist():
                    _after_gap(make, run, key, gap, clock, inbox, deliveries, put_at, out, step)
    finally:
        deliveries.put(None)
        feeder.join()
    return out


def _after_gap(make: Callable[[Any], Any], run: Callable[[Any], float], key, gap: float, clock: Clock, inbox: Inbox,
               deliveries: queue.SimpleQueue, put_at: list[float], out: IdleSweep, step: Callable[[], None]) -> None:
    """Units back to back, an idle wait of ``gap`` in the inbox, one unit: one entry of ``out``."""
    inputs = [make(key) for _ in range(BACK_TO_BACK + 1)]  # made before, so never inside the gap
    base = []
    for x in inputs[:-1]:
        base.append(run(x))
        step()
    ended = clock.now()
    deliveries.put(ended + gap)
    inbox.wait(0)
    woke = clock.now()
    inbox.queue.popleft()
    latency = run(inputs[-1])
    step()
    out.nominal_s.append(gap)
    out.gap_s.append(put_at[-1] - ended)
    out.size.append(key)
    out.ratio.append(latency / float(np.median(base)))
    out.wake_s.append(woke - put_at[-1])
