"""Scenario sections of token-level LLM serving: ``llm:`` and the token lengths of ``workload:``.

A scenario with an ``llm`` section is simulated by ``sim.llm`` (an iteration-level, vLLM-style scheduler
per replica) instead of the request-level engine; it has no ``service`` section (the iteration time is
``llm.step_time``) and no ``batching`` section (the scheduler batches). Its requests carry
``workload.input_tokens`` and ``workload.output_tokens``. The fleet's GPU (``fleet.gpu``) is the catalog
GPU every replica is made of, ``tensor_parallel × pipeline_parallel`` of them. See docs/llm.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sim.llm.build import check_llm_scenario
from sim.models.llm_archs import LLM_ARCHS
from sim.scenario.base import NonNegFloat, PositiveFloat, Section, union_tags
from sim.scenario.scaling import Autoscaler


# ---------------------------------------------------------------- token lengths (workload)
class FixedTokens(Section):
    distribution: Literal["fixed"]
    tokens: int = Field(ge=1, le=10_000_000, description="Every request has this many tokens.")


class LognormalTokens(Section):
    distribution: Literal["lognormal"]
    mean_tokens: PositiveFloat = Field(description="Mean length before rounding and clipping, tokens.")
    cv: PositiveFloat = Field(description="Coefficient of variation of the length (ShareGPT-like chat: about 1).")
    min_tokens: int = Field(default=1, ge=1, description="Draws are rounded and raised to at least this, tokens.")
    max_tokens: int | None = Field(default=None, ge=1, description="Draws above this are clipped to it, tokens "
                                   "(none: no clipping; a draw beyond llm.max_model_len is then an error).")

    @model_validator(mode="after")
    def _bounds(self) -> LognormalTokens:
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be ≥ min_tokens ({self.min_tokens})")
        return self


class EmpiricalTokens(Section):
    distribution: Literal["empirical"]
    path: str = Field(description="CSV or Parquet file of observed lengths, relative to the scenario file; "
                      "requests draw from its values uniformly, with replacement.")
    column: str = Field(description="Column of lengths (integers ≥ 1), tokens.")


class TraceTokens(Section):
    distribution: Literal["trace"]
    column: str | None = Field(default=None, description="Column of workload.arrivals.path (process: trace) "
                               "holding each request's length, row for row with its arrival; default "
                               "input_tokens / output_tokens.")


class SharedPrefix(Section):
    """Requests that start with one of a few shared prefixes (a system prompt, few-shot examples, a
    document under discussion): what a prefix cache (``llm.enable_prefix_caching``) can reuse."""

    tokens: int = Field(ge=1, le=10_000_000, description="Tokens of each shared prefix, added in front of the "
                        "request's own prompt (workload.input_tokens).")
    groups: int = Field(default=1, ge=1, le=1_000_000, description="Distinct prefixes (e.g. system prompts of "
                        "different applications or tenants).")
    share: float = Field(default=1.0, ge=0, le=1, description="Share of the requests that start with one; the "
                         "rest have only their own prompt.")
    zipf_s: float = Field(default=0.0, ge=0, le=10, description="Popularity of the prefixes: the k-th most used "
                          "has weight k^-zipf_s; 0 = all equally likely.")


class Conversation(Section):
    """Multi-turn chat: each arrival of ``workload.arrivals`` starts a conversation whose later turns come
    one think time after the reply to the previous one (closed loop), each prompt carrying the whole
    conversation so far: what a prefix cache reuses turn after turn."""

    mean_turns: float = Field(ge=1, le=1000, description="Turns per conversation on average: geometric, each turn "
                              "followed by another with probability 1 − 1/mean_turns (1: single requests).")
    think_time_s: PositiveFloat = Field(description="Time from a reply to the user's next turn, exponential with "
                                        "this mean, seconds.")


TokenLengths = Annotated[FixedTokens | LognormalTokens | EmpiricalTokens | TraceTokens,
                         Field(discriminator="distribution")]
TOKEN_DISTRIBUTIONS = union_tags(TokenLengths, "distribution")


class RequestClass(Section):
    """A share of the traffic with a name and a scheduling priority (interactive chat beside batch jobs)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Label in the requests table and the "
                      "summary's per-class keys: lowercase letters, digits, - and _ (at most 32).")
    share: float = Field(gt=0, le=1, description="Share of the arrivals in this class (a conversation's turns all "
                         "share its class); the shares add up to 1.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="With llm.scheduling_policy: priority, lower "
                          "is served first and preempted last (vLLM's convention); ignored under fcfs.")
    input_tokens: TokenLengths | None = Field(default=None, description="This class's prompt lengths (fixed, "
                                              "lognormal or empirical; default: workload.input_tokens).")
    output_tokens: TokenLengths | None = Field(default=None, description="This class's output lengths (default: "
                                               "workload.output_tokens).")
    ttft_s: PositiveFloat | None = Field(default=None, description="This class's time-to-first-token objective "
                                         "at llm.slo.percentile, seconds (default: llm.slo.ttft_s).")
    tpot_s: PositiveFloat | None = Field(default=None, description="This class's time-per-output-token objective, "
                                         "seconds (default: llm.slo.tpot_s).")

    def objectives(self, slo) -> tuple[float, float]:
        """(TTFT, TPOT) objectives of this class: its own, else ``slo``'s (``llm.slo``)."""
        return (self.ttft_s if self.ttft_s is not None else slo.ttft_s,
                self.tpot_s if self.tpot_s is not None else slo.tpot_s)


