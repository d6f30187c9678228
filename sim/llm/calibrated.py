"""The ``calibrated`` iteration-time model: iterations measured on torch, fitted, with their residuals.

``llm.step_time: {type: calibrated, profile: FILE}`` reads an LLM iteration profile
(``capsim calibrate --mode llm``, or a from-run profile of a ``capsim bench-serve --llm`` run;
sim/profiles/llm.py). An iteration of composition (P prompt tokens, D decoding sequences, K KV tokens
read, A attention pairs) takes

    fit(P, D, K, A, S) × r

where the fit is the profile's ``β0 + body(P + D) + head(S) + β3·K + β4·A`` (S: the iteration's output
tokens, the rows through the LM head; sim/profiles/llm.py) and ``r`` is one of the measured
residual ratios (sample / fit), drawn uniformly and independently per iteration from the replication's
``service`` stream (seeded: the same seed gives the same times). ``residuals: false`` uses the fit times
the mean ratio instead (deterministic, the same mean). An iteration that starts on a replica that sat
idle for ``g`` is multiplied by the profile's measured ``idle_response`` at ``g`` (its idle sweep,
calibration/llm_calibrate.py; ``idle_response: false`` leaves it out), as a batch is
(``sim.serving.service.IdleResponse``). A from-run replay profile instead carries the
run's speed over time (``service_level.phase: aligned``): the machine worked at rate ``exp(-x_i)`` from
real iteration i's start to the next one's, and a simulated iteration starting at ``t`` lasts until its
fitted work is done at those rates (``sim.serving.service.SpeedTrace``, the request-level replay's own).

The profile fixes what was measured: the model, dtype, tensor parallelism and device must be the
scenario's (one line otherwise). A profile measured on a CPU is simulated on that CPU: ``fleet.gpu`` is
left out, the replica's memory is the host's as the profile recorded it, its price
``llm.usd_per_gpu_hour`` (default 0).
"""

from __future__ import annotations

import numpy as np

from sim.errors import CapsimError, ScenarioError, bad_value
from sim.hardware.gpus import Gpu, get_gpu
from sim.profiles.llm import IterationFit, IterationProfile, load_iteration_profile
from sim.serving.service import IdleResponse, SpeedTrace

DRAWS_PER_REFILL = 4096


class CalibratedStepTime:
    """``step_s`` of a measured decoder: the fit times a residual ratio (see the module docstring)."""

    is_estimate = False

    def __init__(self, fit: IterationFit, residuals: np.ndarray | None, trace: SpeedTrace | None = None,
                 rng: np.random.Generator | None = None, idle: IdleResponse | None = None) -> None:
        self.fit, self.residuals, self.trace, self.idle = fit, residuals, trace, idle
        self.mean_ratio = float(np.mean(residuals)) if residuals is not None and residuals.size else 1.0
        self._rng = rng
        self._drawn: list[float] = []

    @classmethod
    def of(cls, profile: IterationProfile, residuals: bool = True, idle_response: bool = True) -> CalibratedStepTime:
        trace = profile.speed_trace()
        if trace is not None:  # the run's own speed, idleness included
            return cls(profile.fit, None, SpeedTrace(*trace))
        idle = IdleResponse.of(profile) if idle_response else None
        ratios = profile.residuals
        if not residuals:
            return cls(profile.fit.scaled(float(ratios.mean())), None, idle=idle)
        return cls(profile.fit, ratios, idle=idle)

    def seeded(self, rng: np.random.Generator) -> CalibratedStepTime:
        """This model drawing its residuals from ``rng`` (one replication's ``service`` stream)."""
        return CalibratedStepTime(self.fit, self.residuals, self.trace, rng, self.idle)

    def step_s(self, prefill_tokens: int, decode_tokens: int, kv_tokens_read: int, attention_pairs: int = 0,
               start_s: float = 0.0, output_tokens: int | None = None, idle_s: float = 0.0) -> float:
        work = self.fit.predict(prefill_tokens, decode_tokens, kv_tokens_read, attention_pairs, output_tokens)
        if self.trace is not None:
            return self.trace.duration(start_s, work)
        if idle_s > 0.0 and self.idle is not None:
            work *= self.idle.ratio(idle_s)
        if self._rng is None or self.residuals is None:  # unseeded (capacity estimates): the mean
            return work * self.mean_ratio
        if not self._drawn:
            self._drawn = self._rng.choice(self.residuals, DRAWS_PER_REFILL).tolist()[::-1]
        return work * self._drawn.pop()


def calibrated_profile(scenario) -> IterationProfile:
    """The profile ``llm.step_time.profile`` names, checked against the scenario's model, dtype and
    parallelism (one line naming the key otherwise)."""
    llm = scenario.llm
    path = scenario.resolve(llm.step_time.profile)
    try:
        profile = load_iteration_profile(path)
    except CapsimError as exc:
        raise ScenarioError(f"llm.step_time.profile: {exc}") from None
    where = f"the profile {path.name} measured"
    if profile.model_name != llm.model:
        raise ScenarioError(bad_value("llm.model", llm.model, f"{where} {profile.model_name!r}; name that model"))
    if profile.dtype != llm.dtype:
        raise ScenarioError(bad_value("llm.dtype", llm.dtype, f"{where} {profile.dtype}"))
    if (llm.tensor_parallel, llm.pipeline_parallel) != (profile.tensor_parallel, 1):
        raise ScenarioError(bad_value("llm.tensor_parallel", llm.tensor_parallel,
                                      f"{where} tensor_parallel {profile.tensor_parallel}, pipeline_parallel 1; "
                                      "a calibrated iteration time holds for that split only"))
    return profile


def measured_device(profile: IterationProfile, fleet_gpu: str | None) -> Gpu:
    """The device a calibrated scenario runs on: the profile's GPU from the catalog, or its CPU host."""
    if profile.device == "cuda":
        try:
            gpu = get_gpu(profile.device_name or "")
        except CapsimError:
            raise ScenarioError(bad_value("llm.step_time.profile", str(profile.path.name),
                                          f"measured on {profile.device_name!r}, which the GPU catalog lacks "
                                          "(sim/data/gpus.yaml)")) from None
        if fleet_gpu is not None and fleet_gpu.lower() != gpu.key.lower():
            raise ScenarioError(bad_value("fleet.gpu", fleet_gpu, f"the profile was measured on {gpu.key}; leave "
                                                                  "fleet.gpu out or name that GPU"))
        return gpu
    if fleet_gpu is not None:
        raise ScenarioError(bad_value("fleet.gpu", fleet_gpu, f"the profile {profile.path.name} was measured on a CPU "
                                                              f"({profile.device_name}); leave fleet.gpu out"))
    if not profile.memory_bytes:
        raise ScenarioError(bad_value("llm.step_time.profile", str(profile.path.name),
                                      "does not record its host's memory (memory.device_total_bytes), which the "
                                      "memory plan of a CPU replica needs"))
    return Gpu(key="cpu", name=profile.device_name or "CPU", memory_bytes=int(profile.memory_bytes),
               memory_bandwidth_bytes_per_s=0.0, peak_tflops={}, host_link_bytes_per_s=0.0, usd_per_hour=0.0)
