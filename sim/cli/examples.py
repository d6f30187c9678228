"""`capsim examples`: the example scenarios shipped with capsim, runnable by name."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("examples", help="list the shipped example scenarios and training plans (run one: capsim "
                       "simulate NAME, capsim train-plan NAME)",
                       description="List the example scenarios shipped with capsim. Any command taking a "
                                   "scenario file also takes an example's name, e.g. capsim simulate fraud_mlp.")
    p.add_argument("--show", metavar="NAME", help="print one example's YAML")
    p.set_defaults(func=main)


def main(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim.scenario.examples import (
        EXAMPLES_DIR,
        describe_example,
        example_kind,
        list_examples,
        scenario_path,
    )

    if args.show:
        print(scenario_path(args.show).read_text(), end="")
        return 0
    table = Table(title=f"example scenarios ({EXAMPLES_DIR})", header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("what it models")
    for name, path in list_examples().items():
        table.add_row(name, example_kind(path), describe_example(path))
    Console().print(table)
    print("run one: capsim simulate NAME [--out DIR] (serving), capsim train-plan NAME (training); "
          "see it: capsim examples --show NAME")
    return 0