# ---------------------------------------------------------------- iteration time
class CoefficientsStepTime(Section):
    """step = base_s + per_prefill_token_s·P + per_decode_token_s·D + per_kv_token_s·K (BLIS's blackbox form)."""

    type: Literal["coefficients"]
    base_s: NonNegFloat = Field(description="β0: fixed cost of one iteration, seconds.")
    per_prefill_token_s: NonNegFloat = Field(default=0.0, description="β1: per prompt token computed, seconds.")
    per_decode_token_s: NonNegFloat = Field(default=0.0, description="β2: per decoding sequence, seconds.")
    per_kv_token_s: NonNegFloat = Field(default=0.0, description="β3: per KV-cache token read by attention, "
                                        "seconds.")

    @model_validator(mode="after")
    def _takes_time(self) -> CoefficientsStepTime:
        if self.base_s + self.per_prefill_token_s + self.per_decode_token_s <= 0:
            raise ValueError("base_s, per_prefill_token_s and per_decode_token_s are all 0: an iteration must "
                             "take time")
        return self


class RooflineStepTime(Section):
    """An ESTIMATE from the architecture and the GPU catalog, for hardware with no measurement."""

    type: Literal["roofline"] = "roofline"
    compute_efficiency: float = Field(default=0.5, gt=0, le=1, description="Share of the dense peak FLOP/s "
                                      "matmuls reach (assumed).")
    memory_efficiency: float = Field(default=0.8, gt=0, le=1, description="Share of the HBM bandwidth reached "
                                     "reading weights and KV (assumed).")
    interconnect_efficiency: float = Field(default=0.7, gt=0, le=1, description="Share of the GPU-to-GPU "
                                           "link reached by all-reduces (assumed).")
    allreduce_latency_s: NonNegFloat = Field(default=10e-6, description="Fixed cost of one all-reduce or "
                                             "stage-to-stage copy, seconds (assumed).")
    per_layer_overhead_s: NonNegFloat = Field(default=2e-6, description="Kernel launches per layer per "
                                              "iteration, seconds (assumed; CUDA graphs keep it small).")
    overhead_s: NonNegFloat = Field(default=300e-6, description="Host work per iteration: scheduling, "
                                    "sampling, output processing, seconds (assumed).")


class CalibratedStepTime(Section):
    """Fitted to iterations measured on torch, drawing the measured residuals (sim/llm/calibrated.py)."""

    type: Literal["calibrated"]
    profile: str = Field(description="LLM iteration profile (capsim calibrate --mode llm; or a from-run profile of "
                         "capsim bench-serve --llm runs), relative to the scenario file. It fixes llm.model, "
                         "llm.dtype, tensor_parallel and the device: those it measured.")
    residuals: bool = Field(default=True, description="true: each iteration takes the fit × one measured residual "
                            "ratio, drawn per iteration (seeded); false: the fit × the mean ratio (deterministic).")
    idle_response: bool = Field(default=True, description="true: an iteration that starts on a replica that sat "
                                "idle takes the profile's measured slowdown after that long idle (its idle_response, "
                                "capsim calibrate --mode llm's idle sweep; none when the profile has none); false: "
                                "back-to-back times after idle too.")


