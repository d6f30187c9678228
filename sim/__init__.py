"""capsim's simulator: scenarios in, flat records and metrics out. Never imports torch or streamlit."""

from sim.errors import CapsimError, ProfileError, ScenarioError, TraceError
from sim.runner import Result, run
from sim.scenario.load import dump_scenario, load_scenario, scenario_from_dict
from sim.scenario.model import Scenario

__all__ = [
    "CapsimError", "ProfileError", "Result", "Scenario", "ScenarioError", "TraceError",
    "dump_scenario", "load_scenario", "run", "scenario_from_dict",
]
