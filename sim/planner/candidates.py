"""The devices a plan may choose from: the scenario's own, shipped profiles of its model on other GPUs,
and roofline estimates for catalog GPUs without a profile (labelled as estimates everywhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.errors import ScenarioError
from sim.hardware.gpus import gpu_catalog, profile_gpu
from sim.models.archs import BUILTIN_ARCHS
from sim.profiles.profile import as_profile, list_builtin_profiles, write_profile
from sim.profiles.roofline import estimate_profile
from sim.scenario.model import Scenario
from sim.serving.service import resolve_profile


@dataclass(frozen=True)
class Candidate:
    """One device option: the profile serving it, its price and whether its profile is an estimate."""

    label: str
    profile: str | None  # value for service.profile (None: keep the scenario's service)
    usd_per_hour: float
    estimate: bool
    max_batch_size: int

    def updates(self) -> dict:
        if self.profile is None:
            return {}
        return {"service.profile": self.profile, "cost.usd_per_replica_hour": self.usd_per_hour,
                "fleet.gpu": self.label}


def gpu_candidates(scenario: Scenario, gpus: list[str] | None = None, estimates: bool = True,
                   profile_dir: str | Path = "profiles") -> list[Candidate]:
    """The scenario's own device, shipped profiles of its model elsewhere, and catalog estimates."""
    if scenario.service.type != "profile":
        label = scenario.fleet.gpu or "as given"
        return [Candidate(label, None, scenario.cost.usd_per_replica_hour, False, 65536)]
    own = resolve_profile(scenario)
    catalog = gpu_catalog()
    own_key = profile_gpu(own) or own.device
    own_price = scenario.cost.usd_per_replica_hour or (catalog[own_key].usd_per_hour if own_key in catalog else 0.0)
    found = {own_key: Candidate(own_key, str(scenario.service.profile), own_price, own.is_estimate,
                                own.batch_sizes[-1])}
    for name in list_builtin_profiles():
        p = as_profile(name)
        key = profile_gpu(p)
        if p.model_name == own.model_name and key in catalog and key not in found:
            found[key] = Candidate(key, name, catalog[key].usd_per_hour, p.is_estimate, p.batch_sizes[-1])
    if estimates and own.model_name in BUILTIN_ARCHS:
        source = next((c.profile for c in found.values() if c.label in catalog and not c.estimate), None)
        for key, gpu in catalog.items():
            if key not in found and (gpus is None or key.lower() in gpus):
                path = _estimate(own, key, gpu, source, Path(profile_dir))
                if path is not None:
                    found[key] = Candidate(key, str(path.resolve()), gpu.usd_per_hour, True, 128)
    if gpus is not None:
        unknown = [g for g in gpus if g not in {k.lower() for k in found}]
        if unknown:
            raise ScenarioError(f"--gpus {','.join(unknown)}: no profile or estimate for model "
                                f"{own.model_name!r}; available: {', '.join(found)}")
        found = {k: c for k, c in found.items() if k.lower() in gpus}
    return list(found.values())


def _estimate(own, key: str, gpu, source: str | None, directory: Path) -> Path | None:

    dtype = own.dtype if own.device == "cuda" else "fp16"
    if not gpu.peak_tflops.get(dtype):
        return None
    doc = estimate_profile(own.model_name, key, dtype, [1, 2, 4, 8, 16, 32, 64, 128], source_profile=source)
    return write_profile(doc, directory / f"{key.lower()}-{own.model_name}-{dtype}-estimate.json")


