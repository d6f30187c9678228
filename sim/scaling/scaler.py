"""The autoscaling loop: scrape the metrics, run the controller on its period, apply its decision.

:func:`attach_autoscaler` wires a scenario's controller, fleet lifecycle and monitor to an engine
through the engine's public ``attach_scaler``; a static fleet gets nothing.
"""

from __future__ import annotations

from sim.scaling.controllers import CONTROLLERS
from sim.scaling.lifecycle import Fleet, PhaseSampler
from sim.scaling.monitor import Monitor


class Scaler:
    """Runs a controller every ``controller.period_s`` and applies its decision to the fleet
    (the engine's ``ScalerHooks``)."""

    def __init__(self, env, controller, fleet: Fleet, monitor: Monitor) -> None:
        self.env, self.controller, self.fleet, self.monitor = env, controller, fleet, monitor
        self._stopped = False
        self.decisions: list[tuple[float, int, int]] = []  # (time, before, after)

    @property
    def desired(self) -> int:
        return self.fleet.desired

    def process(self):
        env = self.env
        scrape = self.monitor.scrape_s
        period = self.controller.period_s
        next_decision = period
        while not self._stopped:
            yield env.timeout(scrape)
            self.monitor.scrape(env.now)
            if env.now + 1e-9 >= next_decision:
                next_decision += period
                self.decide()

    def decide(self) -> None:
        before = self.fleet.desired
        after = self.controller.decide(self.env.now, self.monitor, self.fleet)
        if after != before:
            self.decisions.append((self.env.now, before, after))
            self.fleet.scale_to(after)

    def on_empty(self) -> None:
        """Traffic arrived with no ready replica: from zero, scale up at once (activator / Ray Serve)."""
        if not self.fleet.live():
            low = max(1, getattr(self.controller.spec, "min_replicas", 1))
            self.decisions.append((self.env.now, self.fleet.desired, low))
            self.controller.on_poke(self.env.now, low)
            self.fleet.scale_to(low)

    def stop(self) -> None:
        self._stopped = True


def attach_autoscaler(engine, scenario, rng, profile=None) -> Scaler | None:
    """Give an engine a fleet lifecycle and the scenario's controller (None for a static fleet)."""
    spec = scenario.autoscaler
    if spec.type == "static":
        return None
    controller = CONTROLLERS[spec.type](spec)
    warmed = getattr(scenario.service, "warmed_up", True)
    fleet = Fleet(engine, PhaseSampler(scenario.cold_start, profile, warmed, rng),
                  scenario.cold_start.readiness_period_s)
    latencies = None
    if spec.type == "hpa":
        scrape, keep = 1.0, spec.metric_window_s + spec.metric_lag_s + 5
        if any(m.type == "latency" for m in spec.metrics):
            latencies = engine.latency_log()
    elif spec.type == "kpa":
        scrape, keep = 1.0, spec.stable_window_s + 5
    else:
        scrape, keep = spec.control_loop_s, spec.look_back_period_s + 1
    scaler = Scaler(engine.env, controller, fleet, Monitor(engine.snapshot, scrape, keep, latencies))
    engine.attach_scaler(scaler)
    return scaler
