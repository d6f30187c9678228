"""A small model for validating the simulator against a real server on a CPU.

``wide_mlp`` is the built-in ``mlp`` made wider (256 -> 2048 -> 2048 -> 512 -> 1, 5.8 M parameters):
about 1 ms at batch 1 on one thread of this project's CI machine, so queueing is visible at a few
hundred requests per second and a validation run takes seconds. Use it as
``--model calibration.validation_model:wide_mlp`` (the ``module:factory`` form of every command).
"""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 256
HIDDEN = (2048, 2048, 512)


def wide_mlp() -> tuple[nn.Module, object]:
    """``(model, make_input)``: ReLU MLP with a sigmoid score; ``make_input(b)`` -> (b, 256) floats."""
    dims = (IN_FEATURES, *HIDDEN)
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(dims[-1], 1), nn.Sigmoid())
    inputs = torch.Generator().manual_seed(1)
    return model, lambda b: torch.randn(b, IN_FEATURES, generator=inputs)
