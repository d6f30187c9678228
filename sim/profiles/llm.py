"""Reading the ``llm`` section of a ``capsim.profile/3`` file: measured iteration times of a decoder LLM,
and the iteration-time model fitted to them (docs/profile.md, docs/llm.md).

What the file holds is only what was measured: per iteration composition (prompt tokens computed P,
sequences decoding D, KV tokens attention read K, query-key pairs it computed A, tokens sampled S:
the iteration's output tokens) the iteration's times (``capsim calibrate --mode llm``: a grid, several
samples each; a from-run profile: every iteration of a served run, one sample each), and ``operators``:
the time of an iteration's token-wise work per token count, ``body(n)`` (every layer's matmuls, norms and
activations on n tokens) and ``head(n)`` (the LM head on n sampled rows). The reader fits

    step = β0 + a·body(P + D) + b·head(S) + β2·D + β3·K + β4·A

by non-negative least squares on relative error (each composition's median time, rows weighted by
1/time, so a 10 ms decode counts as much as a 300 ms prompt); the composition furthest off is left out
and the rest refitted while it is more than 5 robust standard deviations off (a stall during the grid).
Why measured tables and not a line in D: on one CPU thread a matmul's time steps with its rows (MKL's
small-matrix kernels: the decoder's decode step takes 16, 18, 20, 31, 33, 35, 45, 48 ms for 1..8
sequences), so a straight line misses by up to 44% and a piecewise line through doubling knots by up to
18% between them. Every sample's ratio to the fit is kept: the **residuals**, which the ``calibrated``
iteration-time model draws from (sim/llm/calibrated.py). The simulator never imports torch; the fit is
the same function for the command that measured and for the simulator that reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from sim.errors import ProfileError
from sim.profiles.checks import Checker
from sim.profiles.profile import SCHEMA_V3, dumps, read_section_profile, section_envelope
from sim.results.files import write_text

KIND = "an LLM iteration profile"
HINT = "capsim calibrate --mode llm"  # the command that writes an LLM iteration profile

SCHEMA = SCHEMA_V3  # the version whose files may hold an llm section instead of batches
TERMS = ("prefill_tokens", "decode_tokens", "kv_tokens_read", "attention_pairs", "output_tokens")
OUTLIER_SIGMAS = 5.0
PARAMETERS = 6  # β0, a, b, β2, β3, β4
MIN_SPREAD = 0.002  # log-ratio spread below which no composition is an outlier (timer resolution, rounding)


@dataclass(frozen=True)
class Operators:
    """Measured times of an iteration's token-wise work per token count (``llm.operators``): ``body`` every
    layer's matmuls, norms and activations on that many tokens, ``head`` the LM head on that many sampled
    rows; linear between measured counts and beyond the last, 0 for 0 tokens."""

    rows: tuple[float, ...]
    body_s: tuple[float, ...]
    head_s: tuple[float, ...]

    def body(self, tokens) -> np.ndarray:
        return _table(tokens, self.rows, self.body_s)

    def head(self, sampled) -> np.ndarray:
        return _table(sampled, self.rows, self.head_s)


def _table(x, rows: tuple[float, ...], values: tuple[float, ...]) -> np.ndarray:
    """Linear through (0, 0) and the measured points; beyond the last, the last segment's slope."""
    k, v = np.array((0.0, *rows)), np.array((0.0, *values))
    slope = (v[-1] - v[-2]) / (k[-1] - k[-2])
    x = np.asarray(x, dtype=float)
    return np.where(x <= k[-1], np.interp(x, k, v), v[-1] + slope * (x - k[-1]))