StepTime = Annotated[CoefficientsStepTime | RooflineStepTime | CalibratedStepTime, Field(discriminator="type")]
STEP_TIME_TYPES = union_tags(StepTime, "type")


# ---------------------------------------------------------------- the llm section
class LlmSLO(Section):
    ttft_s: PositiveFloat = Field(default=1.0, description="Time-to-first-token objective, seconds.")
    tpot_s: PositiveFloat = Field(default=0.1, description="Time-per-output-token objective, seconds.")
    percentile: float = Field(default=99.0, gt=0, lt=100, description="Percentile held to ttft_s and tpot_s "
                              "(slo_met); goodput counts requests meeting both.")


class Disaggregation(Section):
    """Prefill and decode on separate replicas (DistServe, Splitwise; vLLM's and SGLang's PD disaggregation):
    a prefill pool computes prompts, a decode pool pulls their KV cache and generates."""

    prefill_replicas: int = Field(ge=1, le=10_000, description="Replicas that only prefill; arrivals are routed "
                                  "among them by fleet.router.")
    decode_replicas: int = Field(ge=1, le=10_000, description="Replicas that only decode; a computed prompt goes "
                                 "to one by a second router of fleet.router's kind.")
    kv_transfer_bytes_per_s: PositiveFloat = Field(
        default=40e9, description="KV copy rate per link from a prefill to a decode replica (one link per GPU of "
        "the replica with fewer GPUs, each copying its share at once). Default: one 400 Gb/s NIC per GPU (InfiniBand NDR, RoCE) at about 80%; "
        "NVLink within a node is ~10× more.")
    kv_transfer_latency_s: NonNegFloat = Field(default=1e-3, description="Fixed cost of one KV copy (handshake, "
                                               "notification), seconds; set your connector's measured figure.")
    prefill_tensor_parallel: int | None = Field(default=None, ge=1, le=64, description="GPUs per prefill replica "
                                                "(default: llm.tensor_parallel).")
    decode_tensor_parallel: int | None = Field(default=None, ge=1, le=64, description="GPUs per decode replica "
                                               "(default: llm.tensor_parallel).")
    prefill_gpu: str | None = Field(default=None, description="Catalog GPU of the prefill replicas (default: "
                                    "fleet.gpu); priced at its catalog price unless llm.usd_per_gpu_hour is set.")
    decode_gpu: str | None = Field(default=None, description="Catalog GPU of the decode replicas (default: "
                                   "fleet.gpu); priced likewise.")
    prefill_autoscaler: Autoscaler | None = Field(default=None, description="Scales the prefill pool (hpa, kpa "
                                                  "or ray_serve; its metrics read the prefill replicas), from "
                                                  "prefill_replicas at t=0. Absent: a fixed pool.")
    decode_autoscaler: Autoscaler | None = Field(default=None, description="Scales the decode pool likewise "
                                                 "(min_replicas ≥ 1: handed-over prompts need a decode replica).")

    def autoscaler(self, role: str):
        """The ``role`` pool's autoscaler section, or None for a fixed pool (``type: static`` included)."""
        spec = getattr(self, f"{role}_autoscaler")
        return spec if spec is not None and spec.type != "static" else None

    def pool(self, role: str, tensor_parallel: int, gpu: str | None) -> tuple[int, str | None]:
        """(tensor parallel, GPU) of the ``role`` ("prefill" or "decode") pool: its own, else the llm's and fleet's."""
        tp, own_gpu = getattr(self, f"{role}_tensor_parallel"), getattr(self, f"{role}_gpu")
        return (tp if tp is not None else tensor_parallel), (own_gpu if own_gpu is not None else gpu)


