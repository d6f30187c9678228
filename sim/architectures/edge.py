"""Edge serving: users in regions, a central fleet and small edge sites, network round trips between them.

Sites: ``central`` is the scenario's own fleet (``fleet``, ``service``, ``cost``); each of ``edge.sites`` adds
fixed replicas with their own speed (``service_time_scale``, or another ``profile``) and price. Replicas
are numbered central first, then the sites in order; each site has its own router of the scenario's kind.
Timeline of a request::

    arrive (its region drawn from the shares) -> the nearest site (lowest mean RTT; central when no edge
    site is nearer) -> spilled to central when that edge site already has edge_queue_limit requests
    waiting -> RTT drawn for (region, site) -> reaches the site after RTT/2 -> the site's queue, batcher
    and replicas (as any replica) -> its answer reaches the user RTT/2 after the site is done

So ``latency_s`` includes the network (``network_s``, the RTT), and with an idle fleet it is exactly the RTT
plus the service time. A request rejected or timed out at a site is answered RTT/2 after that, too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.architectures.online import Architecture
from sim.distributions import BufferedStream, unit_distribution
from sim.errors import CapsimError, ScenarioError
from sim.scenario.keys import updated
from sim.scenario.online import CENTRAL
from sim.serving.capacity import fleet_capacity_rps
from sim.serving.routers import build_router
from sim.serving.service import ServiceSampler, build_service
from sim.theory.queueing import batching_capacity_rps


class ScaledService(ServiceSampler):
    """Another device: every batch takes ``scale`` times as long as on ``inner``."""

    def __init__(self, inner: ServiceSampler, scale: float) -> None:
        self.inner, self.scale = inner, scale

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0, replica: int = 0) -> float:
        return self.inner.draw(batch_size, idle_s, now_s, replica) * self.scale

    def mean_s(self, batch_size: int) -> float:
        return self.inner.mean_s(batch_size) * self.scale

    def first_call_extra_s(self, batch_size: int) -> float:
        return self.inner.first_call_extra_s(batch_size) * self.scale


class SiteService(ServiceSampler):
    """Each replica's batches drawn from its site's service model (the first-call cost is central's)."""

    def __init__(self, by_replica: list[ServiceSampler]) -> None:
        self.by_replica = by_replica
        self.profile = getattr(by_replica[0], "profile", None)

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0, replica: int = 0) -> float:
        return self.by_replica[replica].draw(batch_size, idle_s, now_s, replica)

    def mean_s(self, batch_size: int) -> float:
        return self.by_replica[0].mean_s(batch_size)

    def first_call_extra_s(self, batch_size: int) -> float:
        return self.by_replica[0].first_call_extra_s(batch_size)


class SiteRouter:
    """Routes a request among the replicas of the site it reached, with that site's own router."""

    def __init__(self, routers: list, members: list[list]) -> None:
        self.routers, self.members = routers, members
        self.site = 0

    def choose(self, replicas):
        return self.routers[self.site].choose(self.members[self.site])

    def waiting(self, site: int) -> int:
        """Requests waiting (not yet in a batch) at a site's replicas, as a least-loaded router reads them."""
        return sum(len(rep.queue) for rep in self.members[site])


