"""The rules a ``capsim.profile/1`` document follows beyond its batches (docs/profile.md).

:class:`Checker` raises one :class:`~sim.errors.ProfileError` line naming the file, the key, the value
and what is allowed; :func:`check_sections` applies the rules of every other section the simulator,
the CLI and the dashboard read. ``sim/data/profile.schema.json`` states the same types and ranges; the
rules a JSON Schema cannot state (finite numbers, arrays that pair up, gaps that increase, a weight
load within the time bound) are checked here only. tests/test_bad_profiles.py holds both to the same
hostile cases.

The bounds keep the simulator's arithmetic finite and catch unit mistakes: no duration in a profile
(a batch, a first call, a gap, a load) is longer than an hour, and no speed factor beyond ``exp(20)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NoReturn

import numpy as np

from sim.errors import ProfileError, bad_value
from sim.serving.waiting import WAITS
from sim.training.states import OPTIMIZERS, PRECISIONS

MAX_SECONDS = 3600.0  # any duration in a profile: a longer batch or load is a unit mistake or garbage
MIN_MEAN_LATENCY_S = 1e-9  # a batch size's mean latency: below a nanosecond it is not a measurement
MAX_BATCH_SIZE = 65536  # as batching.max_batch_size
MAX_BYTES = 2**63 - 1
MAX_RATIO = 1e6  # idle_response.ratio, serving_replay.median_ratio_to_benchmark
MAX_LOG_LEVEL = 20.0  # service_level.path: a speed factor exp(level) within exp(+-20)
MAX_SIGMA = MAX_LOG_LEVEL / 5  # service_level.sigma: five standard deviations within the path bound
MAX_RUN_S = 1e7  # service_level.path_start_s: start times within one served run, within +-1e7 s
SECONDS = f"times must be finite numbers >= 0 (seconds), at most {MAX_SECONDS:g} (an hour)"
ESTIMATE_METHODS = ("roofline", "roofline-scaled")


class Checker:
    """Reads typed values out of a parsed document; every problem is one line naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, value: object, allowed: str) -> NoReturn:
        raise ProfileError(f"{self.path}: {bad_value(key, value, allowed)}")

    def section(self, doc: dict, key: str) -> dict:
        value = doc.get(key)
        if not isinstance(value, dict):
            self.fail(key, value, "an object is needed")
        return value

    def optional_section(self, doc: dict, key: str, needs: tuple[str, ...] = ()) -> dict | None:
        """An object or null; an object must hold the keys in ``needs``."""
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, value, "an object or null")
        for field in needs:
            if value.get(field) is None:
                self.fail(f"{key}.{field}", None, f"{key} needs {', '.join(needs)}")
        return value

    def text(self, section: dict, key: str, field: str) -> str:
        value = section.get(field)
        if not isinstance(value, str) or not value:
            self.fail(key, value, "a non-empty string is needed")
        return value

    def strings(self, section: dict, prefix: str, fields: tuple[str, ...], nullable: bool = True) -> None:
        """Each of ``fields``, where present, a string (or null with ``nullable``)."""
        for field in fields:
            value = section.get(field, "")
            if not (isinstance(value, str) or (value is None and nullable)):
                self.fail(f"{prefix}.{field}", value, "a string or null" if nullable else "a string")

    def choice(self, section: dict, key: str, field: str, options: tuple[str, ...]) -> str:
        value = section.get(field)
        if value not in options:
            self.fail(key, value, "must be " + " or ".join(map(repr, options)))
        return value

    def number(self, x: object, key: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
               hi_open: bool = False, integer: bool = False, nullable: bool = False, allowed: str = ""):
        """A finite number (an integer with ``integer``) within the bounds, or None if ``nullable``."""
        if x is None and nullable:
            return None
        if not _within(_as_float(x, integer), lo, hi, lo_open, hi_open):
            self.fail(key, x, allowed or _range(lo, hi, lo_open, hi_open, integer) + (" or null" if nullable else ""))
        return x

    def seconds(self, x: object, key: str, nullable: bool = False) -> float | None:
        value = self.number(x, key, 0.0, MAX_SECONDS, nullable=nullable,
                            allowed=SECONDS + (" or null" if nullable else ""))
        return None if value is None else float(value)

    def byte_count(self, x: object, key: str) -> int | None:
        return self.number(x, key, 0, MAX_BYTES, integer=True, nullable=True,
                           allowed="an integer number of bytes in 0..2**63-1 or null")

    def numbers(self, values: object, key: str, lo: float = -math.inf, hi: float = math.inf, *,
                lo_open: bool = False, hi_open: bool = False, integer: bool = False, allowed: str = "") -> np.ndarray:
        """A list of finite numbers within the bounds (null or missing: empty), in order."""
        allowed = allowed or "a list of " + _range(lo, hi, lo_open, hi_open, integer, plural=True)
        if values is None:
            return np.empty(0)
        if not isinstance(values, list):
            self.fail(key, values, allowed)
        array = np.fromiter((_as_float(x, integer) for x in values), float, len(values))
        bad = np.flatnonzero(~_within(array, lo, hi, lo_open, hi_open))
        if bad.size:
            self.fail(key, values[bad[0]], allowed)
        return array

    def samples(self, values: object, key: str, needed: bool = False) -> np.ndarray:
        """Times in seconds, sorted and read-only; ``needed``: at least one, some > 0."""
        if values is None and not needed:
            return _frozen(np.empty(0))
        if not isinstance(values, list) or (needed and not values):
            self.fail(key, values, "a list of at least one time in seconds is needed" if needed
                      else "a list of times in seconds or null")
        array = np.sort(self.numbers(values, key, 0.0, MAX_SECONDS, allowed=SECONDS))
        if needed and not (array > 0).any():
            self.fail(key, values, "at least one sample must be > 0 (no usable batch size)")
        if needed and array.mean() < MIN_MEAN_LATENCY_S:
            self.fail(key, values, f"the mean must be at least {MIN_MEAN_LATENCY_S:g} s (a nanosecond)")
        return _frozen(array)

    def pair(self, key_a: str, a, key_b: str, b) -> None:
        if len(a) != len(b):
            raise ProfileError(f"{self.path}: {key_b} and {key_a} must pair up one to one; their lengths are "
                               f"{len(b)} and {len(a)}")


