"""The whole job under one layout: steps, time to train, GPU-hours, cost, failures and checkpoints.

``steps = ceil(samples × epochs / global_batch)`` (``samples = tokens / seq_len`` for token budgets);
the work is ``steps × step time``. Failures stop a synchronous job whenever any of its GPUs fails: the
job's MTBF is the per-GPU MTBF over the GPUs. A checkpoint holds the weights and the optimiser states
(``states.py``), written by all nodes at once; the interval between checkpoints is the plan's or the one
that minimises the expected wall time (``sim.theory.reliability``; Young's and Daly's approximations are
reported beside it). Time, GPU-hours and cost count the expected wall time, failures included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ScenarioError
from sim.theory import reliability
from sim.training.layout import Layout, check_layout, place
from sim.training.memory import Memory, memory, what_fits
from sim.training.setup import Setup, base_layout
from sim.training.states import state_bytes
from sim.training.step import StepTime, step_time

GB = 1e9


@dataclass(frozen=True)
class Failures:
    job_mtbf_s: float  # inf without failures
    checkpoint_bytes: float
    checkpoint_s: float
    interval_s: float  # work between checkpoints, as used
    interval_rule: str  # "given" or "best"
    young_interval_s: float
    daly_interval_s: float
    expected_failures: float
    overhead_s: float  # expected wall time beyond the work: checkpoints, lost work, restarts


@dataclass(frozen=True)
class JobEstimate:
    gpu: str
    layout: Layout
    nodes: int
    memory: Memory
    step: StepTime
    samples: float  # over every epoch
    steps: int
    work_s: float  # steps × step time
    failures: Failures
    usd_per_gpu_hour: float
    tokens_per_sample: int
    training_flops: float  # of the whole job

    @property
    def wall_s(self) -> float:
        return self.work_s + self.failures.overhead_s

    @property
    def gpu_hours(self) -> float:
        return self.layout.gpus * self.wall_s / 3600

    @property
    def cost_usd(self) -> float:
        return self.gpu_hours * self.usd_per_gpu_hour

    @property
    def samples_per_s(self) -> float:
        return self.layout.global_batch / self.step.total_s

    @property
    def tokens_per_s(self) -> float:
        return self.samples_per_s * self.tokens_per_sample


def estimate(setup: Setup, layout: Layout) -> JobEstimate:
    """The job under ``layout``; raises ScenarioError (one line, with the numbers and what would fit) when
    the layout cannot run or does not fit in memory."""
    plan, model, device = setup.plan, setup.model, setup.device
    check_layout(layout, model, device.fabric.gpus_per_node)
    where = place(layout, device.fabric.gpus_per_node)
    beyond = device.fabric.spans_beyond(where.nodes)
    if beyond:
        raise ScenarioError(f"cluster.gpus = {layout.gpus}: {beyond}")
    mem = memory(model, layout, plan.precision, plan.optimizer, device.memory_bytes)
    if not mem.fits:
        raise ScenarioError(refusal(setup, layout, mem))
    step = step_time(setup, layout)
    samples = _samples(setup) * plan.data.epochs
    steps = math.ceil(samples / layout.global_batch)
    work = steps * step.total_s
    flops = model.training_flops_per_sample * samples * (4 / 3 if layout.activation_checkpointing else 1)
    return JobEstimate(device.key, layout, where.nodes, mem, step, samples, steps, work,
                       failures(setup, layout, work, where.nodes), device.usd_per_hour,
                       model.tokens_per_sample, flops)


def estimate_plan(setup: Setup) -> JobEstimate:
    """The job as the plan file lays it out."""
    return estimate(setup, base_layout(setup.plan))


def failures(setup: Setup, layout: Layout, work_s: float, nodes: int) -> Failures:
    r = setup.plan.reliability
    mtbf = math.inf if r.gpu_mtbf_hours is None else r.gpu_mtbf_hours * 3600 / layout.gpus
    b = state_bytes(setup.plan.precision, setup.plan.optimizer)
    ckpt_bytes = setup.model.parameters * (b.weights + b.optimizer)
    ckpt_s = r.checkpoint_s if r.checkpoint_s is not None else ckpt_bytes / (r.checkpoint_write_bytes_per_s * nodes)
    young = reliability.young_interval_s(ckpt_s, mtbf) if ckpt_s > 0 else math.inf
    daly = reliability.daly_interval_s(ckpt_s, mtbf) if ckpt_s > 0 else math.inf
    if r.checkpoint_interval_s is not None:
        interval, rule = min(r.checkpoint_interval_s, work_s), "given"
    elif math.isinf(mtbf):
        interval, rule = work_s, "best"
    else:
        interval, rule = reliability.best_interval_s(work_s, ckpt_s, r.restart_s, mtbf), "best"
    wall = reliability.expected_wall_s(work_s, interval, ckpt_s, r.restart_s, mtbf)
    if not math.isfinite(wall):
        raise ScenarioError(f"reliability.gpu_mtbf_hours = {r.gpu_mtbf_hours:g}: with {layout.gpus} GPUs the job "
                            f"fails every {mtbf:,.0f} s on average and never finishes; raise the MTBF or use fewer GPUs")
    return Failures(mtbf, ckpt_bytes, ckpt_s, interval, rule, young, daly, wall / mtbf if math.isfinite(mtbf) else 0.0,
                    wall - work_s)


def refusal(setup: Setup, layout: Layout, mem: Memory) -> str:
    """Why the layout does not fit, with the numbers, and what would."""
    plan, device = setup.plan, setup.device
    b = state_bytes(plan.precision, plan.optimizer)
    options = what_fits(setup.model, layout, plan.precision, plan.optimizer, device.memory_bytes,
                        device.fabric.gpus_per_node)
    hint = ("fits with: " + ", or ".join(options)) if options else "nothing up to 65,536 GPUs fits: pick a larger GPU"
    sharded = "" if layout.zero == 0 else f" under ZeRO-{layout.zero} over {layout.data}"
    return (f"parallel = {layout.describe()}: {setup.model.name} does not fit on {device.key}: per GPU "
            f"{mem.states_bytes / GB:.1f} GB of weights, gradients and {plan.optimizer} states ({b.total} B per "
            f"parameter × {mem.parameters_per_gpu / 1e9:.2f} B parameters{sharded}) + {mem.activations_bytes / GB:.1f} GB "
            f"of activations + {mem.runtime_bytes / GB:.1f} GB runtime = {mem.total_bytes / GB:.1f} GB > "
            f"{mem.gpu_memory_bytes / GB:.1f} GB; {hint}")


def _samples(setup: Setup) -> float:
    data = setup.plan.data
    return data.samples if data.samples is not None else data.tokens / setup.model.tokens_per_sample
