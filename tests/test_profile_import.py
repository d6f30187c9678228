"""`capsim profile import`: measurements taken elsewhere become measured profiles that say where they came
from; the simulator reads the same medians; Triton's percentile exports keep their units; bad input is
one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from sim.cli import main
from sim.profiles.importers import samples_from_percentiles
from sim.profiles.profile import builtin_profile_path, load_profile

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "tests" / "data" / "recordings" / "h100"
SCHEMA = json.loads((ROOT / "sim" / "data" / "profile.schema.json").read_text())
SHIPPED = {"h100-resnet50-fp16": ("profile_h100_mlp_resnet50.json", "resnet50"),
           "h100-mlp-2048-fp32": ("profile_h100_mlp_resnet50.json", "mlp"),
           "h100-bert-encoder-fp16": ("profile_h100_bert.json", "bert")}

# perf_analyzer -f: one row per concurrency, times in microseconds (client batch size 8, given on import)
PERF_ANALYZER = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,\
request/response,response wait
1,1523.1,45,310,28,60,4610,25,12,5210,5630,5880,6420,5250,656,0
2,2890.4,44,330,1650,61,4650,24,12,6790,7410,7710,8300,6870,324,0
"""
# Model Analyzer's inference metrics: one row per config, batch size and concurrency, times in milliseconds
MODEL_ANALYZER = """\
Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,\
Throughput (infer/sec),p50 Latency (ms),p99 Latency (ms),Avg Latency (ms)
resnet50,1,1,resnet50_config_0,1:GPU,32,Yes,180.2,5.49,6.12,5.55
resnet50,1,4,resnet50_config_0,1:GPU,32,Yes,610.0,6.40,8.90,6.55
resnet50,8,1,resnet50_config_0,1:GPU,32,Yes,1300.0,6.11,7.04,6.20
"""


def import_(tmp_path, *args: str) -> int:
    return main(["profile", "import", *args, "--out", str(tmp_path / "out.json")])


def test_shared_json_round_trips_to_the_same_medians_exactly(tmp_path, capsys):
    source = json.loads((H100 / "profile_h100_mlp_resnet50.json").read_text())["profile"]["resnet50"]
    assert import_(tmp_path, str(H100 / "profile_h100_mlp_resnet50.json"), "--format", "batch-json",
                   "--model-key", "resnet50", "--arch", "resnet50", "--dtype", "fp16") == 0
    p = load_profile(tmp_path / "out.json")
    assert p.kind == "measured" and p.device_name == "NVIDIA H100 80GB HBM3" and p.model_name == "resnet50"
    for size, samples in source.items():
        assert p.median_latency_s(int(size)) == np.median(samples)
    doc = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["environment"]["torch"] == "2.11.0+cu130" and doc["environment"]["driver"] == "580.159.04"
    assert doc["environment"]["cuda"] is None and doc["load"] is None  # unknown stays null
    assert doc["provenance"]["samples"] == "as measured" and doc["provenance"]["sources"][0]["sha256"]
    assert p.first_call_s == {} and all(b["peak_memory_bytes"] is None for b in doc["batches"])


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_h100_profiles_hold_the_source_samples(name):
    file, key = SHIPPED[name]
    source = json.loads((H100 / file).read_text())["profile"][key]
    p = load_profile(builtin_profile_path(name))
    assert p.kind == "measured" and p.batch_sizes == tuple(sorted(map(int, source)))
    for size, samples in source.items():
        assert list(p.latency_s[int(size)]) == sorted(samples)
    load = p.load
    assert load["load_rate_bytes_per_s"] == pytest.approx(15032390096 / 9.834985586999892, rel=1e-3)
    assert load["runtime_start_s"] == pytest.approx(3.947 + 0.1745, abs=2e-3)