def check_sections(doc: dict, check: Checker) -> None:
    """The rules of everything but ``batches`` (checked as the profile is built)."""
    if not isinstance(doc.get("created_utc", ""), str):
        check.fail("created_utc", doc["created_utc"], "a string (ISO 8601 time)")
    for rule in (_environment, _model, _serving_replay, _idle_response, _dispatch, _service_level, _memory, _load,
                 _estimate, _server, _first_call, _version, _provenance, _training, _llm):
        rule(doc, check)
    check.optional_section(doc, "calibration")


def _environment(doc: dict, check: Checker) -> None:
    env = check.section(doc, "environment")
    check.choice(env, "environment.device", "device", ("cpu", "cuda"))
    check.strings(env, "environment", ("device_name", "cpu", "torch", "cuda", "driver", "python", "platform"))
    check.number(env.get("cpu_threads"), "environment.cpu_threads", 1, integer=True, nullable=True)


def _model(doc: dict, check: Checker) -> None:
    model = check.section(doc, "model")
    check.text(model, "model.name", "name")
    check.choice(model, "model.dtype", "dtype", ("fp32", "fp16", "bf16"))
    if not isinstance(model.get("compiled", False), bool):
        check.fail("model.compiled", model["compiled"], "true or false")
    check.number(model.get("parameters"), "model.parameters", 0, integer=True, nullable=True)
    check.byte_count(model.get("weight_bytes"), "model.weight_bytes")
    check.number(model.get("seq_len"), "model.seq_len", 1, integer=True, nullable=True)


