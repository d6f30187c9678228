"""The flat record layout of a run, one definition for every producer of records.

The simulator (``sim.serving.engine`` through :func:`to_frames`) and the real benchmark server
(``calibration/bench_serve.py``) both build their tables here, so a simulated run and a recorded
one can be read by the same functions. Columns are documented in docs/results.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OUTCOMES = ("served", "rejected", "timed_out", "unfinished")
SERVED, REJECTED, TIMED_OUT, UNFINISHED = range(len(OUTCOMES))


@dataclass
class RawRecords:
    """What one simulation run produced, as flat arrays (turned into tables by :func:`to_frames`)."""

    arrival_s: np.ndarray
    batch_of: np.ndarray  # batch id per request, -1 if never started
    outcome: np.ndarray
    drop_s: np.ndarray  # end time of requests that never ran in a batch: rejected, timed out, cache hits (else NaN)
    drop_replica: np.ndarray  # replica a rejected / timed-out request was routed to (-1 otherwise)
    batch_replica: np.ndarray
    batch_start_s: np.ndarray
    batch_end_s: np.ndarray
    batch_size: np.ndarray
    batch_first_call: np.ndarray
    timeseries: dict[str, np.ndarray]
    replicas: list
    horizon_s: float
    end_s: float
    extra: dict = field(default_factory=dict)  # online architectures (sim.architectures): see to_frames


def outcome_codes(requests: pd.DataFrame) -> np.ndarray:
    """The ``outcome`` column as codes into :data:`OUTCOMES` (no string comparisons over millions of rows)."""
    column = requests["outcome"]
    if isinstance(column.dtype, pd.CategoricalDtype) and list(column.cat.categories) == list(OUTCOMES):
        return column.cat.codes.to_numpy()
    return pd.Categorical(column, categories=list(OUTCOMES)).codes


def request_frame(arrival_s: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, replica: np.ndarray,
                  batch_size: np.ndarray, outcome: np.ndarray) -> pd.DataFrame:
    """The ``requests`` table: one row per request, ``id`` its index in arrival order."""
    return pd.DataFrame({
        "id": np.arange(len(arrival_s), dtype=np.int64),
        "arrival_s": arrival_s,
        "start_s": start_s,
        "end_s": end_s,
        "latency_s": end_s - arrival_s,
        "queue_s": start_s - arrival_s,
        "replica": np.asarray(replica).astype(np.int32),
        "batch_size": np.asarray(batch_size).astype(np.int32),
        "outcome": pd.Categorical.from_codes(np.asarray(outcome).astype(np.int8), categories=list(OUTCOMES)),
    })


def token_request_frame(arrival_s: np.ndarray, start_s: np.ndarray, first_token_s: np.ndarray, end_s: np.ndarray,
                        replica: np.ndarray, batch_size: np.ndarray, outcome: np.ndarray, input_tokens: np.ndarray,
                        output_tokens: np.ndarray, preemptions: np.ndarray,
                        cached_tokens: np.ndarray | None = None, prefix_group: np.ndarray | None = None) -> pd.DataFrame:
    """The ``requests`` table of token-level (LLM) serving: :func:`request_frame`'s columns, then the token
    counts, the first token's time, TTFT = first token − arrival and TPOT = (end − first token) /
    (output tokens − 1) (NaN for one output token), how often the request was preempted, the shared prefix
    its prompt starts with (-1: none) and the prompt tokens it took from the prefix cache (0 without one)."""
    frame = request_frame(arrival_s, start_s, end_s, replica, batch_size, outcome)
    out = np.asarray(output_tokens, dtype=np.int64)
    frame["input_tokens"] = np.asarray(input_tokens, dtype=np.int64)
    frame["output_tokens"] = out
    frame["first_token_s"] = first_token_s
    frame["ttft_s"] = first_token_s - arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["tpot_s"] = np.where(out > 1, (end_s - first_token_s) / np.maximum(out - 1, 1), np.nan)
    frame["preemptions"] = np.asarray(preemptions, dtype=np.int32)
    frame["prefix_group"] = (np.asarray(prefix_group, dtype=np.int64) if prefix_group is not None
                             else np.full(len(frame), -1, dtype=np.int64))
    frame["cached_tokens"] = (np.asarray(cached_tokens, dtype=np.int64) if cached_tokens is not None
                              else np.zeros(len(frame), dtype=np.int64))
    return frame


def replica_frame(replicas: list) -> pd.DataFrame:
    """The ``replicas`` table: one row per replica that existed, with its lifecycle timestamps."""
    return pd.DataFrame({
        "replica": [r.index for r in replicas],
        "instances": [r.instances for r in replicas],
        "created_s": [r.created_s for r in replicas],
        "ready_s": [r.ready_s for r in replicas],
        "gone_s": [r.gone_s if r.gone_s is not None else math.inf for r in replicas],
        "up_s": [r.up_s for r in replicas],
        "container_s": [r.container_s for r in replicas],
    })


def batch_frame(replica, start_s, end_s, size, first_call, **extra) -> pd.DataFrame:
    """The ``batches`` table: one row per batch in start order (``extra`` columns appended)."""
    frame = pd.DataFrame({
        "batch": np.arange(len(start_s), dtype=np.int64),
        "replica": np.asarray(replica, dtype=np.int32),
        "start_s": np.asarray(start_s, dtype=float),
        "end_s": np.asarray(end_s, dtype=float),
        "size": np.asarray(size, dtype=np.int32),
        "first_call": np.asarray(first_call, dtype=bool),
    })
    for name, values in extra.items():
        frame[name] = values
    return frame


def to_frames(raw: RawRecords):
    """(requests, batches, timeseries, replicas) tables from the engine's arrays. An online architecture's
    ``raw.extra`` may hold ``response_s`` (per request, added to its end: the network's way back),
    ``request_columns`` and ``batch_columns`` (appended to those tables; docs/results.md)."""
    b = raw.batch_of
    started = b >= 0
    safe = np.where(started, b, 0)
    nan = np.nan
    start = np.where(started, raw.batch_start_s[safe] if raw.batch_start_s.size else nan, nan)
    end = np.where(started, raw.batch_end_s[safe] if raw.batch_end_s.size else nan, raw.drop_s)
    unfinished = raw.outcome == UNFINISHED
    if unfinished.any():
        end[unfinished] = nan
    replica = np.where(started, raw.batch_replica[safe] if raw.batch_replica.size else -1, raw.drop_replica)
    size = np.where(started, raw.batch_size[safe] if raw.batch_size.size else 0, 0)
    extra = raw.extra
    if "response_s" in extra:
        end = end + extra["response_s"]
    requests = request_frame(raw.arrival_s, start, end, replica, size, raw.outcome)
    for name, values in extra.get("request_columns", {}).items():
        requests[name] = values
    batches = batch_frame(raw.batch_replica, raw.batch_start_s, raw.batch_end_s, raw.batch_size,
                          raw.batch_first_call, **extra.get("batch_columns", {}))
    timeseries = pd.DataFrame(raw.timeseries)
    return requests, batches, timeseries, replica_frame(raw.replicas)
