"""Replica lifecycle under an autoscaler: cold-start phases and pod start-up and termination.

A new replica goes: provisioning (schedule the pod; sometimes a new GPU node) -> pulling (image) ->
loading (runtime start, weights from disk to device) -> warming (warm-up requests) -> ready at the
first readiness-probe tick after its server is up -> draining when removed (finishes queued and
in-flight work, takes no new) -> gone. Cost accrues from the request until gone. Removal takes
replicas that are not ready yet first (newest first), then the newest ready ones, as the Kubernetes
ReplicaSet controller does.
"""

from __future__ import annotations

import math

import numpy as np

from sim.serving.engine import Replica

PENDING = ("provisioning", "pulling")  # no container yet: Kubernetes phase Pending


def profile_load_phases(profile) -> dict[str, float | None]:
    """A profile's part of a cold start, from its ``load`` section: runtime start (import + device context),
    weights (``weight_bytes / load_rate_bytes_per_s``) and warm-up; None where the profile does not say."""
    info = (profile.load if profile is not None else None) or {}
    rate = info.get("load_rate_bytes_per_s")
    weights = (profile.weight_bytes or info.get("weight_bytes")) if profile is not None else None
    return {"runtime_start": info.get("runtime_start_s"), "weights": weights / rate if rate and weights else None,
            "warmup": info.get("warmup_s")}


def cold_start_phases(cold_start, profile=None, warmed_up: bool = True) -> list[tuple[str, float, str]]:
    """Mean duration of each phase from request to ready, and where it comes from: the scenario's
    ``cold_start`` section, else the profile's measured load (as :class:`PhaseSampler` uses them)."""
    def mean(spec) -> float:
        return float(spec) if isinstance(spec, (int, float)) else spec.mean_s

    s, measured = cold_start, profile_load_phases(profile)
    rows = [("provisioning", mean(s.provision_s), "cold_start.provision_s"),
            ("image pull", mean(s.image_pull_s), "cold_start.image_pull_s")]
    if s.new_node_probability:
        rows.append(("new GPU node", s.new_node_probability * mean(s.new_node_s),
                     f"cold_start.new_node_s x new_node_probability {s.new_node_probability:g}"))
    def from_profile(name: str, value: float | None, where: str) -> tuple[str, float, str]:
        return (name, value, where) if value is not None else (name, 0.0, "not in the profile: 0")

    if s.weight_load_s is not None:
        rows.append(("runtime start + weight load", mean(s.weight_load_s), "cold_start.weight_load_s"))
    else:
        rows.append(from_profile("runtime start", measured["runtime_start"], "profile load.runtime_start_s"))
        rows.append(from_profile("weight load", measured["weights"], "profile weight_bytes / load.load_rate_bytes_per_s"))
    if s.warmup_s is not None:
        rows.append(("warm-up", mean(s.warmup_s), "cold_start.warmup_s"))
    elif not warmed_up:
        rows.append(("warm-up", 0.0, "0: service.warmed_up is false (first calls are paid in traffic)"))
    else:
        rows.append(from_profile("warm-up", measured["warmup"], "profile load.warmup_s"))
    up = sum(seconds for name, seconds, _ in rows if name not in ("provisioning", "image pull", "new GPU node"))
    ticks = max(math.ceil(up / s.readiness_period_s - 1e-9), 0)
    rows.append(("readiness probe", ticks * s.readiness_period_s - up,
                 f"the next probe tick (every cold_start.readiness_period_s = {s.readiness_period_s:g} s)"))
    return rows