def test_perf_analyzer_csv_is_read_in_microseconds(tmp_path, capsys):
    csv = tmp_path / "pa_b8.csv"
    csv.write_text(PERF_ANALYZER)
    assert import_(tmp_path, str(csv), "--format", "perf-analyzer", "--batch-sizes", "8", "--model", "resnet50",
                   "--dtype", "fp16", "--device-name", "NVIDIA A100-SXM4-80GB") == 0
    p = load_profile(tmp_path / "out.json")
    assert p.batch_sizes == (8,) and p.median_latency_s(8) == pytest.approx(5210e-6, rel=1e-9)
    samples = p.latency_s[8]
    assert samples.mean() == pytest.approx(5250e-6, rel=1e-4)  # the reported average (concurrency 1)
    assert samples.max() == pytest.approx(6420e-6) and samples.min() > 0  # nothing beyond p99 invented
    doc = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    row = doc["provenance"]["percentiles"]["8"]
    assert row["concurrency"] == 1 and row["server_compute_infer_s"] == pytest.approx(4610e-6)
    assert doc["provenance"]["samples"] == "rebuilt from percentiles"
    assert any("rebuilt from the reported percentiles" in x for x in doc["provenance"]["lost"])
    assert import_(tmp_path, str(csv), "--format", "perf-analyzer", "--batch-sizes", "8", "--concurrency", "2",
                   "--dtype", "fp16") == 0
    assert load_profile(tmp_path / "out.json").median_latency_s(8) == pytest.approx(6790e-6)


def test_model_analyzer_csv_is_read_in_milliseconds_one_row_per_batch_size(tmp_path, capsys):
    csv = tmp_path / "metrics-model-inference.csv"
    csv.write_text(MODEL_ANALYZER)
    assert import_(tmp_path, str(csv), "--format", "model-analyzer", "--dtype", "fp16") == 0
    p = load_profile(tmp_path / "out.json")
    assert p.model_name == "resnet50" and p.batch_sizes == (1, 8)
    assert p.median_latency_s(1) == pytest.approx(5.49e-3) and p.median_latency_s(8) == pytest.approx(6.11e-3)
    assert p.latency_s[1].mean() == pytest.approx(5.55e-3, rel=1e-3)


def test_percentiles_rebuild_a_distribution_with_the_reported_figures():
    values = samples_from_percentiles({0.5: 1.0, 0.9: 2.0, 0.99: 3.0}, mean=1.2, n=101)
    assert np.median(values) == 1.0 and max(values) == 3.0 and np.mean(values) == pytest.approx(1.2)
    assert values == sorted(values)
    flat = samples_from_percentiles({0.5: 1.0, 0.99: 3.0}, mean=None, n=11)
    assert min(flat) == 1.0  # no average: nothing below the median is invented


def test_plain_csv_of_samples(tmp_path, capsys):
    csv = tmp_path / "samples.csv"
    csv.write_text("batch_size,latency_s\n1,0.002\n1,0.004\n1,0.003\n4,0.005\n")
    assert import_(tmp_path, str(csv), "--format", "csv", "--model", "mine", "--dtype", "fp32", "--device",
                   "cpu") == 0
    p = load_profile(tmp_path / "out.json")
    assert p.device == "cpu" and p.median_latency_s(1) == 0.003 and p.batch_sizes == (1, 4)


BAD = {
    "missing file": (["absent.json", "--format", "batch-json"], "absent.json: no such file"),
    "wrong columns": (["cols.csv", "--format", "csv"], "columns = ['size', 'ms']: needs batch_size, latency_s"),
    "negative latency": (["neg.csv", "--format", "csv"], "line 3: latency_s = '-0.002': latencies are finite"),
    "unknown model key": (["two.json", "--format", "batch-json", "--model-key", "gpt"],
                          "--model-key = 'gpt': two.json holds mlp, resnet50"),
    "perf_analyzer without sizes": (["pa.csv", "--format", "perf-analyzer"], "--batch-sizes = ''"),
    "unknown arch": (["two.json", "--format", "batch-json", "--model-key", "mlp", "--arch", "vgg"],
                     "--arch = 'vgg': built-in architectures are"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cols.csv").write_text("size,ms\n1,2\n")
    (tmp_path / "neg.csv").write_text("batch_size,latency_s\n1,0.002\n1,-0.002\n")
    (tmp_path / "two.json").write_text((H100 / "profile_h100_mlp_resnet50.json").read_text())
    (tmp_path / "pa.csv").write_text(PERF_ANALYZER)
    args, says = BAD[case]
    assert main(["profile", "import", *args, "--dtype", "fp16", "--out", "x.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capsim profile: error:") and "\n" not in err and says in err, err
    assert not (tmp_path / "x.json").exists()


def test_help_documents_the_formats_and_what_is_lost(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "import", "--help"])
    out = capsys.readouterr().out
    for words in ("batch-json", "perf-analyzer", "model-analyzer", "microseconds", "milliseconds",
                  "rebuilt", "tail beyond p99 is lost", "first calls"):
        assert words in out
