"""Profiles from measurements taken elsewhere: ``capsim profile import`` (docs/profile.md, "Importing").

Four source formats become ``capsim.profile/1`` documents of kind ``measured`` with a ``provenance``
block saying where they came from and what the source did not hold:

* ``batch-json``: ``{"env": {...}, "profile": {MODEL: {"BATCH_SIZE": [seconds, ...]}}}``, back-to-back
  batch times of a plain torch loop (one model chosen with ``model_key``); samples kept as measured.
* ``csv``: one row per sample, columns ``batch_size`` and ``latency_s``; samples kept as measured.
* ``perf-analyzer``: Triton ``perf_analyzer -f FILE`` CSV, one file per client batch size (its ``-b``):
  one row per concurrency (or request rate) with latencies in microseconds.
* ``model-analyzer``: Triton Model Analyzer's inference metrics CSV: one row per model config, batch
  size and concurrency, latencies in milliseconds.

The two Triton formats report percentiles, not samples: each size's samples are rebuilt from them
(:func:`samples_from_percentiles`), and the profile says so. Whatever a source does not hold stays null.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sim.errors import ProfileError, shown
from sim.hardware.gpus import DTYPE_BYTES
from sim.models.archs import builtin_arch
from sim.models.costs import model_cost
from sim.profiles.checks import MAX_BATCH_SIZE, MAX_SECONDS

FORMATS = ("batch-json", "csv", "perf-analyzer", "model-analyzer")
MAX_SOURCE_BYTES = 64 * 2**20
ALWAYS_LOST = ("first calls of each size (first_call_s null)", "peak memory per size (peak_memory_bytes null)",
               "a serving replay of mixed sizes with idle gaps (serving_replay null)")
SAMPLES_LOST = ("the host overhead apart from the batch time (inside latency_s; host_overhead_s empty)",)
PERCENTILES_LOST = ("the samples themselves: each size's distribution is rebuilt from the reported percentiles "
                    "(linear between them, flat above the highest, below the lowest a line from a floor that "
                    "matches the reported average); the tail beyond the highest percentile and the order of "
                    "samples are lost",
                    "the batch time apart from client, network and server-queue time (latency is the client's, "
                    "end to end; the server parts are kept in provenance.percentiles as averages)")
PERF_ANALYZER_US = ("p50 latency", "p90 latency", "p95 latency", "p99 latency")
MODEL_ANALYZER_MS = ("p50 Latency (ms)", "p90 Latency (ms)", "p95 Latency (ms)", "p99 Latency (ms)")
QUANTILES = (0.50, 0.90, 0.95, 0.99)


@dataclass(frozen=True)
class ImportSpec:
    """What the source does not say: the model, dtype and device, and which rows to take."""

    format: str
    dtype: str
    model_name: str | None = None  # the profile's model.name (default: the source's model key)
    model_key: str | None = None  # batch-json: which model of the file
    arch: str | None = None  # a built-in architecture: parameters, weight_bytes and seq_len from it (derived)
    device: str = "cuda"
    device_name: str | None = None
    batch_sizes: tuple[int, ...] = ()  # perf-analyzer: each file's client batch size (-b)
    concurrency: float | None = None  # Triton formats: which row (default: the lowest load)
    config: str | None = None  # model-analyzer: which model config (Model Config Path)
    samples: int = 101  # rebuilt samples per size (odd: the middle one is the reported median)
    measured_with: str | None = None  # free text: how the source was measured


def import_profile(paths: list[str | Path], spec: ImportSpec, cold_start: str | Path | None = None,
                   command: list[str] | None = None) -> dict:
    """A ``capsim.profile/1`` document from ``paths`` in ``spec.format`` (not yet written)."""
    if spec.format not in FORMATS:
        raise ProfileError(f"--format = {shown(spec.format)}: one of {', '.join(FORMATS)}")
    paths = [Path(p) for p in paths]
    texts = [_read(p) for p in paths]
    env, percentiles = {}, None
    if spec.format == "batch-json":
        if len(paths) != 1:
            raise ProfileError(f"--format batch-json reads one file; got {len(paths)}")
        key, samples, env = _batch_json(paths[0], texts[0], spec.model_key)
    elif spec.format == "csv":
        key, samples = None, {}
        for path, text in zip(paths, texts, strict=True):
            for b, values in _samples_csv(path, text).items():
                samples.setdefault(b, []).extend(values)
    elif spec.format == "perf-analyzer":
        key, (samples, percentiles) = None, _perf_analyzer(paths, texts, spec)
    else:
        key, (samples, percentiles) = _model_analyzer(paths, texts, spec)
    doc = _document(spec, key, samples, env)
    doc["provenance"] = _provenance(spec, key, paths, texts, percentiles, command)
    if cold_start is not None:
        doc["load"] = load_from_cold_start(cold_start, doc["model"].get("weight_bytes"), key or spec.model_name)
        doc["provenance"]["sources"].append(_source(Path(cold_start), _read(Path(cold_start))))
    return doc


def samples_from_percentiles(points: dict[float, float], mean: float | None, n: int) -> list[float]:
    """``n`` samples at quantiles (i + 0.5) / n of a quantile function through ``points`` (quantile ->
    value, non-decreasing): linear between points, flat above the highest; below the lowest, a line from
    a floor at quantile 0 chosen so the samples' mean is ``mean`` (clipped to [0, lowest value]; without a
    mean the floor is the lowest value)."""
    qs = sorted(points)
    us = [(i + 0.5) / n for i in range(n)]

    def upper(u: float) -> float:
        if u >= qs[-1]:
            return points[qs[-1]]
        hi = next(q for q in qs if q > u)
        lo = max(q for q in qs if q <= u)
        return points[lo] + (points[hi] - points[lo]) * (u - lo) / (hi - lo)

    first, q_first = points[qs[0]], qs[0]
    low = [u for u in us if u < q_first]
    high_sum = sum(upper(u) for u in us if u >= q_first)
    floor = first
    if mean is not None and low:
        slope_part = sum(first * u / q_first for u in low)
        weight = sum(1 - u / q_first for u in low)
        floor = min(max((mean * n - high_sum - slope_part) / weight, 0.0), first)
    return [floor + (first - floor) * u / q_first if u < q_first else upper(u) for u in us]


def load_from_cold_start(path: str | Path, weight_bytes: int | None, model_key: str | None) -> dict:
    """A profile's ``load`` section from a cold-start record (the shared H100 ``coldstart.json`` layout):
    the load rate of its largest checkpoint read cold to the GPU, runtime start = import torch + device
    context, and the model's warm-up where the record has it."""
    path = Path(path)
    try:
        cold = json.loads(_read(path))["cold"]
        runs = sorted(cold["load"], key=lambda r: r["bytes"])
        biggest = runs[-1]
        rate = biggest["bytes"] / biggest["cold_load_to_cuda_s"]
        start = cold["import_torch_s"] + cold["cuda_context_init_s"]
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError):
        raise ProfileError(f"--cold-start = {str(path)!r}: not a cold-start record (needs cold.import_torch_s, "
                           "cold.cuda_context_init_s and cold.load[] with bytes and cold_load_to_cuda_s)") from None
    ready = (cold.get("ready") or {}).get(model_key or "") or {}
    checkpoints = "; ".join(f"{r['bytes'] / 1e9:.1f} GB cold {r['cold_load_to_cuda_s']:.2f} s, warm "
                            f"{r.get('warm_load_to_cuda_s', math.nan):.2f} s" for r in runs)
    notes = [f"load_rate_bytes_per_s: the largest checkpoint of {path.name} ({biggest['bytes']} bytes, safetensors "
             f"fp16) read with the page cache dropped and copied to the GPU in {biggest['cold_load_to_cuda_s']:.2f} s "
             f"(all: {checkpoints}); one run each",
             f"runtime_start_s: import torch {cold['import_torch_s']:.2f} s + CUDA context "
             f"{cold['cuda_context_init_s']:.2f} s, from {path.name}"]
    if cold.get("process_cuda_first_op_wall_s") is not None:
        notes.append(f"a fresh process's first CUDA op took {cold['process_cuda_first_op_wall_s']:.2f} s wall "
                     "(interpreter start and import included)")
    if ready:
        notes.append(f"warmup_s: the warm-up of {model_key} in a fresh process ({path.name}); that process was "
                     f"ready in {ready.get('wall_s', math.nan):.2f} s wall: import {ready.get('import_s', math.nan):.2f} "
                     f"s, build and move to the GPU {ready.get('build_to_cuda_s', math.nan):.2f} s (random "
                     f"initialisation, not a checkpoint read), warm-up {ready.get('warmup_s', math.nan):.2f} s")
    else:
        notes.append(f"warmup_s: not measured for this model in {path.name} (null)")
    if weight_bytes is None:
        notes.append("weight_bytes unknown (no --arch): the weight-load phase cannot be derived")
    return {"weight_bytes": weight_bytes, "checkpoint_read_cold_s": None, "checkpoint_read_warm_s": None,
            "host_to_device_s": None, "runtime_start_s": _round4(start),
            "torch_import_s": _round4(cold["import_torch_s"]), "device_context_s": _round4(cold["cuda_context_init_s"]),
            "runtime_start_runs": 1, "warmup_s": _round4(ready["warmup_s"]) if ready.get("warmup_s") else None,
            "load_rate_bytes_per_s": _round4(rate), "notes": notes}


