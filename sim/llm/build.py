"""From an llm scenario to the parts a run needs: the architecture, the GPU, the memory plan, the
iteration-time model, the price and the cold-start load (or one line saying what is wrong).

Used twice: when a scenario is validated (:func:`check_llm_scenario`, so a model that does not fit is
refused on load, with the numbers) and when it runs (:func:`llm_setup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.errors import CapsimError, ScenarioError, bad_value
from sim.hardware.gpus import Gpu, gpu_catalog
from sim.llm.calibrated import calibrated_profile, measured_device
from sim.llm.memory import MemoryPlan, fitting_plan
from sim.llm.step_time import StepTimeModel, build_step_time
from sim.models.llm_archs import DecoderLlmArch, llm_arch

# Cold load measured on the H100 host (shared/data/h100/coldstart.json): a 14 GB safetensors checkpoint
# (15,032,390,096 bytes), page cache dropped, to the GPU in 9.835 s; a fresh process reaches its first
# CUDA op (import torch, CUDA context) in 5.49 s.
MEASURED_LOAD_BYTES_PER_S = 15_032_390_096 / 9.834985587
MEASURED_RUNTIME_START_S = 5.492938645


@dataclass(frozen=True)
class WeightLoad:
    """A replica's cold-start load as ``sim.scaling.lifecycle.PhaseSampler`` reads a profile's: every GPU
    loads its own shard at once, so the load takes one GPU's weight bytes / the load rate."""

    weight_bytes: int
    load: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LlmSetup:
    arch: DecoderLlmArch
    gpu: Gpu
    plan: MemoryPlan
    step_time: StepTimeModel
    max_model_len: int
    usd_per_gpu_hour: float
    weight_load: WeightLoad

    @property
    def usd_per_replica_hour(self) -> float:
        return self.plan.gpus * self.usd_per_gpu_hour


def catalog_gpu(name: str | None) -> Gpu:
    """``fleet.gpu`` as a catalog GPU (an llm scenario needs one: memory, bandwidth, FLOP/s, price)."""
    catalog = gpu_catalog()
    match = next((g for k, g in catalog.items() if name is not None and k.lower() == name.lower()), None)
    if match is None:
        raise ScenarioError(bad_value("fleet.gpu", name, f"an llm scenario runs on a catalog GPU: {', '.join(catalog)}"))
    return match


def llm_setup(scenario) -> LlmSetup:
    """The parts of an llm scenario's run; ScenarioError (one line) when they cannot be made."""
    llm, work = scenario.llm, scenario.workload
    arch = llm_arch(llm.model)
    measured = calibrated_profile(scenario) if llm.step_time.type == "calibrated" else None
    gpu = catalog_gpu(scenario.fleet.gpu) if measured is None else measured_device(measured, scenario.fleet.gpu)
    if measured is None and not gpu.peak_tflops.get(llm.dtype):
        raise ScenarioError(bad_value("llm.dtype", llm.dtype, f"{gpu.key} has no {llm.dtype} tensor cores; "
                                      f"one of {', '.join(k for k, v in gpu.peak_tflops.items() if v and k != 'fp32')}"))
    max_len = llm.max_model_len or arch.max_positions
    if max_len > arch.max_positions:
        raise ScenarioError(bad_value("llm.max_model_len", max_len,
                                      f"at most {arch.max_positions}, the context length of {arch.name}"))
    if not llm.enable_chunked_prefill and llm.max_num_batched_tokens < max_len:
        raise ScenarioError(bad_value("llm.max_num_batched_tokens", llm.max_num_batched_tokens,
                                      f"without chunked prefill a whole prompt must fit one iteration: ≥ "
                                      f"max_model_len ({max_len})"))
    _check_token_specs(work, scenario.workload.arrivals, max_len)
    tp, pp = llm.tensor_parallel, llm.pipeline_parallel
    plan = fitting_plan(arch, gpu, llm.dtype, tp, pp, gpu_memory_utilization=llm.gpu_memory_utilization,
                        block_size=llm.block_size, max_num_batched_tokens=llm.max_num_batched_tokens,
                        max_num_seqs=llm.max_num_seqs, max_model_len=max_len,
                        kv_blocks_override=llm.num_gpu_blocks_override)
    rate = llm.weight_load_bytes_per_s or MEASURED_LOAD_BYTES_PER_S
    load = WeightLoad(plan.weight_bytes_per_gpu, {"load_rate_bytes_per_s": rate,
                                                  "runtime_start_s": MEASURED_RUNTIME_START_S})
    price = llm.usd_per_gpu_hour if llm.usd_per_gpu_hour is not None else gpu.usd_per_hour
    return LlmSetup(arch, gpu, plan, build_step_time(llm.step_time, arch, gpu, llm.dtype, tp, pp, measured), max_len,
                    price, load)


