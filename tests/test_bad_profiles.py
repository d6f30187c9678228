"""Hostile profiles: every section the simulator, the CLI and the dashboard read is validated.

Each bad value fails in one line naming the file, the key and the value (exit code 2 on the command
line), and the JSON Schema (sim/data/profile.schema.json) rejects the same cases, except those it
cannot state (finite numbers, arrays that pair up, increasing gaps, a bound across two fields).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from sim.cli import main
from sim.errors import ProfileError
from sim.profiles.profile import MAX_FILE_BYTES, load_profile, profile_from_bytes, profile_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "sim/data/profile.schema.json").read_text()))


def full_doc() -> dict:
    """A valid profile with every section the simulator reads."""
    return {
        "schema": "capsim.profile/1", "kind": "measured", "created_utc": "2026-01-01T00:00:00Z",
        "environment": {"device": "cpu", "device_name": "test cpu", "cpu_threads": 2},
        "model": {"name": "m", "dtype": "fp32", "compiled": False, "parameters": 10, "weight_bytes": 1000},
        "batches": [
            {"batch_size": 1, "latency_s": [0.001, 0.0012], "forward_s": [0.0009], "first_call_s": 0.01,
             "peak_memory_bytes": 5, "host_overhead_s": [0.0001]},
            {"batch_size": 4, "latency_s": [0.003, 0.004], "first_call_s": 0.02},
        ],
        "host_overhead_s": [0.0001],
        "serving_replay": {"batch_sizes": [1, 4], "gaps_s": [0.01, 0.02], "latency_s": [0.0011, 0.0035],
                           "host_overhead_s": [0.0001, 0.0001], "median_ratio_to_benchmark": 1.1},
        "idle_response": {"gaps_s": [0.001, 0.01], "ratio": [1.1, 1.3], "counts": [5, 7], "back_to_back_s": 5e-5,
                          "back_to_back_count": 9, "method": "test"},
        "dispatch": {"idle_s": [3e-5], "busy_s": [1e-5], "method": "test"},
        "service_level": {"sigma": 0.05, "rho": 0.9, "window_batches": 21, "path": [0.01, -0.02], "phase": "random",
                          "lags": [5, 10], "autocovariance": [0.002, 0.001], "method": "test"},
        "memory": {"device_total_bytes": 10**9, "max_batch_size_fits": 64, "method": "rss", "baseline_bytes": 100},
        "load": {"weight_bytes": 1000, "checkpoint_read_cold_s": None, "runtime_start_s": 1.0, "warmup_s": 0.03,
                 "runtime_start_runs": 3, "load_rate_bytes_per_s": 1e6,
                 "page_cache": {"method": "none available", "resident_after_drop": None, "dropped": False},
                 "notes": ["test"]},
        "calibration": {"samples": 2},
        "estimate": None,
    }


def aligned(doc: dict) -> dict:
    doc["service_level"] = {"phase": "aligned", "path": [0.0, 0.1], "path_start_s": [0.0, 0.5],
                            "path_loop_s": [0.0, 0.0]}
    return doc


def from_log(doc: dict) -> dict:
    """The capsim.profile/2 sections of a served log (capsim profile from-log)."""
    doc["schema"] = "capsim.profile/2"
    doc["service_level"] = {"phase": "random_time", "path": [0.0, 0.1], "path_start_s": [0.0, 0.5], "span_s": 1.0,
                            "window_batches": 9, "method": "test"}
    doc["first_call"] = {"stall_s": [0.05, 0.06], "warm_sizes": [1, 2, 4], "method": "test"}
    return doc


@dataclass(frozen=True)
class Case:
    name: str
    key: str  # dotted path into the document (list indices as numbers)
    value: object
    says: tuple[str, ...]  # what the one line must contain besides the file name
    schema: bool = True  # False: a rule no JSON Schema can state (checked by the reader only)
    base: object = None  # a change to the document before the bad value goes in


CASES = [
    Case("load is a list", "load", [1, 2], ("load = [1, 2]", "an object or null")),
    Case("rho of 2", "service_level.rho", 2, ("service_level.rho = 2", "[0, 1)")),
    Case("idle gap of 0", "idle_response.gaps_s", [0, 0.01], ("idle_response.gaps_s = 0", "(0, 3600]")),
    Case("sigma is a string", "service_level.sigma", "x", ("service_level.sigma = 'x'", "a finite number")),
    Case("absurd log level", "service_level.path", [0.0, 800], ("service_level.path = 800", "[-20, 20]")),
    Case("nan log level", "service_level.path", [math.nan], ("service_level.path = nan",), schema=False),
    Case("negative idle dispatch", "dispatch.idle_s", [-0.001], ("dispatch.idle_s = -0.001", ">= 0")),
    Case("negative busy dispatch", "dispatch.busy_s", [1e-5, -1], ("dispatch.busy_s = -1",)),
    Case("negative idle ratio", "idle_response.ratio", [-1, 1.3], ("idle_response.ratio = -1", "(0, 1e+06]")),
    Case("load rate is a string", "load.load_rate_bytes_per_s", "fast",
         ("load.load_rate_bytes_per_s = 'fast'", "> 0")),
    Case("load rate of 0", "load.load_rate_bytes_per_s", 0, ("load.load_rate_bytes_per_s = 0",)),
    Case("latency of 1e308 s", "batches.0.latency_s", [0.001, 1e308],
         ("batches[0].latency_s = 1e+308", "at most 3600 (an hour)")),
    Case("first call of a day", "batches.1.first_call_s", 86400.0, ("batches[1].first_call_s = 86400.0",)),
    Case("runtime start of 1e9 s", "load.runtime_start_s", 1e9, ("load.runtime_start_s = 1000000000.0",)),
    Case("infinite dispatch", "dispatch.busy_s", [math.inf], ("dispatch.busy_s = inf",)),
    Case("weights take a year to load", "load.load_rate_bytes_per_s", 1e-5,
         ("load.load_rate_bytes_per_s = 1e-05", "takes 1e+08 s"), schema=False),
    Case("sub-nanosecond latency", "batches.0.latency_s", [1e-12], ("batches[0].latency_s", "a nanosecond"),
         schema=False),
    Case("replay lengths differ", "serving_replay.gaps_s", [0.01], ("serving_replay.gaps_s and serving_replay.batch_sizes must pair up",
                                                                     "lengths are 1 and 2"),
         schema=False),
    Case("idle gaps decrease", "idle_response.gaps_s", [0.01, 0.001], ("idle_response.gaps_s", "increase strictly"),
         schema=False),
    Case("idle ratios unpaired", "idle_response.ratio", [1.1], ("idle_response.ratio and idle_response.gaps_s must pair up",),
         schema=False),
    Case("replay without latencies", "serving_replay.latency_s", None, ("serving_replay.latency_s = None",)),
    Case("sigma without rho", "service_level.rho", KeyError, ("service_level.sigma = 0.05", "together")),
    Case("phase sideways", "service_level.phase", "sideways", ("service_level.phase = 'sideways'", "'aligned'")),
    Case("aligned without start times", "service_level.path_start_s", KeyError,
         ("service_level.phase = 'aligned'", "path_start_s"), base=aligned),
    Case("aligned start times unpaired", "service_level.path_start_s", [0.0],
         ("service_level.path_start_s and service_level.path must pair up",), schema=False, base=aligned),
    Case("start time of 1e300 s", "service_level.path_start_s", [0.0, 1e300],
         ("service_level.path_start_s = 1e+300", "[-1e+07, 1e+07]"), base=aligned),
    Case("negative loop gap", "service_level.path_loop_s", [0.0, -1.0], ("service_level.path_loop_s = -1.0",),
         base=aligned),
    Case("window of 0 batches", "service_level.window_batches", 0, ("service_level.window_batches = 0",)),
    Case("device tpu", "environment.device", "tpu", ("environment.device = 'tpu'", "'cpu' or 'cuda'")),
    Case("device name a number", "environment.device_name", 5, ("environment.device_name = 5", "a string")),
    Case("dtype int4", "model.dtype", "int4", ("model.dtype = 'int4'",)),
    Case("weights beyond int64", "model.weight_bytes", 10**30, ("model.weight_bytes = 10000000000",)),
    Case("boolean peak memory", "batches.0.peak_memory_bytes", True, ("batches[0].peak_memory_bytes = True",)),
    Case("batch of a billion", "batches.1.batch_size", 10**9, ("batches[1].batch_size = 1000000000", "65536")),
    Case("negative fits", "memory.max_batch_size_fits", -1, ("memory.max_batch_size_fits = -1",)),
    Case("replay ratio a string", "serving_replay.median_ratio_to_benchmark", "x",
         ("serving_replay.median_ratio_to_benchmark = 'x'",)),
    Case("page cache a string", "load.page_cache", "dropped", ("load.page_cache = 'dropped'",)),
    Case("notes a string", "load.notes", "x", ("load.notes = 'x'", "a list of strings")),
    Case("created_utc a number", "created_utc", 5, ("created_utc = 5",)),
    Case("estimate without its block", "kind", "estimate", ("estimate = None", "how it was derived")),
    Case("a long value is cut short", "load.notes", "x" * 10_000, ("load.notes = 'xxxxx", "...: a list of strings")),
    Case("stall of a day", "first_call.stall_s", [86400.0], ("first_call.stall_s = 86400.0",), base=from_log),
    Case("warm size 0", "first_call.warm_sizes", [0, 1], ("first_call.warm_sizes = 0", "1..65536"), base=from_log),
    Case("first calls without stalls", "first_call.stall_s", KeyError, ("first_call.stall_s = None",), base=from_log),
    Case("served-log sections in a /1 file", "schema", "capsim.profile/1",
         ("first_call", "capsim.profile/2"), base=from_log),
    Case("random_time without a span", "service_level.span_s", KeyError,
         ("service_level.phase = 'random_time'", "span_s"), base=from_log),
    Case("random_time span of 0", "service_level.span_s", 0, ("service_level.span_s = 0", "(0, 1e+07]"), base=from_log),
    Case("random_time starts after 0", "service_level.path_start_s", [0.1, 0.5],
         ("service_level.path_start_s = 0.1", "begin at 0"), schema=False, base=from_log),
    Case("random_time start beyond the span", "service_level.path_start_s", [0.0, 2.0],
         ("service_level.path_start_s = 2.0", "within span_s = 1"), schema=False, base=from_log),
    Case("random_time with loop gaps", "service_level.path_loop_s", [0.0, 0.0],
         ("service_level.path_loop_s", "only with phase 'aligned'"), base=from_log),
]


def changed(case: Case) -> dict:
    doc = full_doc()
    if case.base is not None:
        doc = case.base(doc)
    *parents, last = case.key.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if case.value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = copy.deepcopy(case.value)
    return doc


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "hostile.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, allow_nan=True))
    return path


def one_line(text: str, path: Path | str, says=()) -> None:
    assert "\n" not in text and len(text) < 400, text
    assert str(path) in text, text
    for part in says:
        assert part in text, f"{part!r} not in {text!r}"


def test_the_full_document_is_valid_for_reader_and_schema():
    SCHEMA.validate(full_doc())
    SCHEMA.validate(aligned(full_doc()))
    SCHEMA.validate(from_log(full_doc()))
    assert profile_from_dict(from_log(full_doc())).raw["first_call"]["warm_sizes"] == [1, 2, 4]
    assert profile_from_dict(full_doc()).batch_sizes == (1, 4)
    assert profile_from_dict(aligned(full_doc())).batch_sizes == (1, 4)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_reader_refuses_in_one_line(tmp_path, case):
    path = write(tmp_path, changed(case))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    one_line(str(info.value), path, case.says)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_schema_agrees_where_a_schema_can_say_it(case):
    assert SCHEMA.is_valid(changed(case)) != case.schema


def profile_files() -> list[Path]:
    found = [*(ROOT / "sim/data/profiles").glob("*.json"), *(ROOT / "tests/data/profiles").glob("*.json"),
             *(ROOT / "docs/validation").rglob("*.json"), *(ROOT / "tests/data/recordings").rglob("*.json")]
    return sorted(p for p in found if is_profile(p))


def is_profile(path: Path) -> bool:
    text = path.read_text()
    if '"capsim.profile/1"' not in text and '"capsim.profile/2"' not in text:
        return False
    doc = json.loads(text)
    return isinstance(doc, dict) and doc.get("schema") in ("capsim.profile/1", "capsim.profile/2")


BAD_FIXTURES = {"no_batches.json"}  # tests/data/bad/profile_no_batches.yaml uses it


@pytest.mark.parametrize("path", profile_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_profile_in_the_repository_loads_and_agrees_with_the_schema(path):
    doc = json.loads(path.read_text())
    if path.name in BAD_FIXTURES:
        assert not SCHEMA.is_valid(doc)
        with pytest.raises(ProfileError):
            load_profile(path)
        return
    SCHEMA.validate(doc)
    load_profile(path)


@pytest.mark.parametrize("text", ["[" * 100_000, "{\"a\": " + "1" * 5000 + "}", b"\x89PNG\r\n\x1a\n\x00\xff" * 50,
                                  "{\"schema\": NaN"], ids=["deep nesting", "5000-digit integer", "binary", "cut off"])
def test_unreadable_json_is_one_line_without_the_content(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ProfileError, match="not valid JSON") as info:
        load_profile(path)
    one_line(str(info.value), path)
    assert "PNG" not in str(info.value) and "1111111" not in str(info.value)


def test_uploaded_bytes_get_the_same_one_line_errors():
    for data in (b"[" * 100_000, b"{\"a\": " + b"1" * 5000 + b"}", b"\xff\xfe"):
        with pytest.raises(ProfileError, match=r"^upload.json: not valid JSON \("):
            profile_from_bytes(data, "upload.json")
    with pytest.raises(ProfileError, match=r"^upload.json: service_level.rho = 2: "):
        profile_from_bytes(json.dumps(changed(BY_NAME["rho of 2"])).encode(), "upload.json")


def test_a_giant_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "giant.json"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ProfileError, match="larger than 64 MiB") as info:
        load_profile(path)
    one_line(str(info.value), path)


BY_NAME = {c.name: c for c in CASES}
SHOWN = [c for c in CASES if c.name in ("load is a list", "rho of 2", "load rate is a string", "latency of 1e308 s",
                                         "replay ratio a string", "idle gap of 0", "absurd log level")]


@pytest.mark.parametrize("case", SHOWN, ids=[c.name for c in SHOWN])
def test_profile_show_says_it_in_one_line_and_exit_2(tmp_path, capsys, case):
    path = write(tmp_path, changed(case))
    assert main(["profile", "show", str(path), "--plot", str(tmp_path / "p.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("capsim profile: error: ") and "Traceback" not in captured.err
    one_line(captured.err.strip(), path, case.says)
    assert not (tmp_path / "p.png").exists()


def test_a_scenario_with_a_hostile_profile_says_it_in_one_line(tmp_path, capsys, write_scenario):
    rho = BY_NAME["rho of 2"]  # a math domain error in the sampler before
    path = write(tmp_path, changed(rho))
    scenario = write_scenario({"workload": {"arrivals": {"process": "poisson", "rate_rps": 100}},
                               "service": {"type": "profile", "profile": str(path)},
                               "batching": {"max_batch_size": 4}, "run": {"duration_s": 1.0, "seed": 0}})
    assert main(["simulate", str(scenario), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capsim simulate: error: ")
    one_line(err.strip(), path, rho.says)


def test_the_dashboards_profile_upload_says_it_in_one_line(tmp_path):
    pytest.importorskip("streamlit")
    from dashboard import state

    for case in SHOWN:
        data = json.dumps(changed(case)).encode()
        with pytest.raises(ProfileError) as info:
            state.stored_profile(data, "upload.json")
        one_line(str(info.value), "upload.json", case.says)
    with pytest.raises(ProfileError, match="not valid JSON"):
        state.stored_profile(b"\xff\xfe", "upload.json")
    for hostile in (b'{"schema": ' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000):  # huge integer, deep nesting
        with pytest.raises(ProfileError, match="upload.json: not valid JSON"):
            state.stored_profile(hostile, "upload.json")