# ------------------------------------------------------------------------------- the formats

def _batch_json(path: Path, text: str, model_key: str | None) -> tuple[str, dict[int, list[float]], dict]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:100]})") from None
    models = doc.get("profile") if isinstance(doc, dict) else None
    if not isinstance(models, dict) or not models:
        raise ProfileError(f"{path}: profile = {shown(models)}: an object MODEL -> {{BATCH_SIZE: [seconds, ...]}} "
                           "is needed (format batch-json)")
    if model_key is None and len(models) > 1:
        raise ProfileError(f"--model-key = None: {path.name} holds {', '.join(models)}; choose one")
    key = model_key if model_key is not None else next(iter(models))
    if key not in models:
        raise ProfileError(f"--model-key = {shown(key)}: {path.name} holds {', '.join(models)}")
    if not isinstance(models[key], dict) or not models[key]:
        raise ProfileError(f"{path}: profile.{key} = {shown(models[key])}: an object BATCH_SIZE -> [seconds, ...]")
    samples = {}
    for size, values in models[key].items():
        where = f"{path}: profile.{key}.{size}"
        b = _batch_size(size, where)
        if not isinstance(values, list) or not values:
            raise ProfileError(f"{where} = {shown(values)}: a non-empty list of seconds")
        samples[b] = [_seconds(v, f"{where}[{i}]") for i, v in enumerate(values)]
    env = doc.get("env") if isinstance(doc.get("env"), dict) else {}
    return key, samples, env


