"""Changing a scenario by dotted keys: ``fleet.replicas``, ``autoscaler.metrics[0].target_utilization``.

One setter serves every way a key is given: ``--set`` (simulate), ``--vary`` (compare), ``--param``
(sweep, plan), the dashboard and the library (:func:`updated`). Values given as text are read as YAML
by the scenario's own bounded reader, so ``4``, ``0.5``, ``1e-3``, ``[8, 16]`` and ``null`` mean what
they mean in a scenario file, and a value that is not valid YAML is one clear line.
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Any

from sim.errors import ScenarioError, shown
from sim.scenario.load import scenario_from_dict, scenario_to_dict
from sim.scenario.model import Scenario
from sim.scenario.yaml_reader import read_yaml

MAX_RANGE_VALUES = 10_000
# Top-level sections a scenario may leave out entirely (they are not dumped when absent).
OPTIONAL_SECTIONS = frozenset(name for name, field in Scenario.model_fields.items()
                              if not field.is_required() and field.default is None)


# ---------------------------------------------------------------- values given as text
def parse_value(text: str, where: str) -> Any:
    """``text`` read as a YAML scalar or flow value; ``where`` names it in errors (``--set fleet.replicas``)."""
    return read_yaml(text, source=where, what="a value")


def parse_set(pair: str, flag: str = "--set") -> tuple[str, Any]:
    """``KEY=VALUE`` into (key, value)."""
    if "=" not in pair:
        raise ScenarioError(f"{flag} {shown(pair)}: expected KEY=VALUE, e.g. fleet.replicas=4")
    key, text = (s.strip() for s in pair.split("=", 1))
    if not key:
        raise ScenarioError(f"{flag} {shown(pair)}: a key is needed before '='")
    return key, parse_value(text, f"{flag} {key}")


def parse_sets(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """Several ``KEY=VALUE`` into one updates dict; a key given twice is an error."""
    updates: dict[str, Any] = {}
    for pair in pairs:
        key, value = parse_set(pair, flag)
        if key in updates:
            raise ScenarioError(f"{flag} {key}: given twice")
        updates[key] = value
    return updates


def parse_param(spec: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` or ``KEY=A..B`` / ``KEY=A..B:STEP`` (inclusive) into (key, values)."""
    if "=" not in spec:
        raise ScenarioError(f"--param {shown(spec)}: expected KEY=VALUES, e.g. fleet.replicas=2..8 or "
                            "batching.max_batch_size=1,8,32")
    key, text = (s.strip() for s in spec.split("=", 1))
    if not key or not text:
        raise ScenarioError(f"--param {shown(spec)}: both a key and values are needed")
    if ".." in text and "," not in text:
        return key, _parse_range(spec, text)
    values = [parse_value(v, f"--param {key}") for v in text.split(",") if v.strip()]
    if not values:
        raise ScenarioError(f"--param {shown(spec)}: no values")
    return key, values


def _parse_range(spec: str, text: str) -> list:
    body, _, step_text = text.partition(":")
    try:
        lo, hi = (parse_value(x, "--param") for x in body.split("..", 1))
        step = parse_value(step_text, "--param") if step_text else 1
    except ScenarioError:
        lo = hi = step = None
    numbers = (lo, hi, step)
    if (any(isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) for x in numbers)
            or step <= 0):
        raise ScenarioError(f"--param {shown(spec)}: a range is A..B or A..B:STEP with numbers and STEP > 0, "
                            "e.g. fleet.replicas=2..8 or batching.max_queue_delay_s=0..0.004:0.001")
    if hi < lo:
        raise ScenarioError(f"--param {shown(spec)}: empty range ({hi} < {lo})")
    count = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if count > MAX_RANGE_VALUES:
        raise ScenarioError(f"--param {shown(spec)}: {count:,} values; at most {MAX_RANGE_VALUES:,} per key")
    if all(isinstance(x, int) for x in numbers):
        return list(range(lo, hi + 1, step))
    return [round(lo + i * step, 12) for i in range(count)]


