"""`capsim schema`: the scenario JSON Schema (every key, its type, unit and help text)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.set_defaults(func=main)


def scenario_schema() -> dict:
    from sim.scenario.model import Scenario

    schema = Scenario.model_json_schema()
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "capsim scenario"
    return schema


def main(args) -> int:
    import json

    from sim.results.files import check_file, write_text

    if args.out:
        check_file(args.out)
    text = json.dumps(scenario_schema(), indent=2)
    if args.out:
        write_text(args.out, text + "\n")
    else:
        print(text)
    return 0