def _serving_replay(doc: dict, check: Checker) -> None:
    replay = check.optional_section(doc, "serving_replay", needs=("batch_sizes", "gaps_s", "latency_s"))
    if replay is None:
        return
    sizes = check.numbers(replay["batch_sizes"], "serving_replay.batch_sizes", 1, MAX_BATCH_SIZE, integer=True)
    for field in ("gaps_s", "latency_s"):
        check.pair("serving_replay.batch_sizes", sizes, f"serving_replay.{field}",
                   check.samples(replay[field], f"serving_replay.{field}"))
    check.samples(replay.get("host_overhead_s"), "serving_replay.host_overhead_s")
    check.number(replay.get("median_ratio_to_benchmark"), "serving_replay.median_ratio_to_benchmark", 0, MAX_RATIO,
                 nullable=True)


def _idle_response(doc: dict, check: Checker) -> None:
    response = check.optional_section(doc, "idle_response", needs=("gaps_s", "ratio"))
    if response is None:
        return
    gaps = check.numbers(response["gaps_s"], "idle_response.gaps_s", 0, MAX_SECONDS, lo_open=True)
    if (np.diff(gaps) <= 0).any():
        check.fail("idle_response.gaps_s", response["gaps_s"], "gaps must increase strictly (one per bin, in order)")
    ratio = check.numbers(response["ratio"], "idle_response.ratio", 0, MAX_RATIO, lo_open=True)
    check.pair("idle_response.gaps_s", gaps, "idle_response.ratio", ratio)
    check.numbers(response.get("counts"), "idle_response.counts", 0, integer=True)
    if "back_to_back_s" in response:
        check.seconds(response["back_to_back_s"], "idle_response.back_to_back_s")
    if "back_to_back_count" in response:
        check.number(response["back_to_back_count"], "idle_response.back_to_back_count", 0, integer=True)
    check.strings(response, "idle_response", ("method",), nullable=False)


def _server(doc: dict, check: Checker) -> None:
    """How the measured server waited for work (sim/serving/waiting.py): what its idle response is of."""
    server = check.optional_section(doc, "server", needs=("wait",))
    if server is not None:
        check.choice(server, "server.wait", "wait", WAITS)


def _dispatch(doc: dict, check: Checker) -> None:
    dispatch = check.optional_section(doc, "dispatch")
    if dispatch is None:
        return
    for field in ("idle_s", "busy_s"):
        check.samples(dispatch.get(field), f"dispatch.{field}")
    check.strings(dispatch, "dispatch", ("method",), nullable=False)


def _service_level(doc: dict, check: Checker) -> None:
    level = check.optional_section(doc, "service_level")
    if level is None:
        return
    key = "service_level."
    for field in ("sigma", "rho"):
        if field in level and level.get("rho" if field == "sigma" else "sigma") is None:
            check.fail(key + field, level[field], "sigma and rho are given together (an AR(1) of the speed level)")
    if "sigma" in level:
        check.number(level["sigma"], key + "sigma", 0, MAX_SIGMA)
        check.number(level["rho"], key + "rho", 0, 1, hi_open=True)
    if "window_batches" in level:
        check.number(level["window_batches"], key + "window_batches", 1, integer=True)
    path = check.numbers(level.get("path"), key + "path", -MAX_LOG_LEVEL, MAX_LOG_LEVEL,
                         allowed=f"a list of log speed levels in [-{MAX_LOG_LEVEL:g}, {MAX_LOG_LEVEL:g}] "
                                 f"(exp({MAX_LOG_LEVEL:g}) is a factor of {math.exp(MAX_LOG_LEVEL):.0e})")
    starts = check.numbers(level.get("path_start_s"), key + "path_start_s", -MAX_RUN_S, MAX_RUN_S)
    loops = check.numbers(level.get("path_loop_s"), key + "path_loop_s", 0, MAX_SECONDS)
    check.numbers(level.get("lags"), key + "lags", 1, integer=True)
    check.numbers(level.get("autocovariance"), key + "autocovariance")
    check.strings(level, "service_level", ("method",), nullable=False)
    if "phase" not in level:
        return
    check.choice(level, key + "phase", "phase", ("random", "aligned", "random_time"))
    if level["phase"] == "aligned":
        if not path.size or not starts.size:
            check.fail(key + "phase", "aligned", "needs service_level.path and path_start_s (capsim profile "
                                                 "from-run --speed trace, from one run)")
        check.pair(key + "path", path, key + "path_start_s", starts)
        if "path_loop_s" in level:
            check.pair(key + "path", path, key + "path_loop_s", loops)
    elif level["phase"] == "random_time":
        _random_time(level, path, starts, check)


