"""Reading ``capsim.profile/1`` and ``/2`` files: what ``capsim calibrate`` measured (docs/profile.md).

The simulator reads profiles through :func:`load_profile` and never imports torch or the
``calibration`` package. Every problem with a file is a :class:`ProfileError` naming the file,
the key, the bad value and what is allowed (the rules: ``sim/profiles/checks.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import ProfileError
from sim.profiles.checks import MAX_BATCH_SIZE, Checker, check_sections
from sim.results.files import write_text

SCHEMA = "capsim.profile/1"
SCHEMA_V2 = "capsim.profile/2"  # /1 plus the sections of served logs: first_call, service_level phase random_time
SCHEMA_V3 = "capsim.profile/3"  # /2 plus training (capsim calibrate --mode train), where batches may be left out
SCHEMAS = (SCHEMA, SCHEMA_V2, SCHEMA_V3)
KINDS = ("measured", "estimate")
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles"
MAX_FILE_BYTES = 64 * 2**20  # the largest shipped profile is under 0.1 MiB, a from-run speed trace a few MiB


@dataclass(frozen=True, eq=False)
class Profile:
    """A validated profile. Sample arrays are sorted ascending and read-only."""

    path: Path
    kind: str
    model_name: str
    dtype: str
    device: str
    device_name: str | None
    batch_sizes: tuple[int, ...]
    latency_s: dict[int, np.ndarray]
    forward_s: dict[int, np.ndarray]
    first_call_s: dict[int, float]
    host_overhead_s: np.ndarray
    host_overhead_by_batch_s: dict[int, np.ndarray]
    peak_memory_bytes: dict[int, int | None]
    weight_bytes: int | None
    load: dict
    raw: dict

    @property
    def is_estimate(self) -> bool:
        return self.kind == "estimate"

    def median_latency_s(self, batch_size: int) -> float:
        """Median end-to-end latency, linear in batch size between measured sizes."""
        return self._interpolate(batch_size, lambda b: float(np.median(self.latency_s[b])))

    def host_overhead_for(self, batch_size: int) -> np.ndarray:
        """Host overhead samples of a batch size: its own where measured (it grows with the batch:
        per-request dequeue and split), else of the nearest measured size, else the pooled array."""
        if not self.host_overhead_by_batch_s:
            return self.host_overhead_s
        nearest = min(self.host_overhead_by_batch_s, key=lambda b: (abs(b - batch_size), b))
        return self.host_overhead_by_batch_s[nearest]

    def mean_service_s(self, batch_size: int) -> float:
        """Mean latency plus mean host overhead of that size: what one batch occupies a server for."""
        def mean_at(b: int) -> float:
            host = self.host_overhead_for(b)
            return float(self.latency_s[b].mean()) + (float(host.mean()) if host.size else 0.0)

        return self._interpolate(batch_size, mean_at)

    def first_call_extra_s(self, batch_size: int) -> float | None:
        """First call of a measured size beyond its median latency (None where not measured)."""
        first = self.first_call_s.get(batch_size)
        return None if first is None else max(0.0, first - self.median_latency_s(batch_size))

    def cold_start_load_s(self) -> float | None:
        """weight_bytes / load_rate_bytes_per_s + runtime_start_s + warmup_s; None if any is unknown."""
        rate, start, warmup = (self.load.get(k) for k in ("load_rate_bytes_per_s", "runtime_start_s",
                                                            "warmup_s"))
        if self.weight_bytes is None or None in (rate, start, warmup) or rate <= 0:
            return None
        return self.weight_bytes / rate + start + warmup

    def _interpolate(self, batch_size: int, at) -> float:
        sizes = self.batch_sizes
        if batch_size in self.latency_s:
            return at(batch_size)
        if not sizes[0] < batch_size < sizes[-1]:
            raise ProfileError(f"{self.path}: batch size {batch_size} is outside the measured sizes "
                               f"{sizes[0]}..{sizes[-1]}")
        hi = next(s for s in sizes if s > batch_size)
        lo = max(s for s in sizes if s < batch_size)
        w = (batch_size - lo) / (hi - lo)
        return (1 - w) * at(lo) + w * at(hi)


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile file."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file (shipped profiles: {', '.join(list_builtin_profiles())})")
    return profile_from_bytes(_read_bounded(path), path)


def profile_from_bytes(data: bytes, path: str | Path = "<profile>") -> Profile:
    """Parse and validate a profile file's content (an upload, say); ``path`` names it in errors."""
    return profile_from_dict(parsed_document(data, path), path)


def parsed_document(data: bytes, path: str | Path) -> object:
    """A profile file's JSON, or one :class:`ProfileError` line naming ``path``."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an integer of 4300+ digits, deep nesting
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ProfileError(f"{path}: not valid JSON ({detail})") from None


def read_section_profile(path: str | Path, section: str, kind: str, hint: str) -> tuple[dict, Checker]:
    """The document of an LLM or training profile file (one with an ``llm`` or ``training`` section),
    its envelope and every other section checked, and the :class:`Checker` to check ``section`` with.
    ``kind`` names such a profile in errors, ``hint`` the command that writes one."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file ({kind}: {hint} writes one)")
    doc = parsed_document(_read_bounded(path), path)
    return doc, section_envelope(doc, path, section, kind, hint)