class Llm(Section):
    model: Literal[tuple(LLM_ARCHS)] = Field(description="Architecture (sim/models/llm_archs.py).")
    dtype: Literal["fp16", "bf16", "fp32"] = Field(default="bf16", description="Weights, activations and KV cache "
                                                   "(fp32: a calibrated CPU profile's).")
    tensor_parallel: int = Field(default=1, ge=1, le=64, description="GPUs each layer is split over; must "
                                 "divide the attention heads and KV heads.")
    pipeline_parallel: int = Field(default=1, ge=1, le=64, description="Stages the layers are split into; a "
                                   "replica is tensor_parallel × pipeline_parallel GPUs.")
    max_num_seqs: int = Field(default=256, ge=1, le=65536, description="Most sequences running in one iteration.")
    max_num_batched_tokens: int = Field(default=2048, ge=1, le=1_048_576, description="Token budget of one "
                                        "iteration (decode tokens + prefill chunk tokens).")
    enable_prefix_caching: bool = Field(default=True, description="True: full KV blocks of a shared prefix "
                                        "(workload.shared_prefix) that a replica computed stay cached and are "
                                        "reused by later requests with the same prefix, until their blocks are "
                                        "needed (least recently used first; vLLM's automatic prefix caching, on by "
                                        "default in V1). False: every prompt is computed in full.")
    enable_chunked_prefill: bool = Field(default=True, description="True: decodes first, the rest of the budget "
                                         "to prompt chunks (Sarathi). False: an iteration either prefills "
                                         "whole prompts or decodes (vLLM V0 default).")
    block_size: Literal[8, 16, 32, 64, 128] = Field(default=16, description="Tokens per KV-cache block.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Share of each GPU's memory "
                                          "for weights, activations, runtime and KV cache.")
    max_model_len: int | None = Field(default=None, ge=1, description="Longest sequence, prompt + output, "
                                      "tokens (default: the model's context length).")
    num_gpu_blocks_override: int | None = Field(
        default=None, ge=1, description="KV blocks per replica, replacing what the memory left (vLLM's "
        "--num-gpu-blocks-override: tests, what-ifs); the weights must still fit.")
    step_time: StepTime = Field(default_factory=RooflineStepTime, description="The iteration-time model; "
                                "`type` picks coefficients, roofline or calibrated.")
    weight_load_bytes_per_s: PositiveFloat | None = Field(
        default=None, description="Checkpoint-to-GPU load rate per GPU for cold starts (GPUs load their shards "
        "in parallel). Default: measured on an H100 host, 14 GB cold to GPU in 9.83 s.")
    usd_per_gpu_hour: NonNegFloat | None = Field(default=None, description="Price of one GPU per hour; a "
                                                 "replica costs GPUs × this. Default: the catalog price of "
                                                 "fleet.gpu.")
    slo: LlmSLO = Field(default_factory=LlmSLO, description="Token-level objectives.")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        default="fcfs", description="fcfs: waiting sequences are admitted in arrival order and the most recently "
        "admitted is preempted first. priority (vLLM's --scheduling-policy priority): admitted by "
        "workload.classes' priority, then arrival; the lowest priority, latest arrival is preempted first.")
    disaggregation: Disaggregation | None = Field(
        default=None, description="Prefill and decode on separate pools of replicas (fixed sizes; "
        "fleet.replicas is set to their sum). Absent: every replica does both (chunked prefill mixes them).")

    @model_validator(mode="after")
    def _budget(self) -> Llm:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be ≥ max_num_seqs "
                             f"({self.max_num_seqs}): every running sequence decodes one token per iteration")
        if self.dtype == "fp32" and self.step_time.type != "calibrated":
            raise ValueError("dtype fp32 is for a calibrated profile measured in fp32 (a CPU); GPUs serve LLMs in "
                             "fp16 or bf16")
        return self