def _samples_csv(path: Path, text: str) -> dict[int, list[float]]:
    rows, columns = _csv_rows(path, text, needs=("batch_size", "latency_s"))
    samples: dict[int, list[float]] = {}
    for line, row in rows:
        b = _batch_size(row["batch_size"], f"{path}: line {line}: batch_size")
        samples.setdefault(b, []).append(_seconds(row["latency_s"], f"{path}: line {line}: latency_s"))
    return samples


def _perf_analyzer(paths: list[Path], texts: list[str], spec: ImportSpec):
    if len(spec.batch_sizes) != len(paths):
        raise ProfileError(f"--batch-sizes = {shown(','.join(map(str, spec.batch_sizes)))}: perf_analyzer's CSV does "
                           f"not hold its batch size; give one per file ({len(paths)} files), the -b of each run")
    samples, percentiles = {}, {}
    for path, text, b in zip(paths, texts, spec.batch_sizes, strict=True):
        if b in samples:
            raise ProfileError(f"--batch-sizes: batch size {b} is given for two files")
        rows, columns = _csv_rows(path, text, needs=("p50 latency", "p99 latency"))
        load = next((c for c in ("Concurrency", "Request Rate") if c in columns), None)
        if load is None:
            raise ProfileError(f"{path}: columns = {shown(columns)}: needs Concurrency or Request Rate (perf_analyzer "
                               "-f CSV)")
        line, row = _pick(rows, load, spec.concurrency, path)
        figures = {q: _number(row[c], f"{path}: line {line}: {c}") / 1e6
                   for q, c in zip(QUANTILES, PERF_ANALYZER_US, strict=True) if c in row}
        mean = _number(row["Avg latency"], f"{path}: line {line}: Avg latency") / 1e6 if "Avg latency" in row else None
        server = {name.lower().replace(" ", "_").replace("+", "_").replace("/", "_") + "_s":
                  _number(row[name], f"{path}: line {line}: {name}") / 1e6
                  for name in ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output",
                               "Client Send", "Client Recv", "Network+Server Send/Recv") if name in row}
        samples[b] = _rebuilt(figures, mean, spec.samples, f"{path}: line {line}")
        percentiles[str(b)] = {**_named(figures), "avg_s": mean, load.lower().replace(" ", "_"): float(row[load]),
                               "source": path.name, **server}
    return samples, percentiles


