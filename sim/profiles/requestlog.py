"""Request logs: what any batching server can record, read into served batches (docs/profile.md).

A request log has one row per served request, in arrival order: ``arrival_s`` (when the request reached
the server), ``start_s`` and ``end_s`` (when its batch started and ended) and ``batch_size``; optionally
``replica`` (which server instance, default 0) and ``batch_id``. Rows of one batch share its start and
end; one batch runs at a time on a replica. :func:`read_request_log` reads a CSV or Parquet file and
:func:`served_log` checks a frame; every problem is one line naming the file, the column, the row, the
value and what is allowed.

:func:`dispatch_states` classifies every batch by the queue it found, not by the length of the gap
before it: a batch is *back to back* when it was already due (its first request waiting, and with a
queue delay ``T`` also ``B`` waiting or the oldest having waited ``T``) when the previous batch on its
replica ended. A GPU server's own loop takes 10-36 us between such batches (p99 29-65 us), so a fixed
gap threshold calls some of them idle and some idle ones back to back. The threshold the simulator
needs (gaps below it are not idleness) is derived per log from its back-to-back gaps
(:func:`back_to_back_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError, shown
from sim.workload.arrivals import finite_column, read_table

REQUIRED = ("arrival_s", "start_s", "end_s", "batch_size")
OPTIONAL = ("replica", "batch_id")
MAX_LOG_BYTES = 1024 * 2**20
BACK_TO_BACK_QUANTILE = 0.99  # of a log's back-to-back gaps: the longest the loop itself takes


class RequestLogError(CapsimError):
    """A request log that is missing, malformed or inconsistent."""


@dataclass(frozen=True, eq=False)
class ServedLog:
    """One served log: its requests, its batches and the batching rule the server followed.

    ``requests`` has ``replica`` and ``arrival_s`` (served requests only); ``batches`` has ``replica``,
    ``start_s``, ``end_s`` and ``size``, and where the server measured them ``late_s`` (how late it
    started the batch once due) and ``first_call`` (its warm-up's first calls are not in the log).
    ``warm_sizes``: batch sizes known to have run in the process before the log began (None: unknown).
    """

    name: str
    requests: pd.DataFrame
    batches: pd.DataFrame
    max_batch_size: int
    max_queue_delay_s: float = 0.0
    warm_sizes: frozenset[int] | None = None
    settings: dict = field(default_factory=dict)


def read_request_log(path: str | Path, *, max_batch_size: int | None = None, max_queue_delay_s: float = 0.0,
                     warm_sizes=None, settings: dict | None = None) -> ServedLog:
    """Read and check a request log file (CSV, or Parquet by its .parquet / .pq suffix)."""
    path = Path(path)
    frame = read_table(path, str(path), "request log", MAX_LOG_BYTES, RequestLogError)
    return served_log(frame, str(path), max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_s,
                      warm_sizes=warm_sizes, settings=settings)


def served_log(frame: pd.DataFrame, name: str, *, max_batch_size: int | None = None,
               max_queue_delay_s: float = 0.0, warm_sizes=None, settings: dict | None = None) -> ServedLog:
    """Check a request-log frame and group its rows into batches (docs/profile.md, "Request logs")."""
    cols = _columns(frame, name)
    arrival, start, end, size, replica = (cols[k] for k in ("arrival_s", "start_s", "end_s", "batch_size", "replica"))
    _check_rows(name, arrival, start, end)
    batches = _batches(name, frame, cols)
    largest = int(batches["size"].max())
    if max_batch_size is not None and max_batch_size < largest:
        raise RequestLogError(f"{name}: max batch size (--max-batch-size) = {max_batch_size}: the log holds a batch "
                              f"of {largest}; give the server's max batch size, at least its largest batch")
    if not (np.isfinite(max_queue_delay_s) and max_queue_delay_s >= 0):
        raise RequestLogError(f"{name}: max queue delay (--max-queue-delay-ms) = {shown(max_queue_delay_s)} s: a "
                              "finite number >= 0 is needed")
    requests = pd.DataFrame({"replica": replica.astype(np.int64), "arrival_s": arrival})
    return ServedLog(name, requests, batches, int(max_batch_size or largest), float(max_queue_delay_s),
                     None if warm_sizes is None else frozenset(int(b) for b in warm_sizes), dict(settings or {}))


def _columns(frame: pd.DataFrame, name: str) -> dict[str, np.ndarray]:
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        listed = ", ".join(map(str, list(frame.columns)[:12])) or "none"
        raise RequestLogError(f"{name}: no column {', '.join(missing)} (columns: {shown(listed)}); a request "
                              f"log needs {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})")
    cols = {c: finite_column(frame, c, name, RequestLogError, empty="a request log needs at least one row",
                             values_are="times" if c.endswith("_s") else "values")
            for c in (*REQUIRED, *(c for c in OPTIONAL if c in frame.columns))}
    for c in ("batch_size", "replica"):
        if c in cols:
            bad = np.flatnonzero((cols[c] != np.round(cols[c])) | (cols[c] < (1 if c == "batch_size" else 0)))
            if bad.size:
                raise RequestLogError(f"{name}: {c} in row {bad[0] + 1} is {float(cols[c][bad[0]]):g}; an integer "
                                      f">= {1 if c == 'batch_size' else 0} is needed")
    cols.setdefault("replica", np.zeros(len(frame)))
    return cols


def _check_rows(name: str, arrival: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    unsorted = np.flatnonzero(np.diff(arrival) < 0)
    if unsorted.size:
        r = unsorted[0]
        raise RequestLogError(f"{name}: arrival_s is not sorted: row {r + 2} ({arrival[r + 1]:g}) comes before "
                              f"row {r + 1} ({arrival[r]:g}); sort the log by arrival time")
    for later, earlier, what in ((end, start, "a batch ends after it starts"),
                                 (start, arrival, "a request starts after it arrives")):
        bad = np.flatnonzero(later < earlier)
        if bad.size:
            r = bad[0]
            a, b = ("end_s", "start_s") if later is end else ("start_s", "arrival_s")
            raise RequestLogError(f"{name}: {a} in row {r + 1} is {later[r]:g}, before its {b} {earlier[r]:g}; "
                                  f"{what}")


def _batches(name: str, frame: pd.DataFrame, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per batch (replica, start_s, end_s, size), in start order per replica; rows of one batch
    must share start and end, and there must be batch_size of them."""
    by_id = "batch_id" in cols
    rows = pd.DataFrame({"row": np.arange(len(frame)), "replica": cols["replica"].astype(np.int64),
                         "key": cols["batch_id"] if by_id else cols["start_s"], "start_s": cols["start_s"],
                         "end_s": cols["end_s"], "size": cols["batch_size"].astype(np.int64)})
    g = rows.groupby(["replica", "key"], sort=False)
    agg = g.agg(first_row=("row", "min"), n=("row", "size"), start_lo=("start_s", "min"),
                start_hi=("start_s", "max"), end_lo=("end_s", "min"), end_hi=("end_s", "max"),
                size_lo=("size", "min"), size_hi=("size", "max")).reset_index()
    what = "batch_id" if by_id else "start_s"
    for lo, hi, col in (("start_lo", "start_hi", "start_s"), ("end_lo", "end_hi", "end_s"),
                        ("size_lo", "size_hi", "batch_size")):
        bad = np.flatnonzero((agg[lo] != agg[hi]).to_numpy())
        if bad.size:
            b = agg.iloc[bad[0]]
            raise RequestLogError(f"{name}: the rows of the batch with {what} {b['key']:g} on replica "
                                  f"{int(b['replica'])} (first in row {int(b['first_row']) + 1}) differ in {col} "
                                  f"({b[lo]:g} to {b[hi]:g}); rows of one batch share start_s, end_s and batch_size")
    bad = np.flatnonzero((agg["n"] != agg["size_lo"]).to_numpy())
    if bad.size:
        b = agg.iloc[bad[0]]
        raise RequestLogError(f"{name}: the batch with {what} {b['key']:g} on replica {int(b['replica'])} (first in "
                              f"row {int(b['first_row']) + 1}) has {int(b['n'])} rows but batch_size "
                              f"{int(b['size_lo'])}; a log holds one row per served request of each batch")
    batches = pd.DataFrame({"replica": agg["replica"], "start_s": agg["start_lo"], "end_s": agg["end_lo"],
                            "size": agg["size_lo"], "first_row": agg["first_row"]})
    batches = batches.sort_values(["replica", "start_s"], kind="stable").reset_index(drop=True)
    previous_end = batches.groupby("replica")["end_s"].shift(1)
    overlap = np.flatnonzero((batches["start_s"] < previous_end).to_numpy())
    if overlap.size:
        b = batches.iloc[overlap[0]]
        raise RequestLogError(f"{name}: on replica {int(b['replica'])} the batch starting at {b['start_s']:g} (row "
                              f"{int(b['first_row']) + 1}) starts before the previous one ends "
                              f"({previous_end.iloc[overlap[0]]:g}); one batch runs at a time on a replica (give each "
                              "execution slot its own replica)")
    return batches.drop(columns="first_row")


def dispatch_states(log: ServedLog) -> pd.DataFrame:
    """The log's batches in start order per replica, with ``time_s`` (end - start), ``gap_s`` (start - the
    previous batch's end on the replica; NaN for its first batch), ``due_s`` (when the batching rule made
    the batch due: its first request's arrival, with a queue delay T the earlier of T after it and the
    arrival of the B-th waiting request), ``back_to_back`` (due by the time the previous batch ended) and
    ``late_s`` (start - when it was due or the previous batch ended: the loop's own time; the server's own
    measurement where the log has one). Requests are served first come, first served."""
    b = batch_gaps(log.batches).reset_index(drop=True)
    due = np.empty(len(b))
    for rep, rows in b.groupby("replica").indices.items():
        arrivals = np.sort(log.requests.loc[log.requests["replica"] == rep, "arrival_s"].to_numpy())
        sizes = b["size"].to_numpy()[rows]
        if sizes.sum() != arrivals.size:
            raise RequestLogError(f"{log.name}: replica {rep} served {arrivals.size} requests in batches holding "
                                  f"{sizes.sum()}; every served request belongs to one batch")
        first = np.cumsum(sizes) - sizes
        due[rows] = arrivals[first]
        if log.max_queue_delay_s > 0:
            full = first + log.max_batch_size - 1
            filled = np.where(full < arrivals.size, arrivals[np.minimum(full, arrivals.size - 1)], np.inf)
            due[rows] = np.minimum(arrivals[first] + log.max_queue_delay_s, filled)
    previous_end = b.groupby("replica")["end_s"].shift(1).to_numpy()
    b["due_s"] = due
    b["back_to_back"] = np.nan_to_num(previous_end, nan=-np.inf) >= due
    derived = b["start_s"].to_numpy() - np.where(b["back_to_back"], previous_end, due)
    if "late_s" not in b:
        b["late_s"] = np.clip(derived, 0.0, None)
    return b


def batch_gaps(batches: pd.DataFrame) -> pd.DataFrame:
    """Batches in start order per replica with ``time_s`` (end - start) and ``gap_s`` (idle before;
    NaN for a replica's first batch, whose idle time since warm-up is unknown)."""
    b = batches.sort_values(["replica", "start_s"], kind="stable").copy()
    b["time_s"] = b["end_s"] - b["start_s"]
    previous_end = b.groupby("replica")["end_s"].shift(1)
    b["gap_s"] = (b["start_s"] - previous_end).clip(lower=0.0)
    return b


def back_to_back_s(states: pd.DataFrame) -> float | None:
    """The longest the serving loop takes between two back-to-back batches: the 99th percentile of the
    log's back-to-back gaps (None without any). Shorter idle gaps than this are not idleness."""
    gaps = states.loc[states["back_to_back"], "gap_s"].to_numpy()
    return float(np.quantile(gaps, BACK_TO_BACK_QUANTILE)) if gaps.size else None
