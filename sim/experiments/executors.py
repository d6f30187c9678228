"""Where sweep tasks run: in this process, a local process pool, or a Ray cluster.

An executor has one method, ``imap_unordered(fn, tasks)``, yielding ``fn(task)`` results as they
complete, in any order. Results never depend on the executor: every task carries its own seed
and replication, so the same sweep gives identical rows however it is run. Ray is imported only
when a Ray executor is built.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from sim.errors import CapsimError

EXECUTORS = ("local", "ray")
WORKER_DIED = ("a worker process died while simulating; every task finished before it is kept in the "
               "checkpoint: rerun the same command to resume")


class SerialExecutor:
    """Runs tasks one after the other in this process (debugging, tests that count calls)."""

    def imap_unordered(self, fn: Callable, tasks: Iterable) -> Iterator:
        for task in tasks:
            yield fn(task)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which cancels what is pending and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """A process pool on this machine (``workers`` processes, default all cores).

    Uses the ``forkserver`` start method where available, else ``spawn``: no state inherited from
    a parent that may hold threads (Ray, tqdm's monitor). At most ``2 * workers`` tasks are in
    flight, so an interruption loses at most the running ones.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        methods = multiprocessing.get_all_start_methods()
        self.context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")

    def imap_unordered(self, fn: Callable, tasks: Iterable) -> Iterator:
        pool = ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_ignore_sigint)
        running: set = set()
        try:
            for future in windowed(tasks, 2 * self.workers, lambda task: pool.submit(fn, task),
                                   lambda r: wait(r, return_when=FIRST_COMPLETED)[0], running):
                yield future.result()
        except BrokenProcessPool:
            _stop(pool, running)
            raise CapsimError(WORKER_DIED) from None
        except BaseException:
            _stop(pool, running)
            raise
        pool.shutdown(wait=True)


def windowed(tasks: Iterable, limit: int, submit: Callable, wait_some: Callable, running: set) -> Iterator:
    """Keep at most ``limit`` tasks in flight and yield each handle as it finishes.

    ``running`` is the caller's set of in-flight handles, so it can cancel them on an interruption.
    """
    pending = iter(tasks)
    exhausted = False
    while True:
        while not exhausted and len(running) < limit:
            task = next(pending, _END)
            if task is _END:
                exhausted = True
            else:
                running.add(submit(task))
        if not running:
            return
        done = wait_some(running)
        running.difference_update(done)
        yield from done


_END = object()


def _stop(pool: ProcessPoolExecutor, running: set) -> None:
    for future in running:
        future.cancel()
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()  # a running simulation has no partial result worth waiting for
    pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Tasks as Ray remote calls: a new local cluster on loopback, or an existing one by address."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise CapsimError("--executor ray needs Ray: pip install 'capsim[ray]' (or pip install ray)") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(address="local", num_cpus=workers or os.cpu_count(), include_dashboard=False,
                         _node_ip_address="127.0.0.1", log_to_driver=False)
                self.started = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def imap_unordered(self, fn: Callable, tasks: Iterable) -> Iterator:
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        running: set = set()
        try:
            for ref in windowed(tasks, 2 * self.workers, remote.remote,
                                lambda r: ray.wait(list(r), num_returns=1)[0], running):
                yield _ray_get(ray, ref)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        """Shut down the cluster if this executor started it."""
        if self.started:
            self.ray.shutdown()


def _ray_get(ray, ref):
    """A task's result; a user error raised inside the task comes back as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CapsimError):
            raise exc.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError):
        raise CapsimError(WORKER_DIED) from None


def make_executor(kind: str = "local", workers: int | None = None, ray_address: str | None = None):
    """An executor by name: ``local`` (process pool; ``workers=1`` runs in this process) or ``ray``."""
    if kind == "local":
        return SerialExecutor() if workers == 1 else LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(ray_address, workers)
    raise CapsimError(f"--executor = {kind!r}: must be one of {', '.join(EXECUTORS)}")


def close_executor(executor) -> None:
    close = getattr(executor, "close", None)
    if close is not None:
        close()
