"""Autoscaling controllers, emulated from their source (see docs/autoscaling.md).

Each controller has ``period_s`` and ``decide(now, monitor, fleet) -> desired replicas``; a registry
maps the YAML ``autoscaler.type`` to the class. ``fleet.desired`` is the Deployment's spec.replicas
(the HPA's "current"), not the ready count.
"""

from __future__ import annotations

import math
from collections import deque

from sim.scaling.lifecycle import PENDING

# autoscaling/v2 API defaults for `behavior` (pkg/apis/autoscaling/v2/defaults.go)
UP_DEFAULT_POLICIES = (("Pods", 4, 15.0), ("Percent", 100, 15.0))
DOWN_DEFAULT_POLICIES = (("Percent", 100, 15.0),)
LEGACY_DOWN_WINDOW_S = 300.0


class HPAController:
    """Kubernetes HorizontalPodAutoscaler: replica_calculator.go + horizontal.go normalisation."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.period_s = spec.sync_period_s
        self.recommendations: deque[tuple[float, int]] = deque()
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []
        self.trace: list[dict] = []  # per sync: proposals and the decision (for tests and plots)
        b = spec.behavior
        self.tol_up = (b.scale_up.tolerance if b and b.scale_up.tolerance is not None else spec.tolerance)
        self.tol_down = (b.scale_down.tolerance if b and b.scale_down.tolerance is not None else spec.tolerance)

    # ------------------------------------------------------------ reconcile
    def decide(self, now: float, monitor, fleet) -> int:
        current = fleet.desired
        spec = self.spec
        if current > spec.max_replicas or current < spec.min_replicas:
            desired = min(max(current, spec.min_replicas), spec.max_replicas)
            self.trace.append({"time_s": now, "current": current, "proposals": [], "desired": desired})
            self._record_event(now, current, desired)
            return desired
        pods = _pods(fleet)
        proposals = [p for p in (self.metric_proposal(m, now, monitor, fleet, pods, current) for m in spec.metrics)
                     if p is not None]
        if not proposals:
            self.trace.append({"time_s": now, "current": current, "proposals": [], "desired": current})
            return current
        desired = self.normalize(now, current, max(proposals))
        self.trace.append({"time_s": now, "current": current, "proposals": proposals, "desired": desired})
        self._record_event(now, current, desired)
        return desired

    def _record_event(self, now: float, before: int, after: int) -> None:
        if after > before:
            self.up_events.append((now, after - before))
        elif after < before:
            self.down_events.append((now, before - after))

    def on_poke(self, now: float, n: int) -> None:
        pass

    # ------------------------------------------------------------ metrics -> proposal
    def metric_proposal(self, m, now, monitor, fleet, pods, current) -> int | None:
        t_end = now - self.spec.metric_lag_s
        w = self.spec.metric_window_s
        if m.type == "resource":
            values, unready, missing = {}, set(), set()
            for rep in pods:
                if rep.state != "ready":
                    unready.add(rep.index)  # CPU-style rule: not Ready -> unready
                    continue
                young = rep.created_s + self.spec.cpu_initialization_period_s > now
                if young and rep.ready_s + w > t_end:  # no full window since it became ready
                    unready.add(rep.index)
                    continue
                u = monitor.utilization(rep.index, rep.instances, t_end, w)
                if u is None:
                    missing.add(rep.index)
                else:
                    values[rep.index] = u
            return self.replicas_for(values, unready, missing, m.target_utilization, current)
        if m.type == "pods":
            values, unready, missing = {}, set(), set()
            for rep in pods:
                if rep.state in PENDING:
                    unready.add(rep.index)
                    continue
                v = self._pod_value(m.name, rep, monitor, t_end, w) if rep.state == "ready" else None
                if v is None:
                    missing.add(rep.index)
                else:
                    values[rep.index] = v
            return self.replicas_for(values, unready, missing, m.target_average_value, current)
        # external / latency: one value for the service
        if m.type == "latency":
            value = monitor.latency_percentile(t_end, w, m.percentile)
        elif m.name == "queue_length":
            value = monitor.total_queue(t_end, w)
        elif m.name == "in_flight":
            value = monitor.total_concurrency(t_end, w)
        else:
            rates = [monitor.request_rate(r.index, t_end, w) for r in pods if r.state == "ready"]
            value = sum(x for x in rates if x is not None)
        if value is None:
            return None
        ready = sum(1 for r in pods if r.state == "ready")
        if m.target_average_value is not None:  # AverageValue: ceil(value / target)
            ratio = value / (m.target_average_value * current)
            return current if self._within(ratio) else math.ceil(value / m.target_average_value)
        ratio = value / m.target_value  # Value: ceil(ratio * readyPods)
        return current if self._within(ratio) else math.ceil(ratio * ready)

    @staticmethod
    def _pod_value(name, rep, monitor, t_end, w):
        if name == "requests_per_second":
            return monitor.request_rate(rep.index, t_end, w)
        if name == "in_flight":
            return monitor.mean_of(rep.index, 2, t_end, w)
        if name == "queue_length":
            return monitor.mean_of(rep.index, 3, t_end, w)
        if name == "kv_cache_utilization":  # LLM replicas (sim.llm.engine.LlmEngine.snapshot)
            return monitor.mean_of(rep.index, 4, t_end, w)
        if name == "running_sequences":
            return monitor.mean_of(rep.index, 5, t_end, w)
        return monitor.utilization(rep.index, rep.instances, t_end, w)

    def _within(self, ratio: float) -> bool:
        return 1 - self.tol_down <= ratio <= 1 + self.tol_up

    def replicas_for(self, values: dict, unready: set, missing: set, target: float, current: int) -> int | None:
        """GetResourceReplicas / calcPlainMetricReplicas, with the missing- and unready-pod rules."""
        if not values:
            return None
        ratio = sum(values.values()) / (target * len(values))
        if not missing and not unready:
            return current if self._within(ratio) else math.ceil(ratio * len(values))
        values = dict(values)
        if missing:
            fill = target if ratio < 1 else 0.0  # scale-down: missing at 100% of target; scale-up: 0
            if ratio != 1:
                values.update({k: fill for k in missing})
        if ratio > 1 and unready:  # scale-up: unready pods count as 0 usage
            values.update({k: 0.0 for k in unready})
        new_ratio = sum(values.values()) / (target * len(values))
        if self._within(new_ratio) or (ratio < 1 < new_ratio) or (ratio > 1 > new_ratio):
            return current
        proposal = math.ceil(new_ratio * len(values))
        if (new_ratio < 1 and proposal > current) or (new_ratio > 1 and proposal < current):
            return current
        return proposal

    # ------------------------------------------------------------ normalisation
    def normalize(self, now: float, current: int, proposal: int) -> int:
        spec = self.spec
        if spec.behavior is None:  # legacy: max over 300 s, then max(2x, 4) scale-up limit
            self._remember(now, proposal, LEGACY_DOWN_WINDOW_S)
            rec = max(v for _, v in self.recommendations)
            up_limit = max(2 * current, 4)
            return max(spec.min_replicas, min(rec, spec.max_replicas, up_limit))
        up, down = spec.behavior.scale_up, spec.behavior.scale_down
        up_w = up.stabilization_window_s if up.stabilization_window_s is not None else 0.0
        down_w = down.stabilization_window_s if down.stabilization_window_s is not None else 300.0
        up_rec = down_rec = proposal
        for t, v in self.recommendations:
            if t > now - up_w:
                up_rec = min(up_rec, v)
            if t > now - down_w:
                down_rec = max(down_rec, v)
        self._remember(now, proposal, max(up_w, down_w))
        desired = min(max(current, up_rec), down_rec)
        if desired > current:
            limit = max(self._up_limit(now, current, up), current)
            return min(desired, spec.max_replicas, limit)
        if desired < current:
            limit = min(self._down_limit(now, current, down), current)
            return max(desired, spec.min_replicas, limit)
        return desired

    def _remember(self, now: float, proposal: int, keep_s: float) -> None:
        self.recommendations.append((now, proposal))
        while self.recommendations and self.recommendations[0][0] <= now - keep_s - 1e-9:
            self.recommendations.popleft()

    def _changes(self, now: float, period_s: float) -> tuple[int, int]:
        added = sum(n for t, n in self.up_events if t > now - period_s)
        removed = sum(n for t, n in self.down_events if t > now - period_s)
        return added, removed

    def _up_limit(self, now: float, current: int, rules) -> int:
        if rules.select_policy == "Disabled":
            return current
        policies = [(p.type, p.value, p.period_s) for p in rules.policies] if rules.policies else UP_DEFAULT_POLICIES
        pick = min if rules.select_policy == "Min" else max
        limits = []
        for kind, value, period in policies:
            added, removed = self._changes(now, period)
            start = current - added + removed
            limits.append(start + value if kind == "Pods" else math.ceil(start * (1 + value / 100)))
        return pick(limits)

    def _down_limit(self, now: float, current: int, rules) -> int:
        if rules.select_policy == "Disabled":
            return current
        policies = [(p.type, p.value, p.period_s) for p in rules.policies] if rules.policies else DOWN_DEFAULT_POLICIES
        pick = max if rules.select_policy == "Min" else min  # Min change = the highest floor
        limits = []
        for kind, value, period in policies:
            added, removed = self._changes(now, period)
            start = current - added + removed
            limits.append(start - value if kind == "Pods" else int(start * (1 - value / 100)))
        return pick(limits)


def _pods(fleet) -> list:
    """Pods the HPA's selector sees: not terminating (draining / gone pods are ignored)."""
    return fleet.live()