def _random_time(level: dict, path: np.ndarray, starts: np.ndarray, check: Checker) -> None:
    """A regime path in wall time (capsim profile from-log): levels from start times that begin at 0 and
    increase strictly within one period ``span_s``; no loop gaps (those belong to a replay)."""
    key = "service_level."
    if not path.size or not starts.size or level.get("span_s") is None:
        check.fail(key + "phase", "random_time", "needs service_level.path, path_start_s and span_s (capsim "
                                                 "profile from-log)")
    span = check.number(level["span_s"], key + "span_s", 0, MAX_RUN_S, lo_open=True)
    check.pair(key + "path", path, key + "path_start_s", starts)
    bad = np.flatnonzero(np.diff(starts) <= 0)
    if starts[0] != 0 or bad.size or starts[-1] >= span:
        shown_start = starts[0] if starts[0] != 0 else starts[bad[0] + 1] if bad.size else starts[-1]
        check.fail(key + "path_start_s", float(shown_start),
                   f"start times begin at 0 and increase strictly within span_s = {span:g}")
    if "path_loop_s" in level:
        check.fail(key + "path_loop_s", level["path_loop_s"], "only with phase 'aligned' (a replay of one run)")


def _first_call(doc: dict, check: Checker) -> None:
    """First-call stalls of served logs: samples, and the sizes that were warm (never stall)."""
    first = check.optional_section(doc, "first_call", needs=("stall_s",))
    if first is None:
        return
    check.samples(first["stall_s"], "first_call.stall_s")
    check.numbers(first.get("warm_sizes"), "first_call.warm_sizes", 1, MAX_BATCH_SIZE, integer=True,
                  allowed=f"a list of batch sizes (integers in 1..{MAX_BATCH_SIZE})")
    check.strings(first, "first_call", ("method",), nullable=False)


def _version(doc: dict, check: Checker) -> None:
    """``first_call`` and ``service_level.phase: random_time`` came with ``capsim.profile/2``."""
    if doc.get("schema") != "capsim.profile/1":
        return
    if doc.get("first_call") is not None:
        check.fail("first_call", "{...}", "a capsim.profile/2 section; the file says schema 'capsim.profile/1'")
    if (doc.get("service_level") or {}).get("phase") == "random_time":
        check.fail("service_level.phase", "random_time", "needs schema 'capsim.profile/2'; the file says "
                                                         "'capsim.profile/1'")


