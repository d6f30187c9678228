"""The scenario model: defaults, immutability, updates, round trips, and its documentation."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pydantic
import pytest
import yaml

import sim
from sim.scenario.keys import updated
from sim.scenario.load import _union_members, dump_scenario
from sim.scenario.model import Scenario, mean_rate_rps

DOC = Path(__file__).parent.parent / "docs" / "scenario.md"
MINIMAL = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 100}},
           "service": {"type": "parametric", "base_s": 0.001}, "run": {"duration_s": 10}}


def test_defaults():
    sc = sim.scenario_from_dict(MINIMAL)
    assert sc.batching.max_batch_size == 1 and sc.batching.max_queue_delay_s == 0
    assert sc.batching.max_queue_size == 0 and sc.batching.timeout_s is None
    assert sc.fleet.replicas == 1 and sc.fleet.router == "round_robin" and sc.fleet.instances_per_replica == 1
    assert sc.service.distribution == "deterministic" and sc.service.per_item_s == 0
    assert sc.slo.percentile == 99 and sc.run.seed == 0 and sc.run.replications == 1


def test_frozen():
    sc = sim.scenario_from_dict(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        sc.fleet.replicas = 4


def test_with_updates_validates_and_copies():
    sc = sim.scenario_from_dict(MINIMAL)
    bigger = updated(sc, {"fleet.replicas": 4, "batching.max_batch_size": 8})
    assert (bigger.fleet.replicas, bigger.batching.max_batch_size) == (4, 8)
    assert sc.fleet.replicas == 1
    with pytest.raises(sim.ScenarioError, match="batching.max_batch_size = 0"):
        updated(sc, {"batching.max_batch_size": 0})


def test_dump_and_load_round_trip(tmp_path):
    sc = sim.scenario_from_dict({**MINIMAL, "batching": {"max_batch_size": 8, "preferred_batch_sizes": [4, 8]},
                                 "fleet": {"replicas": 3, "router": "power_of_two"}})
    path = tmp_path / "s.yaml"
    path.write_text(dump_scenario(sc))
    again = sim.load_scenario(path)
    assert again.model_dump(exclude={"base_dir"}) == sc.model_dump(exclude={"base_dir"})


def test_errors_name_list_items():
    bad = {**MINIMAL, "workload": {"arrivals": {"process": "steps", "steps": [
        {"at_s": 0, "rate_rps": 10}, {"at_s": 5, "rate_rps": 3, "rps": 3}]}}}
    with pytest.raises(sim.ScenarioError, match=r"unknown key 'rps' in workload.arrivals.steps\[1\]"):
        sim.scenario_from_dict(bad)


@pytest.mark.parametrize(("arrivals", "rate"), [
    ({"process": "poisson", "rate_rps": 7}, 7),
    ({"process": "gamma", "rate_rps": 7, "cv": 2}, 7),
    ({"process": "mmpp", "rate_on_rps": 30, "rate_off_rps": 10, "mean_on_s": 1, "mean_off_s": 3}, 15),
    ({"process": "diurnal", "mean_rps": 40, "amplitude": 0.5}, 40),
])
def test_mean_rate(arrivals, rate):
    sc = sim.scenario_from_dict({**MINIMAL, "workload": {"arrivals": arrivals}})
    assert mean_rate_rps(sc.workload.arrivals) == pytest.approx(rate)


def test_mean_rate_of_a_trace_is_unknown(write_trace):
    sc = sim.scenario_from_dict({**MINIMAL, "workload": {"arrivals": {"process": "trace",
                                                                      "path": str(write_trace([0.5]))}}})
    assert math.isnan(mean_rate_rps(sc.workload.arrivals))


def documented_keys() -> set[str]:
    """Dotted keys in the first column of docs/scenario.md's tables."""
    return set(re.findall(r"^\| `([a-z_.\[\]]+)` \|", DOC.read_text(), flags=re.M))


def model_keys(model, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        if name == "base_dir":
            continue
        key = f"{prefix}{name}"
        keys.add(key)
        for member in _union_members(field.annotation):
            keys |= model_keys(member, key + ".")
    return keys


POOL_AUTOSCALERS = ("llm.disaggregation.prefill_autoscaler.", "llm.disaggregation.decode_autoscaler.")


def test_every_scenario_key_is_documented():
    # A disaggregated pool's autoscaler is an `autoscaler` section: its keys are documented there once.
    keys = {next((f"autoscaler.{k[len(p):]}" for p in POOL_AUTOSCALERS if k.startswith(p)), k)
            for k in model_keys(Scenario)}
    missing = sorted(keys - documented_keys())
    assert not missing, f"docs/scenario.md lacks {missing}"


def test_documented_examples_are_valid_scenarios():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    for block in blocks:
        data = yaml.safe_load(block)
        sc = sim.scenario_from_dict({**MINIMAL, **data})  # a snippet is completed by MINIMAL
        if sc.workload.arrivals.process != "trace":  # a trace file is not here to read
            sim.run(updated(sc, {"run.duration_s": 1.0, "run.warmup_s": 0.0, "run.replications": 1}))
