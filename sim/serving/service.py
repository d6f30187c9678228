"""Service-time models: how long one batch of size b takes on a replica.

``build_service(scenario, rng)`` returns a ``ServiceSampler`` whose ``draw(b)`` gives one batch's
service time and ``first_call_extra_s(b)`` the extra cost of the first batch of size b on a cold
replica. Two kinds, named by ``service.type``:

* ``parametric``: mean ``base_s + per_item_s * b`` times a unit-mean variate (deterministic,
  exponential, lognormal or gamma with the given cv);
* ``profile``: the measured empirical distribution of the batch size (one uniform ``u`` picks the
  quantile); between two measured sizes the same quantile is read from both and interpolated
  linearly; plus a draw of the serving loop's host overhead.
"""

from __future__ import annotations

import bisect
import difflib
import math
from dataclasses import dataclass

import numpy as np

from sim.distributions import BufferedStream, unit_distribution
from sim.errors import ProfileError
from sim.profiles.profile import list_builtin_profiles, load_profile, resolve_profile_path
from sim.serving.waiting import modelled_wait, recorded_wait


class ServiceSampler:
    """Draws batch service times; one instance per replication (it owns a random stream)."""

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0,
             replica: int = 0) -> float:  # pragma: no cover - interface
        """One batch's service time on ``replica``; ``idle_s`` is how long the replica sat idle before
        it, ``now_s`` the simulated time it starts."""
        raise NotImplementedError

    def mean_s(self, batch_size: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def first_call_extra_s(self, batch_size: int) -> float:
        return 0.0

    def capacity_rps(self, batch_size: int) -> float:
        """Throughput of one busy instance running batches of this size back to back."""
        return batch_size / self.mean_s(batch_size)


@dataclass
class ParametricSampler(ServiceSampler):
    base_s: float
    per_item_s: float
    stream: BufferedStream
    scale: float = 1.0

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0, replica: int = 0) -> float:
        return (self.base_s + self.per_item_s * batch_size) * self.stream.next()

    def mean_s(self, batch_size: int) -> float:
        return self.base_s + self.per_item_s * batch_size


