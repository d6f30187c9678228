"""A real dynamic-batching model server on torch, fed open-loop, with every request time-stamped.

``run_server(config, arrival_s)`` serves one replica in this process: a load-generator thread
releases request ``i`` into the server's queue once ``arrival_s[i]`` has passed on the shared clock
(``time.perf_counter() - t0``); the server loop in the calling thread batches with Triton's rules, the simulator's own
(``sim.serving.batching.size_now_table``, one implementation for both):

* when the server is free and ``n`` requests wait, send the largest preferred size <= ``n`` (with no
  preferred sizes: ``max_batch_size`` once ``n`` reaches it);
* otherwise wait for more until the oldest request has waited ``max_queue_delay_s`` (counted from when
  the server received it), then send ``min(n, max_batch_size)``.

A batch is served exactly as ``capsim calibrate`` times it (:class:`calibration.harness.Harness`):
``start_s`` is read before the requests are dequeued, ``end_s`` after the output is split into one
response per request, so ``end_s - start_s`` is the profile's ``latency_s + host_overhead_s``.
``arrival_s`` is the *scheduled* time, not when the server noticed it: a late load generator or a
busy server shows up as latency, never as a slower offered load (no coordinated omission).

Waiting (``ServeConfig.wait``, ``capsim bench-serve --wait``; ``sim/serving/waiting.py``): how the server
waits for work can change how fast it starts and runs its first batch after an idle spell (a blocked
thread must be woken, and its core may idle meanwhile), so it is a named property of the server,
recorded in ``run.json`` (``server.wait``) and in the profiles calibrated for it:

* ``block`` (default): an idle server blocks on a condition variable (the load generator notifies it);
  waiting for a queue-delay deadline it blocks until ``SPIN_S`` before it, then spins;
* ``poll``: a busy loop that checks the queue (and the clock) and never blocks: each turn calls
  ``os.sched_yield()``, which releases the GIL and offers the core to any other runnable thread, so
  the load generator thread can deliver (with ``time.sleep(0)`` there 7-10 times as many requests
  were delivered > 0.3 ms late: it re-took the GIL before the waiting thread woke); the server's core
  never goes idle.

The load generator sleeps until ``SPIN_S`` before each arrival and spins the rest with ``time.sleep(0)``
(which releases the GIL, so the two threads never hold each other up for a whole switch interval). The
server's wake-up time is part of each batch's ``late_s``: its start minus when the rules made it due
(the later of the previous batch's end and the arrival or deadline that triggered it).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from calibration.harness import Harness, _split
from sim.serving.batching import size_now_table
from sim.serving.waiting import WAITS

SPIN_S = 200e-6  # sleep until this long before a deadline, then spin


@dataclass(frozen=True)
class ServeConfig:
    """What one server process runs: model, device, threads and batching."""

    model: str
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1
    max_batch_size: int = 1
    max_queue_delay_s: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    warmup_sizes: tuple[int, ...] = ()  # empty: every size 1..max_batch_size
    warmup_rounds: int = 3
    seed: int = 0
    drain_timeout_s: float = 30.0
    input_pool: int = 512  # distinct per-request inputs, reused round robin by request id
    wait: str = "block"  # how the server waits for work: one of sim.serving.waiting.WAITS

    def __post_init__(self) -> None:
        if self.wait not in WAITS:
            raise ValueError(f"wait = {self.wait!r}: must be one of {', '.join(WAITS)}")

    def sizes_to_warm(self) -> tuple[int, ...]:
        sizes = self.warmup_sizes or tuple(range(1, self.max_batch_size + 1))
        return tuple(sorted({b for b in sizes if 1 <= b <= self.max_batch_size}))


@dataclass
class ServerRecords:
    """What a server saw: per request when it was received and in which batch; per batch its times."""

    received_s: dict[int, float] = field(default_factory=dict)
    batch_of: dict[int, int] = field(default_factory=dict)
    batch_start_s: list[float] = field(default_factory=list)
    batch_end_s: list[float] = field(default_factory=list)
    batch_size: list[int] = field(default_factory=list)
    batch_late_s: list[float] = field(default_factory=list)  # start - when the batch became due
    abandoned: list[int] = field(default_factory=list)  # still queued at the drain timeout


class Clock:
    """Seconds since a shared ``t0`` on ``time.perf_counter`` (CLOCK_MONOTONIC: one clock for all processes)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def wait_until(self, t: float) -> None:
        """Sleep until ``SPIN_S`` before ``t``, then spin (releasing the GIL) until ``t``."""
        remaining = t - self.now()
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while self.now() < t:
            time.sleep(0)


class Inbox:
    """A server's queue of waiting requests and how the server waits for one (``wait``, see the module
    docstring): ``calibration/server.py``'s loop and calibration's idle sweep wait through this one class."""

    def __init__(self, wait: str, clock: Clock) -> None:
        self.queue: deque[tuple[int, float]] = deque()
        self.clock = clock
        self.polling = wait == "poll"
        self.closed = False
        self._cond = threading.Condition()

    def put(self, item: tuple[int, float]) -> None:
        """The producer side (a load generator's thread): queue ``item`` and, unless polled, wake the server."""
        self.queue.append(item)
        if not self.polling:
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        """No more requests will come."""
        with self._cond:
            self.closed = True
            self._cond.notify()

    def wait(self, n: int, deadline: float | None = None) -> None:
        """Until the queue length changes from ``n``, the inbox is closed, or ``deadline`` (clock time) passes."""
        q, now = self.queue, self.clock.now
        if self.polling:  # check, yield (the GIL, and the core to any runnable thread), check again: never block
            while len(q) == n and not self.closed and (deadline is None or now() < deadline):
                os.sched_yield()
            return
        with self._cond:
            while len(q) == n and not self.closed:
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - now()
                if remaining <= SPIN_S:
                    break
                self._cond.wait(remaining - SPIN_S)
        if deadline is not None and len(q) == n:  # the last stretch: spin, still watching the queue
            while len(q) == n and now() < deadline:
                time.sleep(0)


