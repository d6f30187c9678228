"""A profile from served runs: the observe -> calibrate -> replay loop.

``capsim calibrate`` measures a model back to back and in a short replay; a server under real traffic
does not always run at those speeds (on a shared CPU its batch times drift by 10-40% between runs a
minute apart, and a batch after an idle gap is slower than one right after another). A
``capsim bench-serve`` run records every batch's start, end and size, which is what the simulator's
service model needs, measured under the traffic itself. :func:`profile_from_runs` turns one or more
runs into a ``capsim.profile/1`` document (``kind: measured``, ``calibration.method: from-run``):

* **idle response** -- each batch's idle gap is the time its replica sat idle before it (its start
  minus the previous batch's end on that replica). Batches are grouped by gap into log-spaced bins;
  a bin's ratio is the median of ``time / median back-to-back time of the same size``, where
  back-to-back means the shortest-gap bin (gap < ``BACK_TO_BACK_S``). Bins with fewer than
  ``MIN_PER_BIN`` batches are dropped; the simulator interpolates between the rest in log(gap);
* **per batch size** -- every batch time divided by its gap's ratio (so the samples are back-to-back
  equivalents and the idle response is applied once, by the simulator, for the idle time it
  simulates). Batch times are ``end - start`` as bench-serve records them: dequeue, assemble, forward
  and split, i.e. latency and host overhead together, so ``host_overhead_s`` is left empty;
* **dispatch** -- how late the server loop started each batch (bench-serve's ``late_s``): after an idle
  wait (the blocked thread's wake-up, 30-100 us on a CPU) and back to back (bookkeeping, ~10 us);
  the simulator adds one draw to a batch's time (with ``service.host_overhead``);
* **slow speed level** -- slow batches come in runs (on a shared CPU the log batch time still
  correlates 0.2-0.4 thirty batches apart): an AR(1) level in log time, fitted to the autocovariance at
  lags of 5-50 batches, and the measured level path itself (``service_level``); each batch's own
  level (a rolling median of 21 batches) is divided out of the samples, and the simulator multiplies
  its draws by the level path, walked from a random start (sim/serving/service.py:SpeedLevel);
* **first calls** -- from the runs' warm-up records (bench-serve warms every size before t0).

Sizes seen fewer than ``MIN_PER_SIZE`` times are left out (two batches of 32 in a slow moment would
otherwise set every size from 26 to 31); the simulator interpolates between the sizes kept, and takes
the smallest kept for anything below it. When the runs allowed larger batches than they formed often
enough, the largest allowed size is extrapolated along a line fitted to the kept sizes (labelled). No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.profiles.profile import SCHEMA
from sim.serving.service import IdleResponse

BACK_TO_BACK_S = 50e-6
# Bin edges of the idle gap before a batch (seconds): [0, 50 us) is back to back; then ~half decades.
GAP_EDGES_S = (0.0, 50e-6, 150e-6, 500e-6, 1.5e-3, 5e-3, 15e-3, 50e-3, 150e-3, math.inf)
MIN_PER_BIN = 8
MIN_PER_SIZE = 5


def batch_gaps(batches: pd.DataFrame) -> pd.DataFrame:
    """Batches in start order per replica with ``time_s`` (end - start) and ``gap_s`` (idle before;
    NaN for a replica's first batch, whose idle time since warm-up is unknown)."""
    b = batches.sort_values(["replica", "start_s"]).copy()
    b["time_s"] = b["end_s"] - b["start_s"]
    previous_end = b.groupby("replica")["end_s"].shift(1)
    b["gap_s"] = (b["start_s"] - previous_end).clip(lower=0.0)
    return b


def idle_response(frame: pd.DataFrame) -> dict | None:
    """Median slowdown by idle-gap bin relative to back-to-back batches of the same size.

    ``frame`` has ``size``, ``time_s`` and ``gap_s``. Returns ``{"gaps_s", "ratio", "counts", ...}``
    with one entry per kept bin (``gaps_s`` is the bin's median gap), or None when there are no
    back-to-back batches to compare with.
    """
    f = frame[np.isfinite(frame["gap_s"])]
    b2b = f[f["gap_s"] < BACK_TO_BACK_S]
    reference = b2b.groupby("size")["time_s"].median()
    reference = reference[b2b.groupby("size").size() >= 3]
    if reference.empty:
        return None
    f = f[f["size"].isin(reference.index)]
    ratio = f["time_s"].to_numpy() / reference.reindex(f["size"]).to_numpy()
    bins = np.digitize(f["gap_s"].to_numpy(), GAP_EDGES_S[1:-1])
    gaps, ratios, counts = [], [], []
    for k in range(len(GAP_EDGES_S) - 1):
        inside = bins == k
        if k == 0 or inside.sum() < MIN_PER_BIN:
            continue
        gaps.append(float(np.median(f["gap_s"].to_numpy()[inside])))
        ratios.append(float(np.median(ratio[inside])))
        counts.append(int(inside.sum()))
    return {"gaps_s": gaps, "ratio": ratios, "counts": counts, "back_to_back_s": BACK_TO_BACK_S,
            "back_to_back_count": int(len(b2b)),
            "method": "median over batches in a log-spaced idle-gap bin of time / median time of back-to-back "
                      f"batches (gap < {BACK_TO_BACK_S * 1e6:g} us) of the same size; bins with fewer than "
                      f"{MIN_PER_BIN} batches dropped"}


def ratio_at(response: dict | None, gap_s: np.ndarray) -> np.ndarray:
    """The idle response at each gap, by the simulator's own rule (:class:`sim.serving.service.IdleResponse`);
    1 where the gap is unknown (a replica's first batch) or there is no response."""
    gap_s = np.asarray(gap_s, float)
    if not response or not response["gaps_s"]:
        return np.ones_like(gap_s)
    curve = IdleResponse(response["gaps_s"], response["ratio"], response.get("back_to_back_s") or 0.0)
    return np.array([curve.ratio(g) if np.isfinite(g) else 1.0 for g in gap_s.tolist()])


SPEEDS = ("level", "trace")


def profile_from_runs(runs: Sequence, source: str = "", max_batch_size: int | None = None,
                      speed: str = "level") -> dict:
    """A ``capsim.profile/1`` document from ``sim.validation.validate.BenchRun`` objects of one model/device,
    covering batch sizes up to ``max_batch_size`` (default: the largest the runs allowed).

    ``speed="level"`` models the server's slow speed level (a path walked from a random start, see
    :func:`slow_level`): a profile for simulating other traffic. ``speed="trace"`` (one run only) keeps
    every batch's own speed with its start time (``service_level.phase: aligned``): the simulator then
    replays the run's machine speed at the moments it had it, and each size's samples collapse to its
    median -- a replay of that run, for validating the batching and queueing against it.
    """
    if not runs:
        raise CapsimError("profile from-run: no runs given")
    if speed not in SPEEDS:
        raise CapsimError(f"profile from-run: speed = {speed!r}: must be one of {', '.join(SPEEDS)}")
    if speed == "trace" and len(runs) != 1:
        raise CapsimError(f"profile from-run: speed = 'trace' replays one run's speed over time; got {len(runs)} "
                          "runs (give one, or use speed 'level')")
    keys = {(r.settings.get("model"), r.settings.get("device"), r.settings.get("dtype"), r.settings.get("threads"))
            for r in runs}
    if len(keys) > 1:
        raise CapsimError(f"profile from-run: the runs differ in model/device/dtype/threads {sorted(map(str, keys))}; "
                          "give runs of one model on one device")
    frame = pd.concat([batch_gaps(r.batches) for r in runs], ignore_index=True)
    if "first_call" in frame:
        frame = frame[~frame["first_call"].astype(bool)]
    frame = frame[frame["time_s"] > 0]
    response = idle_response(frame)
    normalised = frame["time_s"].to_numpy() / ratio_at(response, frame["gap_s"].to_numpy())
    if speed == "trace":
        levels, level = speed_trace(frame.assign(time_s=normalised))
    else:
        levels, level = slow_level(frame.assign(time_s=normalised))
    if level is not None:
        normalised = normalised / np.exp(levels)
    counts = frame.groupby("size").size()
    kept = sorted(int(b) for b, n in counts.items() if n >= MIN_PER_SIZE)
    if not kept:
        raise CapsimError(f"profile from-run: no batch size was served {MIN_PER_SIZE} or more times in "
                          f"{', '.join(r.name for r in runs)}")
    first_calls = _first_calls(runs)
    sizes = frame["size"].to_numpy()
    samples = {b: np.sort(normalised[sizes == b]) for b in kept}
    allowed = max_batch_size or max(int(r.settings.get("batching", {}).get("max_batch_size", kept[-1])) for r in runs)
    extrapolated = _extrapolate(samples, counts, allowed)
    batches = [{"batch_size": b, "latency_s": _sig(x), "first_call_s": first_calls.get(b), "host_overhead_s": []}
               for b, x in sorted({**samples, **extrapolated}.items())]
    s = runs[0].settings
    env = dict(s.get("environment") or {})
    env.setdefault("device", s.get("device", "cpu"))
    return {
        "schema": SCHEMA,
        "kind": "measured",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": env,
        "model": {"name": s.get("model"), "dtype": s.get("dtype", "fp32"), "compiled": False},
        "batches": batches,
        "host_overhead_s": [],
        "serving_replay": None,
        "idle_response": response,
        "dispatch": _dispatch(frame),
        "service_level": level,
        "memory": None,
        "load": None,
        "calibration": {
            "method": "from-run", "runs": [str(r.path) for r in runs], "source": source,
            "batches": int(len(frame)), "sizes_left_out": sorted(int(b) for b in counts.index if int(b) not in kept),
            "sizes_extrapolated": sorted(extrapolated),
            "speed": speed,
            "notes": "batch times are end - start of a served batch (latency and host overhead together), "
                     "divided by the idle response at the batch's own idle gap and by its speed level; first "
                     "calls from the runs' warm-up",
        },
        "estimate": None,
    }


LEVEL_WINDOW = 21  # batches: the rolling window that estimates the server's slow speed level
LEVEL_LAGS = (5, 10, 15, 20, 30, 40, 50)
MIN_FOR_LEVEL = 200


def slow_level(frame: pd.DataFrame) -> tuple[np.ndarray, dict | None]:
    """The server's slow speed level per batch, and the AR(1) fitted to it.

    ``x = log(time / median time of the batch's size)``; its autocovariance at lags 5..50 batches (past
    the fast, batch-to-batch noise) is fitted with ``sigma^2 * rho^k``: a slowly wandering speed level
    (frequency, caches, the machine's other tenants). Each batch's own level is the centred rolling
    median of ``x`` over ``LEVEL_WINDOW`` batches on its replica. Returns (levels, {sigma, rho, ...}) or
    (zeros, None) when there are too few batches or no slow component.
    """
    n = len(frame)
    zeros = np.zeros(n)
    if n < MIN_FOR_LEVEL:
        return zeros, None
    times = frame["time_s"].to_numpy()
    med = frame.groupby("size")["time_s"].transform("median").to_numpy()
    x = np.log(times / med)
    replica = frame["replica"].to_numpy() if "replica" in frame else np.zeros(n)
    xc = x - x.mean()
    lags, cov = [], []
    for k in LEVEL_LAGS:
        if k >= n // 4:
            break
        same = replica[:-k] == replica[k:]
        c = float(np.mean(xc[:-k][same] * xc[k:][same])) if same.any() else 0.0
        if c > 0:
            lags.append(k)
            cov.append(c)
    if len(lags) < 3:
        return zeros, None
    slope, intercept = np.polyfit(lags, np.log(cov), 1)
    rho = float(np.clip(np.exp(slope), 0.0, 0.999))
    sigma = float(np.sqrt(min(np.exp(intercept), x.var())))
    levels = (pd.Series(x).groupby(replica).transform(
        lambda v: v.rolling(LEVEL_WINDOW, center=True, min_periods=1).median())).to_numpy(copy=True)
    levels -= levels.mean()
    # A 21-batch rolling median still carries some batch-to-batch noise (~0.27 of its spread): kept in
    # the path it would come back as *correlated* slowness and fatten the simulated tail. Shrink the
    # path to the variance of the slow component alone (the autocovariance fit, which noise does not
    # reach at lags >= 5); what is taken out stays in the samples as independent noise.
    spread = float(levels.std())
    if spread > sigma > 0:
        levels *= sigma / spread
    return levels, {"sigma": round(sigma, 4), "rho": round(rho, 5), "window_batches": LEVEL_WINDOW,
                    "path": [round(float(v), 4) for v in levels],
                    "lags": lags, "autocovariance": [round(c, 6) for c in cov],
                    "method": "log(time / size median) autocovariance at lags 5-50 batches fitted with "
                              "sigma^2 * rho^k; per-size samples divided by each batch's rolling-median level"}


def speed_trace(frame: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Every batch's own speed, ``x = log(time / median time of its size)``, with its start time: the
    run's machine speed over time, for ``phase: aligned`` (sim/serving/service.py:SpeedTrace). A size served
    fewer than ``MIN_PER_SIZE`` times is measured against the medians of the sizes around it (its own
    median of one or two batches would call every such batch full speed)."""
    times, sizes = frame["time_s"].to_numpy(), frame["size"].to_numpy()
    by_size = frame.groupby("size")["time_s"]
    median, count = by_size.median(), by_size.size()
    kept = median[count >= MIN_PER_SIZE]
    if kept.empty:
        kept = median
    reference = np.interp(sizes, kept.index.to_numpy(float), kept.to_numpy())
    reference = np.where(np.isin(sizes, kept.index), median.reindex(sizes).to_numpy(), reference)
    x = np.log(times / reference)
    section = {"phase": "aligned", "path": [round(float(v), 4) for v in x],
               "path_start_s": [round(float(t), 7) for t in frame["start_s"].to_numpy()],
               "method": "each served batch's log(time / median time of its size) (idle response taken out) "
                         "and its start time; replayed at the same moments, integrated over each simulated batch"}
    replicas = frame["replica"].nunique() if "replica" in frame else 1
    if replicas == 1:
        # The loop's own time between a batch and the next one right behind it: no model work then.
        after = frame["gap_s"].shift(-1).to_numpy()
        loop = np.where(np.isfinite(after) & (after < BACK_TO_BACK_S), np.nan_to_num(after), 0.0)
        section["path_loop_s"] = [round(float(v), 7) for v in loop]
        section["method"] += "; the loop's back-to-back gaps (path_loop_s) replayed as time without model work"
    return x, section


def _extrapolate(samples: dict[int, np.ndarray], counts: pd.Series, allowed: int) -> dict[int, np.ndarray]:
    """The largest size the runs allowed but never served (a 30%-load run with max batch 32 may never
    fill more than 19): the largest served size's samples scaled by a line ``a + c*b`` fitted to the
    per-size medians (weighted by count). Only that one size, so the simulator interpolates between;
    listed under ``calibration.sizes_extrapolated``."""
    top = max(samples)
    if allowed <= top or len(samples) < 2:
        return {}
    b = np.array(sorted(samples), float)
    med = np.array([np.median(samples[int(k)]) for k in b])
    c, a = np.polyfit(b, med, 1, w=np.sqrt([counts[int(k)] for k in b]))
    at = lambda x: max(a + c * x, 1e-9)  # noqa: E731
    return {allowed: samples[top] * max(at(allowed) / at(top), 1.0)}


def _dispatch(frame: pd.DataFrame) -> dict | None:
    """How late the loop started batches: after an idle wait (a blocked thread waking up) and right
    after another batch (the loop's own bookkeeping), from bench-serve's per-batch ``late_s``."""
    if "late_s" not in frame:
        return None
    late = frame["late_s"].clip(lower=0.0).to_numpy()
    idle = (frame["gap_s"] >= BACK_TO_BACK_S).to_numpy()
    return {"idle_s": _sig(np.sort(late[idle])), "busy_s": _sig(np.sort(late[~idle])),
            "method": "batch start - when the batching rules made it due (bench-serve late_s); idle_s for "
                      f"batches after an idle gap >= {BACK_TO_BACK_S * 1e6:g} us, busy_s for the rest"}


def _first_calls(runs) -> dict[int, float]:
    """Median over runs (and replicas) of each size's first call during warm-up."""
    seen: dict[int, list[float]] = {}
    for run in runs:
        for warm in run.settings.get("warmup") or []:
            for b, t in (warm.get("first_call_s") or {}).items():
                seen.setdefault(int(b), []).append(float(t))
    return {b: _sig1(float(np.median(v))) for b, v in seen.items()}


def _sig(values: np.ndarray) -> list[float]:
    return [_sig1(v) for v in values.tolist()]


def _sig1(x: float) -> float:
    return float(f"{x:.5g}")
