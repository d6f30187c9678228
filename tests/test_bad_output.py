"""Hostile output paths and stale checkpoints through the CLI.

Every refusal is exit code 2 with one stderr line naming the flag, the path and what is allowed,
given before anything is simulated, with nothing written and what was there untouched. A write that
fails or is interrupted leaves the previous output as it was and no temporary file or folder behind.
A resumed sweep reuses a run only when every file the scenario reads is unchanged.
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pandas as pd
import pytest
from test_validate import deterministic_profile, fake_run

import sim
from sim.cli import main
from sim.experiments import sweep
from sim.profiles.profile import write_profile
from sim.results.files import writing_file, writing_folder

SMALL = {
    "name": "small",
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 200}},
    "service": {"type": "parametric", "base_s": 0.002, "per_item_s": 0.0005},
    "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.001},
    "fleet": {"replicas": 2},
    "slo": {"latency_s": 0.05, "percentile": 99},
    "run": {"duration_s": 3, "warmup_s": 0.5, "seed": 1},
}
SWEEP = ["--param", "fleet.replicas=1..3", "--workers", "1", "--no-progress"]
PLAN = ["--slo-p99-ms", "50", "--search", "grid", "--replicas", "1..2", "--batch-sizes", "1", "--queue-delays-ms", "0",
        "--workers", "1", "--no-progress"]


@pytest.fixture
def small(write_scenario) -> Path:
    return write_scenario(SMALL, "small.yaml")


@pytest.fixture
def no_simulation(monkeypatch):
    """Anything simulated fails the test: refusals come before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("simulated although the output was refused")

    monkeypatch.setattr(sim, "run", refuse)
    monkeypatch.setattr(sweep, "run_scenarios", refuse)


def refused(capsys, argv: list[str], *parts: str) -> str:
    """Run the command; assert exit 2 and one stderr line holding every part."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith(f"capsim {argv[0]}: error: "), captured.err
    assert all(p in lines[0] for p in parts), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hidden(folder: Path) -> list[str]:
    """Temporary siblings (``.NAME.<random>.tmp``/``.old``) left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- run folders: --force, atomic replacement
def test_a_finished_run_folder_is_not_overwritten_without_force(capsys, small, tmp_path, no_simulation):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    before = snapshot(out)
    refused(capsys, ["simulate", str(small), "--quiet", "--out", str(out)], "--out", str(out), "not empty", "--force")
    assert snapshot(out) == before and not hidden(tmp_path)


