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


class PhaseSampler:
    """Durations of the cold-start phases, drawn from the lifecycle random stream."""

    def __init__(self, cold_start, profile, warmed_up: bool, rng: np.random.Generator) -> None:
        self.spec = cold_start
        self.rng = rng
        load = warm = 0.0
        if profile is not None and profile.load:
            info = profile.load
            rate, weights = info.get("load_rate_bytes_per_s"), profile.weight_bytes or info.get("weight_bytes")
            load = (weights / rate if rate and weights else 0.0) + float(info.get("runtime_start_s") or 0.0)
            warm = float(info.get("warmup_s") or 0.0) if warmed_up else 0.0
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
