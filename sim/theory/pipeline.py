"""Pipeline parallelism: the bubble in closed form, and the 1F1B schedule it comes from.

A step of ``m`` micro-batches through ``p`` stages, each stage taking ``f`` for a micro-batch's forward
and ``b`` for its backward, lasts ``(m + p - 1)(f + b)`` under GPipe or 1F1B: every stage is busy for
``m(f + b)`` and idle for the rest, the *bubble*, a share ``(p - 1) / (m + p - 1)`` of the step.
:func:`one_f_one_b` lays out the schedule itself, op by op (PipeDream-Flush / Megatron's default), so
the closed form is checked against the schedule rather than against itself (tests/test_training_theory.py);
the dashboard draws it.
"""

from __future__ import annotations

from dataclasses import dataclass


def bubble_fraction(stages: int, microbatches: int) -> float:
    """Share of a pipelined step that each stage sits idle: ``(p - 1) / (m + p - 1)``."""
    return (stages - 1) / (microbatches + stages - 1)


def pipelined_step_s(stages: int, microbatches: int, microbatch_s: float) -> float:
    """A step of ``m`` micro-batches of ``microbatch_s`` (forward + backward on one stage): ``(m + p - 1) t``."""
    return (microbatches + stages - 1) * microbatch_s


@dataclass(frozen=True)
class PipelineOp:
    stage: int
    microbatch: int
    kind: str  # "forward" or "backward"
    start_s: float
    end_s: float


def _stage_order(stage: int, stages: int, microbatches: int) -> list[tuple[str, int]]:
    """1F1B on one stage: ``p - s - 1`` warm-up forwards, then one forward one backward, then the backwards."""
    warmup = min(stages - stage - 1, microbatches)
    order = [("forward", i) for i in range(warmup)]
    for i in range(warmup, microbatches):
        order += [("forward", i), ("backward", i - warmup)]
    order += [("backward", i) for i in range(microbatches - warmup, microbatches)]
    return order


def one_f_one_b(stages: int, microbatches: int, forward_s: float, backward_s: float) -> list[PipelineOp]:
    """Every op of a 1F1B step with its start and end: a forward waits for the stage before it, a backward
    for the stage after it, and each stage runs its ops in order, one at a time."""
    orders = [_stage_order(s, stages, microbatches) for s in range(stages)]
    done: dict[tuple[str, int, int], float] = {}
    free = [0.0] * stages
    position = [0] * stages
    ops: list[PipelineOp] = []
    while len(ops) < 2 * stages * microbatches:
        progressed = False
        for s in range(stages):
            if position[s] == len(orders[s]):
                continue
            kind, i = orders[s][position[s]]
            needs = (("forward", s - 1, i) if kind == "forward" else ("backward", s + 1, i))
            edge = (kind == "forward" and s == 0) or (kind == "backward" and s == stages - 1)
            if not edge and needs not in done:
                continue
            ready = max(free[s], 0.0 if edge else done[needs])
            if kind == "backward":
                ready = max(ready, done[("forward", s, i)])
            end = ready + (forward_s if kind == "forward" else backward_s)
            done[(kind, s, i)] = free[s] = end
            ops.append(PipelineOp(s, i, kind, ready, end))
            position[s] += 1
            progressed = True
        if not progressed:  # cannot happen for a valid 1F1B order; a guard against an endless loop
            raise RuntimeError("1F1B schedule deadlocked")
    return ops


def schedule_bubble_fraction(ops: list[PipelineOp]) -> float:
    """The idle share of the schedule's makespan, averaged over stages."""
    makespan = max(op.end_s for op in ops) - min(op.start_s for op in ops)
    stages = {op.stage for op in ops}
    busy = sum(op.end_s - op.start_s for op in ops) / len(stages)
    return 1.0 - busy / makespan