def _training(doc: dict, check: Checker) -> None:
    """Measured training steps and all-reduce times (capsim calibrate --mode train), a capsim.profile/3 section."""
    training = check.optional_section(doc, "training", needs=("steps",))
    if training is None:
        return
    if doc.get("schema") in ("capsim.profile/1", "capsim.profile/2"):
        check.fail("training", "{...}", f"a capsim.profile/3 section; the file says schema {doc['schema']!r}")
    check.choice(training, "training.precision", "precision", PRECISIONS)
    check.choice(training, "training.optimizer", "optimizer", OPTIMIZERS)
    check.byte_count(training.get("gradient_bytes"), "training.gradient_bytes")
    check.strings(training, "training", ("method",))
    steps = training["steps"]
    if not isinstance(steps, list) or not steps:
        check.fail("training.steps", steps, "a non-empty list of {micro_batch, forward_backward_s, optimizer_s}")
    sizes: set = set()
    for i, entry in enumerate(steps):
        key = f"training.steps[{i}]"
        if not isinstance(entry, dict):
            check.fail(key, entry, "each step entry is an object")
        b = check.number(entry.get("micro_batch"), f"{key}.micro_batch", 1, MAX_BATCH_SIZE, integer=True)
        if b in sizes:
            check.fail(f"{key}.micro_batch", b, "each micro-batch size may appear once")
        sizes.add(b)
        check.samples(entry.get("forward_backward_s"), f"{key}.forward_backward_s", needed=True)
        check.samples(entry.get("optimizer_s"), f"{key}.optimizer_s")
        check.byte_count(entry.get("peak_memory_bytes"), f"{key}.peak_memory_bytes")
    _allreduce(training.get("allreduce"), check)


LLM_TERMS = ("prefill_tokens", "decode_tokens", "kv_tokens_read", "attention_pairs", "output_tokens")
LLM_ARCHITECTURE = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "max_positions")
MAX_TOKENS = 2**40  # token counts of one iteration (attention pairs grow with a prompt's square)


def _llm(doc: dict, check: Checker) -> None:
    """Measured iterations of a decoder LLM (capsim calibrate --mode llm, from-run LLM profiles), a
    capsim.profile/3 section: per iteration composition its times (sim/profiles/llm.py fits them)."""
    llm = check.optional_section(doc, "llm", needs=("iterations",))
    if llm is None:
        return
    if doc.get("schema") in ("capsim.profile/1", "capsim.profile/2"):
        check.fail("llm", "{...}", f"a capsim.profile/3 section; the file says schema {doc['schema']!r}")
    architecture = check.optional_section(llm, "architecture") or {}
    for field in LLM_ARCHITECTURE:
        if field in architecture:
            check.number(architecture[field], f"llm.architecture.{field}", 1, MAX_TOKENS, integer=True)
    kv = check.optional_section(llm, "kv_cache") or {}
    if "block_size" in kv:
        check.number(kv["block_size"], "llm.kv_cache.block_size", 1, 4096, integer=True)
    if "blocks" in kv:
        check.number(kv["blocks"], "llm.kv_cache.blocks", 1, MAX_TOKENS, integer=True)
    check.strings(kv, "llm.kv_cache", ("kind", "layout"))
    if "tensor_parallel" in llm:
        check.number(llm["tensor_parallel"], "llm.tensor_parallel", 1, 65536, integer=True)
    check.strings(llm, "llm", ("method", "source"))
    _llm_operators(llm.get("operators"), check)
    iterations = llm["iterations"]
    if not isinstance(iterations, list) or not iterations:
        check.fail("llm.iterations", iterations, "a non-empty list of {prefill_tokens, decode_tokens, kv_tokens_read, "
                                                 "attention_pairs, step_s}")
    for i, entry in enumerate(iterations):
        key = f"llm.iterations[{i}]"
        if not isinstance(entry, dict):
            check.fail(key, entry, "each iteration entry is an object")
        counts = [check.number(entry.get(t, 0), f"{key}.{t}", 0, MAX_TOKENS, integer=True) for t in LLM_TERMS]
        if counts[0] + counts[1] < 1:
            check.fail(f"{key}.decode_tokens", counts[1], "an iteration computes at least one token (prefill_tokens "
                                                          "+ decode_tokens >= 1)")
        check.samples(entry.get("step_s"), f"{key}.step_s", needed=True)


