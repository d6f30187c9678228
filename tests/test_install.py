"""capsim installed from its wheel, outside any checkout: the shipped examples, profiles and dashboard
must come from site-packages, never from the source tree.

The wheel is built from a copy of the checkout (so no ``build/`` or ``*.egg-info`` lands in it) and
installed with ``--no-deps`` into a fresh venv; that venv borrows the dev venv's third-party packages
(numpy, pandas, streamlit, ...) through a plain path line in a ``.pth`` file, which adds the directory
without running the dev venv's own ``.pth`` files, so the checkout's editable install stays inactive.
Every command runs from an empty folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the build reads; everything else in the checkout stays behind.
BUILD_INPUTS = ("pyproject.toml", "README.md", "MANIFEST.in", "sim", "calibration", "dashboard", "examples")
COMMAND_TIMEOUT_S = 300  # generous: the machine may be busy
HEALTH_TIMEOUT_S = 90


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def capsim(self) -> Path:
        return self.venv / "bin" / "capsim"


def _run(cmd: list, cwd: Path, timeout_s: float = COMMAND_TIMEOUT_S, env: dict | None = None):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=ignore)  # sim/data/examples stays a link
        elif src.exists():
            shutil.copy2(src, dest / name)


def _installed_env(venv: Path) -> dict:
    """The environment of a shell that activated the temporary venv: nothing from the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", COLUMNS="200",
               PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source, wheels, venv = root / "source", root / "wheels", root / "venv"
    source.mkdir()
    _copy_sources(source)
    build_dir_before = (REPO / "build").exists()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", wheels, source], cwd=root)
    assert (REPO / "build").exists() == build_dir_before, "building the wheel wrote build/ into the checkout"
    (wheel,) = wheels.glob("capsim-*.whl")

    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
          "--no-index", "--disable-pip-version-check", "-q", wheel], cwd=root)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root).stdout.strip())
    dev_dirs = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))  # ordered, no repeats
    (site / "_capsim_dev_deps.pth").write_text("".join(f"{d}\n" for d in dev_dirs))
    return Installed(wheel=wheel, venv=venv)


def capsim(installed: Installed, cwd: Path, *args: str, timeout_s: float = COMMAND_TIMEOUT_S):
    assert not any(cwd.iterdir()), "commands start in an empty folder"
    return _run([installed.capsim, *args], cwd=cwd, timeout_s=timeout_s, env=_installed_env(installed.venv))


def test_wheel_carries_the_data_the_code_reads(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())

    def shipped(folder: Path, pattern: str, prefix: str) -> set[str]:
        return {f"{prefix}/{p.relative_to(folder).as_posix()}" for p in folder.rglob(pattern)
                if p.is_file() and "__pycache__" not in p.parts}

    examples = shipped(REPO / "examples", "*", "sim/data/examples")
    assert {"sim/data/examples/fraud_mlp.yaml", "sim/data/examples/k8s/hpa.yaml"} <= examples
    expected = (examples
                | shipped(REPO / "sim" / "data" / "profiles", "*.json", "sim/data/profiles")
                | {"sim/data/gpus.yaml", "sim/data/profile.schema.json", "dashboard/app.py"}
                | shipped(REPO / "dashboard", "*.py", "dashboard")
                | shipped(REPO / "calibration", "*.py", "calibration")
                | shipped(REPO / "sim", "*.py", "sim"))
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"


def test_imports_come_from_the_installed_package(installed, tmp_path):
    code = ("import json, sim, dashboard, calibration\n"
            "from sim.scenario.examples import EXAMPLES_DIR\n"
            "from sim.profiles.profile import BUILTIN_DIR\n"
            "from sim.hardware.gpus import GPU_CATALOG_PATH\n"
            "print(json.dumps([sim.__file__, dashboard.__file__, calibration.__file__, str(EXAMPLES_DIR),"
            " str(BUILTIN_DIR), str(GPU_CATALOG_PATH)]))")
    done = _run([installed.python, "-c", code], cwd=tmp_path, env=_installed_env(installed.venv))
    venv = installed.venv.resolve()
    for path in map(Path, json.loads(done.stdout)):
        assert path.resolve().is_relative_to(venv), f"{path} is not inside the installed venv {venv}"
        assert not path.resolve().is_relative_to(REPO), f"{path} comes from the checkout"
        assert path.exists(), path


def test_examples_are_listed(installed, tmp_path):
    out = capsim(installed, tmp_path, "examples").stdout
    for name in ("fraud_mlp", "image_classifier", "text_encoder", "autoscaling/spike_cold_start"):
        assert name in out
    assert "k8s/" not in out  # manifests that examples point at are not scenarios


def test_simulate_an_example_by_name(installed, tmp_path):
    capsim(installed, tmp_path, "simulate", "fraud_mlp", "--out", "d")
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["goodput_rps"] > 0


def test_example_pointing_at_shipped_manifests_runs(installed, tmp_path):
    capsim(installed, tmp_path, "simulate", "autoscaling/from_manifest", "--set", "run.duration_s=30",
           "--out", "d")
    assert (tmp_path / "d" / "summary.json").is_file()


def test_shipped_profiles_resolve(installed, tmp_path):
    listing = capsim(installed, tmp_path, "profile", "list").stdout
    assert "cpu-mlp-fp32" in listing and "h100-resnet50-fp16" in listing
    shown = capsim(installed, tmp_path, "profile", "show", "cpu-mlp-fp32", "--no-plot").stdout
    assert "p99 ms" in shown
    assert not any(tmp_path.iterdir()), "--no-plot writes nothing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
            return response.read().decode().strip()
    except OSError:
        return None


def test_dashboard_starts_and_stops(installed, tmp_path):
    pytest.importorskip("streamlit")
    port = _free_port()
    log_path = tmp_path.parent / f"{tmp_path.name}-dashboard.log"  # the working folder stays empty
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(installed.capsim), "dashboard", "--headless", "--port", str(port),
                                 "--address", "127.0.0.1"], cwd=tmp_path, env=_installed_env(installed.venv),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while (answer := _health(port)) != "ok" and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert answer == "ok", f"no healthy dashboard on port {port}:\n{log_path.read_text()}"
        proc.terminate()  # `capsim dashboard` became the server: stopping it stops streamlit
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _health(port) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _health(port) is None, "the server outlived `capsim dashboard`"
    finally:  # whatever happened, nothing this test started outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_dashboard_pages_render_from_site_packages(installed, tmp_path):
    pytest.importorskip("streamlit")
    code = ("from streamlit.testing.v1 import AppTest\n"
            "from sim.cli.dashboard import app_path\n"
            "at = AppTest.from_file(str(app_path()), default_timeout=240).run()\n"
            "assert not at.exception, at.exception\n"
            "for page in ('batching', 'autoscaling', 'calibration', 'planner'):\n"
            "    view = AppTest.from_string(f'from dashboard.views import {page}\\n{page}.render()', default_timeout=240)\n"
            "    view.run()\n"
            "    assert not view.exception, (page, view.exception)\n"
            "print(app_path())")
    done = _run([installed.python, "-c", code], cwd=tmp_path, timeout_s=600, env=_installed_env(installed.venv))
    assert Path(done.stdout.strip().splitlines()[-1]).resolve().is_relative_to(installed.venv.resolve())