class ProfileSampler(ServiceSampler):
    """Empirical service times from a profile, quantile-interpolated between measured sizes."""

    def __init__(self, profile, max_batch_size: int, rng: np.random.Generator, *, host_overhead: bool,
                 warmed_up: bool, speedup: float = 1.0, idle_effects: bool = True) -> None:
        sizes = profile.batch_sizes
        if max_batch_size > sizes[-1]:
            raise ProfileError(
                f"batching.max_batch_size = {max_batch_size}: the profile {profile.model_name!r} "
                f"({profile.path}) measured batch sizes up to {sizes[-1]} only; lower max_batch_size or "
                "calibrate larger sizes"
            )
        self.profile = profile
        self._uniform = BufferedStream(lambda r, n: r.random(n), rng)
        # One speed level per replica (its own device and host): replica 0's from ``rng`` itself, the
        # others' from child seeds spawned as they first run a batch (the main stream is not touched).
        self._levels = [SpeedLevel.of(profile, rng)]
        self._rng = rng
        self.trace = SpeedTrace.of(profile)
        # A regime path in wall time (phase random_time) starts at a random phase per replica, likewise.
        self._phases = [rng.uniform(0.0, self.trace.span_s)] if self.trace and self.trace.span_s else []
        first_call = (profile.raw or {}).get("first_call")
        self._stalls = [float(x) for x in first_call["stall_s"]] if first_call and not warmed_up else None
        self._warm_sizes = set(first_call.get("warm_sizes") or ()) if first_call else set()
        self._response = IdleResponse.of(profile) if idle_effects else None
        idle_ratios, self._idle_gap_s = (idle_slowdown(profile) if idle_effects and self._response is None
                                         else ({}, 1.0))
        self._idle = ([[]] + [nearest_ratios(idle_ratios, b) for b in range(1, max_batch_size + 1)]
                      if idle_ratios else None)
        dispatch = ((profile.raw or {}).get("dispatch") or {}) if host_overhead else {}
        self._dispatch_idle = [float(x) for x in dispatch.get("idle_s") or []]
        self._dispatch_busy = [float(x) for x in dispatch.get("busy_s") or []]
        # A speed trace with the loop's back-to-back gaps replays them where they happened.
        self._busy_late = [] if self.trace is not None and self.trace.has_loop else self._dispatch_busy
        self._speedup = speedup
        # Per batch size 1..max: (lower samples, upper samples, weight of upper, host overhead samples).
        self._table: list[tuple[list[float], list[float], float, list[float]]] = [([], [], 0.0, [])]
        self._mean: list[float] = [0.0]
        self._first: list[float] = [0.0]
        for b in range(1, max_batch_size + 1):
            lo, hi, w = _bracket(sizes, b)
            lo_s, hi_s = profile.latency_s[lo], profile.latency_s[hi]
            overhead = np.asarray(profile.host_overhead_for(b), float) if host_overhead else np.empty(0)
            self._table.append((lo_s.tolist(), hi_s.tolist(), w, overhead.tolist()))
            mean = (1 - w) * float(lo_s.mean()) + w * float(hi_s.mean())
            busy = float(np.mean(self._dispatch_busy)) if self._dispatch_busy else 0.0
            self._mean.append((mean + (float(overhead.mean()) if overhead.size else 0.0) + busy) / speedup)
            self._first.append(0.0 if warmed_up else _first_extra(profile, lo, hi, w) / speedup)

    def draw(self, batch_size: int, idle_s: float = 0.0, now_s: float = 0.0, replica: int = 0) -> float:
        lo, hi, w, overhead = self._table[batch_size]
        u = self._uniform.next()
        x = lo[int(u * len(lo))]
        if w:
            x += w * (hi[int(u * len(hi))] - x)
        if self._levels[0] is not None:
            x *= self._level_of(replica).next()
        if idle_s > 0.0 and self._response is not None:
            x *= self._response.ratio(idle_s)
        elif idle_s > 0.0 and self._idle:
            ratios = self._idle[batch_size]
            ratio = ratios[int(self._uniform.next() * len(ratios))]
            x *= 1.0 + (ratio - 1.0) * min(1.0, idle_s / self._idle_gap_s)
        if self._phases:
            x = self.trace.circular_duration((now_s + self._phase_of(replica)) % self.trace.span_s, x)
        elif self.trace is not None:
            x = self.trace.duration(now_s, x)
        if overhead:
            x += overhead[int(self._uniform.next() * len(overhead))]
        late = self._dispatch_idle if idle_s > 0.0 else self._busy_late
        if late:
            x += late[int(self._uniform.next() * len(late))]
        return x / self._speedup

    def _level_of(self, replica: int) -> SpeedLevel:
        levels = self._levels
        while len(levels) <= replica:
            child = np.random.default_rng(self._rng.bit_generator.seed_seq.spawn(1)[0])
            levels.append(SpeedLevel.of(self.profile, child))
        return levels[replica]

    def _phase_of(self, replica: int) -> float:
        phases = self._phases
        while len(phases) <= replica:
            child = np.random.default_rng(self._rng.bit_generator.seed_seq.spawn(1)[0])
            phases.append(child.uniform(0.0, self.trace.span_s))
        return phases[replica]

    def mean_s(self, batch_size: int) -> float:
        return self._mean[batch_size]

    def first_call_extra_s(self, batch_size: int) -> float:
        """With the profile's ``first_call`` section: 0 for a size in its ``warm_sizes``, else one draw of
        its stalls; without it the measured first call of the size beyond its median."""
        if self._stalls is None:
            return self._first[batch_size]
        if batch_size in self._warm_sizes or not self._stalls:
            return 0.0
        return self._stalls[int(self._uniform.next() * len(self._stalls))] / self._speedup


