"""Reading the ``training`` section of a ``capsim.profile/3`` file (``capsim calibrate --mode train``).

What it holds (docs/profile.md): per micro-batch size, the measured time of a forward and backward pass
and of an optimiser step of one process; the gradient bytes a data-parallel step all-reduces; and
all-reduce times per message size on ``world_size`` processes of the backend used (gloo on CPU, NCCL on
GPUs). The reader fits the ring model's latency and bus bandwidth to the all-reduce medians
(``sim.theory.collectives.fit_alpha_beta``) so the file keeps only what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import ProfileError
from sim.profiles.profile import dumps, read_section_profile, section_envelope
from sim.results.files import write_text
from sim.theory.collectives import fit_alpha_beta

KIND = "a training profile"
HINT = "capsim calibrate --mode train"  # the command that writes a training profile


@dataclass(frozen=True)
class MeasuredAllreduce:
    backend: str
    device: str  # "cpu" or "cuda": where the buffers were
    world_size: int
    message_bytes: np.ndarray  # ascending
    median_s: np.ndarray
    latency_s: float  # the ring model's alpha, fitted
    bus_bandwidth_bytes_per_s: float  # and beta

    def time_s(self, message_bytes: float, ranks: int) -> float:
        """All-reduce time of ``message_bytes`` over ``ranks``, read off the measured curve.

        On ``world_size`` ranks: the measured medians, linear between sizes (exact where time is affine in
        size, as the ring model has it), flat below the smallest (latency), proportional beyond the largest
        (bandwidth). On other rank counts the ring
        model rescales it: ``2(n-1)`` latency steps of the fitted alpha, and the rest of the measured time
        (what moving the bytes took) times ``((n-1)/n) / ((w-1)/w)``.
        """
        if ranks <= 1:
            return 0.0
        sizes, times, w = self.message_bytes, self.median_s, self.world_size
        if message_bytes <= sizes[0]:
            measured = float(times[0])
        elif message_bytes >= sizes[-1]:
            measured = float(times[-1] * message_bytes / sizes[-1])
        else:
            measured = float(np.interp(message_bytes, sizes, times))
        if ranks == w:
            return measured
        moving = max(0.0, measured - 2 * (w - 1) * self.latency_s)
        return 2 * (ranks - 1) * self.latency_s + moving * ((ranks - 1) / ranks) / ((w - 1) / w)


@dataclass(frozen=True, eq=False)
class TrainingProfile:
    path: Path
    model_name: str
    parameters: int | None
    device: str
    device_name: str | None
    threads: int | None
    precision: str
    optimizer: str
    gradient_bytes: int | None
    micro_batches: tuple[int, ...]
    forward_backward_s: dict[int, np.ndarray]  # sorted samples per micro-batch size
    optimizer_s: np.ndarray  # pooled over sizes, sorted
    device_memory_bytes: int | None
    allreduce: MeasuredAllreduce | None

    def compute_s(self, micro_batch: int) -> float:
        """Median forward + backward time of one micro-batch, linear between measured sizes."""
        sizes = self.micro_batches
        if not sizes[0] <= micro_batch <= sizes[-1]:
            raise ProfileError(f"{self.path}: micro-batch {micro_batch} is outside the measured sizes "
                               f"{sizes[0]}..{sizes[-1]} (capsim calibrate --mode train --batch-sizes)")
        medians = [float(np.median(self.forward_backward_s[b])) for b in sizes]
        return float(np.interp(micro_batch, sizes, medians))

    def optimizer_step_s(self) -> float | None:
        return float(np.median(self.optimizer_s)) if self.optimizer_s.size else None


def load_training_profile(path: str | Path) -> TrainingProfile:
    doc, _ = read_section_profile(path, "training", KIND, HINT)
    return training_profile_from_dict(doc, path)


def training_profile_from_dict(doc: object, path: str | Path = "<profile>") -> TrainingProfile:
    """Validate a document's envelope and its ``training`` section (every other section as the reader does)."""
    path = Path(path)
    check = section_envelope(doc, path, "training", KIND, HINT)
    env, model, training = doc["environment"], doc["model"], doc["training"]
    steps = sorted(training["steps"], key=lambda e: e["micro_batch"])
    fb = {int(e["micro_batch"]): check.samples(e["forward_backward_s"], "forward_backward_s", needed=True)
          for e in steps}
    optimizer = np.sort(np.concatenate([check.samples(e.get("optimizer_s"), "optimizer_s") for e in steps]))
    return TrainingProfile(
        path=path, model_name=model["name"], parameters=model.get("parameters"), device=env["device"],
        device_name=env.get("device_name"), threads=env.get("cpu_threads"), precision=training["precision"],
        optimizer=training["optimizer"], gradient_bytes=training.get("gradient_bytes"),
        micro_batches=tuple(fb), forward_backward_s=fb, optimizer_s=optimizer,
        device_memory_bytes=(doc.get("memory") or {}).get("device_total_bytes"),
        allreduce=_measured_allreduce(training.get("allreduce"), path))


def _measured_allreduce(section: dict | None, path: Path) -> MeasuredAllreduce | None:
    if section is None:
        return None
    entries = sorted(section["sizes"], key=lambda e: e["message_bytes"])
    sizes = np.array([e["message_bytes"] for e in entries], dtype=float)
    medians = np.array([float(np.median(e["time_s"])) for e in entries])
    n = int(section["world_size"])
    try:
        alpha, beta = fit_alpha_beta(sizes, medians, n)
    except ValueError as exc:
        raise ProfileError(f"{path}: training.allreduce: {exc}") from None
    return MeasuredAllreduce(str(section.get("backend") or "unknown"), str(section.get("device") or "cpu"), n, sizes,
                             medians, alpha, beta)


def write_training_profile(doc: dict, path: str | Path) -> Path:
    """Validate ``doc`` as :func:`load_training_profile` would, then write it atomically."""
    training_profile_from_dict(doc, path)
    return write_text(Path(path), dumps(doc) + "\n")