class EdgeSites(Architecture):
    """The ``edge`` section: a front that sends each request over the network to its site."""

    def __init__(self, scenario, central: ServiceSampler, rng: np.random.Generator, count: int) -> None:
        self.spec = spec = scenario.edge
        self.scenario = scenario
        self.names = [CENTRAL, *(s.name for s in spec.sites)]
        self.counts = [scenario.fleet.replicas, *(s.replicas for s in spec.sites)]
        self.fleet_updates = {"replicas": sum(self.counts)}
        region_rng, rtt_rng, service_rng, router_rng = rng.spawn(4)
        self.samplers = [central] + [self._site_service(site, central, g)
                                     for site, g in zip(spec.sites, service_rng.spawn(len(spec.sites)))]
        self._router_rngs = router_rng.spawn(len(spec.sites))
        shares = np.array([r.share for r in spec.regions])
        self.region = region_rng.choice(len(shares), size=count, p=shares / shares.sum()).tolist()
        index = {name: k for k, name in enumerate(self.names)}
        self.nearest = [min((index[name] for name in r.rtt_s), key=lambda k: (r.rtt_s[self.names[k]].mean_s, k))
                        for r in spec.regions]
        streams = iter(rtt_rng.spawn(sum(len(r.rtt_s) for r in spec.regions)))
        self.rtt = [{index[name]: _network_stream(t, next(streams)) for name, t in r.rtt_s.items()}
                    for r in spec.regions]
        self.site = np.zeros(count, dtype=np.int16)
        self.network_s = np.full(count, np.nan)
        self.spilled = np.zeros(count, dtype=bool)

    def _site_service(self, site, central: ServiceSampler, rng: np.random.Generator) -> ServiceSampler:
        base = central
        if site.profile is not None:
            try:
                base = build_service(updated(self.scenario, {"service.profile": site.profile}), rng)
            except CapsimError as exc:
                raise ScenarioError(f"edge.sites ({site.name}): {str(exc).replace('service.profile', 'profile', 1)}") \
                    from None
        return base if site.service_time_scale == 1.0 else ScaledService(base, site.service_time_scale)

    def wrap_service(self, service):
        return SiteService([s for s, n in zip(self.samplers, self.counts) for _ in range(n)])

    def wrap_router(self, router):
        routers = [router] + [build_router(self.scenario.fleet.router, g) for g in self._router_rngs]
        self.router = SiteRouter(routers, [[] for _ in self.names])
        return self.router

    def attach(self, engine, scaler) -> None:
        self.engine, self.env = engine, engine.env
        first = np.cumsum([0, *self.counts])
        for k, rep in enumerate(engine.replicas()):
            self.router.members[int(np.searchsorted(first, k, side="right")) - 1].append(rep)
        engine.attach_front(self)

    def arrive(self, i: int) -> None:
        region = self.region[i]
        site = self.nearest[region]
        if site:
            self.engine.expire()  # requests past their deadline are not waiting any more
            if self.router.waiting(site) >= self.spec.edge_queue_limit:
                site, self.spilled[i] = 0, True
        rtt = self.rtt[region][site].next()
        self.site[i], self.network_s[i] = site, rtt
        self.env.timeout(rtt / 2, i).callbacks.append(self._reach_site)

    def _reach_site(self, event) -> None:
        i = event.value
        self.router.site = int(self.site[i])
        self.engine.admit(i)

    def finish(self, raw) -> None:
        raw.extra["response_s"] = np.nan_to_num(self.network_s / 2)
        raw.extra.setdefault("request_columns", {}).update({
            "network_s": self.network_s,
            "site": pd.Categorical.from_codes(self.site, categories=self.names),
            "spilled": self.spilled})

    def capacity_rps(self) -> float:
        sc = self.scenario
        sites = [batching_capacity_rps(s.mean_s, sc.batching.max_batch_size, n, sc.fleet.instances_per_replica)
                 for s, n in zip(self.samplers[1:], self.counts[1:])]
        return fleet_capacity_rps(sc, self.samplers[0]) + sum(sites)

    def prices(self) -> list[float]:
        central = self.scenario.cost.usd_per_replica_hour
        return [central] + [central if s.usd_per_replica_hour is None else s.usd_per_replica_hour
                            for s in self.spec.sites]

    def extend(self, summary, requests, batches, timeseries, replicas, window) -> None:
        t0, t1 = window
        arrival, outcome = requests["arrival_s"].to_numpy(), requests["outcome"].to_numpy()
        served = (arrival >= t0) & (arrival < t1) & (outcome == "served")
        site = requests["site"].cat.codes.to_numpy()
        summary["network_mean_s"] = float(requests["network_s"].to_numpy()[served].mean()) if served.any() else math.nan
        summary["edge_share"] = float((site[served] > 0).mean()) if served.any() else math.nan
        near_edge = (np.asarray(self.nearest)[np.asarray(self.region)] > 0) & (arrival >= t0) & (arrival < t1)
        summary["spill_share"] = float(requests["spilled"].to_numpy()[near_edge].mean()) if near_edge.any() else 0.0
        price = np.repeat(self.prices(), self.counts)[replicas["replica"].to_numpy()]
        billed_h = np.clip(np.minimum(replicas["gone_s"].to_numpy(), t1) - replicas["created_s"].to_numpy(), 0,
                           None) / 3600.0
        cost = float((billed_h * price).sum())
        summary["cost_usd"] = cost
        summary["cost_per_hour_usd"] = cost / (t1 / 3600.0) if t1 > 0 else math.nan
        n_served = summary["requests_served"]
        summary["cost_per_million_requests_usd"] = cost / n_served * 1e6 if n_served else math.nan
        timeseries["cost_rate_usd_per_h"] = float(np.dot(self.prices(), self.counts))


def _network_stream(spec, rng: np.random.Generator) -> BufferedStream:
    """Round-trip times of one (region, site) pair: ``mean_s`` times a unit-mean variate."""
    unit, mean = unit_distribution(spec.distribution, spec.cv), spec.mean_s
    return BufferedStream(lambda r, n: unit.sample(r, n) * mean, rng)