class SpeedLevel:
    """A server's slowly wandering speed: batch ``t`` takes its drawn time x ``exp(L_t)``, from a
    profile's ``service_level`` (sim/profiles/fromrun.py).

    A real server's slow batches come in runs (frequency, caches, the machine's other tenants; on a
    shared CPU the log batch time still correlates 0.2-0.4 thirty batches apart), and i.i.d. draws
    understate how queues build up in them. With a measured ``path`` (the level of each served batch
    in order) the sampler walks it circularly from a random start: the machine's own slowdowns, at a
    random phase to the arrivals. Without one, ``L`` is an AR(1) in batches,
    ``L_t = rho * L_(t-1) + sigma * sqrt(1 - rho^2) * e_t``. One level per replica and replication:
    replicas run on their own devices, so each walks the path from its own start (a one-run trace
    replayed with ``phase: aligned`` is the machine's, shared: :class:`SpeedTrace`).
    """

    __slots__ = ("_normal", "_rho", "_step", "_level", "_path", "_i")

    def __init__(self, sigma: float, rho: float, rng: np.random.Generator, path: list[float] | None = None) -> None:
        self._path = [math.exp(v) for v in path] if path else None
        self._i = int(rng.integers(len(path))) if path else 0
        self._normal = BufferedStream(lambda r, n: r.standard_normal(n), rng)
        self._rho, self._step = rho, sigma * math.sqrt(1.0 - rho * rho)
        self._level = 0.0 if path else sigma * self._normal.next()  # start in the stationary law

    @classmethod
    def of(cls, profile, rng: np.random.Generator) -> SpeedLevel | None:
        c = (profile.raw or {}).get("service_level") or {}
        sigma, rho, path = c.get("sigma"), c.get("rho"), c.get("path")
        if c.get("phase") in ("aligned", "random_time") or (not path and (not sigma or rho is None)):
            return None
        return cls(float(sigma or 0.0), float(rho or 0.0), rng, path)

    def next(self) -> float:
        if self._path is not None:
            self._i = self._i + 1 if self._i + 1 < len(self._path) else 0
            return self._path[self._i]
        self._level = self._rho * self._level + self._step * self._normal.next()
        return math.exp(self._level)


class SpeedTrace:
    """A served run's speed over time, replayed at the same moments (``service_level.phase: aligned``,
    a ``capsim profile from-run --speed trace`` profile of one run; ``capsim validate --from-run replay``),
    or a served log's speed regimes, repeating every ``span_s`` and entered at a random phase per replica
    (``phase: random_time``, ``capsim profile from-log``: :meth:`circular_duration`).

    Real batch ``i`` started at ``path_start_s[i]`` and took ``exp(path[i])`` times its size's median
    (after the idle response is taken out): from then until the next real batch started the machine
    worked at rate ``exp(-path[i])`` (before the first start the first rate, after the last the last),
    except for ``path_loop_s[i]``, the serving loop's own time between a batch and the next one right
    behind it, when it did no model work (rate 0; the simulator then draws no back-to-back dispatch
    delay, the trace has it, where it happened). A simulated batch needing ``w`` seconds of
    median-speed work from ``t`` ends when the cumulative work ``C`` reaches ``C(t) + w``: the speed
    is integrated over the batch, not read at its start, which would pick slow batches by their
    length (the inspection paradox) and run ~5% slow. Deterministic: with one run's trace the
    simulator's only remaining draws are dispatch delays after idle.
    """

    __slots__ = ("_at", "_rate", "_work", "has_loop", "span_s")

    def __init__(self, start_s: list[float], log_level: list[float], loop_s: list[float] | None = None,
                 span_s: float | None = None) -> None:
        if len(start_s) != len(log_level) or not start_s or (loop_s is not None and len(loop_s) != len(start_s)):
            raise ProfileError(f"service_level.path_start_s has {len(start_s)} times for {len(log_level)} path "
                               f"levels{'' if loop_s is None else f' and {len(loop_s)} loop gaps'}; they must pair "
                               "up (and not be empty)")
        order = sorted(range(len(start_s)), key=start_s.__getitem__)
        self.has_loop = loop_s is not None
        at: list[float] = []
        rate: list[float] = []
        for j, k in enumerate(order):
            at.append(float(start_s[k]))
            rate.append(math.exp(-float(log_level[k])))
            if loop_s and loop_s[k] and j + 1 < len(order):
                busy_until = float(start_s[order[j + 1]]) - float(loop_s[k])
                if at[-1] < busy_until:
                    at.append(busy_until)
                    rate.append(0.0)
        self._at, self._rate = at, rate
        work, total = [0.0], 0.0
        for k in range(1, len(at)):
            total += (at[k] - at[k - 1]) * rate[k - 1]
            work.append(total)
        self._work = work
        self.span_s = span_s

    @classmethod
    def of(cls, profile) -> SpeedTrace | None:
        c = (profile.raw or {}).get("service_level") or {}
        phase = c.get("phase") or "random"
        if phase not in ("random", "aligned", "random_time"):
            raise ProfileError(f"service_level.phase = {phase!r}: must be 'random' (walk the level path from a "
                               "random start), 'aligned' (replay it at the times in path_start_s) or "
                               "'random_time' (replay it in wall time from a random phase)")
        if phase == "random":
            return None
        if not c.get("path") or not c.get("path_start_s"):
            raise ProfileError(f"service_level.phase = {phase!r} needs service_level.path and path_start_s "
                               "(capsim profile from-run --speed trace, or from-log)")
        if phase == "random_time":
            return cls(c["path_start_s"], c["path"], span_s=float(c["span_s"]))
        return cls(c["path_start_s"], c["path"], c.get("path_loop_s"))

    @property
    def end_s(self) -> float:
        """When the replayed run's last batch started; after it the trace keeps that batch's rate."""
        return self._at[-1]

    def work_at(self, t: float) -> float:
        """Median-speed work done from the first real batch's start until ``t`` (negative before it)."""
        i = bisect.bisect_right(self._at, t) - 1
        if i < 0:
            return (t - self._at[0]) * self._rate[0]
        return self._work[i] + (t - self._at[i]) * self._rate[i]

    def duration(self, now_s: float, work_s: float) -> float:
        """How long ``work_s`` of median-speed work takes when started at ``now_s``."""
        target = self.work_at(now_s) + work_s
        if target <= 0.0:
            return self._at[0] + target / self._rate[0] - now_s
        k = bisect.bisect_left(self._work, target)  # the first breakpoint with that much work done
        if k == len(self._work):
            return self._at[-1] + (target - self._work[-1]) / self._rate[-1] - now_s
        # work[k-1] < target <= work[k]: segment k-1 does work, so its rate is > 0
        return self._at[k - 1] + (target - self._work[k - 1]) / self._rate[k - 1] - now_s

    def circular_duration(self, phase_s: float, work_s: float) -> float:
        """How long ``work_s`` takes from ``phase_s`` in [0, span_s) of a path that repeats every
        ``span_s`` (``phase: random_time``; its first level starts at 0, its last lasts until span_s)."""
        period = self.work_at(self.span_s)
        done = self.work_at(phase_s) + work_s
        cycles = math.floor(done / period)
        return cycles * self.span_s + self.duration(0.0, done - cycles * period) - phase_s