def _llm_operators(ops: object, check: Checker) -> None:
    """Token-wise times per token count: ``rows`` strictly increasing, ``body_s`` and ``head_s`` one per row."""
    if ops is None:
        return
    if not isinstance(ops, dict):
        check.fail("llm.operators", ops, "an object {rows, body_s, head_s} or null")
    rows = check.numbers(ops.get("rows"), "llm.operators.rows", 1, MAX_TOKENS, integer=True)
    if rows.size < 2 or (np.diff(rows) <= 0).any():
        check.fail("llm.operators.rows", ops.get("rows"), "two or more token counts, increasing strictly")
    for field in ("body_s", "head_s"):
        check.pair("llm.operators.rows", rows, f"llm.operators.{field}",
                   check.numbers(ops.get(field), f"llm.operators.{field}", 0.0, MAX_SECONDS, allowed=SECONDS))
    check.strings(ops, "llm.operators", ("method",))


def _allreduce(allreduce: object, check: Checker) -> None:
    """All-reduce times per message size on ``world_size`` ranks: two sizes or more, for the alpha-beta fit."""
    if allreduce is None:
        return
    if not isinstance(allreduce, dict):
        check.fail("training.allreduce", allreduce, "an object or null")
    check.number(allreduce.get("world_size"), "training.allreduce.world_size", 2, 65536, integer=True)
    check.strings(allreduce, "training.allreduce", ("backend", "device"))
    sizes = allreduce.get("sizes")
    if not isinstance(sizes, list) or len(sizes) < 2:
        check.fail("training.allreduce.sizes", sizes, "a list of two or more {message_bytes, time_s} (the fit of "
                                                     "latency and bandwidth needs two sizes)")
    seen: set = set()
    for i, entry in enumerate(sizes):
        key = f"training.allreduce.sizes[{i}]"
        if not isinstance(entry, dict):
            check.fail(key, entry, "each size entry is an object")
        size = check.number(entry.get("message_bytes"), f"{key}.message_bytes", 1, MAX_BYTES, integer=True)
        if size in seen:
            check.fail(f"{key}.message_bytes", size, "each message size may appear once")
        seen.add(size)
        check.samples(entry.get("time_s"), f"{key}.time_s", needed=True)


def _memory(doc: dict, check: Checker) -> None:
    memory = check.optional_section(doc, "memory")
    if memory is None:
        return
    for field in ("device_total_bytes", "baseline_bytes"):
        check.byte_count(memory.get(field), f"memory.{field}")
    check.number(memory.get("max_batch_size_fits"), "memory.max_batch_size_fits", 0, integer=True, nullable=True)
    check.strings(memory, "memory", ("method", "fit_method"), nullable=False)


LOAD_TIMES = ("checkpoint_read_cold_s", "checkpoint_read_warm_s", "host_to_device_s", "runtime_start_s",
              "torch_import_s", "device_context_s", "warmup_s")


def _load(doc: dict, check: Checker) -> None:
    load = check.optional_section(doc, "load")
    if load is None:
        return
    check.byte_count(load.get("weight_bytes"), "load.weight_bytes")
    for field in LOAD_TIMES:
        check.seconds(load.get(field), f"load.{field}", nullable=True)
    if "runtime_start_runs" in load:
        check.number(load["runtime_start_runs"], "load.runtime_start_runs", 0, integer=True)
    rate = check.number(load.get("load_rate_bytes_per_s"), "load.load_rate_bytes_per_s", 0, lo_open=True,
                        nullable=True)
    weights = max(doc["model"].get("weight_bytes") or 0, load.get("weight_bytes") or 0)
    if rate and weights / rate > MAX_SECONDS:
        check.fail("load.load_rate_bytes_per_s", rate, f"loading {weights} weight bytes at this rate takes "
                                                      f"{weights / rate:.3g} s; at most {MAX_SECONDS:g} (an hour)")
    _page_cache(load, check)
    notes = load.get("notes")
    if notes is not None and not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        check.fail("load.notes", notes, "a list of strings")


