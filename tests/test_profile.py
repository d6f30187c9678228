"""The simulator-side profile reader: valid files load, malformed ones fail in one clear line."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from sim.errors import ProfileError
from sim.profiles.profile import (
    builtin_profile_path,
    list_builtin_profiles,
    load_profile,
    profile_from_dict,
    resolve_profile_path,
    write_profile,
)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "sim" / "data" / "profile.schema.json"


def minimal_doc() -> dict:
    return {
        "schema": "capsim.profile/1",
        "kind": "measured",
        "environment": {"device": "cpu", "device_name": "test cpu"},
        "model": {"name": "m", "dtype": "fp32", "weight_bytes": 1000},
        "batches": [
            {"batch_size": 4, "latency_s": [0.004, 0.002, 0.003], "first_call_s": 0.05,
             "host_overhead_s": [0.0002, 0.0002]},
            {"batch_size": 1, "latency_s": [0.001, 0.0012], "forward_s": [0.0009], "peak_memory_bytes": 5},
        ],
        "host_overhead_s": [0.0001, 0.0003],
        "load": {"load_rate_bytes_per_s": 1000.0, "runtime_start_s": 2.0, "warmup_s": 0.5},
    }


def write(tmp_path: Path, doc, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_a_minimal_profile_loads_with_sorted_sizes_and_samples(tmp_path):
    p = load_profile(write(tmp_path, minimal_doc()))
    assert p.batch_sizes == (1, 4)
    assert p.latency_s[4].tolist() == [0.002, 0.003, 0.004]
    assert p.first_call_s == {4: 0.05}
    assert p.forward_s[1].tolist() == [0.0009] and 4 not in p.forward_s
    assert p.peak_memory_bytes == {4: None, 1: 5}
    assert p.host_overhead_s.tolist() == [0.0001, 0.0003]
    assert p.kind == "measured" and p.model_name == "m" and p.device == "cpu" and p.weight_bytes == 1000
    with pytest.raises(ValueError):
        p.latency_s[1][0] = 1.0  # samples are read-only


def test_medians_interpolate_between_measured_sizes_and_refuse_outside(tmp_path):
    p = load_profile(write(tmp_path, minimal_doc()))
    assert p.median_latency_s(4) == pytest.approx(0.003)
    assert p.median_latency_s(2) == pytest.approx(0.0011 + (0.003 - 0.0011) / 3)
    with pytest.raises(ProfileError, match="outside the measured sizes 1..4"):
        p.median_latency_s(8)


def test_host_overhead_per_size_is_preferred_and_cold_start_adds_up(tmp_path):
    p = load_profile(write(tmp_path, minimal_doc()))
    assert p.host_overhead_for(4).tolist() == [0.0002, 0.0002]
    assert p.host_overhead_for(1).tolist() == [0.0002, 0.0002]  # nearest measured
    assert p.mean_service_s(4) == pytest.approx(0.003 + 0.0002)
    assert p.cold_start_load_s() == pytest.approx(1000 / 1000.0 + 2.0 + 0.5)
    assert p.first_call_extra_s(4) == pytest.approx(0.047)
    assert p.first_call_extra_s(1) is None


def test_cold_start_is_none_where_a_piece_is_unknown(tmp_path):
    doc = minimal_doc()
    doc["load"]["warmup_s"] = None
    assert load_profile(write(tmp_path, doc)).cold_start_load_s() is None


def test_empty_host_overhead_is_allowed(tmp_path):
    doc = minimal_doc()
    doc["host_overhead_s"] = []
    for entry in doc["batches"]:
        entry.pop("host_overhead_s", None)
    p = load_profile(write(tmp_path, doc))
    assert p.host_overhead_s.size == 0
    assert p.mean_service_s(1) == pytest.approx(0.0011)


def mutate(path: str, value):
    def apply(doc):
        target = doc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
        return doc
    return apply


MALFORMED = [
    ("wrong schema", mutate("schema", "capsim.profile/9"), r"schema = 'capsim.profile/9': must be 'capsim.profile/1'"),
    ("missing schema", mutate("schema", KeyError), r"schema = None: must be"),
    ("bad kind", mutate("kind", "guess"), r"kind = 'guess'"),
    ("no batches", mutate("batches", []), r"batches = \[\]: .*no usable batch sizes"),
    ("batch size 0", mutate("batches.0.batch_size", 0), r"batches\[0\].batch_size = 0: an integer >= 1"),
    ("float batch size", mutate("batches.0.batch_size", 2.5), r"batches\[0\].batch_size = 2.5"),
    ("duplicate size", mutate("batches.1.batch_size", 4), r"each batch size may appear once"),
    ("negative sample", mutate("batches.0.latency_s", [0.001, -0.002]), r"latency_s = -0.002: .*finite numbers >= 0"),
    ("nan sample", mutate("batches.0.latency_s", [math.nan]), r"latency_s = nan"),
    ("infinite overhead", mutate("host_overhead_s", [math.inf]), r"host_overhead_s = inf"),
    ("no samples", mutate("batches.0.latency_s", []), r"latency_s = \[\]: a list of at least one"),
    ("all zero", mutate("batches.0.latency_s", [0.0, 0.0]), r"at least one sample must be > 0"),
    ("string sample", mutate("batches.1.latency_s", ["fast"]), r"latency_s = 'fast'"),
    ("no model name", mutate("model.name", ""), r"model.name = ''"),
    ("no device", mutate("environment", KeyError), r"environment = None: an object"),
    ("negative first call", mutate("batches.0.first_call_s", -1), r"first_call_s = -1"),
]


@pytest.mark.parametrize(("case", "change", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profiles_fail_in_one_line_naming_file_key_and_value(tmp_path, case, change, message):
    path = write(tmp_path, json.dumps(change(copy.deepcopy(minimal_doc())), allow_nan=True))
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_missing_file_and_bad_json_are_clear(tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "absent.json")
    with pytest.raises(ProfileError, match=r"not valid JSON \(Expecting"):
        load_profile(write(tmp_path, "{not json"))
    with pytest.raises(ProfileError, match="top level is list"):
        load_profile(write(tmp_path, "[1, 2]"))


def test_write_profile_round_trips_and_refuses_invalid(tmp_path):
    path = write_profile(minimal_doc(), tmp_path / "sub" / "w.json")
    assert json.loads(path.read_text()) == minimal_doc()
    assert '"latency_s": [0.004, 0.002, 0.003]' in path.read_text()  # samples on one line
    bad = minimal_doc()
    bad["batches"] = []
    with pytest.raises(ProfileError):
        write_profile(bad, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_builtin_profiles_are_found_by_name(tmp_path):
    names = list_builtin_profiles()
    assert "cpu-mlp-fp32" in names and "h100-mlp-fp16" in names
    assert builtin_profile_path("cpu-mlp-fp32").name == "cpu-mlp-fp32.json"
    assert builtin_profile_path("cpu-mlp-fp32.json") == builtin_profile_path("cpu-mlp-fp32")
    with pytest.raises(ProfileError, match="not a file and not a shipped profile; shipped profiles are a100-"):
        builtin_profile_path("gpu-nothing")
    local = write(tmp_path, minimal_doc(), "mine.json")
    assert resolve_profile_path("mine.json", base_dir=tmp_path) == local
    assert resolve_profile_path("cpu-mlp-fp32") == builtin_profile_path("cpu-mlp-fp32")


@pytest.mark.parametrize("name", list_builtin_profiles())
def test_every_shipped_profile_validates_loads_and_is_small(name):
    path = builtin_profile_path(name)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    p = load_profile(path)
    assert path.stat().st_size < 1_000_000
    assert all(len(v) <= 200 for v in p.latency_s.values())
    imported = doc.get("provenance") is not None  # measured elsewhere: says so, and what it lacks
    gpu = name.startswith(("h100-", "h200-", "a100", "l4", "l40s", "a10g", "t4"))
    calibrated_on_gpu = (doc.get("environment") or {}).get("device") == "cuda" and doc.get("calibration")
    assert (p.kind == "estimate") == (gpu and not imported and not calibrated_on_gpu)
    if p.kind == "estimate":
        assert doc["estimate"]["method"].startswith("roofline") and doc["estimate"]["notes"]
        assert doc["estimate"]["uncertainty"]["bound"] > 0
    else:
        assert all(len(v) >= 20 for v in p.latency_s.values())
        if imported:
            assert p.first_call_s == {} and doc["provenance"]["lost"] and doc["provenance"]["sources"]
        else:
            assert set(p.first_call_s) == set(p.batch_sizes)
        assert all(np.isfinite(v).all() for v in p.latency_s.values())


def test_the_schema_accepts_the_minimal_document_and_rejects_a_wrong_kind():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(minimal_doc(), schema)
    bad = minimal_doc()
    bad["kind"] = "estimate"  # an estimate must say how it was derived
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_profile_from_dict_needs_no_file():
    assert profile_from_dict(minimal_doc()).batch_sizes == (1, 4)
