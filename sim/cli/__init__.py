"""The `capsim` command line: every command, listed here once.

Each command module has ``register(subparsers)``, which adds its parser and sets ``func`` (taking the
parsed arguments, returning an exit code), and does the parsing and checking of its arguments; the
work lives in the library (``sim``, ``calibration``, ``dashboard``). Command modules stay light at
import time: torch, streamlit and ray are imported only when a command that needs them runs.
"""

from __future__ import annotations

import argparse
import sys

from sim.cli import (
    bench_serve,
    calibrate,
    compare,
    dashboard,
    examples,
    plan,
    plan_offline,
    plot,
    profile,
    run,
    schema,
    simulate,
    sweep,
    train_plan,
    validate,
)
from sim.errors import CapsimError

# The order shown in --help.
COMMANDS = (run, simulate, examples, schema, compare, plot, profile, calibrate, plan, plan_offline, sweep, bench_serve,
            validate, train_plan, dashboard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsim",
        description="Capacity planning for ML model serving and training by simulation grounded in measurement.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for the records that keep it
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