class IdleResponse:
    """Slowdown of a batch after its replica sat idle for ``idle_s``, from a profile's ``idle_response``
    (median ratio per idle-gap bin, see sim/profiles/fromrun.py): 1 up to ``back_to_back_s`` (the gaps the
    ratios are measured against: a served loop's own ~10 us between batches is not idleness), linear
    from there to the first bin's ratio, linear in log(gap) between bins, flat after the last. A
    deterministic multiplier of the drawn time."""

    def __init__(self, gaps_s: list[float], ratio: list[float], back_to_back_s: float = 0.0) -> None:
        self.gaps_s = [float(g) for g in gaps_s]
        self.log_gaps = [math.log(g) for g in self.gaps_s]
        self.ratios = [float(r) for r in ratio]
        self.back_to_back_s = min(max(float(back_to_back_s), 0.0), self.gaps_s[0])

    @classmethod
    def of(cls, profile) -> IdleResponse | None:
        section = (profile.raw or {}).get("idle_response") or {}
        gaps, ratio = section.get("gaps_s") or [], section.get("ratio") or []
        if not gaps or len(gaps) != len(ratio):
            return None
        return cls(gaps, ratio, section.get("back_to_back_s") or 0.0)

    def ratio(self, idle_s: float) -> float:
        g, r, flat = self.gaps_s, self.ratios, self.back_to_back_s
        if idle_s <= flat:
            return 1.0
        if idle_s <= g[0]:  # (g[0] > flat here: idle_s lies between them)
            return 1.0 + (r[0] - 1.0) * (idle_s - flat) / (g[0] - flat)
        if idle_s >= g[-1]:
            return r[-1]
        i = bisect.bisect_right(g, idle_s)
        lg = math.log(idle_s)
        w = (lg - self.log_gaps[i - 1]) / (self.log_gaps[i] - self.log_gaps[i - 1])
        return r[i - 1] + w * (r[i] - r[i - 1])