class PhaseSampler:
    """Durations of the cold-start phases, drawn from the lifecycle random stream."""

    def __init__(self, cold_start, profile, warmed_up: bool, rng: np.random.Generator) -> None:
        self.spec = cold_start
        self.rng = rng
        measured = profile_load_phases(profile)
        load = (measured["weights"] or 0.0) + float(measured["runtime_start"] or 0.0)
        warm = float(measured["warmup"] or 0.0) if warmed_up else 0.0
        self.weight_load = cold_start.weight_load_s if cold_start.weight_load_s is not None else load
        self.warmup = cold_start.warmup_s if cold_start.warmup_s is not None else warm

    def draw(self, spec) -> float:
        if isinstance(spec, (int, float)):
            return float(spec)
        if spec.cv == 0 or spec.mean_s == 0:
            return spec.mean_s
        if spec.distribution == "gamma":
            shape = 1.0 / spec.cv**2
            return float(self.rng.gamma(shape, spec.mean_s / shape))
        sigma2 = math.log1p(spec.cv**2)
        return float(self.rng.lognormal(math.log(spec.mean_s) - sigma2 / 2, math.sqrt(sigma2)))

    def phases(self) -> dict[str, float]:
        s = self.spec
        provision = self.draw(s.provision_s)
        if s.new_node_probability and self.rng.random() < s.new_node_probability:
            provision += self.draw(s.new_node_s)
        return {"provision": provision, "pull": self.draw(s.image_pull_s),
                "load": self.draw(self.weight_load), "warmup": self.draw(self.warmup)}


class Fleet:
    """Adds and removes replicas of an engine, emulating pod start-up and termination, through the
    engine's public methods (``add_replica``, ``mark_ready``, ``stop_routing``)."""

    def __init__(self, engine, phases: PhaseSampler, readiness_period_s: float) -> None:
        self.engine = engine
        self.env = engine.env
        self.phases = phases
        self.period = readiness_period_s
        self.desired = len(engine.replicas())
        self.launches: list[dict[str, float]] = []

    def live(self) -> list[Replica]:
        """Replicas that count towards the Deployment's replicas (not draining, not gone)."""
        return [r for r in self.engine.replicas() if r.gone_s is None and not r.draining]

    def ready_count(self) -> int:
        """Replicas taking traffic."""
        return self.engine.ready_count()

    def scale_to(self, n: int) -> None:
        self.desired = n
        live = self.live()
        for _ in range(n - len(live)):
            self._launch()
        if n < len(live):
            order = sorted(live, key=lambda r: (r.state == "ready", -r.created_s, -r.index))
            for rep in order[: len(live) - n]:
                self._remove(rep)

    def _launch(self) -> None:
        now = self.env.now
        rep = self.engine.add_replica(now)
        rep.state = "provisioning"
        p = self.phases.phases()
        rep.container_s = now + p["provision"] + p["pull"]
        rep.up_s = rep.container_s + p["load"] + p["warmup"]
        ticks = math.ceil((rep.up_s - rep.container_s) / self.period - 1e-9)
        rep.ready_s = rep.container_s + max(ticks, 0) * self.period
        self.launches.append({"replica": rep.index, "requested_s": now, **{f"{k}_s": v for k, v in p.items()},
                              "up_s": rep.up_s, "ready_s": rep.ready_s})
        self._at(now + p["provision"], rep, "pulling")
        self._at(rep.container_s, rep, "loading")
        self._at(rep.container_s + p["load"], rep, "warming")
        self._at(rep.ready_s, rep, "ready")

    def _at(self, t: float, rep: Replica, state: str) -> None:
        ev = self.env.timeout(max(t - self.env.now, 0.0), (rep, state))
        ev.callbacks.append(self._transition)

    def _transition(self, event) -> None:
        rep, state = event.value
        if rep.gone_s is not None or rep.draining:
            return
        rep.state = state
        if state == "ready":
            self.engine.mark_ready(rep)

    def _remove(self, rep: Replica) -> None:
        if rep.state != "ready":  # still starting: the pod is deleted outright
            self._retire(rep)
            return
        rep.draining = True
        rep.state = "draining"
        self.engine.stop_routing(rep, when_idle=self._retire)

    def _retire(self, rep: Replica) -> None:
        rep.gone_s = self.env.now
        rep.state = "gone"
