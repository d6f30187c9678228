"""The regime model of served batch times (``capsim profile from-log``, speed ``regime``).

Measured on a real H100 (tests/data/recordings/h100, docs/validation.md): a server's speed moves between
persistent regimes lasting 0.1-3 s, whatever its duty cycle; within a regime a batch's time is flat in
its size up to a knee; the first call of a size the process never ran stalls (50-82 ms for BERT); the
rest is batch-to-batch noise. So a batch of size ``b`` starting at ``t`` takes

    exp(f(b) + level(t) + e)  [+ a first-call stall]

* ``f``, the **size curve** within a regime: fixed effects of size in log time with one level per block
  of ``BLOCK`` consecutive batches (alternating medians, stalls left out), for sizes served at least
  ``MIN_PER_CURVE_SIZE`` times; flat below the smallest, linear between, and beyond the largest the
  shape of a back-to-back base profile (the 10th percentile of its samples per size, linear between its
  sizes), or without one a line through the served sizes;
* ``level(t)``, the **regime path**: the centred rolling median over ``REGIME_WINDOW`` batches of
  ``log(time) - f(size)``, at each batch's start; the simulator replays it in wall time from a random
  phase (``service_level.phase: random_time``);
* ``e``, the **residual**: what is left, i.i.d., after the idle response (by idle-gap bin) is taken out;
  the rare slow batches (0-5 per second, 2-3x their neighbours) stay in it;
* **first calls**: the first batch of a size the process had not run; its excess over its neighbours'
  median is a stall sample (``first_call.stall_s``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BLOCK = 16  # consecutive batches sharing one level in the size-curve fit
FIT_ROUNDS = 30
OUTLIER_LOG = 0.5  # a batch this far (in log time) from its block's level is left out of the size fit
MIN_PER_CURVE_SIZE = 20
REGIME_WINDOW = 9  # batches: the rolling median that is the regime path
NEIGHBOURS = 10  # batches each side that a first call is compared with
STALL_RATIO = 2.0  # without known warm sizes, a first call this many times its neighbours' median stalled
MAX_SAMPLES = 2000  # residual quantiles kept per batch size
BASE_QUANTILE = 10  # percentile of a base profile's samples that gives its shape in size


def size_fit(x: np.ndarray, size: np.ndarray, block: np.ndarray) -> pd.Series:
    """Fixed effect of each size in log time ``x``, with one level per ``block`` (alternating medians)."""
    sizes = np.unique(size)
    level = pd.Series(x).groupby(block).median().reindex(block).to_numpy()
    effect = pd.Series(0.0, index=sizes)
    for _ in range(FIT_ROUNDS):
        res = x - level
        misfit = res - effect.reindex(size).to_numpy()
        keep = np.abs(misfit - np.median(misfit)) < OUTLIER_LOG
        effect = pd.Series(res[keep]).groupby(size[keep]).median().reindex(sizes).fillna(effect)
        level = pd.Series(x - effect.reindex(size).to_numpy()).groupby(block).median().reindex(block).to_numpy()
    return effect


def base_shape(base, sizes: np.ndarray) -> np.ndarray:
    """log of the base profile's ``BASE_QUANTILE``-th percentile per size, linear in size between its
    measured sizes (as the simulator interpolates a profile)."""
    measured = np.array(base.batch_sizes, float)
    fast = [float(np.percentile(base.latency_s[b], BASE_QUANTILE)) for b in base.batch_sizes]
    return np.log(np.interp(sizes, measured, fast))


def size_curve(frame: pd.DataFrame, sizes: np.ndarray, base=None) -> tuple[np.ndarray, dict]:
    """``f`` at ``sizes`` (log seconds, up to a constant) from the batches in ``frame`` (``time_s``,
    ``size``, ``segment``, ``fit``: whether the batch may enter the fit), and how it was made."""
    fit = frame[frame["fit"].to_numpy(bool)]
    block = fit["segment"].to_numpy() * 10**9 + fit.groupby("segment").cumcount().to_numpy() // BLOCK
    effect = size_fit(np.log(fit["time_s"].to_numpy()), fit["size"].to_numpy(), block)
    counts = fit["size"].value_counts()
    served = np.array(sorted(int(b) for b in effect.index if counts.get(b, 0) >= MIN_PER_CURVE_SIZE))
    shape = base_shape(base, sizes) if base is not None else None
    if served.size == 0:
        curve = shape if shape is not None else np.zeros(len(sizes))
        return curve, {"sizes": [], "from": "base profile" if shape is not None else "flat"}
    values = effect.reindex(served).to_numpy()
    curve = np.interp(sizes, served, values)  # flat below the smallest, linear between
    top = served[-1]
    above = sizes > top
    if above.any() and shape is not None:
        curve[above] = values[-1] + shape[above] - base_shape(base, np.array([top]))[0]
    elif above.any() and served.size >= 2:
        slope, intercept = np.polyfit(served, np.exp(values), 1, w=np.sqrt(counts.reindex(served).to_numpy()))
        line = lambda b: np.maximum(intercept + slope * b, 1e-12)  # noqa: E731
        curve[above] = values[-1] + np.log(np.maximum(line(sizes[above]) / line(top), 1.0))
    how = ("served sizes" + ("; beyond them the base profile's shape" if shape is not None else
                             "; beyond them a line through the served sizes" if served.size >= 2 else ""))
    return curve, {"sizes": served.tolist(), "log_effect": [round(float(v - values[0]), 4) for v in values],
                   "from": how}


def first_calls(frame: pd.DataFrame, warm: dict[int, frozenset | None],
                curve_at: np.ndarray) -> tuple[np.ndarray, np.ndarray, set]:
    """The first batch of each size in each segment whose process had not run it: (indices into
    ``frame``, stall excess seconds, sizes seen warm). A batch's expected time is its size curve
    (``curve_at``, log seconds per batch) at the median level of the ``NEIGHBOURS`` batches each side;
    the excess is what it took beyond that. ``warm[segment]`` lists the sizes run before the log (None:
    unknown; then a first batch counts as a first call only if it took more than ``STALL_RATIO`` times
    its expected time, and the others are evidence that the size was warm)."""
    index, excess, seen_warm = [], [], set()
    times = frame["time_s"].to_numpy()
    level = np.log(np.maximum(times, 1e-12)) - curve_at
    for segment, rows in frame.groupby("segment").indices.items():
        known = warm.get(segment)
        seen = set(known or ())
        for j, k in enumerate(rows):
            b = int(frame["size"].iat[k])
            if b in seen:
                continue
            seen.add(b)
            around = np.r_[level[rows[max(0, j - NEIGHBOURS):j]], level[rows[j + 1:j + 1 + NEIGHBOURS]]]
            expected = float(np.exp(curve_at[k] + np.median(around))) if around.size else times[k]
            if known is None and times[k] <= STALL_RATIO * expected:
                seen_warm.add(b)
                continue
            index.append(k)
            excess.append(max(times[k] - expected, 0.0))
    return np.array(index, int), np.array(excess), seen_warm


def regime_levels(frame: pd.DataFrame, curve_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per batch: its log level ``log(time) - f(size)`` (batches not ``fit`` interpolated from their
    neighbours) and the regime, the rolling median of the level over ``REGIME_WINDOW`` batches, within
    each segment."""
    level = np.log(frame["time_s"].to_numpy()) - curve_at
    level = np.where(frame["fit"].to_numpy(bool), level, np.nan)
    smooth = pd.Series(level).groupby(frame["segment"].to_numpy())
    level = smooth.transform(lambda v: v.interpolate(limit_direction="both")).to_numpy()
    regime = pd.Series(level).groupby(frame["segment"].to_numpy()).transform(
        lambda v: v.rolling(REGIME_WINDOW, center=True, min_periods=1).median()).to_numpy()
    return level, regime


