"""One replication of an llm scenario: the token-level counterpart of ``sim.runner.run_once``'s tail.

``sim.runner.run_once`` draws the arrivals and fixes the horizon, drain and sampling interval for both
modes, then hands an llm scenario here: token counts from the ``tokens`` stream, the engine
(``sim.llm.engine``) with the shared routers and autoscalers, and the same four tables and summary
as a request-level run (the ``batches`` table holds iterations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.llm.build import ROLES, LlmSetup, llm_setup, pool_setups
from sim.llm.capacity import cached_prompt_tokens, disaggregated_capacity_rps, replica_capacity_rps
from sim.llm.engine import ITERATION_FIELDS, LlmEngine, LlmRecords
from sim.llm.metrics import token_summary
from sim.llm.scheduler import Sequences
from sim.llm.step_time import seeded_step_time
from sim.results.metrics import summarize
from sim.results.records import SERVED, UNFINISHED, batch_frame, replica_frame, token_request_frame
from sim.results.timeline import enrich_timeseries
from sim.scaling.scaler import attach_autoscaler
from sim.scenario.model import mean_rate_rps
from sim.serving.routers import build_router
from sim.workload.classes import DEFAULT, class_names, class_priorities, draw_classes
from sim.workload.conversations import conversation_turns, turns_per_arrival
from sim.workload.tokens import prefix_groups, token_counts

ITERATION_COLUMNS = ITERATION_FIELDS[4:]  # after replica, start_s, end_s, size (the batches table's own)


def run_llm_once(scenario, arrivals: np.ndarray, rng: dict[str, np.random.Generator], *, horizon_s: float,
                 stop_s: float, interval_s: float):
    """(requests, batches, timeseries, replicas, summary) of one replication; ``batches`` are iterations."""
    setup = llm_setup(scenario)
    prefix = scenario.workload.shared_prefix
    cls = draw_classes(scenario, rng["classes"], arrivals.size)  # per arrival: a conversation's turns share it
    turns = (conversation_turns(scenario, arrivals, rng, setup.max_model_len)
             if scenario.workload.conversation is not None else None)
    if turns is None:
        groups = prefix_groups(scenario, rng["prefixes"], arrivals.size)
        input_tokens, output_tokens = token_counts(scenario, rng["tokens"], arrivals.size, setup.max_model_len,
                                                   groups, cls, rng["classes"])
        conversation = None
    else:
        arrivals, input_tokens, output_tokens = turns.arrival_s, turns.input_tokens, turns.output_tokens
        groups, conversation = turns.prefix_group, turns.conversation.tolist()
        cls = cls[turns.conversation]
    seqs = Sequences(input_tokens.tolist(), output_tokens.tolist(), prefix_group=groups.tolist(),
                     prefix_tokens=prefix.tokens if prefix is not None else 0, conversation=conversation,
                     prefix_caching=scenario.llm.enable_prefix_caching,
                     priority=class_priorities(scenario)[cls].tolist())
    step_time = seeded_step_time(setup.step_time, rng["service"])  # a calibrated model draws its residuals
    pools = pool_setups(scenario, setup)
    engine = LlmEngine(scenario, arrivals, seqs, step_time, build_router(scenario.fleet.router, rng["routing"]),
                       kv_blocks=setup.plan.kv_blocks, sample_interval_s=interval_s, horizon_s=horizon_s,
                       stop_s=stop_s, next_turn=turns.next_turn if turns is not None else None,
                       think_s=turns.think_s if turns is not None else None,
                       decode_router=build_router(scenario.fleet.router, rng["routing"]) if pools else None,
                       pools={role: (step_time if s is setup else seeded_step_time(s.step_time, rng["service"]),
                                     s.plan.kv_blocks) for role, s in pools.items()},
                       kv_copy_s_per_token=kv_copy_s_per_token(scenario, pools))
    if pools:  # each pool scales on its own, if it has an autoscaler
        for role in ROLES:
            spec = scenario.llm.disaggregation.autoscaler(role)
            if spec is not None:
                attach_autoscaler(engine.pool(role), scenario.model_copy(update={"autoscaler": spec}),
                                  rng["lifecycle"], pools[role].weight_load)
    else:
        attach_autoscaler(engine, scenario, rng["lifecycle"], setup.weight_load)
    requests, iterations, timeseries, replicas = llm_frames(engine.run(), setup, turns, pools,
                                                            (np.array(class_names(scenario)), cls))
    timeseries = enrich_timeseries(timeseries, requests, iterations, replicas, scenario, interval_s)
    timeseries["cost_rate_usd_per_h"] = cost_rate(timeseries["time_s"].to_numpy(), replicas, setup, pools)
    timeseries["output_tokens_per_s"] = tokens_per_interval(timeseries["time_s"].to_numpy(), iterations, interval_s)
    return requests, iterations, timeseries, replicas, llm_summary(scenario, setup, requests, iterations, replicas,
                                                                   horizon_s, pools)


def kv_copy_s_per_token(scenario, pools: dict[str, LlmSetup]) -> float:
    """Seconds a disaggregated pool pair takes to copy one token's KV: its bytes over every GPU of the
    model (2 × layers × KV width × dtype) / (``kv_transfer_bytes_per_s`` × links), one link per GPU of the
    replica with fewer GPUs (each copies its shard at once). 0 when not disaggregated."""
    if not pools:
        return 0.0
    prefill, decode = pools["prefill"].plan, pools["decode"].plan
    model_bytes = prefill.kv_bytes_per_token_per_gpu * prefill.gpus
    links = min(prefill.gpus, decode.gpus)
    return model_bytes / (scenario.llm.disaggregation.kv_transfer_bytes_per_s * links)


def replica_prices(replicas: pd.DataFrame, setup: LlmSetup, pools: dict[str, LlmSetup]) -> np.ndarray:
    """Each replica's price per hour: its pool's GPUs × their price (every replica's, when not disaggregated)."""
    return np.array([(pools or {}).get(role, setup).usd_per_replica_hour for role in replicas["role"]], dtype=float)


def billed_hours(replicas: pd.DataFrame, horizon_s: float) -> np.ndarray:
    """Each replica's billed hours up to the horizon (``sim.results.metrics.summarize``'s rule)."""
    return np.clip(np.minimum(replicas["gone_s"].to_numpy(), horizon_s) - replicas["created_s"].to_numpy(), 0,
                   None) / 3600.0


def usd_per_replica_hour(replicas: pd.DataFrame, setup: LlmSetup, pools: dict[str, LlmSetup], horizon_s: float) -> float:
    """The mean price of the replica-hours billed: with pools of other GPUs, or scaled apart, weighted by each
    replica's billed time, so that replica-hours × this is the run's cost."""
    hours = billed_hours(replicas, horizon_s)
    prices = replica_prices(replicas, setup, pools)
    return float((hours * prices).sum() / hours.sum()) if hours.sum() > 0 else setup.usd_per_replica_hour


def cost_rate(t: np.ndarray, replicas: pd.DataFrame, setup: LlmSetup, pools: dict[str, LlmSetup]) -> np.ndarray:
    """Dollars per hour at each sample time: the price of every replica billed then (created, not gone)."""
    prices = replica_prices(replicas, setup, pools)
    times = np.concatenate([replicas["created_s"].to_numpy(), replicas["gone_s"].to_numpy()])
    steps = np.concatenate([prices, -prices])
    order = np.argsort(times, kind="stable")
    level = np.concatenate([[0.0], np.cumsum(steps[order])])  # the rate after each event
    return level[np.searchsorted(times[order], t, side="right")]


def llm_frames(raw: LlmRecords, setup: LlmSetup, turns=None, pools: dict[str, LlmSetup] | None = None,
               classes: tuple[np.ndarray, np.ndarray] | None = None):
    """(requests, batches, timeseries, replicas) tables from the engine's records; with conversations
    (``turns``) the requests are the turns that came, in arrival order, with their conversation and turn;
    ``classes``: (names, each request's class index), for the request_class column."""
    seqs = raw.seqs
    end = np.asarray(seqs.end_s, dtype=float)
    outcome = np.where(np.isnan(end), UNFINISHED, SERVED).astype(np.int8)
    columns = [raw.arrival_s, np.asarray(seqs.start_s, dtype=float), np.asarray(seqs.first_token_s, dtype=float),
               end, raw.replica, np.asarray(seqs.first_batch), outcome, np.asarray(seqs.input_tokens),
               np.asarray(seqs.output_tokens), np.asarray(seqs.preemptions), np.asarray(seqs.cached_tokens),
               np.asarray(seqs.prefix_group)]
    came = np.flatnonzero(np.isfinite(raw.arrival_s))
    order = came[np.argsort(raw.arrival_s[came], kind="stable")]
    requests = token_request_frame(*(c[order] for c in columns))
    requests["decode_replica"] = raw.decode_replica[order]
    names, cls = classes if classes is not None else (np.array([DEFAULT]), np.zeros(len(raw.arrival_s), np.int64))
    requests["request_class"] = names[cls[order]]
    requests["priority"] = np.asarray(raw.seqs.priority, dtype=np.int64)[order]
    requests["conversation"] = turns.conversation[order] if turns is not None else np.full(order.size, -1)
    requests["turn"] = turns.turn[order] if turns is not None else np.ones(order.size, dtype=np.int64)
    requests["history_tokens"] = (turns.history_tokens[order] if turns is not None
                                  else np.zeros(order.size, dtype=np.int64))
    it = raw.iterations
    n = len(it["start_s"])
    iterations = batch_frame(it["replica"], it["start_s"], it["end_s"], it["size"], np.zeros(n, dtype=bool),
                             **{k: np.asarray(it[k], dtype=np.int64) for k in ITERATION_COLUMNS})
    replicas = replica_frame(raw.replicas)
    roles = [r.role for r in raw.replicas]
    plans = [(pools or {}).get(role, setup).plan for role in roles]
    replicas["gpus"] = [plan.gpus for plan in plans]
    replicas["kv_blocks"] = [plan.kv_blocks for plan in plans]
    replicas["role"] = roles
    return requests, iterations, pd.DataFrame(raw.timeseries), replicas


def tokens_per_interval(t: np.ndarray, iterations: pd.DataFrame, dt: float) -> np.ndarray:
    """Output tokens of the iterations ending in each sample's interval (t − dt, t], per second."""
    order = np.argsort(iterations["end_s"].to_numpy(), kind="stable")
    ends = iterations["end_s"].to_numpy()[order]
    cumulative = np.concatenate([[0], np.cumsum(iterations["output_tokens"].to_numpy()[order])])
    upto = cumulative[np.searchsorted(ends, t, side="right")]
    return np.diff(upto, prepend=0) / dt


def llm_summary(scenario, setup: LlmSetup, requests, iterations, replicas, horizon_s: float,
                pools: dict[str, LlmSetup] | None = None) -> dict:
    """The request-level summary (``sim.results.metrics.summarize``) with the token-level keys and the cost
    of every GPU of every replica (disaggregated: each pool's GPUs at their price)."""
    llm, run, plan = scenario.llm, scenario.run, setup.plan
    spec = scenario.autoscaler
    fleet = scenario.fleet.replicas if spec.type == "static" else spec.max_replicas
    shape = dict(kv_tokens=plan.kv_tokens, block_size=plan.block_size, max_num_seqs=llm.max_num_seqs,
                 max_num_batched_tokens=llm.max_num_batched_tokens,
                 mean_input_tokens=float(requests["input_tokens"].mean()),
                 mean_output_tokens=float(requests["output_tokens"].mean()),
                 mean_cached_tokens=cached_prompt_tokens(scenario) + (float(requests["history_tokens"].mean())
                                                                      if llm.enable_prefix_caching else 0.0))
    sizes = llm.disaggregation
    if not pools:
        capacity = fleet * replica_capacity_rps(setup.step_time, **shape)
    else:
        capacity = disaggregated_capacity_rps(pools["prefill"].step_time, pools["decode"].step_time,
                                              prefill_replicas=sizes.prefill_replicas,
                                              decode_replicas=sizes.decode_replicas,
                                              **{**shape, "kv_tokens": pools["decode"].plan.kv_tokens})
    summary = summarize(requests, iterations, replicas, warmup_s=run.warmup_s, horizon_s=horizon_s,
                        slo_latency_s=scenario.slo.latency_s, slo_percentile=scenario.slo.percentile,
                        usd_per_replica_hour=usd_per_replica_hour(replicas, setup, pools or {}, horizon_s),
                        offered_rps=mean_rate_rps(
                            scenario.workload.arrivals) * turns_per_arrival(scenario), capacity_rps=capacity)
    summary.update(token_summary(requests, iterations, replicas, warmup_s=run.warmup_s, horizon_s=horizon_s,
                                 ttft_slo_s=llm.slo.ttft_s, tpot_slo_s=llm.slo.tpot_s,
                                 slo_percentile=llm.slo.percentile, unstable=bool(summary["unstable"])))
    if scenario.workload.classes:  # each class against its own objectives; the run meets its SLO if all do
        per_class = class_summary(requests, iterations, replicas, scenario, horizon_s, bool(summary["unstable"]))
        summary.update(per_class)
        names = class_names(scenario)
        good = sum(per_class[f"class__{c}__goodput_share"] * per_class[f"class__{c}__requests"] for c in names
                   if per_class[f"class__{c}__requests"])
        window = horizon_s - run.warmup_s
        summary["goodput_rps"] = good / window if window > 0 else float("nan")
        total = sum(per_class[f"class__{c}__requests"] for c in names)
        summary["goodput_share"] = good / total if total else float("nan")
        summary["slo_met"] = all(per_class[f"class__{c}__slo_met"] for c in names)
    replica_hours = summary["gpu_hours"]
    tokens = summary["output_tokens_per_s"] * (horizon_s - run.warmup_s)
    hours = billed_hours(replicas, horizon_s)  # GPUs per replica, weighted by billed time (pools may differ)
    gpus = float((hours * replicas["gpus"]).sum() / hours.sum()) if hours.sum() > 0 else float(replicas["gpus"].mean())
    kv = pools["decode"].plan if pools else plan  # the KV the generations hold
    summary.update({
        "gpu_hours": replica_hours * gpus,
        "gpus_per_replica": int(gpus) if gpus.is_integer() else gpus,
        "cost_per_million_output_tokens_usd": summary["cost_usd"] / tokens * 1e6 if tokens else float("nan"),
        "kv_cache_blocks": kv.kv_blocks,
        "kv_cache_tokens": kv.kv_tokens,
        "weight_bytes_per_gpu": kv.weight_bytes_per_gpu,
        "step_time_estimated": any(s.step_time.is_estimate for s in (pools or {"": setup}).values()),
    })
    return summary


CLASS_KEYS = ("ttft_p50_s", "tpot_p50_s", "goodput_share", "slo_met", "preemptions")


def class_summary(requests, iterations, replicas, scenario, horizon_s: float, unstable: bool) -> dict:
    """Per request class (``workload.classes``): its requests in the window and its TTFT and TPOT (p50 and
    at ``llm.slo.percentile``), share within its objectives (its own ``ttft_s`` / ``tpot_s``, else
    ``llm.slo``'s), verdict and preemptions, as ``class__<name>__<key>`` (NaN percentiles when the run is
    unstable)."""
    llm, out = scenario.llm, {}
    targets = {c.name: c.objectives(llm.slo) for c in scenario.workload.classes}
    arrived = requests["arrival_s"].to_numpy()
    inside = (arrived >= scenario.run.warmup_s) & (arrived < horizon_s)
    p = f"p{llm.slo.percentile:g}_slo_s"
    for name in class_names(scenario):
        mine = requests[requests["request_class"].to_numpy() == name]
        figures = token_summary(mine, iterations, replicas, warmup_s=scenario.run.warmup_s, horizon_s=horizon_s,
                                ttft_slo_s=targets[name][0], tpot_slo_s=targets[name][1],
                                slo_percentile=llm.slo.percentile, unstable=unstable)
        out[f"class__{name}__requests"] = int((inside & (requests["request_class"].to_numpy() == name)).sum())
        for key in (*CLASS_KEYS[:2], f"ttft_{p}", f"tpot_{p}", *CLASS_KEYS[2:]):
            out[f"class__{name}__{key}"] = figures[key]
    return out