class BatchingServer:
    """One replica's queue and Triton-style batching loop around a :class:`Harness`."""

    def __init__(self, harness: Harness, config: ServeConfig, clock: Clock,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.h, self.config, self.clock, self.on_batch = harness, config, clock, on_batch
        self.size_now = size_now_table(config.max_batch_size, config.preferred_batch_sizes)
        self.inputs = harness.requests(config.input_pool)
        self.inbox = Inbox(config.wait, clock)
        self.queue = self.inbox.queue
        self.records = ServerRecords()

    # ------------------------------------------------------------ the producer side
    def submit(self, request_id: int) -> None:
        received = self.clock.now()
        self.records.received_s[request_id] = received
        self.inbox.put((request_id, received))

    def close(self) -> None:
        """No more requests will come; the loop drains the queue and returns."""
        self.inbox.close()

    # ------------------------------------------------------------ the loop
    def serve_forever(self) -> ServerRecords:
        q, cfg, size_now, inbox = self.queue, self.config, self.size_now, self.inbox
        free_since = 0.0  # end of the previous batch
        drain_deadline: float | None = None
        while True:
            n = len(q)
            if n == 0:
                if inbox.closed:
                    break
                inbox.wait(0)
                continue
            if inbox.closed and drain_deadline is None:
                drain_deadline = self.clock.now() + cfg.drain_timeout_s
            if drain_deadline is not None and self.clock.now() > drain_deadline:
                self.records.abandoned.extend(rid for rid, _ in q)
                q.clear()
                break
            size = size_now[n] if n <= cfg.max_batch_size else size_now[-1]
            due = max(free_since, q[-1][1])
            if not size:
                deadline = q[0][1] + cfg.max_queue_delay_s
                if self.clock.now() < deadline:
                    inbox.wait(n, deadline)
                    continue
                size = min(n, cfg.max_batch_size)
                due = max(free_since, deadline)
            free_since = self._run_batch(size, due)
        return self.records

    def _run_batch(self, size: int, due: float) -> float:
        h, rec, q, now = self.h, self.records, self.queue, self.clock.now
        start = now()
        taken = [q.popleft() for _ in range(size)]
        batch = [self.inputs[rid % len(self.inputs)] for rid, _ in taken]
        out = h.serve(batch)
        h.sync()
        responses = _split(out, size)
        end = now()
        assert len(responses) == size
        index = len(rec.batch_start_s)
        for rid, _ in taken:
            rec.batch_of[rid] = index
        rec.batch_start_s.append(start)
        rec.batch_end_s.append(end)
        rec.batch_size.append(size)
        rec.batch_late_s.append(start - due)
        if self.on_batch is not None:
            self.on_batch(size)
        return end


# ---------------------------------------------------------------- model set-up
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_harness(config: ServeConfig) -> Harness:
    """The model on its device in eval mode, with ``torch.set_num_threads(config.threads)`` applied."""
    from calibration.calibrate import resolve_device
    from calibration.models import build_model

    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    built = build_model(config.model, seed=config.seed)
    model = built.model.to(device=device, dtype=dtype).eval()
    return Harness(model, built.make_input, device, dtype)


def warm_up(harness: Harness, config: ServeConfig) -> dict:
    """Run every warm-up size ``warmup_rounds`` times before t0; the first call of each is recorded."""
    first_call_s: dict[int, float] = {}
    started = time.perf_counter()
    for b in config.sizes_to_warm():
        for r in range(config.warmup_rounds):
            requests = harness.requests(b)
            t = time.perf_counter()
            _split(harness.serve(requests), b)
            harness.sync()
            if r == 0:
                first_call_s[b] = time.perf_counter() - t
    return {"sizes": list(config.sizes_to_warm()), "rounds": config.warmup_rounds,
            "first_call_s": {str(b): round(s, 7) for b, s in first_call_s.items()},
            "wall_s": round(time.perf_counter() - started, 3)}


# ---------------------------------------------------------------- one replica in this process
def run_server(config: ServeConfig, arrival_s: np.ndarray, start_delay_s: float = 0.1) -> dict:
    """Serve ``arrival_s`` (seconds from t0) on one replica here; returns the raw records and notes."""
    harness = build_harness(config)
    warm = warm_up(harness, config)
    clock = Clock(math.inf)
    server = BatchingServer(harness, config, clock)  # its request inputs are made before t0, not after
    clock.t0 = time.perf_counter() + start_delay_s
    sent_s = np.full(arrival_s.size, np.nan)

    def generate() -> None:
        for i, t in enumerate(arrival_s.tolist()):
            clock.wait_until(t)
            sent_s[i] = clock.now()
            server.submit(i)
        server.close()

    loadgen = threading.Thread(target=generate, name="capsim-loadgen", daemon=True)
    loadgen.start()
    records = server.serve_forever()
    loadgen.join()
    return {"records": [records], "sent_s": sent_s, "replica_of": np.zeros(arrival_s.size, dtype=np.int32),
            "warmup": [warm], "threads": torch.get_num_threads()}