@dataclass(frozen=True)
class IterationFit:
    """``step = base_s + body_scale·body(P + D) + head_scale·head(S) + per_decode_s·D + per_kv_token_s·K +
    per_attention_pair_s·A`` over the measured :class:`Operators`."""

    operators: Operators
    base_s: float
    body_scale: float
    head_scale: float
    per_decode_s: float
    per_kv_token_s: float
    per_attention_pair_s: float

    def predict(self, prefill_tokens: float, decode_tokens: float, kv_tokens_read: float,
                attention_pairs: float = 0.0, output_tokens: float | None = None) -> float:
        sampled = sampled_tokens(prefill_tokens, decode_tokens) if output_tokens is None else output_tokens
        return float(self.predict_many(np.array([[prefill_tokens, decode_tokens, kv_tokens_read, attention_pairs,
                                                  sampled]], dtype=float))[0])

    def predict_many(self, terms: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``TERMS`` (an ``[n, 5]`` array)."""
        return _design(terms, self.operators) @ np.array(self.coefficients())

    def coefficients(self) -> tuple[float, ...]:
        return (self.base_s, self.body_scale, self.head_scale, self.per_decode_s, self.per_kv_token_s,
                self.per_attention_pair_s)

    def scaled(self, factor: float) -> IterationFit:
        return IterationFit(self.operators, *(c * factor for c in self.coefficients()))

    def describe(self) -> str:
        ops = self.operators
        at = [r for r in (1, 4, 8, 16, 64, 256) if r <= ops.rows[-1]]
        body = ", ".join(f"{r}: {float(ops.body(r)) * 1e3:.3g}" for r in at)
        head = ", ".join(f"{r}: {float(ops.head(r)) * 1e3:.3g}" for r in at if r <= 16)
        return (f"{self.base_s * 1e3:.3g} ms + {self.body_scale:.3g} × body(P + D) + {self.head_scale:.3g} × "
                f"head(S) + {self.per_decode_s * 1e6:.3g} us/decoding sequence + {self.per_kv_token_s * 1e9:.3g} "
                f"ns/KV token read + {self.per_attention_pair_s * 1e9:.3g} ns/attention pair; measured body(tokens) "
                f"ms {{{body}}}, head(sampled) ms {{{head}}}")


def sampled_tokens(prefill_tokens, decode_tokens):
    """Rows through the LM head when the iteration does not say (a decode each, and one prompt chunk
    that completes): what ``Iteration.output_tokens`` counts exactly."""
    return decode_tokens + (np.asarray(prefill_tokens) > 0)


def _design(terms: np.ndarray, operators: Operators) -> np.ndarray:
    """The model's columns for rows of ``TERMS``: 1, body(P + D), head(S), D, K, A."""
    return np.column_stack([np.ones(len(terms)), operators.body(terms[:, 0] + terms[:, 1]),
                            operators.head(terms[:, 4]), terms[:, 1], terms[:, 2], terms[:, 3]])


def fit_iterations(terms: np.ndarray, step_s: list[np.ndarray], operators: Operators) -> tuple[IterationFit, np.ndarray]:
    """The fit to compositions ``terms`` (``[n, 5]``) with samples ``step_s[i]``; and which compositions it
    kept: the one furthest off the fit is left out and the rest refitted while it is more than
    ``OUTLIER_SIGMAS`` robust deviations off (at most a tenth of them are left out)."""
    medians = np.array([float(np.median(s)) for s in step_s])
    design = _design(terms, operators)
    keep = np.ones(len(medians), dtype=bool)
    fit = _nnls_relative(design, medians, operators)
    while (~keep).sum() < len(keep) // 10 and keep.sum() > PARAMETERS:
        log_ratio = np.log(medians / np.maximum(fit.predict_many(terms), 1e-12))
        off = np.abs(log_ratio - np.median(log_ratio[keep]))
        spread = max(1.4826 * float(np.median(off[keep])), MIN_SPREAD)
        worst = int(np.argmax(np.where(keep, off, -1.0)))
        if not off[worst] > OUTLIER_SIGMAS * spread:
            break
        keep[worst] = False
        fit = _nnls_relative(design[keep], medians[keep], operators)
    return fit, keep



def _nnls_relative(design: np.ndarray, y: np.ndarray, operators: Operators) -> IterationFit:
    """Non-negative least squares on relative error (rows weighted 1/y), columns scaled for conditioning."""
    scale = np.where(design.max(axis=0) > 0, design.max(axis=0), 1.0)
    beta, _ = nnls(design / scale / y[:, None], np.ones(len(y)))
    return IterationFit(operators, *(float(b) for b in beta / scale))


@dataclass(frozen=True, eq=False)
class IterationProfile:
    """A validated LLM iteration profile: what was measured, the fit, the residual ratios."""

    path: Path
    model_name: str
    dtype: str
    device: str
    device_name: str | None
    threads: int | None
    tensor_parallel: int
    architecture: dict
    kv_cache: dict
    terms: np.ndarray  # [compositions, 5], the columns of TERMS
    step_s: list[np.ndarray]  # samples per composition
    fit: IterationFit
    kept: np.ndarray  # compositions the fit used
    residuals: np.ndarray  # every sample / the fit of its composition, in measured order
    memory_bytes: int | None
    raw: dict

    def quality(self) -> dict[str, float]:
        """How well the fit describes the measurements: per composition |median / fit − 1| (median, p90,
        max, over all compositions, outliers included), R² of the medians, and the residual ratios'
        spread over every sample (p5, p50, p95, the coefficient of variation)."""
        medians = np.array([float(np.median(s)) for s in self.step_s])
        predicted = self.fit.predict_many(self.terms)
        error = np.abs(medians / predicted - 1)
        r2 = 1 - float(np.sum((medians - predicted) ** 2) / np.sum((medians - medians.mean()) ** 2)) \
            if len(medians) > 1 and medians.std() > 0 else math.nan
        p5, p50, p95 = np.percentile(self.residuals, (5, 50, 95))
        return {"compositions": int(len(medians)), "samples": int(self.residuals.size),
                "outliers_left_out": int((~self.kept).sum()),
                "median_abs_error": float(np.median(error)), "p90_abs_error": float(np.percentile(error, 90)),
                "max_abs_error": float(error.max()), "r2": r2, "residual_p5": float(p5),
                "residual_p50": float(p50), "residual_p95": float(p95),
                "residual_cv": float(self.residuals.std() / self.residuals.mean())}

    def speed_trace(self) -> tuple[list[float], list[float], list[float] | None] | None:
        """``(start_s, log_speed, loop_s)`` of a from-run replay profile (``service_level.phase: aligned``),
        else None."""
        level = self.raw.get("service_level") or {}
        if level.get("phase") != "aligned":
            return None
        loop = level.get("path_loop_s")
        return list(level["path_start_s"]), list(level["path"]), list(loop) if loop is not None else None


def load_iteration_profile(path: str | Path) -> IterationProfile:
    doc, _ = read_section_profile(path, "llm", KIND, HINT)
    return iteration_profile_from_dict(doc, path)


def iteration_profile_from_dict(doc: object, path: str | Path = "<profile>") -> IterationProfile:
    """Validate a document's envelope and its ``llm`` section (every other section as the reader does)."""
    path = Path(path)
    check = section_envelope(doc, path, "llm", KIND, HINT)
    env, model, llm = doc["environment"], doc["model"], doc["llm"]
    entries = llm["iterations"]
    terms = np.array([[int(e.get(k) or 0) for k in TERMS[:4]] for e in entries], dtype=float)
    sampled = [e.get("output_tokens") for e in entries]
    terms = np.column_stack([terms, [s if s is not None else sampled_tokens(t[0], t[1]) for s, t in zip(sampled, terms)]])
    step_s = [check.samples(e["step_s"], f"llm.iterations[{i}].step_s", needed=True) for i, e in enumerate(entries)]
    if len(entries) < PARAMETERS:
        check.fail("llm.iterations", f"[{len(entries)} entries]", f"at least {PARAMETERS} compositions (one per "
                                                                   "coefficient of the fit)")
    unsorted = [np.asarray(e["step_s"], dtype=float) for e in entries]  # measured order, for the residuals
    fit, kept = fit_iterations(terms, step_s, operators_of(llm, check))
    if fit.predict_many(terms).min() <= 0:
        check.fail("llm.iterations", "[...]", "the fit predicts no time for some composition; measure iterations "
                                              "with work in them")
    predicted = fit.predict_many(terms)
    residuals = np.concatenate([s / p for s, p in zip(unsorted, predicted)])
    return IterationProfile(
        path=path, model_name=model["name"], dtype=model["dtype"], device=env["device"],
        device_name=env.get("device_name"), threads=env.get("cpu_threads"),
        tensor_parallel=int(llm.get("tensor_parallel") or 1), architecture=dict(llm.get("architecture") or {}),
        kv_cache=dict(llm.get("kv_cache") or {}), terms=terms, step_s=step_s, fit=fit, kept=kept,
        residuals=residuals, memory_bytes=(doc.get("memory") or {}).get("device_total_bytes"), raw=doc)


def operators_of(llm: dict, check: Checker) -> Operators:
    """The ``llm.operators`` tables (checked by ``sim.profiles.checks``), required by the fit."""
    ops = llm.get("operators")
    if not isinstance(ops, dict):
        check.fail("llm.operators", ops, "the measured token-wise times per token count are needed (capsim "
                                         "calibrate --mode llm and capsim bench-serve --llm measure them)")
    return Operators(tuple(float(r) for r in ops["rows"]), tuple(float(v) for v in ops["body_s"]),
                     tuple(float(v) for v in ops["head_s"]))


def write_iteration_profile(doc: dict, path: str | Path) -> Path:
    """Validate ``doc`` as :func:`load_iteration_profile` would, then write it atomically."""
    iteration_profile_from_dict(doc, path)
    return write_text(Path(path), dumps(doc) + "\n")



# ---------------------------------------------------------------- profiles of served runs
def _widest_operators(runs) -> dict | None:
    """The token-wise tables of the run that measured the most token counts (runs of one machine)."""
    tables = [(r.settings.get("llm") or {}).get("operators") for r in runs]
    tables = [t for t in tables if t]
    return max(tables, key=lambda t: t["rows"][-1]) if tables else None


def profile_from_llm_runs(runs, source: str, speed_trace: bool = False) -> dict:
    """An LLM iteration profile from the iterations of ``capsim bench-serve --llm`` runs (their
    ``batches.parquet``; objects with ``settings``, ``batches`` and ``name``): every iteration's
    composition and time, identical compositions merged. ``speed_trace`` (one run): also the run's speed
    over time, ``service_level`` with ``phase: aligned`` — each iteration's start and log(time / fit) —
    which the calibrated model replays at the same moments (``capsim validate --from-run replay``)."""
    if speed_trace and len(runs) != 1:
        raise ProfileError(f"a speed trace replays one run; {len(runs)} given")
    frames = [r.batches for r in runs]
    columns = [np.concatenate([f[k].to_numpy() for f in frames]).astype(np.int64) for k in TERMS]
    times = np.concatenate([(f["end_s"] - f["start_s"]).to_numpy() for f in frames])
    rows = np.column_stack(columns)
    unique, group = np.unique(rows, axis=0, return_inverse=True)
    group = group.ravel()
    iterations = [{**{k: int(v) for k, v in zip(TERMS, unique[g])},
                   "step_s": [float(f"{t:.6g}") for t in times[group == g]]} for g in range(len(unique))]
    first = runs[0].settings
    doc = {
        "schema": SCHEMA_V3, "kind": "measured", "environment": first.get("environment") or {"device": "cpu"},
        "model": {"name": first["model"], "dtype": first.get("dtype", "fp32")},
        "llm": {"tensor_parallel": 1, "kv_cache": {"kind": "paged", "block_size": first["llm"]["block_size"],
                                                   "blocks": first["llm"]["kv_blocks"]},
                "iterations": iterations, "source": source, "operators": _widest_operators(runs),
                "method": "every iteration of the runs, end_s - start_s (capsim bench-serve --llm), identical "
                          "compositions merged: " + ", ".join(r.name for r in runs)},
        "memory": {"device_total_bytes": (first.get("machine") or {}).get("memory_bytes"),
                   "method": "host memory of the served run", "fit_method": "none"},
    }
    if speed_trace:
        operators = operators_of(doc["llm"], Checker(Path(source)))
        fit, _ = fit_iterations(unique.astype(float), [times[group == g] for g in range(len(unique))], operators)
        predicted = fit.predict_many(rows.astype(float))
        late = frames[0]["late_s"].to_numpy() if "late_s" in frames[0] else np.zeros(len(times))
        doc["service_level"] = {
            "phase": "aligned", "path": [float(f"{x:.5g}") for x in np.log(times / predicted)],
            "path_start_s": [float(f"{t:.9g}") for t in frames[0]["start_s"].to_numpy()],
            "path_loop_s": [float(f"{t:.4g}") for t in np.clip(np.append(late[1:], 0.0), 0.0, None)],
            "method": "each iteration's log(time / the fit of its composition) from its start: the run's speed "
                      "over time; path_loop_s: the serving loop's own time before the next iteration (its "
                      "late_s: bookkeeping, or waking up for an arrival), replayed as time without work "
                      "(sim/llm/calibrated.py)"}
    return doc
