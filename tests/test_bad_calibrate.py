"""`capsim calibrate --model module:factory` with hostile user code: whatever the module raises (at
import, in the factory, in make_input, in the forward pass, out of memory) is one stderr line with the
code's own message, exit status 2, and no profile written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sim.cli import main

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--samples", "2", "--warmup", "0", "--replay-batches", "0", "--skip-load", "--batch-sizes", "1"]

MODEL = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        {forward}
        return self.linear(x)

def make():
    {factory}
    return Net(), lambda b: {make_input}
"""


def module(forward: str = "pass", factory: str = "pass", make_input: str = "torch.randn(b, 4)") -> str:
    return MODEL.format(forward=forward, factory=factory, make_input=make_input)


# name -> (module source, what the one line must contain after "--model = '<name>:make': ")
CASES = {
    "factory_raises": (module(factory="raise ValueError('bad width')"), "the factory raised ValueError: bad width"),
    "not_callable": ("make = 42\n", "make is 42, not a function returning (torch.nn.Module, make_input"),
    "import_raises": ("1 / 0\n", "importing 'import_raises' raised ZeroDivisionError: division by zero"),
    "syntax_error": ("def make(:\n    pass\n", "importing 'syntax_error' raised SyntaxError: "),
    "missing_dependency": ("import no_such_dependency_xyz\n",
                           "importing 'missing_dependency' raised ModuleNotFoundError: No module named "
                           "'no_such_dependency_xyz'"),
    "factory_exits": (module(factory="raise SystemExit(3)"), "the factory raised SystemExit: 3"),
    "factory_memory": (module(factory="raise MemoryError()"), "the factory raised MemoryError"),
    "factory_allocates": (module(factory="torch.empty(2**50)"), "the factory raised RuntimeError: "),
    "factory_returns_none": ("def make():\n    return None\n",
                             "the factory must return (torch.nn.Module, make_input(batch_size)), got NoneType None"),
    "forward_value_error": (module(forward="raise ValueError('shape (3, 5) is not (1, 4)')"),
                            "the model failed at batch size 1 on cpu in float32: ValueError: shape (3, 5) is not "
                            "(1, 4)"),
    "forward_out_of_memory": (module(forward="raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate "
                                             "80.00 GiB')"),
                              "the model failed at batch size 1 on cpu in float32: OutOfMemoryError: CUDA out of "
                              "memory. Tried to allocate 80.00 GiB; out of memory: try smaller --batch-sizes"),
    "forward_long_message": (module(forward="raise ValueError('x' * 5000 + '\\nsecond line')"),
                             "the model failed at batch size 1 on cpu in float32: ValueError: xxxx"),
    "input_not_a_tensor": (module(make_input="[1, 2, 3]"),
                           "make_input(1) returned list [1, 2, 3]; it must return a tensor or a tuple of tensors"),
    "input_a_string": (module(make_input="'abc'"), "make_input(1) returned str 'abc'"),
    "input_raises": (module(make_input="{}['missing']"), "make_input(1) raised KeyError: 'missing'"),
    "input_allocates": (module(make_input="torch.empty(2**50)"), "make_input(1) raised RuntimeError: "),
}


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("capsim calibrate: error: --model = "), err
    assert len(lines[0]) < 400, err
    return lines[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_user_code_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, name):
    source, says = CASES[name]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out.json"
    assert main(["calibrate", "--model", f"{name}:make", *FAST, "--no-progress", "--out", str(out)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"--model = '{name}:make': {says}" in line, line
    assert not out.exists()


def test_an_allocation_failure_says_out_of_memory(tmp_path, monkeypatch, capsys):
    (tmp_path / "huge_input.py").write_text(textwrap.dedent(module(make_input="torch.empty(2**50)")))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["calibrate", "--model", "huge_input:make", *FAST, "--no-progress", "--out", str(tmp_path / "x")]) == 2
    assert "allocate" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../evil:make", "mod:make:extra", "mod.:make", "mod:", ":make", "mod:2x"])
def test_a_malformed_module_reference_is_refused_before_importing(capsys, tmp_path, name):
    assert main(["calibrate", "--model", name, *FAST, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown model" in err and "module:factory" in err


@pytest.mark.parametrize(("name", "progress"), [("factory_raises", False), ("forward_out_of_memory", False),
                                                ("input_not_a_tensor", True)])
def test_through_the_installed_command(tmp_path, name, progress):
    """The real entry point, as a user runs it: exit status 2, the error as the last stderr line."""
    source, says = CASES[name]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "calibrate", "--model", f"{name}:make", *FAST,
                           *([] if progress else ["--no-progress"]), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # tqdm's bar, when shown, ends in its own line before the error
    assert f"--model = '{name}:make': {says}" in error_line(proc.stderr.strip().splitlines()[-1])
    assert not out.exists() and proc.stdout == ""
