"""Iteration-time models: how long one scheduler iteration of a replica takes.

Every model answers ``step_s(prefill_tokens, decode_tokens, kv_tokens_read, attention_pairs)`` for the
iteration the scheduler formed: prompt tokens computed (chunks included), sequences decoding one token
each, KV-cache tokens attention reads, and (optionally) the query × key pairs attention computes
(``sim.llm.scheduler.Iteration`` counts them). Implementations, behind :data:`STEP_TIME_MODELS` keyed by
``llm.step_time.type``:

* ``coefficients``: β0 + β1·prefill + β2·decode + β3·KV read, entered by hand (BLIS's blackbox form);
* ``roofline``: an ESTIMATE from the architecture and the catalog GPU, for hardware never measured;
* ``calibrated``: fitted to iterations measured on torch, drawing the measured residuals
  (``sim/llm/calibrated.py``; its profile: ``sim/profiles/llm.py``).

Two keywords, which only ``calibrated`` reads: ``start_s``, when the iteration starts (a calibrated
replay of a served run reads the machine's speed then), and ``output_tokens``, the tokens it samples
(decodes and prompts that complete: the rows through the LM head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sim.hardware.gpus import DTYPE_BYTES, Gpu
from sim.llm.calibrated import CalibratedStepTime
from sim.models.llm_archs import DecoderLlmArch
from sim.profiles.llm import IterationProfile
from sim.theory.collectives import ring_allreduce_s


class StepTimeModel(Protocol):
    """What the LLM engine needs from an iteration-time model."""

    is_estimate: bool  # True: not measured (labelled so in summaries and tables)

    def step_s(self, prefill_tokens: int, decode_tokens: int, kv_tokens_read: int, attention_pairs: int = 0,
               start_s: float = 0.0, output_tokens: int | None = None, idle_s: float = 0.0) -> float:
        """One iteration's seconds; ``idle_s``: how long its replica sat idle right before it."""
        ...


@dataclass(frozen=True)
class CoefficientsStepTime:
    """step = base_s + per_prefill_token_s·P + per_decode_token_s·D + per_kv_token_s·K."""

    base_s: float
    per_prefill_token_s: float = 0.0
    per_decode_token_s: float = 0.0
    per_kv_token_s: float = 0.0
    is_estimate: bool = False

    def step_s(self, prefill_tokens: int, decode_tokens: int, kv_tokens_read: int, attention_pairs: int = 0,
               start_s: float = 0.0, output_tokens: int | None = None, idle_s: float = 0.0) -> float:
        return (self.base_s + self.per_prefill_token_s * prefill_tokens + self.per_decode_token_s * decode_tokens
                + self.per_kv_token_s * kv_tokens_read)


class RooflineStepTime:
    """Roofline ESTIMATE of one iteration on a replica of ``tp × pp`` catalog GPUs.

    Per GPU: matmul FLOPs (2 per weight per token, the LM head on sampled tokens only) and attention FLOPs
    (4 × hidden per query-key pair per layer) over ``peak × compute_efficiency``, against bytes moved
    (the GPU's weights once, the KV read, activations in and out of each layer) over ``bandwidth ×
    memory_efficiency``: the slower of the two, plus kernel launches per layer. Tensor parallelism adds
    two all-reduces per layer of ``tokens × hidden`` values: the ring's 2(TP−1)/TP × bytes / link
    (``sim.theory.collectives``) plus one fixed latency per all-reduce (small messages: vLLM's custom
    all-reduce is one shot, not 2(TP−1) ring steps).
    Pipeline parallelism runs one batch through its stages in turn (no micro-batching): the stages'
    times add up to the unsplit model's, plus (PP−1) stage-to-stage copies, and each stage idles
    (PP−1)/PP of an iteration (the bubble). Plus a fixed host overhead per iteration.
    """

    is_estimate = True

    def __init__(self, arch: DecoderLlmArch, gpu: Gpu, dtype: str, tp: int, pp: int, spec) -> None:
        width = DTYPE_BYTES[dtype]
        self.tp, self.pp, self.spec = tp, pp, spec
        layers = arch.layers
        self._flops_per_token = 2.0 * layers * arch.layer_linear_params / tp
        self._flops_per_sample = 2.0 * arch.hidden * arch.vocab / tp  # LM head, per sampled token
        self._flops_per_pair = 4.0 * arch.hidden * layers / tp  # QK^T and AV over every head of every layer
        self._weight_bytes = arch.parameters * width / tp  # summed over the pp stages, each reading its own
        self._kv_bytes_per_token = arch.kv_bytes_per_token(width) / tp
        self._act_bytes_per_token = layers * (10 * arch.hidden + 4 * arch.ffn / tp) * width
        self._flop_rate = gpu.peak_flops(dtype) * spec.compute_efficiency
        self._byte_rate = gpu.memory_bandwidth_bytes_per_s * spec.memory_efficiency
        link = gpu.interconnect_bytes_per_s or gpu.host_link_bytes_per_s
        self._link_rate = link * spec.interconnect_efficiency
        self._hidden_bytes = arch.hidden * width  # one token's hidden state
        self._launch_s = layers * spec.per_layer_overhead_s
        self._allreduces = 2 * layers if tp > 1 else 0

    def step_s(self, prefill_tokens: int, decode_tokens: int, kv_tokens_read: int, attention_pairs: int = 0,
               start_s: float = 0.0, output_tokens: int | None = None, idle_s: float = 0.0) -> float:
        tokens = prefill_tokens + decode_tokens
        sampled = decode_tokens + (1 if prefill_tokens else 0)
        flops = (self._flops_per_token * tokens + self._flops_per_sample * sampled
                 + self._flops_per_pair * attention_pairs)
        moved = (self._weight_bytes + self._kv_bytes_per_token * kv_tokens_read
                 + self._act_bytes_per_token * tokens)
        compute = max(flops / self._flop_rate, moved / self._byte_rate) + self._launch_s
        spec, activation = self.spec, tokens * self._hidden_bytes
        allreduce = self._allreduces * (spec.allreduce_latency_s
                                        + ring_allreduce_s(activation, self.tp, self._link_rate))
        hops = (self.pp - 1) * (spec.allreduce_latency_s + activation / self._link_rate)
        return compute + allreduce + hops + spec.overhead_s


def build_step_time(spec, arch: DecoderLlmArch, gpu: Gpu, dtype: str, tp: int, pp: int,
                    measured: IterationProfile | None = None) -> StepTimeModel:
    """The model ``llm.step_time`` names (``measured``: the profile a calibrated one reads)."""
    if spec.type == "calibrated":
        return CalibratedStepTime.of(measured, residuals=spec.residuals, idle_response=spec.idle_response)
    if spec.type == "coefficients":
        return CoefficientsStepTime(spec.base_s, spec.per_prefill_token_s, spec.per_decode_token_s,
                                    spec.per_kv_token_s)
    return STEP_TIME_MODELS[spec.type](arch, gpu, dtype, tp, pp, spec)


STEP_TIME_MODELS = {"coefficients": CoefficientsStepTime, "roofline": RooflineStepTime,
                    "calibrated": CalibratedStepTime}


def seeded_step_time(model: StepTimeModel, rng) -> StepTimeModel:
    """``model`` drawing its randomness from ``rng`` (one replication's ``service`` stream); a
    deterministic model is returned as it is."""
    seeded = getattr(model, "seeded", None)
    return seeded(rng) if seeded is not None else model