def idle_slowdown(profile) -> tuple[dict[int, list[float]], float]:
    """Slowdown of a batch that starts after its replica sat idle, from the profile's serving replay.

    The replay ran mixed batch sizes with idle gaps between them; each batch of a profiled size gives
    one ratio, its latency over the back-to-back median of that size. Ratios are kept per size: the
    effect is closer to additive for tiny models (a thread-pool wake-up of ~0.4 ms is 4x at batch 1
    and 1.9x at 32 for the shipped CPU MLP) and multiplicative for large ones (~1.1x for BERT).
    Returns ({size: sorted ratios}, shortest replay gap); empty without a replay.
    """
    replay = (profile.raw or {}).get("serving_replay") or {}
    sizes, gaps, lat = (replay.get(k) or [] for k in ("batch_sizes", "gaps_s", "latency_s"))
    if not sizes or len(sizes) != len(lat) or len(gaps) != len(sizes):
        return {}, 1.0
    ratios: dict[int, list[float]] = {}
    for b, x in zip(sizes, lat):
        if b in profile.latency_s and x and x > 0:
            ratios.setdefault(int(b), []).append(float(x) / profile.median_latency_s(b))
    positive = [g for g in gaps if g and g > 0]
    if not ratios or not positive:
        return {}, 1.0
    return {b: sorted(v) for b, v in ratios.items()}, float(min(positive))


def nearest_ratios(ratios: dict[int, list[float]], batch_size: int) -> list[float]:
    """The replay ratios of the replayed size nearest to ``batch_size`` on a log scale."""
    if not ratios:
        return []
    best = min(ratios, key=lambda b: (abs(np.log2(b) - np.log2(batch_size)), b))
    return ratios[best]


def _bracket(sizes: tuple[int, ...], b: int) -> tuple[int, int, float]:
    """Measured sizes around b and the interpolation weight of the upper one."""
    idx = int(np.searchsorted(sizes, b))
    if sizes[idx] == b:
        return b, b, 0.0
    if idx == 0:  # below the smallest measured size: use it (latency is flat at small b)
        return sizes[0], sizes[0], 0.0
    lo, hi = sizes[idx - 1], sizes[idx]
    return lo, hi, (b - lo) / (hi - lo)


def _first_extra(profile, lo: int, hi: int, w: float) -> float:
    def extra(size: int) -> float:
        first = profile.first_call_s.get(size)
        return max(0.0, first - profile.median_latency_s(size)) if first is not None else 0.0

    return (1 - w) * extra(lo) + w * extra(hi)


def build_service(scenario, rng: np.random.Generator) -> ServiceSampler:
    """The service sampler a scenario describes, drawing from ``rng``."""
    spec = scenario.service
    if spec.type == "parametric":
        dist = unit_distribution(spec.distribution, spec.cv)
        return ParametricSampler(spec.base_s, spec.per_item_s, BufferedStream(dist.sample, rng))
    profile = resolve_profile(scenario)
    wait = modelled_wait(spec.server_wait, spec.idle_effects, recorded_wait(profile.raw),
                         f"the profile {profile.model_name!r} ({profile.path})")
    sampler = ProfileSampler(profile, scenario.batching.max_batch_size, rng, host_overhead=spec.host_overhead,
                             warmed_up=spec.warmed_up, speedup=spec.speedup, idle_effects=wait is not None)
    trace, horizon = sampler.trace, scenario.run.duration_s
    if trace is not None and trace.span_s is None and horizon is not None and horizon > 1.5 * trace.end_s + 1.0:
        raise ProfileError(
            f"run.duration_s = {horizon:g}: the profile {profile.model_name!r} ({profile.path}) replays one served "
            f"run's speed, which ends at {trace.end_s:.3g} s (service_level.phase = 'aligned'); to simulate other "
            "traffic build its profile without --speed trace (capsim profile from-run RUN_DIR --out FILE)")
    return sampler


def resolve_profile(scenario):
    """Load the profile a scenario names: a shipped profile's name or a path from the scenario dir."""
    try:
        return load_profile(resolve_profile_path(scenario.service.profile, scenario.base_dir))
    except ProfileError as exc:
        text = str(exc)
        if text.startswith("profile = "):
            hint = difflib.get_close_matches(scenario.service.profile, list_builtin_profiles(), n=1, cutoff=0.6)
            text = "service." + text + (f"; did you mean {hint[0]!r}?" if hint else "")
        raise ProfileError(text) from None
