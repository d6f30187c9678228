"""The files a scenario reads besides its own YAML: the service profile, the arrival trace, the HPA manifest.

Results depend on their contents, so a sweep's checkpoint keys on a hash of each
(``sim.experiments.sweep``), and a command never replaces an output folder that holds one of them.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from sim.errors import ProfileError
from sim.profiles.profile import resolve_profile_path
from sim.scenario.examples import scenario_path
from sim.scenario.model import Scenario


def input_files(scenario: Scenario) -> dict[str, Path]:
    """The scenario key → the file it names, resolved from the scenario's folder (a shipped profile's name
    → its file under sim/data/profiles). A profile that cannot be found is left out: simulating says so."""
    files: dict[str, Path] = {}
    service = scenario.service
    if service is not None and service.type == "profile":
        with suppress(ProfileError):
            files["service.profile"] = resolve_profile_path(service.profile, scenario.base_dir)
    if scenario.workload is None:  # an offline job: no arrivals (sim/scenario/architectures.py)
        return files
    arrivals = scenario.workload.arrivals
    if arrivals.process == "trace":
        files["workload.arrivals.path"] = scenario.resolve(arrivals.path)
    for key in ("input_tokens", "output_tokens"):  # llm scenarios: lengths drawn from a file
        spec = getattr(scenario.workload, key)
        if spec is not None and spec.distribution == "empirical":
            files[f"workload.{key}.path"] = scenario.resolve(spec.path)
    for k, site in enumerate(scenario.edge.sites if scenario.edge is not None else ()):  # edge sites' profiles
        if site.profile is not None:
            with suppress(ProfileError):
                files[f"edge.sites[{k}].profile"] = resolve_profile_path(site.profile, scenario.base_dir)
    manifest = getattr(scenario.autoscaler, "from_manifest", None)
    if manifest:
        files["autoscaler.from_manifest"] = scenario.resolve(manifest)
    return files


def files_given(ref: str | Path, scenario: Scenario) -> list[Path]:
    """The scenario file as the user gave it (a path or an example's name) and every file it reads."""
    return [scenario_path(ref), *input_files(scenario).values()]
