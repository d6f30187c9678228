"""Reading scenarios from YAML and turning validation failures into one clear line.

A message names the key (dotted path), the value given and what is allowed; an unknown key comes
with a did-you-mean. Nothing the user wrote is silently dropped: unknown keys are errors.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sim.errors import ScenarioError, shown
from sim.scenario.examples import scenario_path
from sim.scenario.llm import STEP_TIME_TYPES, TOKEN_DISTRIBUTIONS
from sim.scenario.manifests import deployment_overrides, hpa_from_manifest
from sim.scenario.model import ARRIVAL_PROCESSES, SERVICE_TYPES, Scenario
from sim.scenario.scaling import AUTOSCALER_TYPES
from sim.scenario.yaml_reader import read_text_file, read_yaml

_UNION_TAGS = {"arrivals": set(ARRIVAL_PROCESSES), "service": set(SERVICE_TYPES),
               "autoscaler": set(AUTOSCALER_TYPES), "input_tokens": set(TOKEN_DISTRIBUTIONS),
               "output_tokens": set(TOKEN_DISTRIBUTIONS), "step_time": set(STEP_TIME_TYPES)}
_TAG_FIELDS = {"arrivals": "process", "input_tokens": "distribution", "output_tokens": "distribution"}  # else type
# Keys of one serving mode, left out of a dump when unused: a request-level scenario dumps as it did
# before the token-level mode existed (run folders, sweep checkpoint keys).
_MODE_KEYS = (("service",), ("llm",), ("workload", "input_tokens"), ("workload", "output_tokens"), ("offline",),
              ("streaming",), ("workload",),  # the architectures' sections (sim/scenario/architectures.py)
              ("cache",), ("edge",), ("failures",), ("overlap",))  # online architectures (sim/scenario/online.py)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file, or a shipped example by name (``fraud_mlp``)."""
    path = scenario_path(path)
    return scenario_from_yaml_text(read_text_file(path), base_dir=path.resolve().parent, source=str(path))


def scenario_from_yaml_text(text: str, base_dir: str | Path = ".", source: str = "scenario") -> Scenario:
    """Parse and validate scenario YAML given as text (a file's, an upload's); errors are one line."""
    data = read_yaml(text, source)
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping of sections, got {type(data).__name__}")
    return scenario_from_dict(data, base_dir=base_dir, source=source)


def scenario_from_dict(data: dict[str, Any], base_dir: str | Path = ".", source: str = "scenario") -> Scenario:
    """Validate a plain dict (as YAML gives it) into a Scenario."""
    if data.get("kind") == "training":
        raise ScenarioError(f"{source}: kind = 'training': a training plan, not a serving scenario; run it with "
                            "capsim train-plan")
    data = dict(data)
    data["base_dir"] = str(base_dir)
    data = _expand_manifests(data, base_dir)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {describe(exc, Scenario)}") from None


def _expand_manifests(data: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """``autoscaler: {from_manifest: hpa.yaml[, deployment: deploy.yaml]}`` → a plain hpa section."""
    auto = data.get("autoscaler")
    if not isinstance(auto, dict) or "from_manifest" not in auto or auto.get("type") not in (None, "hpa"):
        return data

    auto = dict(auto)
    deployment = auto.pop("deployment", None)
    if auto.get("type") == "hpa" and isinstance(auto.get("metrics"), list):
        return data  # already expanded (a dumped scenario keeps from_manifest as provenance)
    auto.pop("type", None)
    data["autoscaler"] = hpa_from_manifest(auto, base_dir)
    if deployment:
        replicas, cold = deployment_overrides(deployment, base_dir)
        if replicas is not None:
            data["autoscaler"].setdefault("initial_replicas", replicas)
        data["cold_start"] = {**cold, **(data.get("cold_start") or {})}
    return data


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario as YAML-ready plain data (defaults included, base_dir left out)."""
    data = scenario.model_dump(mode="json", exclude={"base_dir"})
    for *parents, key in _MODE_KEYS:
        section = data
        for name in parents:
            section = section.get(name) or {}  # an offline job has no workload
        if section.get(key, 0) is None:
            del section[key]
    return data


def dump_scenario(scenario: Scenario) -> str:
    return yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False)


# ---------------------------------------------------------------- error text
def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first error as one line, with a count of the rest."""
    errors = exc.errors(include_url=False)
    first = _one(errors[0], model)
    if len(errors) > 1:
        others = ", ".join(_key(e["loc"]) or "(top level)" for e in errors[1:4])
        first += f" (and {len(errors) - 1} more: {others})"
    return first


def _key(loc: tuple) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        prev = loc[i - 1] if i else None
        if isinstance(item, str) and prev in _UNION_TAGS and item in _UNION_TAGS[prev]:
            continue  # pydantic's discriminated-union branch name, not a user key
        if isinstance(item, str) and item.startswith("function-"):
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else item)
    return ".".join(parts).replace(".[", "[")


def _one(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc, kind, value = err["loc"], err["type"], err.get("input")
    key = _key(loc)
    if kind == "extra_forbidden":
        section = key.rsplit(".", 1)[0] if "." in key else ""
        name = key.rsplit(".", 1)[-1]
        allowed = _allowed_keys(model, loc[:-1])
        hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        where = f" in {section}" if section else ""
        text = f"unknown key {name!r}{where}"
        if hint:
            text += f"; did you mean {hint[0]!r}?"
        return text + (f" Allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "union_tag_invalid":
        tags = sorted(_UNION_TAGS.get(loc[-1], ()))
        tag = err.get("ctx", {}).get("tag", value)
        hint = difflib.get_close_matches(str(tag), tags, n=1, cutoff=0.6)
        field = _TAG_FIELDS.get(loc[-1], "type")
        text = f"{key}.{field} = {tag!r}: must be one of {', '.join(tags)}"
        return text + (f"; did you mean {hint[0]!r}?" if hint else "")
    if kind == "union_tag_not_found":
        field = _TAG_FIELDS.get(loc[-1], "type")
        return f"{key}: missing key {field!r} (one of {', '.join(sorted(_UNION_TAGS.get(loc[-1], ())))})"
    if kind == "missing":
        return f"{key}: missing required key"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        msg = "must be " + msg.removeprefix("Input should be ")
    else:
        msg = msg.replace("Input should be", "must be").replace("should have", "must have")
    if kind.startswith(("model_", "value_error")) and isinstance(value, dict):
        return f"{key}: {msg}" if key else msg  # a scenario-wide check names its keys itself
    return f"{key} = {shown(value)}: {msg}"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model at ``loc``, following lists and discriminated unions."""
    current: Any = model
    for item in loc:
        if isinstance(item, int):
            continue  # a list index: the element type is found through the list's args
        current = _step(current, item)
        if current is None:
            return []
    members = _union_members(current)
    return [n for n in members[0].model_fields if n != "base_dir"] if len(members) == 1 else []


def _step(annotation: Any, item: str) -> Any:
    members = _union_members(annotation)
    for m in members:
        if item in m.model_fields:
            return m.model_fields[item].annotation
    for m in members:  # a discriminated-union branch named by its tag
        tag = m.model_fields.get("process") or m.model_fields.get("type")
        if tag is not None and item in typing.get_args(tag.annotation):
            return m
    return None


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """Every model type inside an annotation (through Annotated, Union, list and Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    members: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        members.extend(_union_members(arg))
    return members
