"""`capsim profile show|list|gpus|estimate` through the real CLI entry point."""

from __future__ import annotations

import json

from sim.cli import main
from sim.profiles.profile import load_profile


def test_show_prints_the_table_and_writes_a_png(tmp_path, capsys):
    target = tmp_path / "plots" / "mlp.png"
    assert main(["profile", "show", "cpu-mlp-fp32", "--plot", str(target)]) == 0
    out = capsys.readouterr().out
    for column in ("batch", "p50 ms", "p99 ms", "throughput", "first call", "memory"):
        assert column in out
    assert "256" in out and "measured" in out
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_plots_next_to_a_user_file_by_default(tmp_path, capsys):
    from sim.profiles.profile import builtin_profile_path

    mine = tmp_path / "mine.json"
    mine.write_text(builtin_profile_path("cpu-mlp-fp32").read_text())
    assert main(["profile", "show", str(mine)]) == 0
    assert (tmp_path / "mine.png").is_file()


def test_show_of_a_builtin_plots_into_the_cwd(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "show", "h100-mlp-fp16"]) == 0
    assert (tmp_path / "h100-mlp-fp16.png").is_file()
    assert "ESTIMATE" in capsys.readouterr().out


def test_show_of_a_missing_profile_is_one_line_and_exit_2(capsys):
    assert main(["profile", "show", "no-such-profile", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capsim profile: error:") and "shipped profiles are" in err and "\n" not in err


def test_list_and_gpus(capsys):
    assert main(["profile", "list"]) == 0
    out = capsys.readouterr().out
    assert "cpu-mlp-fp32" in out and "h100-resnet50-fp16" in out
    assert main(["profile", "gpus"]) == 0
    out = capsys.readouterr().out
    assert "H100-SXM" in out and "T4" in out


def test_estimate_writes_a_loadable_estimate(tmp_path, capsys):
    out = tmp_path / "l4-mlp-fp16.json"
    assert main(["profile", "estimate", "--model", "mlp", "--gpu", "L4", "--batch-sizes", "1,8,64",
                 "--out", str(out)]) == 0
    p = load_profile(out)
    assert p.kind == "estimate" and p.batch_sizes == (1, 8, 64)
    assert json.loads(out.read_text())["estimate"]["shape_profile"] == "cpu-mlp-fp32"


def test_estimate_rejects_unknown_gpu_and_unsupported_dtype(tmp_path, capsys):
    assert main(["profile", "estimate", "--model", "mlp", "--gpu", "Z9", "--out", str(tmp_path / "x.json")]) == 2
    assert "gpu = 'Z9': the catalog has H100-SXM" in capsys.readouterr().err
    assert main(["profile", "estimate", "--model", "mlp", "--gpu", "T4", "--dtype", "bf16",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "dtype = 'bf16': T4 supports fp32, fp16" in capsys.readouterr().err
