"""Pure computations behind the LLM page (no streamlit here): the scenario it starts from, the choices its
inputs offer, the updates they make, sweeps over replicas × tensor parallelism and over a scheduler knob, the
memory of one GPU of a replica, and the queue and KV-cache timelines of a run.

Every function is a function of its arguments; ``dashboard/compute.py`` caches the sweeps on hashable inputs.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dashboard import whatif
from sim.hardware.gpus import gpu_catalog
from sim.llm.build import catalog_gpu
from sim.llm.memory import plan_memory
from sim.models.llm_archs import llm_arch
from sim.planner.search import offered_rate_rps, scale_traffic
from sim.scenario.examples import list_examples
from sim.scenario.model import Scenario
from sim.scenario.model import mean_rate_rps as model_mean_rate_rps

DEFAULT_EXAMPLE = "llm/chat_llama3_8b"
MAX_LLM_REQUESTS = 100_000  # one run on the page (the token-level engine: about 24,000 chat requests/s)
SWEEP_REQUESTS = 1_500  # per sweep point (shortened runs)
TENSOR_PARALLEL = (1, 2, 4, 8)
KNOBS = {"llm.max_num_seqs": ("max_num_seqs (sequences)", (8, 16, 32, 64, 128, 256, 512)),
         "llm.max_num_batched_tokens": ("max_num_batched_tokens (tokens)", (256, 512, 1024, 2048, 4096, 8192))}
SWEEP_METRICS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "goodput_share", "output_tokens_per_s",
                 "cost_per_hour_usd", "cost_per_million_output_tokens_usd", "kv_utilization_mean", "preemptions",
                 "unstable", "capacity_rps", "throughput_rps")
MEMORY_PARTS = ("weights", "activations", "runtime reserve", "KV cache", "free (not budgeted)")


def is_llm(scenario: Scenario) -> bool:
    return scenario.llm is not None


def examples() -> list[str]:
    """The shipped llm examples, by name (``llm/chat_llama3_8b`` first)."""
    names = [n for n in list_examples() if n.startswith("llm/")]
    return sorted(names, key=lambda n: (n != DEFAULT_EXAMPLE, n))


def gpu_options(scenario: Scenario) -> list[str]:
    """Catalog GPUs with tensor cores for the scenario's dtype."""
    return [k for k, g in gpu_catalog().items() if g.peak_tflops.get(scenario.llm.dtype)]


def tensor_parallel_options(scenario: Scenario) -> list[int]:
    """TP degrees that divide the model's attention and KV heads (and the scenario's own)."""
    arch = llm_arch(scenario.llm.model)
    found = {tp for tp in TENSOR_PARALLEL if arch.heads % tp == 0 and arch.kv_heads % tp == 0}
    return sorted(found | {scenario.llm.tensor_parallel})


def mean_rate_rps(scenario: Scenario) -> float:
    """Mean arrival rate of the scenario's traffic: the process's own, else (a trace, steps, a spike) that of
    its arrivals in replication 0."""
    rate = model_mean_rate_rps(scenario.workload.arrivals)
    return rate if math.isfinite(rate) else offered_rate_rps(scenario)


def traffic_updates(scenario: Scenario, rate_rps: float) -> dict[str, Any]:
    """Every rate of the arrival process scaled so its mean is ``rate_rps`` (nothing when it already is)."""
    mean = mean_rate_rps(scenario)
    if not mean > 0 or math.isclose(rate_rps, mean, rel_tol=1e-9):
        return {}
    return scale_traffic(scenario, rate_rps / mean)


def check_size(scenario: Scenario) -> None:
    """Refuse a run too large for the page (token-level runs cost more per request than request-level ones)."""
    whatif.check_size(scenario, MAX_LLM_REQUESTS)


