"""The `capsim` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module adds
its parser and sets ``func`` (taking the parsed args, returning an exit code). Command modules
must stay light at import time: never import torch, streamlit or ray at module level.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sim.errors import CapsimError

# Order is the order shown in --help.
COMMAND_MODULES = (
    "sim.commands.run_cmd",
    "sim.commands.simulate_cmd",
    "sim.commands.schema_cmd",
    "sim.commands.compare_cmd",
    "sim.commands.plot_cmd",
    "sim.commands.profile_cmd",
    "calibration.cli",
    "sim.commands.plan_cmd",
    "sim.commands.sweep_cmd",
    "calibration.bench_serve",
    "sim.commands.validate_cmd",
    "sim.commands.dashboard_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsim",
        description="Capacity planning for ML model serving by simulation grounded in measurement.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CapsimError as exc:
        print(f"capsim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"capsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
