"""Several replicas on one CPU machine: one process per replica behind a router in the load generator.

Each replica is a spawned process running :class:`calibration.server.BatchingServer` on its own copy
of the model with ``torch.set_num_threads(1)``. The parent process is the load generator and the
router: at each scheduled arrival it picks a replica with ``sim.serving.routers`` (the simulator's own
``round_robin`` / ``least_outstanding`` code, reading outstanding counts that the replicas' per-batch
completion messages keep current) and sends the request id down that replica's pipe. All processes
stamp times on ``time.perf_counter`` (CLOCK_MONOTONIC on Linux, shared by every process) from one t0.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait

import numpy as np

from calibration.errors import CalibrationError
from calibration.server import BatchingServer, Clock, ServeConfig

START_TIMEOUT_S = 300.0


class _Handle:
    """What the router sees of a replica: its outstanding count (sent, not yet completed)."""

    __slots__ = ("index", "outstanding")

    def __init__(self, index: int) -> None:
        self.index, self.outstanding = index, 0


def _replica_main(index: int, config: ServeConfig, requests, events) -> None:
    """Worker process: build, warm up, report ready, take t0, serve until the parent closes the pipe."""
    from calibration.server import build_harness, warm_up

    try:
        harness = build_harness(config)
        warm = warm_up(harness, config)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        events.send(("error", f"replica {index}: {type(exc).__name__}: {exc}"))
        return
    clock = Clock(0.0)
    server = BatchingServer(harness, config, clock, on_batch=lambda size: events.send(("done", size)))
    events.send(("ready", warm))  # ready once the request inputs are made: t0 comes after every replica's
    clock.t0 = requests.recv()

    def receive() -> None:
        while True:
            rid = requests.recv()
            if rid is None:
                server.close()
                return
            server.submit(rid)

    reader = threading.Thread(target=receive, name=f"capsim-replica-{index}-reader", daemon=True)
    reader.start()
    records = server.serve_forever()
    reader.join()
    events.send(("records", records))


def run_pool(config: ServeConfig, arrival_s: np.ndarray, replicas: int, router: str, seed: int,
             start_delay_s: float = 0.2) -> dict:
    """Serve ``arrival_s`` on ``replicas`` worker processes (one thread each) behind ``router``."""
    from sim.serving.routers import build_router

    config = replace(config, threads=1)
    ctx = mp.get_context("spawn")  # a fresh interpreter per replica: no forked torch state
    pipes, procs = [], []
    for k in range(replicas):
        req_recv, req_send = ctx.Pipe(duplex=False)
        ev_recv, ev_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_replica_main, args=(k, config, req_recv, ev_send), daemon=True,
                           name=f"capsim-replica-{k}")
        proc.start()
        pipes.append((req_send, ev_recv))
        procs.append(proc)
    try:
        return _drive(config, arrival_s, pipes, build_router(router, np.random.default_rng(seed)),
                      start_delay_s)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def _drive(config: ServeConfig, arrival_s: np.ndarray, pipes, router, start_delay_s: float) -> dict:
    handles = [_Handle(k) for k in range(len(pipes))]
    warmups = [_expect(ev, "ready", k) for k, (_, ev) in enumerate(pipes)]
    t0 = time.perf_counter() + start_delay_s
    for req, _ in pipes:
        req.send(t0)
    clock = Clock(t0)
    lock = threading.Lock()
    records: dict[int, object] = {}
    by_conn = {ev: k for k, (_, ev) in enumerate(pipes)}

    def completions() -> None:
        open_conns = list(by_conn)
        while open_conns:
            for conn in wait(open_conns):
                kind, payload = conn.recv()
                k = by_conn[conn]
                if kind == "done":
                    with lock:
                        handles[k].outstanding -= payload
                elif kind == "records":
                    records[k] = payload
                    open_conns.remove(conn)

    listener = threading.Thread(target=completions, name="capsim-completions", daemon=True)
    listener.start()
    sent_s = np.full(arrival_s.size, np.nan)
    replica_of = np.zeros(arrival_s.size, dtype=np.int32)
    for i, t in enumerate(arrival_s.tolist()):
        clock.wait_until(t)
        with lock:
            target = router.choose(handles)
            target.outstanding += 1
        sent_s[i] = clock.now()
        replica_of[i] = target.index
        pipes[target.index][0].send(i)
    for req, _ in pipes:
        req.send(None)
    listener.join(timeout=config.drain_timeout_s + 60)
    if len(records) != len(pipes):
        raise CalibrationError(f"replicas {sorted(set(range(len(pipes))) - set(records))} did not report back")
    return {"records": [records[k] for k in range(len(pipes))], "sent_s": sent_s, "replica_of": replica_of,
            "warmup": warmups, "threads": 1}


def _expect(conn, kind: str, k: int):
    if not conn.poll(START_TIMEOUT_S):
        raise CalibrationError(f"replica {k} did not start within {START_TIMEOUT_S:.0f} s")
    got, payload = conn.recv()
    if got == "error":
        raise CalibrationError(payload)
    if got != kind:
        raise CalibrationError(f"replica {k}: expected {kind!r}, got {got!r}")
    return payload