# ---------------------------------------------------------------- sweeps
def replica_range(replicas: int, points: int = 5) -> list[int]:
    """``points`` replica counts around ``replicas``, from 1."""
    start = max(1, replicas - points // 2)
    return list(range(start, start + points))


def grid_tensor_parallel(scenario: Scenario, most: int = 3) -> list[int]:
    """The scenario's TP and its neighbours among the options (at most ``most``; only its own when a calibrated
    profile measured that one)."""
    if scenario.llm.step_time.type == "calibrated":
        return [scenario.llm.tensor_parallel]
    options = tensor_parallel_options(scenario)
    i = options.index(scenario.llm.tensor_parallel)
    lo = max(0, min(i - 1, len(options) - most))
    return options[lo:lo + most]


def replica_grid_updates(scenario: Scenario, replicas: list[int], tensor_parallel: list[int]) -> list[dict[str, Any]]:
    """Static fleets of each replica count at each TP degree; disaggregated, each decode pool size beside
    the scenario's prefill pool."""
    if scenario.llm.disaggregation is not None:
        return [{"llm.disaggregation.decode_replicas": n, "llm.tensor_parallel": tp}
                for tp in tensor_parallel for n in replicas]
    return [{"fleet.replicas": n, "llm.tensor_parallel": tp, "autoscaler": {"type": "static"}}
            for tp in tensor_parallel for n in replicas]


def class_table(summary: dict, scenario: Scenario) -> pd.DataFrame:
    """One row per request class (``workload.classes``): its priority, requests, TTFT and TPOT at the SLO's
    percentile against its own objectives, and the share of its requests within both."""
    slo = scenario.llm.slo
    p = f"p{slo.percentile:g}"
    rows = []
    for c in scenario.workload.classes:
        ttft, tpot = c.objectives(slo)
        k = f"class__{c.name}__"
        rows.append({"class": c.name, "priority": c.priority, "requests": summary.get(f"{k}requests"),
                     f"TTFT {p}": latency_text(summary.get(f"{k}ttft_{p}_slo_s")),
                     "TTFT objective": latency_text(ttft),
                     f"TPOT {p}": latency_text(summary.get(f"{k}tpot_{p}_slo_s")),
                     "TPOT objective": latency_text(tpot),
                     "within both": f"{summary.get(f'{k}goodput_share', math.nan) * 100:.1f} %",
                     "SLO": "met" if summary.get(f"{k}slo_met") else "missed"})
    return pd.DataFrame(rows)


def default_pools(scenario: Scenario) -> tuple[int, int]:
    """Prefill and decode replicas a mixed fleet splits into when first separated: half each (one at least)."""
    n = scenario.fleet.replicas
    return max(1, n // 2), max(1, n - n // 2)


def pools_section(scenario: Scenario, prefill: int, decode: int) -> dict[str, Any]:
    """``llm.disaggregation`` with these pool sizes, keeping the scenario's copy settings (or the defaults)."""
    from sim.scenario.llm import Disaggregation

    pools = scenario.llm.disaggregation or Disaggregation(prefill_replicas=prefill, decode_replicas=decode)
    return {**pools.model_dump(mode="json"), "prefill_replicas": prefill, "decode_replicas": decode}


def knob_values(scenario: Scenario, key: str) -> list[int]:
    """The values a scheduler knob is swept over: its presets, the scenario's own, and what the scenario
    accepts (max_num_batched_tokens ≥ max_num_seqs)."""
    own = scenario.llm.max_num_seqs if key == "llm.max_num_seqs" else scenario.llm.max_num_batched_tokens
    values = sorted(set(KNOBS[key][1]) | {own})
    if key == "llm.max_num_seqs":
        return [v for v in values if v <= scenario.llm.max_num_batched_tokens]
    return [v for v in values if v >= scenario.llm.max_num_seqs]


def slo_keys(scenario: Scenario) -> tuple[str, str, str]:
    """(``p99``, the summary keys of TTFT and TPOT at the SLO's percentile)."""
    p = f"p{scenario.llm.slo.percentile:g}"
    return p, f"ttft_{p}_slo_s", f"tpot_{p}_slo_s"


def sweep(scenario: Scenario, updates: list[dict[str, Any]], seed: int) -> pd.DataFrame:
    """One run per updates dict (same traffic): the token-level figures, TTFT and TPOT at the SLO's
    percentile in ms (``ttft_ms``, ``tpot_ms``), and ``error`` where the configuration does not run (a model
    that does not fit, say). Varied keys are columns named by their last part (``replicas``,
    ``tensor_parallel``, ``max_num_seqs``: a chart reads a dot as a nested field)."""
    _, ttft, tpot = slo_keys(scenario)
    metrics = tuple(dict.fromkeys((*SWEEP_METRICS, ttft, tpot)))
    frame = whatif.sweep(scenario, updates, seed, metrics=metrics).drop(columns=["autoscaler"], errors="ignore")
    frame["error"] = frame["error"].fillna("").astype(str) if "error" in frame else ""
    for name, key in (("ttft_ms", ttft), ("tpot_ms", tpot)):
        frame[name] = frame[key] * 1e3 if key in frame else float("nan")
    return frame.rename(columns=lambda c: c.rsplit(".", 1)[-1])


def latency_text(seconds) -> str:
    """A latency short enough for a metric card: ``201 ms``, ``19.4 ms``, ``1.50 s``."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    if seconds >= 1:
        return f"{seconds:,.2f} s"
    return f"{seconds * 1e3:.3g} ms" if seconds * 1e3 < 100 else f"{seconds * 1e3:,.0f} ms"


# ---------------------------------------------------------------- memory
def memory_breakdown(scenario: Scenario, updates: dict[str, Any], tensor_parallel: list[int]) -> pd.DataFrame:
    """One GPU of a replica of ``scenario`` with ``updates`` (``fleet.gpu``, ``llm.*``; they need not make a
    valid scenario) at each TP degree: GiB of weights, activations, runtime reserve, KV cache and the memory
    outside ``gpu_memory_utilization`` (rows: tp, part, gib), with ``fits``, ``kv_tokens`` and ``over_gib`` (how
    far weights, activations and runtime overrun the budget: then there is no KV cache)."""

    def value(name: str):
        return updates.get(f"llm.{name}", getattr(scenario.llm, name))

    arch, gpu = llm_arch(value("model")), catalog_gpu(updates.get("fleet.gpu", scenario.fleet.gpu))
    rows = []
    for tp in tensor_parallel:
        plan = plan_memory(arch, gpu, value("dtype"), tp, value("pipeline_parallel"),
                           gpu_memory_utilization=value("gpu_memory_utilization"), block_size=value("block_size"),
                           max_num_batched_tokens=value("max_num_batched_tokens"), max_num_seqs=value("max_num_seqs"))
        kv = max(0.0, plan.kv_bytes_per_gpu)
        parts = (plan.weight_bytes_per_gpu, plan.activation_bytes_per_gpu, plan.runtime_bytes_per_gpu, kv,
                 plan.gpu_memory_bytes - plan.budget_bytes)
        over = max(0.0, -plan.kv_bytes_per_gpu)
        for order, (part, size) in enumerate(zip(MEMORY_PARTS, parts)):
            rows.append({"tp": f"TP {tp}", "tensor_parallel": tp, "part": part, "order": order, "gib": size / 2**30,
                         "fits": plan.kv_blocks > 0, "kv_tokens": plan.kv_tokens, "over_gib": over / 2**30,
                         "gpu_gib": plan.gpu_memory_bytes / 2**30})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- timelines
def queue_frames(series: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Running and waiting sequences over time (all replicas), as frames of ``time_s`` and ``value``."""
    return {name: pd.DataFrame({"time_s": series["time_s"], "value": series[column]})
            for name, column in (("running", "running_sequences"), ("waiting", "waiting_sequences"))
            if column in series}