def section_envelope(doc: object, path: str | Path, section: str, kind: str, hint: str) -> Checker:
    """Check a parsed document's top level, schema and other sections, and that it has ``section``."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: the top level is {type(doc).__name__}; a JSON object is needed")
    check = Checker(Path(path))
    if doc.get("schema") not in SCHEMAS:
        check.fail("schema", doc.get("schema"), f"must be one of {', '.join(map(repr, SCHEMAS))}")
    if not isinstance(doc.get(section), dict):
        check.fail(section, doc.get(section), f"{kind} needs its {section} section ({hint} writes it)")
    check_sections(doc, check)
    return check


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing one over ``MAX_FILE_BYTES`` (also a /proc file, whose size reads 0)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1) if path.stat().st_size <= MAX_FILE_BYTES else None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profile ({exc.strerror or type(exc).__name__})") from None
    if data is None or len(data) > MAX_FILE_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; not a profile")
    return data


def profile_from_dict(doc: object, path: str | Path = "<profile>") -> Profile:
    """Validate a parsed profile document (the checks of :func:`load_profile`, docs/profile.md)."""
    path = Path(path)
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: the top level is {type(doc).__name__}; a JSON object is needed")
    check = Checker(path)
    if doc.get("schema") not in SCHEMAS:
        check.fail("schema", doc.get("schema"), f"must be {SCHEMA!r}, {SCHEMA_V2!r} or {SCHEMA_V3!r}")
    kind = doc.get("kind")
    if kind not in KINDS:
        check.fail("kind", kind, "must be 'measured' or 'estimate'")
    env, model = check.section(doc, "environment"), check.section(doc, "model")
    batches = doc.get("batches")
    if not isinstance(batches, list) or not batches:
        check.fail("batches", batches, "a non-empty list of batch entries is needed (no usable batch sizes)"
                   + ("; this is a training profile, which capsim train-plan reads" if doc.get("training") else "")
                   + ("; this is an LLM iteration profile, which llm.step_time {type: calibrated} reads"
                      if doc.get("llm") else ""))
    latency, forward, host, first, memory = {}, {}, {}, {}, {}
    for i, entry in enumerate(batches):
        key = f"batches[{i}]"
        if not isinstance(entry, dict):
            check.fail(key, entry, "each batch entry is an object")
        b = check.number(entry.get("batch_size"), f"{key}.batch_size", 1, MAX_BATCH_SIZE, integer=True,
                         allowed=f"an integer >= 1, at most {MAX_BATCH_SIZE} (as batching.max_batch_size)")
        if b in latency:
            check.fail(f"{key}.batch_size", b, "each batch size may appear once")
        latency[b] = check.samples(entry.get("latency_s"), f"{key}.latency_s", needed=True)
        forward[b] = check.samples(entry.get("forward_s"), f"{key}.forward_s")
        host[b] = check.samples(entry.get("host_overhead_s"), f"{key}.host_overhead_s")
        if entry.get("first_call_s") is not None:
            first[b] = check.seconds(entry["first_call_s"], f"{key}.first_call_s")
        memory[b] = check.byte_count(entry.get("peak_memory_bytes"), f"{key}.peak_memory_bytes")
    host_overhead = check.samples(doc.get("host_overhead_s"), "host_overhead_s")
    check_sections(doc, check)
    load = doc.get("load") or {}
    return Profile(
        path=path, kind=kind, model_name=check.text(model, "model.name", "name"), dtype=model["dtype"],
        device=env["device"], device_name=env.get("device_name"),
        batch_sizes=tuple(sorted(latency)), latency_s=dict(sorted(latency.items())),
        forward_s={b: v for b, v in sorted(forward.items()) if v.size}, first_call_s=first,
        host_overhead_s=host_overhead, host_overhead_by_batch_s={b: v for b, v in sorted(host.items()) if v.size},
        peak_memory_bytes=memory, weight_bytes=model.get("weight_bytes", load.get("weight_bytes")),
        load=dict(load), raw=doc,
    )


def write_profile(doc: dict, path: str | Path) -> Path:
    """Validate ``doc`` as :func:`load_profile` would, then write it atomically (lists of numbers on one line)."""
    path = Path(path)
    profile_from_dict(doc, path)
    return write_text(path, dumps(doc) + "\n")


def dumps(obj, indent: int = 0) -> str:
    """JSON with objects indented and lists of scalars kept on one line."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 2) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def builtin_profile_path(name: str) -> Path:
    """The shipped profile ``sim/data/profiles/<name>.json`` (e.g. ``cpu-mlp-fp32``)."""
    stem = name[:-5] if name.endswith(".json") else name
    path = BUILTIN_DIR / f"{stem}.json"
    if not path.is_file():
        raise ProfileError(f"profile = {name!r}: not a file and not a shipped profile; shipped profiles are "
                           f"{', '.join(list_builtin_profiles()) or '(none)'}")
    return path


def list_builtin_profiles() -> list[str]:
    """Stems of the shipped profiles, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def resolve_profile_path(ref: str | Path, base_dir: str | Path | None = None) -> Path:
    """A profile given as a file path (relative to ``base_dir``) or as a shipped profile's name."""
    path = Path(ref)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if path.is_file():
        return path
    if str(ref).endswith(".json") and ("/" in str(ref) or base_dir is not None):
        raise ProfileError(f"{path}: no such profile file")
    return builtin_profile_path(str(ref))


def as_profile(ref) -> Profile:
    """A :class:`Profile` from a Profile, a path or a shipped profile's name."""
    return ref if isinstance(ref, Profile) else load_profile(resolve_profile_path(ref))
