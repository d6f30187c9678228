"""Async I/O and host/device overlap: the serving loop's host work beside its device work.

A batch needs host work H (pre/post-processing, copies: ``overlap.host_s`` + ``host_per_item_s`` × b, or the
profile's measured host overhead) and device work D (the service model without its host overhead).

* ``mode: serial``: the loop does H, then D, then takes the next batch: a batch occupies its replica for H + D.
* ``mode: pipelined`` (double buffering): a replica holds two batches, one in each buffer. The host works
  through them in order, one at a time, and the device likewise, and a batch reaches the device once its
  host work is done and the device is free::

      host_start = max(formed, host free)      device_start = max(host_start + H, device free)
      done = device_start + D

  A buffer frees when its batch is done, and the batcher forms the next batch at once (Triton's rule), so
  while the device runs batch k the host prepares batch k+1 and holds it until the device is free: a
  two-stage tandem line with blocking (``sim.theory.overlap``). A saturated replica completes a batch
  every max(H, D) (deterministic stages) instead of every H + D.

The engine runs a pipelined replica as two execution slots (the buffers) over this sampler, which keeps
each replica's host and device clocks; ``batches`` get ``host_start_s``, ``host_s``, ``device_start_s`` and
``device_s``, and the summary the device and host utilisation and both loops' capacities.
"""

from __future__ import annotations

import math

import numpy as np

from sim.architectures.online import Architecture
from sim.distributions import BufferedStream, unit_distribution
from sim.errors import ScenarioError
from sim.results.metrics import busy_seconds
from sim.serving.service import ServiceSampler
from sim.theory.queueing import batching_capacity_rps


def device_scenario(scenario):
    """The scenario whose service model gives the device part: a profile's host overhead is the host stage's."""
    spec, service = scenario.overlap, scenario.service
    if spec is None or service.type != "profile" or not service.host_overhead:
        return scenario
    return scenario.model_copy(update={"service": service.model_copy(update={"host_overhead": False})})


class HostTime:
    """Draws a batch's host work: ``host_s + host_per_item_s * b`` times a unit-mean variate, or one of the
    profile's host-overhead samples of that batch size."""

    def __init__(self, spec, profile, rng: np.random.Generator) -> None:
        self.spec, self.profile = spec, profile
        self._unit = BufferedStream(unit_distribution(spec.host_distribution, spec.host_cv).sample, rng)
        self._uniform = BufferedStream(lambda r, n: r.random(n), rng)  # picks a measured sample
        self._samples: dict[int, list[float]] = {}

    def _measured(self, batch_size: int) -> list[float]:
        samples = self._samples.get(batch_size)
        if samples is None:
            samples = self._samples[batch_size] = [float(x) for x in self.profile.host_overhead_for(batch_size)]
            if not samples:
                raise ScenarioError(f"overlap.host_s: the profile {self.profile.model_name!r} has no host overhead "
                                    "measured, so there is nothing to overlap; give overlap.host_s")
        return samples

    def draw(self, batch_size: int) -> float:
        if self.spec.host_s is None:
            samples = self._measured(batch_size)
            return samples[int(self._uniform.next() * len(samples))]
        return (self.spec.host_s + self.spec.host_per_item_s * batch_size) * self._unit.next()

    def mean_s(self, batch_size: int) -> float:
        if self.spec.host_s is None:
            return float(np.mean(self._measured(batch_size)))
        return self.spec.host_s + self.spec.host_per_item_s * batch_size


class HostDeviceService(ServiceSampler):
    """A batch's time on its replica from its host and device stages, serial or pipelined."""

    def __init__(self, device: ServiceSampler, host: HostTime, pipelined: bool, warmed_up: bool) -> None:
        self.device, self.host, self.pipelined, self.warmed_up = device, host, pipelined, warmed_up
        self.profile = getattr(device, "profile", None)
        self._host_free: dict[int, float] = {}
        self._device_free: dict[int, float] = {}
        self._seen: set[tuple[int, int]] = set()
        self.log: dict[str, list[float]] = {"host_start_s": [], "host_s": [], "device_start_s": [], "device_s": []}

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0, replica: int = 0) -> float:
        host = self.host.draw(batch_size)
        device = self.device.draw(batch_size, idle_s, now_s, replica)
        if not self.warmed_up and (replica, batch_size) not in self._seen:  # the engine's first-call rule
            self._seen.add((replica, batch_size))
            device += self.device.first_call_extra_s(batch_size)
        if self.pipelined:
            host_start = max(now_s, self._host_free.get(replica, 0.0))
            device_start = max(host_start + host, self._device_free.get(replica, 0.0))
            self._host_free[replica], self._device_free[replica] = host_start + host, device_start + device
        else:
            host_start, device_start = now_s, now_s + host
        log = self.log
        log["host_start_s"].append(host_start)
        log["host_s"].append(host)
        log["device_start_s"].append(device_start)
        log["device_s"].append(device)
        return device_start + device - now_s

    def first_call_extra_s(self, batch_size: int) -> float:
        return 0.0  # added to the device stage in draw

    def mean_s(self, batch_size: int) -> float:
        """What a batch occupies its replica for at saturation: max(H, D) pipelined, H + D serial."""
        host, device = self.host.mean_s(batch_size), self.device.mean_s(batch_size)
        return max(host, device) if self.pipelined else host + device


class HostDeviceOverlap(Architecture):
    """The ``overlap`` section."""

    def __init__(self, scenario, device: ServiceSampler, rng: np.random.Generator) -> None:
        spec = scenario.overlap
        self.scenario = scenario
        self.sampler = HostDeviceService(device, HostTime(spec, getattr(device, "profile", None), rng),
                                         spec.mode == "pipelined", getattr(scenario.service, "warmed_up", True))
        self.fleet_updates = {"instances_per_replica": 2} if spec.mode == "pipelined" else {}

    def wrap_service(self, service):
        return self.sampler

    def finish(self, raw) -> None:
        n = len(raw.batch_start_s)  # one draw per batch, in start order
        raw.extra.setdefault("batch_columns", {}).update(
            {k: np.asarray(v[:n], dtype=float) for k, v in self.sampler.log.items()})

    def extend(self, summary, requests, batches, timeseries, replicas, window) -> None:
        t0, t1 = window
        alive = float(np.clip(np.minimum(replicas["gone_s"].to_numpy(), t1)
                              - np.maximum(replicas["created_s"].to_numpy(), t0), 0, None).sum())
        for stage in ("host", "device"):
            start = batches[f"{stage}_start_s"].to_numpy()
            busy = busy_seconds(start, start + batches[f"{stage}_s"].to_numpy(), t0, t1)
            summary[f"{stage}_utilization"] = busy / alive if alive > 0 else math.nan
        sc, device, host = self.scenario, self.sampler.device, self.sampler.host
        spec = sc.autoscaler
        replicas_max = sc.fleet.replicas if spec.type == "static" else spec.max_replicas
        for mode, cycle in (("serial", lambda b: host.mean_s(b) + device.mean_s(b)),
                            ("pipelined", lambda b: max(host.mean_s(b), device.mean_s(b)))):
            summary[f"capacity_{mode}_rps"] = batching_capacity_rps(cycle, sc.batching.max_batch_size, replicas_max)
        summary["overlap_gain"] = summary["capacity_pipelined_rps"] / summary["capacity_serial_rps"]
