"""`capsim calibrate` end to end on the CPU with the test models (seconds, not minutes)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from sim.cli import build_parser, main
from sim.profiles.profile import load_profile

torch = pytest.importorskip("torch")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "sim/data/profile.schema.json").read_text())
FAST = ["--samples", "20", "--warmup", "2", "--replay-batches", "10", "--runtime-start-runs", "1",
        "--no-progress"]


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "tiny.json"
    assert main(["calibrate", "--model", "test-tiny", "--batch-sizes", "1,2,4,8", "--out", str(out), *FAST]) == 0
    return out


def test_calibration_writes_a_schema_valid_profile_that_round_trips(tiny_profile):
    doc = json.loads(tiny_profile.read_text())
    jsonschema.validate(doc, SCHEMA)
    p = load_profile(tiny_profile)
    assert p.kind == "measured" and p.model_name == "test-tiny" and p.device == "cpu"
    assert p.batch_sizes == (1, 2, 4, 8)
    assert all(len(p.latency_s[b]) == 20 and len(p.forward_s[b]) == 20 for b in p.batch_sizes)
    assert set(p.first_call_s) == {1, 2, 4, 8}
    assert p.host_overhead_s.size == 80 and set(p.host_overhead_by_batch_s) == {1, 2, 4, 8}
    assert len(doc["serving_replay"]["latency_s"]) == 10
    assert max(doc["serving_replay"]["batch_sizes"]) <= 8
    assert doc["model"]["parameters"] == 16 * 32 + 32 + 32 * 4 + 4


def test_times_are_plausible_and_rounded(tiny_profile):
    doc = json.loads(tiny_profile.read_text())
    p = load_profile(tiny_profile)
    for b in p.batch_sizes:
        assert 0 < np.median(p.forward_s[b]) <= np.median(p.latency_s[b]) * 1.5
    samples = doc["batches"][0]["latency_s"]
    assert all(float(f"{x:.4g}") == x for x in samples)  # four significant digits


def test_load_block_records_how_the_page_cache_was_handled(tiny_profile):
    load = load_profile(tiny_profile).load
    assert load["weight_bytes"] == (16 * 32 + 32 + 32 * 4 + 4) * 4
    assert load["checkpoint_read_warm_s"] > 0 and load["runtime_start_s"] > 0.05  # import torch
    assert load["host_to_device_s"] == 0
    assert load["page_cache"]["method"] in ("posix_fadvise(POSIX_FADV_DONTNEED)", "/proc/sys/vm/drop_caches",
                                            "none available")
    assert isinstance(load["page_cache"]["dropped"], bool)
    assert load["warmup_s"] == pytest.approx(sum(load_profile(tiny_profile).first_call_s.values()), rel=1e-2)
    assert load_profile(tiny_profile).cold_start_load_s() > load["runtime_start_s"]


def test_first_call_stalls_are_recorded(tmp_path):
    """test-stall sleeps 30 ms the first time it sees a batch size: every first call must show it."""
    out = tmp_path / "stall.json"
    assert main(["calibrate", "--model", "test-stall", "--out", str(out), "--skip-load", *FAST]) == 0
    p = load_profile(out)
    for b in p.batch_sizes:
        assert p.first_call_s[b] >= 0.030
        assert np.median(p.latency_s[b]) < 0.010  # warmed-up samples do not stall
        assert p.first_call_extra_s(b) >= 0.029
    replay = p.raw["serving_replay"]
    new_sizes = {b for b in replay["batch_sizes"] if b not in p.batch_sizes}
    firsts = {}
    for b, lat in zip(replay["batch_sizes"], replay["latency_s"], strict=True):
        firsts.setdefault(b, lat)
    assert all(firsts[b] >= 0.030 for b in new_sizes)  # unseen sizes stall in the replay too


def test_a_user_factory_model_is_calibrated(tmp_path, monkeypatch):
    (tmp_path / "my_model.py").write_text(textwrap.dedent("""
        import torch

        def make():
            model = torch.nn.Linear(8, 2)
            return model, lambda b: torch.randn(b, 8)
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "mine.json"
    assert main(["calibrate", "--model", "my_model:make", "--batch-sizes", "1,3", "--skip-load", "--out", str(out),
                 *FAST]) == 0
    p = load_profile(out)
    assert p.model_name == "my_model:make" and p.batch_sizes == (1, 3)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices["calibrate"]
    options = [opt for action in sub._actions for opt in action.option_strings if opt.startswith("--")]
    assert len(options) >= 15
    for option in options:
        assert option in text
    for needed in ("--model", "--device", "--dtype", "--compile", "--batch-sizes", "--samples", "--warmup",
                   "--out", "--seq-len", "--threads", "--quick", "mlp", "resnet50", "bert-base", "decoder"):
        assert needed in text


ERRORS = [
    (["--model", "gpt-17"], r"--model = 'gpt-17': unknown model; built-ins are mlp, resnet50, bert-base, decoder"),
    (["--model", "mlp", "--batch-sizes", "0,2"], r"--batch-sizes = '0,2': batch sizes are integers >= 1"),
    (["--model", "mlp", "--batch-sizes", "-4"], r"--batch-sizes = '-4'"),
    (["--model", "mlp", "--batch-sizes", "1.5"], r"--batch-sizes = '1.5'"),
    (["--model", "mlp", "--samples", "0"], r"--samples = '0': an integer >= 1"),
    (["--model", "mlp", "--dtype", "int4"], r"--dtype = 'int4': use fp32, fp16 or bf16"),
    (["--model", "mlp", "--device", "tpu"], r"--device = 'tpu': use cpu or cuda"),
    (["--model", "mlp", "--seq-len", "64"], r"--seq-len = 64: mlp has no sequence length"),
    (["--model", "bert-base", "--seq-len", "4096"], r"--seq-len = 4096: .*1..512"),
    (["--model", "nosuchmodule:make"], r"cannot import module 'nosuchmodule'"),
    ([], r"--model is required"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(["calibrate", *FAST, "--out", str(tmp_path / "x.json"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("capsim calibrate: error:")
    assert re.search(message, err), err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys, tmp_path):
    assert main(["calibrate", "--model", "test-tiny", "--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--device = 'cuda':" in err and "use --device cpu" in err


def test_list_models(capsys):
    assert main(["calibrate", "--list-models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("mlp", "resnet50", "bert-base", "decoder", "test-stall"))


def test_bf16_on_cpu_runs_or_fails_in_one_line(capsys, tmp_path):
    out = tmp_path / "bf16.json"
    code = main(["calibrate", "--model", "test-tiny", "--dtype", "bf16", "--batch-sizes", "1,2", "--skip-load",
                 "--out", str(out), *FAST])
    if code == 0:
        assert load_profile(out).dtype == "bf16"
    else:
        assert code == 2 and "\n" not in capsys.readouterr().err.strip()


@pytest.mark.slow
def test_a_full_mlp_calibration_takes_under_ten_minutes(tmp_path):
    import time

    start = time.perf_counter()
    out = tmp_path / "cpu-mlp-fp32.json"
    assert main(["calibrate", "--model", "mlp", "--no-progress", "--out", str(out)]) == 0
    elapsed = time.perf_counter() - start
    p = load_profile(out)
    assert p.batch_sizes == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert elapsed < 600, f"full mlp calibration took {elapsed:.0f} s"