class KPAController:
    """Knative Pod Autoscaler: stable and panic windows over observed concurrency."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.period_s = spec.tick_s
        self.panic_since: float | None = None
        self.max_panic_pods = 0
        self.last_nonzero_s = -math.inf  # grace before scale-to-zero runs from the last traffic seen
        self.trace: list[dict] = []

    def on_poke(self, now: float, n: int) -> None:
        self.last_nonzero_s = now

    def decide(self, now: float, monitor, fleet) -> int:
        s = self.spec
        ready = max(1, fleet.ready_count())
        target = s.container_concurrency_target * s.target_utilization
        stable = monitor.total_concurrency(now, s.stable_window_s)
        panic = monitor.total_concurrency(now, s.stable_window_s * s.panic_window_percentage / 100)
        up_max = math.ceil(s.max_scale_up_rate * ready)
        down_min = math.floor(ready / s.max_scale_down_rate)
        want_stable = min(max(math.ceil(stable / target), down_min), up_max)
        want_panic = min(max(math.ceil(panic / target), down_min), up_max)
        over = want_panic / ready >= s.panic_threshold_percentage / 100
        if over:
            self.panic_since = now
        elif self.panic_since is not None and now >= self.panic_since + s.stable_window_s:
            self.panic_since, self.max_panic_pods = None, 0
        if self.panic_since is not None:
            desired = max(want_stable, want_panic, self.max_panic_pods)
            self.max_panic_pods = desired
        else:
            desired = want_stable
        if desired > 0 or stable > 0 or monitor.traffic_seen(now, s.stable_window_s):
            self.last_nonzero_s = now
        if now - self.last_nonzero_s < s.scale_to_zero_grace_s:  # to zero only after the grace without traffic
            desired = max(desired, 1)
        desired = min(max(desired, s.min_replicas), s.max_replicas)
        self.trace.append({"time_s": now, "stable": stable, "panic": panic, "panicking": self.panic_since is not None,
                           "desired": desired})
        return desired


class RayServeController:
    """Ray Serve's default policy: error ratio of ongoing requests, with up/down delays."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.period_s = spec.control_loop_s
        self.up_count = 0
        self.down_count = 0
        self.trace: list[dict] = []

    def on_poke(self, now: float, n: int) -> None:
        self.up_count = self.down_count = 0

    def decide(self, now: float, monitor, fleet) -> int:
        s = self.spec
        current = fleet.desired
        running = fleet.ready_count()
        ongoing = monitor.total_concurrency(now, s.look_back_period_s)
        if running == 0:
            want = max(s.min_replicas, 1) if ongoing > 0 else s.min_replicas
            return min(max(want, current), s.max_replicas) if ongoing > 0 else current
        error = ongoing / (s.target_ongoing_requests * running)
        factor = s.upscaling_factor if error > 1 else s.downscaling_factor
        want = math.ceil(running * (1 + (error - 1) * factor))
        want = min(max(want, s.min_replicas), s.max_replicas)
        if want > current:
            self.up_count += 1
            self.down_count = 0
            if self.up_count * s.control_loop_s >= s.upscale_delay_s - 1e-9:
                self.up_count = 0
                return want
        elif want < current:
            self.down_count += 1
            self.up_count = 0
            if self.down_count * s.control_loop_s >= s.downscale_delay_s - 1e-9:
                self.down_count = 0
                return want
        else:
            self.up_count = self.down_count = 0
        return current


CONTROLLERS = {"hpa": HPAController, "kpa": KPAController, "ray_serve": RayServeController}
