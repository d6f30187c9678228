"""Hostile arrival traces: ``workload.arrivals.path`` may point at any readable file. The one-line error
names the file, the column and the row, but never echoes the file beyond one value cut short, and a
giant file is refused unread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.errors import TraceError
from sim.workload.arrivals import read_trace

SECRET = "s3cr3t-T0KEN"


def simulate_error(capsys, write_scenario, trace: Path) -> str:
    scenario = write_scenario({"workload": {"arrivals": {"process": "trace", "path": str(trace)}},
                               "service": {"type": "parametric", "base_s": 0.001}, "run": {"duration_s": 1.0}})
    assert main(["simulate", str(scenario), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("capsim simulate: error: workload.arrivals.path = "), err
    assert str(trace) in err and len(err) < 400, err
    return err.replace(repr(str(trace)), "FILE")  # what is left came from the file


CONTENTS = {
    "passwd": f"root:x:0:0:{SECRET}:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    "environment": f"PATH=/usr/bin\0API_KEY={SECRET}\0HOME=/root\0",
    "many columns": ",".join(f"c{i}{SECRET}" for i in range(50)) + "\n" + ",".join("1" * 50) + "\n",
    "a secret header cell": f"time,{SECRET * 20}\n0.1,0.2\n",
}


@pytest.mark.parametrize("name", CONTENTS)
def test_a_file_that_is_no_trace_is_not_echoed(capsys, write_scenario, tmp_path, name):
    path = tmp_path / "not-a-trace.csv"
    path.write_text(CONTENTS[name])
    err = simulate_error(capsys, write_scenario, path)
    assert SECRET not in err and "root" not in err and "API_KEY" not in err


def test_a_binary_file_is_not_echoed(capsys, write_scenario, tmp_path):
    path = tmp_path / "random.csv"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    err = simulate_error(capsys, write_scenario, path)
    assert "cannot read as CSV" in err and "\\x" not in err


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="no /etc/passwd here")
def test_etc_passwd_is_not_echoed(capsys, write_scenario):
    err = simulate_error(capsys, write_scenario, Path("/etc/passwd"))
    assert "root:" not in err and "/bin/" not in err


def test_a_long_bad_value_is_cut_short_and_named_by_column_and_row(capsys, write_scenario, tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("arrival_s\n0.1\n" + "A" * 10_000 + "\n")
    err = simulate_error(capsys, write_scenario, path)
    assert "arrival_s in row 2 is 'AAAA" in err and "...; times must be finite numbers" in err


def test_a_giant_file_is_refused_unread(capsys, write_scenario, tmp_path):
    path = tmp_path / "giant.csv"
    with path.open("wb") as f:
        f.truncate(256 * 2**20 + 1)  # sparse: no disk used
    assert "larger than 256 MiB" in simulate_error(capsys, write_scenario, path)


def test_the_bound_applies_to_what_is_read_not_only_to_the_size_on_disk(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s\n" + "0.5\n" * 1000)
    assert read_trace(path, max_bytes=10_000).size == 1000
    with pytest.raises(TraceError, match=r"t.csv: larger than 0.00\d+ MiB"):
        read_trace(path, max_bytes=1000)


def test_header_names_are_still_listed_for_an_ordinary_table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time,size\n0.1,3\n")
    with pytest.raises(TraceError, match=r"no column 'arrival_s' \(columns: time, size\); set workload"):
        read_trace(path)