def _model_analyzer(paths: list[Path], texts: list[str], spec: ImportSpec):
    found: list[tuple[Path, int, dict]] = []
    for path, text in zip(paths, texts, strict=True):
        rows, columns = _csv_rows(path, text, needs=("Batch", "Concurrency", "p99 Latency (ms)"))
        if not {"p50 Latency (ms)", "Avg Latency (ms)"} & set(columns):
            raise ProfileError(f"{path}: columns = {shown(columns)}: needs p50 Latency (ms) or Avg Latency (ms) "
                               "besides p99 (add perf_latency_p50 or perf_latency_avg to inference_output_fields)")
        found += [(path, line, row) for line, row in rows]
    configs = sorted({row.get("Model Config Path") or "" for _, _, row in found})
    if spec.config is not None:
        found = [f for f in found if f[2].get("Model Config Path") == spec.config]
        if not found:
            raise ProfileError(f"--config = {shown(spec.config)}: the files hold {', '.join(configs) or '(none)'}")
    elif len(configs) > 1:
        raise ProfileError(f"--config = None: the files hold {len(configs)} model configs ({', '.join(configs)}); "
                           "choose one")
    models = sorted({row.get("Model") or "" for _, _, row in found})
    samples, percentiles = {}, {}
    by_size: dict[int, list[tuple[int, dict]]] = {}
    for path, line, row in found:
        by_size.setdefault(_batch_size(row["Batch"], f"{path}: line {line}: Batch"), []).append((line, row))
    for b, rows in sorted(by_size.items()):
        line, row = _pick(rows, "Concurrency", spec.concurrency, found[0][0])
        where = f"line {line}"
        figures = {q: _number(row[c], f"{where}: {c}") / 1e3
                   for q, c in zip(QUANTILES, MODEL_ANALYZER_MS, strict=True) if row.get(c) not in (None, "")}
        mean = _number(row["Avg Latency (ms)"], f"{where}: Avg Latency (ms)") / 1e3 \
            if row.get("Avg Latency (ms)") not in (None, "") else None
        samples[b] = _rebuilt(figures, mean, spec.samples, where)
        server = {k.split(" (")[0].lower().replace(" ", "_") + "_s": _number(v, f"{where}: {k}") / 1e3
                  for k, v in row.items() if k.startswith("Server ") and k.endswith("(ms)") and v not in (None, "")}
        percentiles[str(b)] = {**_named(figures), "avg_s": mean, "concurrency": float(row["Concurrency"]),
                               "throughput_per_s": _optional(row.get("Throughput (infer/sec)")), **server}
    return (models[0] if len(models) == 1 and models[0] else None), (samples, percentiles)


# ------------------------------------------------------------------------------- the document

def _document(spec: ImportSpec, key: str | None, samples: dict[int, list[float]], env: dict) -> dict:
    parameters = weight_bytes = seq_len = None
    if spec.arch is not None:
        cost, width = model_cost(spec.arch), DTYPE_BYTES[spec.dtype]
        parameters, weight_bytes = cost.parameters, (cost.parameters + cost.buffers) * width
        seq_len = getattr(builtin_arch(spec.arch), "seq_len", None)
    gpu = env.get("gpu") if isinstance(env.get("gpu"), str) else None
    device = "cuda" if gpu else spec.device
    return {
        "schema": "capsim.profile/1", "kind": "measured",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {"device": device, "device_name": spec.device_name or gpu, "cpu": None,
                        "cpu_threads": env.get("cpus") if isinstance(env.get("cpus"), int) else None,
                        "torch": _text(env.get("torch")), "cuda": None, "driver": _driver(env.get("nvidia_smi")),
                        "python": _text(env.get("python")), "platform": None},
        "model": {"name": spec.model_name or spec.arch or key or "imported", "dtype": spec.dtype,
                  "parameters": parameters, "weight_bytes": weight_bytes, "seq_len": seq_len},
        "batches": [{"batch_size": b, "latency_s": list(values),
                     "first_call_s": None, "peak_memory_bytes": None} for b, values in sorted(samples.items())],
        "host_overhead_s": [], "serving_replay": None, "memory": None, "load": None, "calibration": None,
        "estimate": None,
    }