def test_force_replaces_the_whole_folder(capsys, small, tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", str(small), "--quiet", "--replications", "3", "--out", str(out)]) == 0
    assert (out / "replications.json").is_file()
    (out / "notes.txt").write_text("mine")
    assert main(["simulate", str(small), "--quiet", "--replications", "1", "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["batches.parquet", "replicas.parquet", "requests.parquet",
                                                     "scenario.yaml", "summary.json", "timeseries.parquet"]
    assert not hidden(tmp_path)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_an_interrupted_write_leaves_the_old_folder_and_no_temp_folder(capsys, small, tmp_path, monkeypatch,
                                                                        interrupt):
    out = tmp_path / "run"
    assert main(["simulate", str(small), "--quiet", "--replications", "3", "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()

    def fail(*args, **kwargs):  # after the Parquet files, before scenario.yaml
        raise interrupt

    monkeypatch.setattr("sim.results.output.dump_scenario", fail)
    code = main(["simulate", str(small), "--quiet", "--out", str(out), "--force"])
    err = capsys.readouterr().err.strip()
    if interrupt is KeyboardInterrupt:
        assert code == 130 and "interrupted" in err
    else:
        assert code == 2 and len(err.splitlines()) == 1 and "--out" in err and "No space left" in err, err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "small.yaml"]


def test_an_interrupted_first_write_leaves_no_folder(small, tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["simulate", str(small), "--quiet", "--out", str(tmp_path / "new" / "run")]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.yaml"]


def test_force_never_deletes_the_input_or_the_working_folder(capsys, small, tmp_path, monkeypatch, no_simulation):
    refused(capsys, ["simulate", str(small), "--quiet", "--out", str(tmp_path), "--force"],
            "--out", "holds the input", "small.yaml")
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["simulate", str(small), "--quiet", "--out", ".", "--force"], "--out = '.'", "current folder")
    assert small.is_file()


def test_capsim_run_replaces_its_own_default_folder(capsys, small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["run", "--scenario", str(small)]) == 0
    assert (tmp_path / "runs" / "default" / "summary.json").is_file()
    (tmp_path / "runs" / "default" / "notes.txt").write_text("mine")
    refused(capsys, ["run", "--scenario", str(small)], "--out = 'runs/default'", "--force")
    assert (tmp_path / "runs" / "default" / "notes.txt").read_text() == "mine"
    named = tmp_path / "named"
    assert main(["run", "--scenario", str(small), "--out", str(named)]) == 0
    refused(capsys, ["run", "--scenario", str(small), "--out", str(named)], "--out", "not empty", "--force")


# ---------------------------------------------------------------- paths checked before any work
def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("keep me")
    return path


@pytest.mark.parametrize("target, parts", [
    (lambda tmp: _file(tmp), ["is a file", "a folder is needed"]),
    (lambda tmp: _file(tmp) / "run", ["a-file is a file, not a folder"]),
    (lambda tmp: Path("/proc/capsim-run"), ["--out = '/proc/capsim-run'", "cannot write in /proc"]),
])
def test_simulate_out_that_cannot_be_a_folder(capsys, small, tmp_path, no_simulation, target, parts):
    out = target(tmp_path)
    refused(capsys, ["simulate", str(small), "--quiet", "--out", str(out)], "--out", *parts)
    left = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert left.pop("small.yaml") and left in ({}, {"a-file": "keep me"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(capsys, small, tmp_path, no_simulation):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(capsys, ["simulate", str(small), "--quiet", "--out", str(ro / "run")], "--out", "cannot write in")
    finally:
        ro.chmod(0o755)


def test_a_folder_that_refuses_writes(capsys, small, tmp_path, monkeypatch, no_simulation):
    """A read-only folder as root sees it too: creating anything in it fails (here: made to)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mkdir, touch = pathlib.Path.mkdir, pathlib.Path.touch

    def deny(original):
        def call(self, *args, **kwargs):
            if self.parent == ro:
                raise PermissionError(13, "Permission denied")
            return original(self, *args, **kwargs)
        return call

    monkeypatch.setattr(pathlib.Path, "mkdir", deny(mkdir))
    monkeypatch.setattr(pathlib.Path, "touch", deny(touch))
    refused(capsys, ["simulate", str(small), "--quiet", "--out", str(ro / "run")],
            "--out", "cannot write in", "Permission denied")
    refused(capsys, ["sweep", str(small), *SWEEP, "--out", str(ro / "s.parquet")], "--out", "Permission denied")
    refused(capsys, ["schema", "--out", str(ro / "schema.json")], "--out", "Permission denied")
    assert not any(ro.iterdir())


def test_validate_report_folder_needs_force_and_never_replaces_a_run(capsys, tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile)
    argv = ["validate", str(run_dir), "--profile", str(profile), "--replications", "1", "--no-plot"]
    assert main(argv) == 0  # default: RUN_DIR/validation
    report = snapshot(run_dir / "validation")
    refused(capsys, argv, "--out", "validation", "not empty", "--force")
    assert snapshot(run_dir / "validation") == report
    refused(capsys, [*argv, "--out", str(run_dir), "--force"], "--out", "holds the input")
    assert main([*argv, "--force"]) == 0 and not hidden(run_dir)
    assert sorted(snapshot(run_dir / "validation")) == sorted(report)


def test_bench_serve_checks_its_folder_before_serving(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")
    refused(capsys, ["bench-serve", "--model", "test-tiny", "--rate", "100", "--out", str(run_dir)],
            "--out", "not empty", "--force")
    refused(capsys, ["bench-serve", "--model", "test-tiny", "--rate", "100", "--out", str(_file(tmp_path))],
            "--out", "is a file")
    assert snapshot(run_dir) == {"run.json": b"{}"}


def test_sweep_out_must_be_a_file(capsys, small, tmp_path, no_simulation):
    folder = tmp_path / "results"
    folder.mkdir()
    refused(capsys, ["sweep", str(small), *SWEEP, "--out", str(folder)], "--out", "is a folder", "file path")
    refused(capsys, ["sweep", str(small), *SWEEP, "--out", "/proc/capsim.parquet"], "--out", "cannot write in /proc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "small.yaml"]


def test_sweep_checkpoint_must_be_a_checkpoint(capsys, small, tmp_path, no_simulation):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused(capsys, ["sweep", str(small), *SWEEP, "--out", str(tmp_path / "s.parquet"), "--checkpoint", str(other)],
            "--checkpoint", "not a sweep checkpoint")
    refused(capsys, ["sweep", str(small), *SWEEP, "--out", str(tmp_path / "s.parquet"), "--checkpoint", str(other),
                     "--force"], "--checkpoint", "not a sweep checkpoint")
    assert snapshot(other) == {"notes.txt": b"mine"} and not (tmp_path / "s.parquet").exists()


def test_plan_out_must_be_a_folder(capsys, small, tmp_path, no_simulation):
    path = _file(tmp_path)
    refused(capsys, ["plan", str(small), *PLAN, "--out", str(path)], "--out", "is a file", "a folder is needed")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused(capsys, ["plan", str(small), *PLAN, "--out", str(other)], "--out", "not empty", "--force")
    assert path.read_text() == "keep me" and snapshot(other) == {"notes.txt": b"mine"}


def test_single_file_outputs_refuse_folders(capsys, tmp_path, small):
    refused(capsys, ["schema", "--out", str(tmp_path)], "--out", "is a folder")
    refused(capsys, ["compare", str(small), "--out", str(tmp_path)], "--out", "is a folder")
    refused(capsys, ["profile", "estimate", "--model", "mlp", "--gpu", "L4", "--out", str(tmp_path)],
            "--out", "is a folder")


def test_single_files_are_replaced_atomically(tmp_path):
    target = tmp_path / "schema.json"
    target.write_text("old")
    assert main(["schema", "--out", str(target)]) == 0
    assert target.read_text().startswith("{") and sorted(p.name for p in tmp_path.iterdir()) == ["schema.json"]
    with pytest.raises(KeyboardInterrupt), writing_file(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text().startswith("{") and sorted(p.name for p in tmp_path.iterdir()) == ["schema.json"]


def test_folder_writer_keeps_working_state_and_puts_back_on_failure(tmp_path):
    out = tmp_path / "plan"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "row.json").write_text("{}")
    (out / "candidates.parquet").write_text("old")
    with pytest.raises(RuntimeError), writing_folder(out, replaceable=lambda p: True, keep=("checkpoint",)) as tmp:
        (tmp / "candidates.parquet").write_text("half")
        raise RuntimeError("boom")
    assert (out / "candidates.parquet").read_text() == "old" and (out / "checkpoint" / "row.json").is_file()
    with writing_folder(out, replaceable=lambda p: True, keep=("checkpoint",)) as tmp:
        (tmp / "candidates.parquet").write_text("new")
    assert (out / "candidates.parquet").read_text() == "new" and (out / "checkpoint" / "row.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


# ---------------------------------------------------------------- bounded grids
def test_a_grid_too_large_is_refused_before_it_is_built(capsys, small, tmp_path, no_simulation):
    line = refused(capsys, ["sweep", str(small), "--param", "fleet.replicas=1..5000", "--param",
                            "batching.max_batch_size=1..5000", "--out", str(tmp_path / "s.parquet")],
                   "--param", "25,000,000 points", f"at most {sweep.MAX_RUNS:,} runs")
    assert "25,000,000 runs" in line
    refused(capsys, ["sweep", str(small), "--param", "fleet.replicas=1..1000", "--replications", "101",
                     "--out", str(tmp_path / "s.parquet")], "1,000 points × 101 replications = 101,000 runs")
    refused(capsys, ["plan", str(small), *PLAN, "--replicas", "1..5000", "--batch-sizes", "1,2,4,8,16,32",
                     "--queue-delays-ms", "0,1,2,5", "--out", str(tmp_path / "p")], "plan's space", "120,000 points")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.yaml"]


# ---------------------------------------------------------------- resume never reuses stale results
def profile_doc(scale: float = 1.0) -> dict:
    return {"schema": "capsim.profile/1", "kind": "measured", "environment": {"device": "cpu"},
            "model": {"name": "fixed", "dtype": "fp32"}, "host_overhead_s": [],
            "batches": [{"batch_size": b, "latency_s": [scale * (0.001 + 0.00025 * b)] * 4} for b in (1, 2, 4, 8)]}


def test_resume_after_the_profile_changed_simulates_again(capsys, tmp_path, write_scenario):
    profile = write_profile(profile_doc(), tmp_path / "p.json")
    path = write_scenario({**SMALL, "service": {"type": "profile", "profile": "p.json"}}, "s.yaml")
    argv = ["sweep", str(path), *SWEEP, "--out", str(tmp_path / "s.parquet")]
    assert main(argv) == 0
    before = pd.read_parquet(tmp_path / "s.parquet")
    assert main(argv) == 0 and "simulated 0, reused 3" in capsys.readouterr().out
    write_profile(profile_doc(scale=5.0), profile)  # every latency × 5
    assert main(argv) == 0
    assert "simulated 3, reused 0" in capsys.readouterr().out
    after = pd.read_parquet(tmp_path / "s.parquet")
    assert (after["latency_p50_s"] > 3 * before["latency_p50_s"]).all()


def test_resume_after_the_trace_grew_simulates_again(tmp_path, write_scenario, write_trace):
    trace = write_trace([i * 0.01 for i in range(2_000)], "t.csv")
    scenario = sim.load_scenario(write_scenario(
        {**SMALL, "workload": {"arrivals": {"process": "trace", "path": "t.csv"}}, "run": {"duration_s": 20}}))
    params = {"fleet.replicas": [1, 2]}
    first = sweep.run_sweep(scenario, params, checkpoint_dir=tmp_path / "ck", progress=False)
    assert (first.rows["requests_total"] == 2_000).all()
    write_trace([i * 0.001 for i in range(20_000)], "t.csv")
    grown = sweep.run_sweep(scenario, params, checkpoint_dir=tmp_path / "ck", progress=False)
    assert (grown.computed, grown.reused) == (2, 0)
    assert (grown.rows["requests_total"] == 20_000).all()
    assert trace.is_file()


def test_each_file_is_hashed_once_per_sweep(tmp_path, write_scenario, write_trace, monkeypatch):
    write_profile(profile_doc(), tmp_path / "p.json")
    write_trace([i * 0.01 for i in range(300)], "t.csv")
    scenario = sim.load_scenario(write_scenario({**SMALL, "service": {"type": "profile", "profile": "p.json"},
                                                 "workload": {"arrivals": {"process": "trace", "path": "t.csv"}}}))
    hashed: list[Path] = []
    real = sweep.file_digest
    monkeypatch.setattr(sweep, "file_digest", lambda path: hashed.append(path) or real(path))
    tasks = sweep.make_tasks([({"fleet.replicas": n}, scenario) for n in (1, 2, 3)], seed=1, replications=4)
    assert len(tasks) == 12 and sorted(p.name for p in hashed) == ["p.json", "t.csv"]


def test_plan_rerun_resumes_in_its_own_folder_and_force_starts_over(capsys, small, tmp_path):
    out = tmp_path / "plan"
    assert main(["plan", str(small), *PLAN, "--out", str(out)]) == 0
    first = snapshot(out / "checkpoint")
    assert main(["plan", str(small), *PLAN, "--out", str(out)]) == 0
    assert "simulated 0 runs, reused 2" in capsys.readouterr().out
    assert snapshot(out / "checkpoint") == first and (out / "candidates.parquet").is_file()
    assert main(["plan", str(small), *PLAN, "--out", str(out), "--force"]) == 0
    assert "simulated 2 runs, reused 0" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan", "small.yaml"]


def test_sweep_force_simulates_everything_again(capsys, small, tmp_path):
    argv = ["sweep", str(small), *SWEEP, "--out", str(tmp_path / "s.parquet")]
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0
    assert "simulated 3, reused 0" in capsys.readouterr().out.splitlines()[-2]
    assert len(list((tmp_path / "s.checkpoint").iterdir())) == 3
