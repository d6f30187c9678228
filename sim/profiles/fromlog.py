"""A profile from served logs: the observe -> calibrate -> simulate loop (docs/profile.md, docs/validation.md).

:func:`profile_from_logs` turns one or more :class:`~sim.profiles.requestlog.ServedLog` of one model on
one device into a profile document. A request log of any server is read by ``capsim profile from-log``
(:func:`profile_from_log_files`); a ``capsim bench-serve`` run directory by ``capsim profile from-run``
(sim/profiles/fromrun.py), a thin reader over the same estimation. Every batch is first classified by
the queue it found (:func:`sim.profiles.requestlog.dispatch_states`); then, by ``speed``:

* ``"regime"`` (the default of ``from-log``): the regime model of sim/profiles/regime.py -- a size curve
  within a speed regime (a back-to-back ``base`` profile's shape beyond the sizes the log served), the
  regime path replayed in wall time from a random phase, i.i.d. residuals, the idle response and
  first-call stalls;
* ``"level"`` (the default of ``from-run``): per batch size the served times, divided by the idle
  response at their gap and by a slow speed level walked per batch (sim/profiles/speed.py);
* ``"trace"`` (one log): every batch's own speed at the time it ran, for replaying that log.

Both add the serving loop's **dispatch** delays: how late it started each batch once due, after an idle
wait (``idle_s``) and right behind another batch (``busy_s``), from the server's own measurement where
the log has one, else from the log's arrivals and the batching rule. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.profiles import regime as rg
from sim.profiles.profile import SCHEMA, SCHEMA_V2
from sim.profiles.requestlog import ServedLog, back_to_back_s, dispatch_states, read_request_log
from sim.profiles.speed import MIN_PER_SIZE, idle_ratio, idle_response, slow_level, speed_trace

SPEEDS = ("regime", "level", "trace")


def profile_from_log_files(paths: Sequence, *, base=None, speed: str = "regime", max_batch_size: int | None = None,
                           max_queue_delay_s: float = 0.0, warm_sizes=None, model: str | None = None,
                           device: str | None = None, dtype: str | None = None) -> dict:
    """``capsim profile from-log``: read request logs (CSV or Parquet) and build their profile."""
    settings = {k: v for k, v in (("model", model), ("device", device), ("dtype", dtype)) if v}
    logs = [read_request_log(p, max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_s,
                             warm_sizes=warm_sizes, settings=settings) for p in paths]
    return profile_from_logs(logs, base=base, speed=speed, max_batch_size=max_batch_size,
                             source="capsim profile from-log")


def profile_from_logs(logs: Sequence[ServedLog], *, base=None, speed: str = "regime", max_batch_size: int | None = None,
                      source: str = "", method: str = "from-log") -> dict:
    """A profile document from served logs of one model on one device, covering batch sizes up to
    ``max_batch_size`` (default: the largest the logs allowed); ``base`` is a back-to-back
    :class:`~sim.profiles.profile.Profile` of the same model and device, for what the logs never served."""
    if not logs:
        raise CapsimError(f"profile {method}: no logs given")
    if speed not in SPEEDS:
        raise CapsimError(f"profile {method}: speed = {speed!r}: must be one of {', '.join(SPEEDS)}")
    if speed == "trace" and len(logs) != 1:
        raise CapsimError(f"profile {method}: speed = 'trace' replays one run's speed over time; got {len(logs)} "
                          "runs (give one, or use speed 'level')")
    states = [dispatch_states(log) for log in logs]
    frame = pd.concat([s.assign(log=k) for k, s in enumerate(states)], ignore_index=True)
    thresholds = [t for t in map(back_to_back_s, states) if t is not None]
    threshold = max(thresholds) if thresholds else None
    allowed = max_batch_size or max(log.max_batch_size for log in logs)
    if speed == "regime":
        body = _regime_sections(frame, logs, base, allowed, threshold)
    else:
        body = _level_sections(frame, logs, speed, allowed, threshold, method)
    calibration = body.pop("calibration")
    uses_v2 = body.get("first_call") is not None or (body.get("service_level") or {}).get("phase") == "random_time"
    return {
        "schema": SCHEMA_V2 if uses_v2 else SCHEMA,
        "kind": "measured",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": _environment(logs[0].settings, base),
        "model": _model(logs[0], base),
        "batches": body.pop("batches"),
        "host_overhead_s": [],
        "serving_replay": None,
        "idle_response": body.pop("idle_response"),
        "dispatch": _dispatch(frame),
        "service_level": body.pop("service_level"),
        **body,
        "memory": None,
        "load": None,
        "calibration": {
            "method": method, "runs": [str(log.name) for log in logs], "source": source,
            "batches": int(len(frame)), "speed": speed,
            "back_to_back_s": None if threshold is None else float(f"{threshold:.4g}"),
            **({"base": str(base.path)} if base is not None else {}), **calibration,
        },
        "estimate": None,
    }


def _regime_sections(frame: pd.DataFrame, logs: Sequence[ServedLog], base, allowed: int,
                     threshold: float | None) -> dict:
    frame = frame.assign(segment=frame.groupby(["log", "replica"], sort=False).ngroup())
    fit = (frame["time_s"] > 0).to_numpy() & (frame.groupby("segment").cumcount() > 0).to_numpy()
    if "first_call" in frame:
        fit &= ~frame["first_call"].fillna(False).to_numpy(bool)
    if not fit.any():
        raise CapsimError(f"profile from-log: {', '.join(log.name for log in logs)} holds no batch to measure "
                          "(every one is a replica's first batch or a first call)")
    top = max(allowed, int(frame["size"].max()))
    extra = [b for b in (base.batch_sizes if base is not None else ()) if b > top]
    sizes = np.array([*range(1, top + 1), *extra])
    curve, how = rg.size_curve(frame.assign(fit=fit), sizes, base)  # stalls fall out of its fit as outliers
    curve_at = np.interp(frame["size"].to_numpy(), sizes, curve)
    warm = {int(seg): logs[int(k)].warm_sizes for (k, seg) in frame[["log", "segment"]].drop_duplicates().to_numpy()}
    flagged, stalls, seen_warm = rg.first_calls(frame, warm, curve_at)
    fit[flagged] = False
    frame = frame.assign(fit=fit)
    level, regime = rg.regime_levels(frame, curve_at)
    kept = frame[fit]
    residual = (level - regime)[fit]
    response = idle_response(kept.assign(size=0, time_s=np.exp(residual)), threshold)
    residual = residual - np.log(idle_ratio(kept, response))
    centre = float(np.mean(regime))
    quantiles = rg.residual_quantiles(residual)
    first_call_s = _warmup_first_calls(logs)
    batches = [{"batch_size": int(b), "latency_s": _sig(np.exp(c + centre + quantiles)),
                "first_call_s": first_call_s.get(int(b)), "host_overhead_s": []} for b, c in zip(sizes, curve)]
    known = [log.warm_sizes for log in logs]
    warm_sizes = set().union(*known) if all(w is not None for w in known) else seen_warm
    first_call = None
    if stalls.size:
        first_call = {"stall_s": _sig(np.sort(stalls)), "warm_sizes": sorted(int(b) for b in warm_sizes),
                      "method": "first batch of a size the process had not run: its time - the median of the "
                                f"{rg.NEIGHBOURS} batches each side; warm_sizes ran before the log"}
    return {"batches": batches, "idle_response": response, "service_level": rg.regime_path(frame, regime),
            "first_call": first_call,
            "calibration": {"size_curve": how, "sizes_served": sorted(int(b) for b in kept["size"].unique()),
                            "sizes_from_base": [int(b) for b in sizes if b > max(how["sizes"] or [0])]
                            if base is not None else [],
                            "first_calls": int(stalls.size),
                            "notes": "batch times are end - start of served batches (latency and host overhead "
                                     "together) = exp(size curve + regime + residual); samples are the residual "
                                     "quantiles at each size, the regime is service_level.path"}}


def _level_sections(frame: pd.DataFrame, logs: Sequence[ServedLog], speed: str, allowed: int,
                    threshold: float | None, method: str) -> dict:
    if "first_call" in frame:
        frame = frame[~frame["first_call"].fillna(False).astype(bool)]
    frame = frame[frame["time_s"] > 0]
    response = idle_response(frame, threshold)
    normalised = frame["time_s"].to_numpy() / idle_ratio(frame, response)
    if speed == "trace":
        levels, level = speed_trace(frame.assign(time_s=normalised))
    else:
        levels, level = slow_level(frame.assign(time_s=normalised))
    if level is not None:
        normalised = normalised / np.exp(levels)
    counts = frame.groupby("size").size()
    kept = sorted(int(b) for b, n in counts.items() if n >= MIN_PER_SIZE)
    if not kept:
        raise CapsimError(f"profile {method}: no batch size was served {MIN_PER_SIZE} or more times in "
                          f"{', '.join(log.name for log in logs)}")
    sizes = frame["size"].to_numpy()
    samples = {b: np.sort(normalised[sizes == b]) for b in kept}
    extrapolated = _extrapolate(samples, counts, allowed)
    first_calls = _warmup_first_calls(logs)
    batches = [{"batch_size": b, "latency_s": _sig(x), "first_call_s": first_calls.get(b), "host_overhead_s": []}
               for b, x in sorted({**samples, **extrapolated}.items())]
    return {"batches": batches, "idle_response": response, "service_level": level,
            "calibration": {"sizes_left_out": sorted(int(b) for b in counts.index if int(b) not in kept),
                            "sizes_extrapolated": sorted(extrapolated),
                            "notes": "batch times are end - start of a served batch (latency and host overhead "
                                     "together), divided by the idle response at the batch's own idle gap and by "
                                     "its speed level; first calls from the runs' warm-up"}}


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
    """How late the loop started batches once due: after an idle wait (a blocked thread waking up) and
    right behind another batch (the loop's own bookkeeping); None where the log has no such times."""
    late = frame["late_s"].to_numpy(float)
    measured = np.isfinite(late)
    if not measured.any():
        return None
    late = np.clip(late, 0.0, None)
    b2b = frame["back_to_back"].to_numpy(bool)
    return {"idle_s": _sig(np.sort(late[measured & ~b2b])), "busy_s": _sig(np.sort(late[measured & b2b])),
            "method": "batch start - when the batching rules made it due (the server's own late_s where it "
                      "recorded one); busy_s for batches due when the previous one ended (queue state), idle_s "
                      "for the rest"}


def _warmup_first_calls(logs: Sequence[ServedLog]) -> dict[int, float]:
    """Median over logs of each size's first call during a bench-serve warm-up (run.json ``warmup``)."""
    seen: dict[int, list[float]] = {}
    for log in logs:
        for warm in log.settings.get("warmup") or []:
            for b, t in (warm.get("first_call_s") or {}).items():
                seen.setdefault(int(b), []).append(float(t))
    return {b: _sig1(float(np.median(v))) for b, v in seen.items()}


def _environment(settings: dict, base) -> dict:
    """The run's own environment, else the device given (``--device``), else the base profile's, else cuda."""
    env = dict(settings.get("environment") or {})
    if settings.get("device"):
        env.setdefault("device", settings["device"])
    if base is not None:
        env.setdefault("device", base.device)
        if base.device_name and env["device"] == base.device:
            env.setdefault("device_name", base.device_name)
    env.setdefault("device", "cuda")
    return env


def _model(log: ServedLog, base) -> dict:
    s = log.settings
    name = s.get("model") or (base.model_name if base is not None else Path(log.name).stem)
    dtype = s.get("dtype") or (base.dtype if base is not None else "fp32")
    return {"name": name, "dtype": dtype, "compiled": False}


def _sig(values: np.ndarray) -> list[float]:
    return [_sig1(v) for v in np.asarray(values, float).tolist()]


def _sig1(x: float) -> float:
    return float(f"{x:.5g}")
