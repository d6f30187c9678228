"""KEDA's Kafka scaler feeding the HPA it creates, for streaming consumers (``autoscaler.type: keda``).

KEDA (``pkg/scalers/kafka_scaler.go``) reports one external metric, the consumer group's total lag:
per partition, the newest offset minus the committed one, summed. Unless ``allow_idle_consumers``, the
metric is capped at ``partitions × lag_threshold`` (``limit_to_partitions_with_lag``: at the partitions
that have lag), so the HPA never asks for more consumers than partitions; Go's integer division decides
when the cap applies. The HPA KEDA creates targets that metric with ``AverageValue = lag_threshold``,
so it proposes ⌈total lag / lag_threshold⌉ replicas (within its tolerance, stabilisation and rate
policies: ``sim.scaling.controllers.HPAController``, reused here as it is, with an autoscaling/v2
behavior), between ``max(min_replicas, 1)`` and ``max_replicas``. The HPA does not act at 0 replicas:
KEDA's own loop does, every ``polling_interval_s`` (``pkg/scaling/executor``): with lag above
``activation_lag_threshold`` it scales from 0 to ``max(min_replicas, 1)``; with none for
``cooldown_period_s`` it scales to 0 when ``min_replicas`` is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from sim.scaling.controllers import HPAController
from sim.scenario.scaling import HPA, Behavior, HPAMetric

TICK_S = 1.0  # the controller is asked every second; it keeps KEDA's and the HPA's own periods


def kafka_lag_metric(lags: Sequence[int], lag_threshold: int, *, partitions: int | None,
                     allow_idle_consumers: bool = False, limit_to_partitions_with_lag: bool = False,
                     activation_lag_threshold: int = 0) -> tuple[int, bool]:
    """(the metric KEDA reports, whether the trigger is active) for per-partition ``lags``; ``partitions``
    None is a shared queue (no partition cap)."""
    total = int(sum(lags))
    if partitions is not None and (not allow_idle_consumers or limit_to_partitions_with_lag):
        upper = sum(1 for lag in lags if lag > 0) if limit_to_partitions_with_lag else partitions
        if total // lag_threshold > upper:  # Go int64 division, as the scaler compares
            total = upper * lag_threshold
    return total, sum(lags) > activation_lag_threshold


def keda_desired_replicas(metric: int, lag_threshold: int, min_replicas: int, max_replicas: int) -> int:
    """What the HPA asks for once it acts (no tolerance band, no rate limits): ⌈metric / lag_threshold⌉
    between max(min_replicas, 1) and max_replicas."""
    return min(max(math.ceil(metric / lag_threshold), min_replicas, 1), max_replicas)


def hpa_spec(spec) -> HPA:
    """The HorizontalPodAutoscaler KEDA creates for a ``keda`` section."""
    return HPA(type="hpa", min_replicas=max(spec.min_replicas, 1), max_replicas=spec.max_replicas,
               sync_period_s=spec.sync_period_s, tolerance=spec.tolerance, metric_window_s=spec.sync_period_s,
               metrics=[HPAMetric(type="external", name="queue_length", target_average_value=spec.lag_threshold)],
               behavior=spec.behavior or Behavior())


class _Reported:
    """The external metric as the HPA reads it: KEDA's value at the time of the query."""

    def __init__(self, value: int) -> None:
        self.value = value

    def total_queue(self, t_end: float, window_s: float) -> float:  # HPAController's external-metric query
        return float(self.value)


class KedaController:
    """``decide(now, monitor, fleet)`` every ``TICK_S``: KEDA's activation loop on its polling interval, the
    HPA on its sync period. ``lags()`` gives the current lag of every partition (one entry for a shared queue)."""

    def __init__(self, spec, lags: Callable[[], list[int]], partitions: int | None) -> None:
        self.spec, self.lags, self.partitions = spec, lags, partitions
        self.period_s = TICK_S
        self.hpa = HPAController(hpa_spec(spec))
        self.next_poll_s = 0.0
        self.next_sync_s = spec.sync_period_s
        self.last_active_s = 0.0  # the ScaledObject exists from 0: a cooldown counts from there
        self.trace: list[dict] = []  # per decision: the lag, the metric, activity and the result

    def on_poke(self, now: float, n: int) -> None:  # Scaler.on_empty: streaming never holds events there
        pass

    def decide(self, now: float, monitor, fleet) -> int:
        s = self.spec
        lags = self.lags()
        metric, active = kafka_lag_metric(lags, s.lag_threshold, partitions=self.partitions,
                                          allow_idle_consumers=s.allow_idle_consumers,
                                          limit_to_partitions_with_lag=s.limit_to_partitions_with_lag,
                                          activation_lag_threshold=s.activation_lag_threshold)
        current = desired = fleet.desired
        if now + 1e-9 >= self.next_poll_s:
            self.next_poll_s += s.polling_interval_s
            desired = self.activation(now, active, current)
        if now + 1e-9 >= self.next_sync_s:
            self.next_sync_s += s.sync_period_s
            if desired == current and current > 0:  # the HPA is idle at zero, and KEDA acted this tick
                desired = self.hpa.decide(now, _Reported(metric), fleet)
        if desired != current or self.trace == [] or self.trace[-1]["lag"] != sum(lags):
            self.trace.append({"time_s": now, "lag": sum(lags), "metric": metric, "active": active,
                               "current": current, "desired": desired})
        return desired

    def activation(self, now: float, active: bool, current: int) -> int:
        """KEDA's own loop: scale from zero on activity, to zero after the cooldown, up to min_replicas."""
        s = self.spec
        if active:
            self.last_active_s = now
            return max(s.min_replicas, 1) if current == 0 else current
        if current > 0 and s.min_replicas == 0 and now - self.last_active_s >= s.cooldown_period_s:
            return 0
        return max(current, s.min_replicas)
