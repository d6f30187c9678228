"""capsim's simulator: scenarios in, flat records and metrics out. Never imports torch or streamlit."""

from sim.errors import CapsimError, ProfileError, ScenarioError, TraceError
from sim.loader import dump_scenario, load_scenario, scenario_from_dict
from sim.runner import Result, run
from sim.scenario import Scenario

__all__ = [
    "CapsimError", "ProfileError", "Result", "Scenario", "ScenarioError", "TraceError",
    "dump_scenario", "load_scenario", "run", "scenario_from_dict",
]