def _provenance(spec: ImportSpec, key: str | None, paths: list[Path], texts: list[str], percentiles, command) -> dict:
    rebuilt = percentiles is not None
    lost = list(ALWAYS_LOST) + list(PERCENTILES_LOST if rebuilt else SAMPLES_LOST)
    out = {"method": "import", "format": spec.format, "sources": [_source(p, t) for p, t in zip(paths, texts,
                                                                                                  strict=True)],
           "model_key": key, "measured_with": spec.measured_with,
           "samples": "rebuilt from percentiles" if rebuilt else "as measured",
           "architecture": spec.arch, "lost": lost, "command": command}
    if spec.arch is not None:
        out["architecture_note"] = (f"parameters, weight_bytes and seq_len are counted from the built-in "
                                    f"architecture {spec.arch!r} (sim/models/archs.py), not read from the source")
    if rebuilt:
        out["percentiles"] = percentiles
    return out


# ------------------------------------------------------------------------------- small readers

def _read(path: Path) -> str:
    if not path.is_file():
        raise ProfileError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise ProfileError(f"{path}: larger than {MAX_SOURCE_BYTES // 2**20} MiB; not a measurement file")
        return data.decode("utf-8-sig")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None


def _csv_rows(path: Path, text: str, needs: tuple[str, ...]) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in needs if c not in columns]
    if missing:
        raise ProfileError(f"{path}: columns = {shown(columns)}: needs {', '.join(needs)} (missing "
                           f"{', '.join(missing)})")
    rows = []
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in raw.items()}
        if any(v not in (None, "") for v in row.values()):
            rows.append((i, row))
    if not rows:
        raise ProfileError(f"{path}: no data rows below the header")
    return rows, columns


def _pick(rows: list[tuple[int, dict]], column: str, wanted: float | None, path: Path) -> tuple[int, dict]:
    """The row at load ``wanted`` (default: the lowest load, nearest to back-to-back batches)."""
    loads = [(_number(row[column], f"{path}: line {line}: {column}"), line, row) for line, row in rows]
    if wanted is None:
        _, line, row = min(loads, key=lambda x: x[0])
        return line, row
    for value, line, row in loads:
        if value == wanted:
            return line, row
    raise ProfileError(f"--concurrency = {wanted:g}: {path.name} has {column} "
                       f"{', '.join(f'{v:g}' for v, _, _ in sorted(loads, key=lambda x: x[0]))}")


def _rebuilt(figures: dict[float, float], mean: float | None, n: int, where: str) -> list[float]:
    values = [figures[q] for q in sorted(figures)]
    if any(b < a for a, b in zip(values, values[1:])):
        raise ProfileError(f"{where}: percentiles = {shown(values)}: must not decrease (p50 <= p90 <= p95 <= p99)")
    for q, v in figures.items():
        if not 0 < v <= MAX_SECONDS:
            raise ProfileError(f"{where}: p{round(q * 100)} = {v:g} s: latencies must be > 0 and at most "
                               f"{MAX_SECONDS:g} s")
    return [float(f"{x:.6g}") for x in samples_from_percentiles(figures, mean, n)]


def _source(path: Path, text: str) -> dict:
    return {"file": path.name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "bytes": len(text.encode("utf-8"))}


def _batch_size(value: object, where: str) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or not 1 <= int(text) <= MAX_BATCH_SIZE:
        raise ProfileError(f"{where} = {shown(value)}: batch sizes are integers in 1..{MAX_BATCH_SIZE}")
    return int(text)


def _number(value: object, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0:
        raise ProfileError(f"{where} = {shown(value)}: a finite number >= 0")
    return x


def _seconds(value: object, where: str) -> float:
    x = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if x is None and isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            x = None
    if x is None or not math.isfinite(x) or not 0 < x <= MAX_SECONDS:
        raise ProfileError(f"{where} = {shown(value)}: latencies are finite numbers of seconds, > 0 and at most "
                           f"{MAX_SECONDS:g}")
    return float(x)


def _optional(value: object) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _named(figures: dict[float, float]) -> dict[str, float]:
    return {f"p{round(q * 100)}_s": v for q, v in sorted(figures.items())}


def _driver(smi: object) -> str | None:
    """The driver version in an ``nvidia-smi --query-gpu`` line, if one field looks like one."""
    if not isinstance(smi, str):
        return None
    return next((f.strip() for f in smi.split(",") if re.fullmatch(r"\d{3,}\.\d+(\.\d+)?", f.strip())), None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _round4(x: float) -> float:
    return float(f"{x:.4g}")
