"""A served server's speed, estimated from its batches: idle response, slow level, speed trace.

Every function takes a frame of batches as :func:`sim.profiles.requestlog.dispatch_states` gives it
(``replica``, ``start_s``, ``size``, ``time_s``, ``gap_s``, ``back_to_back``) and returns a profile
section the simulator applies (sim/serving/service.py):

* :func:`idle_response`: how much slower a batch runs after its replica sat idle, by idle-gap bin;
* :func:`slow_level`: the slowly wandering speed level, walked per batch (``service_level``, AR(1));
* :func:`speed_trace`: every batch's own speed at the time it ran, for a replay (``phase: aligned``).

The regime model (speed in wall time at a random phase) is in sim/profiles/regime.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.serving.service import IdleResponse

# A frame of gaps without queue states (no ``back_to_back`` column) takes gaps under this as back to back.
BACK_TO_BACK_S = 50e-6
# Bin edges of the idle gap before a batch (seconds): log-spaced, about half decades.
GAP_EDGES_S = (0.0, 50e-6, 150e-6, 500e-6, 1.5e-3, 5e-3, 15e-3, 50e-3, 150e-3, math.inf)
MIN_PER_BIN = 8
MIN_PER_SIZE = 5


def back_to_back(frame: pd.DataFrame) -> np.ndarray:
    """Which batches followed the previous one back to back: the queue state where the frame has it."""
    if "back_to_back" in frame:
        return frame["back_to_back"].to_numpy(bool)
    return (frame["gap_s"] < BACK_TO_BACK_S).to_numpy()


def idle_response(frame: pd.DataFrame, back_to_back_s: float | None = None) -> dict | None:
    """Median slowdown by idle-gap bin relative to back-to-back batches of the same size.

    ``frame`` has ``size``, ``time_s`` and ``gap_s`` (and ``back_to_back``, the queue state); every batch
    that did not follow back to back is binned by its idle gap. ``back_to_back_s``: idle gaps up to this
    are not idleness (the loop's own time; default: the back-to-back gaps' longest). Returns
    ``{"gaps_s", "ratio", "counts", ...}`` with one entry per kept bin (``gaps_s`` is the bin's median
    gap), or None when there are no back-to-back batches to compare with.
    """
    f = frame[np.isfinite(frame["gap_s"])]
    b2b = back_to_back(f)
    reference = f[b2b].groupby("size")["time_s"].median()
    reference = reference[f[b2b].groupby("size").size() >= 3]
    if reference.empty:
        return None
    if back_to_back_s is None:
        back_to_back_s = BACK_TO_BACK_S if "back_to_back" not in frame else float(f.loc[b2b, "gap_s"].max())
    idle = f[~b2b & f["size"].isin(reference.index).to_numpy()]
    ratio = idle["time_s"].to_numpy() / reference.reindex(idle["size"]).to_numpy()
    gap = idle["gap_s"].to_numpy()
    bins = np.digitize(gap, GAP_EDGES_S[1:-1])
    gaps, ratios, counts = [], [], []
    for k in range(len(GAP_EDGES_S) - 1):
        inside = (bins == k) & (gap > 0)
        if inside.sum() < MIN_PER_BIN:
            continue
        gaps.append(float(np.median(gap[inside])))
        ratios.append(float(np.median(ratio[inside])))
        counts.append(int(inside.sum()))
    return {"gaps_s": gaps, "ratio": ratios, "counts": counts, "back_to_back_s": float(f"{back_to_back_s:.4g}"),
            "back_to_back_count": int(b2b.sum()),
            "method": "median over batches after an idle wait in a log-spaced idle-gap bin of time / median time of "
                      "back-to-back batches (due when the previous batch ended) of the same size; bins with fewer "
                      f"than {MIN_PER_BIN} batches dropped"}


def ratio_at(response: dict | None, gap_s: np.ndarray) -> np.ndarray:
    """The idle response at each gap, by the simulator's own rule (:class:`sim.serving.service.IdleResponse`);
    1 where the gap is unknown (a replica's first batch) or there is no response."""
    gap_s = np.asarray(gap_s, float)
    if not response or not response["gaps_s"]:
        return np.ones_like(gap_s)
    curve = IdleResponse(response["gaps_s"], response["ratio"], response.get("back_to_back_s") or 0.0)
    return np.array([curve.ratio(g) if np.isfinite(g) else 1.0 for g in gap_s.tolist()])


def idle_ratio(frame: pd.DataFrame, response: dict | None) -> np.ndarray:
    """Each batch's idle response as the simulator applies it: 1 back to back (a simulated batch that
    starts as the previous one ends sat idle 0 s), the curve at its gap after an idle wait."""
    return np.where(back_to_back(frame), 1.0, ratio_at(response, frame["gap_s"].to_numpy()))


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
        # The loop's own time between a batch and the next one right behind it (due when this one
        # ended): no model work then.
        after = frame["gap_s"].shift(-1).to_numpy()
        followed = np.r_[back_to_back(frame)[1:], False]
        loop = np.where(np.isfinite(after) & followed, np.nan_to_num(after), 0.0)
        section["path_loop_s"] = [round(float(v), 7) for v in loop]
        section["method"] += "; the loop's back-to-back gaps (path_loop_s) replayed as time without model work"
    return x, section