def regime_path(frame: pd.DataFrame, regime: np.ndarray) -> dict:
    """The ``service_level`` section: the regime (centred on its mean) at each batch's start, segments
    (one per log and replica) laid end to end in wall time, for ``phase: random_time``."""
    centre = float(np.mean(regime))
    path, starts, offset = [], [], 0.0
    for _, rows in frame.groupby("segment", sort=False).indices.items():
        start = frame["start_s"].to_numpy()[rows]
        t0 = start[0]
        last = None
        for t, v in zip(start, regime[rows]):
            v = round(float(v - centre), 4)
            if v != last:  # the path is piecewise constant: keep where it changes
                path.append(v)
                starts.append(round(float(offset + t - t0), 7))
                last = v
        offset += float(frame["end_s"].to_numpy()[rows][-1] - t0)
    return {"phase": "random_time", "path": path, "path_start_s": starts, "span_s": round(offset, 7),
            "window_batches": REGIME_WINDOW,
            "method": f"rolling median over {REGIME_WINDOW} batches of log(time) - size curve, at each batch's "
                      "start; replayed in wall time from a random phase per replica, integrated over each batch"}


def residual_quantiles(residual: np.ndarray) -> np.ndarray:
    """The residuals themselves, or ``MAX_SAMPLES`` evenly spaced quantiles of them when there are more."""
    residual = np.sort(residual)
    if residual.size <= MAX_SAMPLES:
        return residual
    return np.quantile(residual, (np.arange(MAX_SAMPLES) + 0.5) / MAX_SAMPLES)
