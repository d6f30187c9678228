"""Bytes per parameter of what training keeps: weights, gradients and optimiser states.

Mixed precision (Micikevicius et al. 2018; the ZeRO paper's accounting, Rajbhandari et al. 2020):
16-bit weights and gradients, and the optimiser's fp32 master copy of the weights beside its own
states. Adam keeps two fp32 moments, so ``2 + 2 + (4 + 4 + 4) = 16`` bytes per parameter; in fp32 it
is ``4 + 4 + (4 + 4)``. SGD with momentum keeps one moment, plain SGD none.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16-mixed", "bf16-mixed")
OPTIMIZERS = ("adam", "sgd", "sgd-momentum")
MOMENT_BYTES = {"adam": 8, "sgd": 0, "sgd-momentum": 4}  # fp32 moments per parameter
MASTER_BYTES = 4  # the fp32 copy of the weights that mixed precision updates


@dataclass(frozen=True)
class StateBytes:
    """Bytes per parameter of each kind of training state."""

    weights: int
    gradients: int
    optimizer: int  # master weights (mixed precision) and moments

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def state_bytes(precision: str, optimizer: str) -> StateBytes:
    mixed = precision != "fp32"
    width = 2 if mixed else 4
    return StateBytes(width, width, (MASTER_BYTES if mixed else 0) + MOMENT_BYTES[optimizer])


def activation_bytes(precision: str) -> int:
    """Bytes of one activation element: 16-bit under mixed precision, else 4."""
    return 4 if precision == "fp32" else 2