def _page_cache(load: dict, check: Checker) -> None:
    cache = load.get("page_cache")
    if cache is None:
        return
    if not isinstance(cache, dict):
        check.fail("load.page_cache", cache, "an object or null")
    check.strings(cache, "load.page_cache", ("method",), nullable=False)
    check.number(cache.get("resident_after_drop"), "load.page_cache.resident_after_drop", 0, 1, nullable=True)
    if not isinstance(cache.get("dropped", False), bool):
        check.fail("load.page_cache.dropped", cache["dropped"], "true or false")


def _estimate(doc: dict, check: Checker) -> None:
    if doc.get("kind") == "estimate":
        estimate = check.optional_section(doc, "estimate", needs=("method", "gpu", "notes"))
        if estimate is None:
            check.fail("estimate", None, "kind 'estimate' needs an estimate block saying how it was derived")
    else:
        estimate = check.optional_section(doc, "estimate")
    if estimate is None:
        return
    if "method" in estimate:
        check.choice(estimate, "estimate.method", "method", ESTIMATE_METHODS)
    check.strings(estimate, "estimate", ("gpu", "notes"), nullable=False)
    check.strings(estimate, "estimate", ("source_profile", "shape_profile"))
    check.number(estimate.get("scale"), "estimate.scale", 0, lo_open=True, nullable=True)
    scales = estimate.get("scale_by_batch_size", {})
    if not isinstance(scales, dict):
        check.fail("estimate.scale_by_batch_size", scales, "an object of batch size -> number")
    for b, scale in scales.items():
        check.number(scale, f"estimate.scale_by_batch_size.{b}")
    for field in ("assumptions", "roofline", "gpu_sources"):
        if not isinstance(estimate.get(field, {}), dict):
            check.fail(f"estimate.{field}", estimate[field], "an object")
    uncertainty = estimate.get("uncertainty")
    if uncertainty is not None:
        if not isinstance(uncertainty, dict):
            check.fail("estimate.uncertainty", uncertainty, "an object (bound, max_abs_residual, residuals) or null")
        for field in ("bound", "max_abs_residual"):
            check.number(uncertainty.get(field), f"estimate.uncertainty.{field}", 0, nullable=True)


def _provenance(doc: dict, check: Checker) -> None:
    """Where a profile's numbers came from when capsim did not measure them (capsim profile import)."""
    provenance = check.optional_section(doc, "provenance", needs=("method",))
    if provenance is None:
        return
    check.strings(provenance, "provenance", ("method", "format", "samples"), nullable=False)
    check.strings(provenance, "provenance", ("measured_with", "model_key", "architecture"))
    lost = provenance.get("lost", [])
    if not (isinstance(lost, list) and all(isinstance(x, str) for x in lost)):
        check.fail("provenance.lost", lost, "a list of strings (what the source did not hold)")


def _as_float(x: object, integer: bool = False) -> float:
    """``x`` as a float, NaN for anything but a JSON number (an integer with ``integer``)."""
    if isinstance(x, bool) or not isinstance(x, int if integer else (int, float)):
        return math.nan
    try:
        return float(x)
    except OverflowError:  # an integer beyond any float
        return math.inf if x > 0 else -math.inf


def _within(x, lo: float, hi: float, lo_open: bool, hi_open: bool):
    """Finite and within the bounds (elementwise for arrays; NaN is never within)."""
    above = x > lo if lo_open else x >= lo
    below = x < hi if hi_open else x <= hi
    return np.isfinite(x) & above & below


def _range(lo: float, hi: float, lo_open: bool, hi_open: bool, integer: bool, plural: bool = False) -> str:
    kind = ("integers" if plural else "an integer") if integer else ("finite numbers" if plural else "a finite number")
    if hi == math.inf:
        return f"{kind} {'>' if lo_open else '>='} {lo:g}" if lo != -math.inf else kind
    if integer:
        return f"{kind} in {lo:g}..{hi:g}"
    return f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