def llm_problem(scenario) -> str | None:
    """What makes ``scenario`` inconsistent as a request-level or a token-level one (None if nothing);
    for an llm scenario also whether its model fits its GPUs (``sim.llm.memory``)."""
    work, llm = scenario.workload, scenario.llm
    tokens = [k for k in ("input_tokens", "output_tokens") if getattr(work, k) is not None]
    llm_metrics = [m.name for m in getattr(scenario.autoscaler, "metrics", [])
                   if m.name in ("kv_cache_utilization", "running_sequences")]
    if llm is None:
        if work.shared_prefix is not None:
            return "workload.shared_prefix: shared prompt prefixes need an llm section (token-level serving)"
        if work.conversation is not None:
            return "workload.conversation: multi-turn conversations need an llm section (token-level serving)"
        if work.classes is not None:
            return "workload.classes: request classes need an llm section (token-level serving)"
        if scenario.service is None:
            return "service: missing required key (or an llm section, for token-level LLM serving)"
        if tokens:
            return f"workload.{tokens[0]}: token lengths need an llm section (token-level serving)"
        if llm_metrics:
            return f"autoscaler.metrics: {llm_metrics[0]} is measured on LLM replicas only (an llm section)"
        return None
    if scenario.service is not None:
        return "service: an llm scenario has no service section (its iteration time is llm.step_time); remove it"
    for key in ("input_tokens", "output_tokens"):
        if key not in tokens:
            return f"workload.{key}: missing required key (an llm scenario's requests carry token counts)"
    if scenario.batching.model_dump() != type(scenario.batching)().model_dump():
        return ("batching: does not apply to an llm scenario (the llm scheduler batches: max_num_seqs, "
                "max_num_batched_tokens); remove it")
    if scenario.fleet.instances_per_replica != 1:
        return (f"fleet.instances_per_replica = {scenario.fleet.instances_per_replica}: must be 1 for an llm "
                "scenario (a replica is one model server over tensor_parallel × pipeline_parallel GPUs)")
    if scenario.cost.usd_per_replica_hour:
        return (f"cost.usd_per_replica_hour = {scenario.cost.usd_per_replica_hour:g}: an LLM replica costs its "
                "GPUs × llm.usd_per_gpu_hour (default: the catalog price); set that instead")
    if work.classes is not None:
        names = [c.name for c in work.classes]
        total = sum(c.share for c in work.classes)
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            return f"workload.classes: the name {twice!r} is given twice; class names are unique"
        if abs(total - 1) > 1e-6:
            return f"workload.classes: the shares add up to {total:g}; they must add up to 1"
        for k, c in enumerate(work.classes):
            for key in ("input_tokens", "output_tokens"):
                spec = getattr(c, key)
                if spec is not None and spec.distribution == "trace":
                    return (f"workload.classes[{k}].{key}.distribution = 'trace': a class draws its own lengths "
                            f"(fixed, lognormal or empirical); the trace's columns are workload.{key}'s")
                if spec is not None and work.conversation is not None:
                    return (f"workload.classes[{k}].{key}: lengths per class are not modelled with "
                            "workload.conversation (each turn's message has workload.input_tokens); remove one")
    disagg = llm.disaggregation
    if disagg is not None:
        pools = disagg.prefill_replicas + disagg.decode_replicas
        if scenario.autoscaler.type != "static":
            return (f"autoscaler.type = {scenario.autoscaler.type!r}: with llm.disaggregation each pool has its "
                    "own (llm.disaggregation.prefill_autoscaler, decode_autoscaler); use autoscaler.type: static")
        for role in ("prefill", "decode"):
            spec, size = disagg.autoscaler(role), getattr(disagg, f"{role}_replicas")
            key = f"llm.disaggregation.{role}_autoscaler"
            if spec is None:
                continue
            if spec.type == "keda":
                return f"{key}.type = 'keda': KEDA's Kafka scaler is for streaming consumers; use hpa, kpa or ray_serve"
            if not spec.min_replicas <= size <= spec.max_replicas:
                return (f"llm.disaggregation.{role}_replicas = {size}: the pool starts there, so it must lie within "
                        f"{key}'s min_replicas ({spec.min_replicas}) and max_replicas ({spec.max_replicas})")
            if spec.initial_replicas is not None and spec.initial_replicas != size:
                return (f"{key}.initial_replicas = {spec.initial_replicas}: the pool starts at "
                        f"llm.disaggregation.{role}_replicas ({size}); leave it out")
            if role == "decode" and spec.min_replicas < 1:
                return (f"{key}.min_replicas = {spec.min_replicas}: a decode pool keeps at least 1 replica "
                        "(handed-over prompts need one)")
        if scenario.fleet.replicas != pools:  # Scenario sets it so; a bug if not
            return f"fleet.replicas = {scenario.fleet.replicas}: with llm.disaggregation it is {pools}"
    return check_llm_scenario(scenario)  # architecture, GPU catalog, memory fit