ROLES = ("prefill", "decode")


def pool_setups(scenario, base: LlmSetup | None = None) -> dict[str, LlmSetup]:
    """Per pool of a disaggregated scenario ("prefill", "decode"), its setup: the scenario's own (``base``)
    unless ``llm.disaggregation`` gives the pool its own tensor parallelism or GPU; {} when not
    disaggregated. ScenarioError (one line, naming the pool) when a pool's model cannot be served."""
    pools = scenario.llm.disaggregation
    if pools is None:
        return {}
    base = base or llm_setup(scenario)
    out = {}
    for role in ROLES:
        tp, gpu = pools.pool(role, scenario.llm.tensor_parallel, scenario.fleet.gpu)
        if tp == scenario.llm.tensor_parallel and gpu == scenario.fleet.gpu:
            out[role] = base
            continue
        variant = scenario.model_copy(update={"llm": scenario.llm.model_copy(update={"tensor_parallel": tp}),
                                              "fleet": scenario.fleet.model_copy(update={"gpu": gpu})})
        try:
            out[role] = llm_setup(variant)
        except CapsimError as exc:
            raise ScenarioError(f"llm.disaggregation, the {role} pool ({gpu} × tensor_parallel {tp}): {exc}") from None
    return out


def _check_token_specs(work, arrivals, max_len: int) -> None:
    """What can be told before drawing: fixed lengths against max_model_len, trace columns need a trace."""
    for key in ("input_tokens", "output_tokens"):
        spec = getattr(work, key)
        if spec.distribution == "trace" and arrivals.process != "trace":
            raise ScenarioError(f"workload.{key}.distribution = 'trace': reads a column of the arrival trace; "
                                "needs workload.arrivals.process: trace (or a fixed, lognormal or empirical length)")
    prompt, output = work.input_tokens, work.output_tokens
    prefix = work.shared_prefix.tokens if work.shared_prefix is not None and work.shared_prefix.share > 0 else 0
    if prefix >= max_len:
        raise ScenarioError(bad_value("workload.shared_prefix.tokens", prefix, f"a prompt must leave room for "
                                      f"its own tokens and output within llm.max_model_len ({max_len})"))
    longest = prompt.tokens + prefix if prompt.distribution == "fixed" else None
    if longest is not None and longest >= max_len:
        raise ScenarioError(bad_value("workload.input_tokens.tokens", prompt.tokens,
                                      f"a prompt{f' (after a {prefix}-token shared prefix)' if prefix else ''} must "
                                      f"leave room for output within llm.max_model_len ({max_len})"))
    if longest is not None and output.distribution == "fixed" and longest + output.tokens > max_len:
        raise ScenarioError(bad_value("workload.output_tokens.tokens", output.tokens,
                                      f"at most {max_len - longest}: prompt ({longest}) + output ≤ "
                                      f"llm.max_model_len ({max_len})"))


def check_llm_scenario(scenario) -> str | None:
    """Why ``scenario``'s llm section cannot run, as one line (None when it can)."""
    try:
        pool_setups(scenario, llm_setup(scenario))
    except CapsimError as exc:
        return str(exc)
    return None
