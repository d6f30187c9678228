"""``calibrate(request) -> profile document``: measure one model on one device, never guess."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from calibration.bench import BenchSettings, run_benchmark
from calibration.errors import CalibrationError
from calibration.harness import Harness
from calibration.load_times import measure_load
from calibration.memory import MemoryProbe, max_batch_size_fits
from calibration.models import build_model, default_batch_sizes, described
from calibration.writer import build_document, environment

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class CalibrationRequest:
    """What to measure. ``batch_sizes`` empty means the model's defaults."""

    model: str
    device: str = "cpu"
    dtype: str = "fp32"
    compile: bool = False
    batch_sizes: tuple[int, ...] = ()
    samples: int = 100
    warmup: int = 10
    seq_len: int | None = None
    threads: int | None = None
    replay_batches: int = 100
    replay_utilisation: float = 0.2
    wait: str = "block"  # how the server waits for work: the idle sweep's and the replay's gaps are waited so
    idle_rounds: int = 6
    measure_load: bool = True
    runtime_start_runs: int = 3
    scratch_dir: str | None = None
    seed: int = 0
    progress: bool = True
    command: list[str] = field(default_factory=list)


def calibrate(req: CalibrationRequest) -> dict:
    """Run the benchmark and load measurements; return a ``capsim.profile/1`` document."""
    started = time.perf_counter()
    device = resolve_device(req.device)
    dtype = DTYPES[req.dtype]
    if req.threads:
        torch.set_num_threads(req.threads)
    built = build_model(req.model, req.seq_len, req.seed)
    try:
        model = built.model.to(device=device, dtype=dtype).eval()
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything
        raise CalibrationError(f"--dtype = {req.dtype!r}: cannot move the model to {req.device}: "
                               f"{described(exc)}") from None
    runnable = _compiled(model) if req.compile else model
    sizes = tuple(sorted(set(req.batch_sizes or default_batch_sizes(req.model))))
    settings = BenchSettings(batch_sizes=sizes, samples=req.samples, warmup=req.warmup,
                             replay_batches=req.replay_batches, replay_utilisation=req.replay_utilisation,
                             wait=req.wait, idle_rounds=req.idle_rounds, seed=req.seed, progress=req.progress)
    probe = MemoryProbe(device)
    try:
        bench = run_benchmark(Harness(runnable, built.make_input, device, dtype), settings, probe)
    except CalibrationError as exc:  # the model's own failure: say which model
        raise CalibrationError(f"--model = {req.model!r}: {exc}") from None
    load = None
    if req.measure_load:
        load = measure_load(model, device, req.scratch_dir, req.runtime_start_runs)
        load["warmup_s"] = sum(r.first_call_s for r in bench.sizes.values())
        load["notes"].append("warmup_s = sum of the first calls of every profiled size")
    total = probe.total_bytes()
    fits, how = max_batch_size_fits({b: r.peak_memory_bytes for b, r in bench.sizes.items()}, total)
    parameters = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()
                       if isinstance(t, torch.Tensor))  # a module's extra state may be anything
    return build_document(
        model={"name": built.name, "dtype": req.dtype, "compiled": req.compile, "parameters": parameters,
               "weight_bytes": weight_bytes, "seq_len": built.seq_len},
        env=environment(device),
        bench=bench,
        load=load,
        memory={"device_total_bytes": total, "max_batch_size_fits": fits, "method": probe.method,
                "fit_method": how, "baseline_bytes": bench.baseline_memory_bytes},
        server={"wait": req.wait},
        calibration={"samples": req.samples, "warmup": req.warmup, "seed": req.seed,
                     "replay_batches": req.replay_batches, "replay_utilisation": req.replay_utilisation,
                     "idle_rounds": req.idle_rounds,
                     "first_call_order": "ascending batch size, one each, before any warm-up",
                     "benchmark_wall_s": round(bench.wall_s, 2),
                     "wall_s": round(time.perf_counter() - started, 2), "command": req.command},
    )


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise CalibrationError(f"--device = {name!r}: use cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise CalibrationError(f"--device = 'cuda': {why} (torch {torch.__version__}); use --device cpu "
                               "or run on a GPU machine")
    return torch.device(name)


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return torch.compile(model)
    except Exception as exc:  # torch.compile raises many kinds when the toolchain is missing
        raise CalibrationError(f"--compile: torch.compile failed: {str(exc).splitlines()[0][:200]}") from None