# ---------------------------------------------------------------- setting keys
def _parts(key: str, flag: str) -> list[str | int]:
    """``a.b[0].c`` into ``["a", "b", 0, "c"]``."""
    parts: list[str | int] = []
    for piece in key.split("."):
        name, *indices = piece.split("[")
        if not name:
            raise ScenarioError(f"{flag} {shown(key)}: empty name in the dotted key")
        parts.append(name)
        for index in indices:
            if not index.endswith("]") or not index[:-1].isdigit():
                raise ScenarioError(f"{flag} {shown(key)}: bad index [{index}; write e.g. "
                                    "autoscaler.metrics[0].target_utilization")
            parts.append(int(index[:-1]))
    return parts


def set_key(data: dict, key: str, value: Any, flag: str = "--set", sections: frozenset[str] = frozenset()) -> None:
    """Set dotted ``key`` in plain scenario data; a key the scenario does not have is an error with a
    did-you-mean (a section's unset optional field counts as present: its default is dumped). ``sections``
    are top-level sections the scenario may have but does not (``cache``, ``llm``): setting a key in one
    starts it."""
    given = f"{flag} {key} = {shown(value)}"
    node: Any = data
    parts = _parts(key, flag)
    if parts[0] in sections and parts[0] not in data and len(parts) > 1:
        data[parts[0]] = {}
    for depth, part in enumerate(parts):
        where = ".".join(str(p) for p in parts[:depth]).replace(".[", "[") or "the scenario"
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ScenarioError(f"{given}: {where} has no item [{part}]")
        elif depth == len(parts) - 1 and isinstance(node, dict) and node is data and part in sections:
            pass  # a whole optional section given at once
        elif (depth == 1 and parts[0] in sections and isinstance(node, dict)
              and data.get(parts[0]) is node and not node.get(part)):
            pass  # a key of an optional section just started; the section's own checks judge it
        elif not isinstance(node, dict) or part not in node:
            allowed = sorted({*node, *(sections if node is data else ())}) if isinstance(node, dict) else []
            hint = difflib.get_close_matches(part, allowed, n=1, cutoff=0.6)
            text = f"{given}: unknown key {part!r} in {where}"
            if hint:
                text += f"; did you mean {hint[0]!r}?"
            raise ScenarioError(text + (f" (keys there: {', '.join(allowed)})" if allowed else ""))
        if depth == len(parts) - 1:
            node[part] = value
            return
        node = node[part]


def updated(scenario: Scenario, updates: dict[str, Any], flag: str = "--set") -> Scenario:
    """A validated copy of ``scenario`` with dotted keys replaced, e.g. ``{"fleet.replicas": 4}``.

    ``flag`` names where the updates came from in errors (``--set``, ``--param``, ``--vary``)."""
    data = copy.deepcopy(scenario_to_dict(scenario))
    for key, value in updates.items():
        set_key(data, key, value, flag, OPTIONAL_SECTIONS)
    try:
        return scenario_from_dict(data, base_dir=scenario.base_dir, source="scenario")
    except ScenarioError as exc:
        problem = str(exc).removeprefix("scenario: ")
        if any(problem.startswith(f"{key} = ") for key in updates):  # it names the key and value already
            raise ScenarioError(f"{flag} {problem}") from None
        given = ", ".join(f"{k} = {shown(v)}" for k, v in updates.items())
        raise ScenarioError(f"{flag} {given}: {problem}") from None


def with_run_flags(scenario: Scenario, seed: int | None = None, replications: int | None = None) -> Scenario:
    """``--seed`` and ``--replications`` checked as the scenario's ``run.seed`` / ``run.replications`` are."""
    for flag, key, value in (("--seed", "run.seed", seed), ("--replications", "run.replications", replications)):
        if value is not None:
            try:
                scenario = updated(scenario, {key: value}, flag)
            except ScenarioError as exc:
                allowed = str(exc).rsplit(": ", 1)[-1]
                raise ScenarioError(f"{flag} = {shown(value)}: {allowed} (it sets {key})") from None
    return scenario
