"""The H100 development set (tests/data/recordings/h100): real GPU serving runs, predicted leave-one-out.

39 runs of a single-replica dynamic-batching server on one H100 (MLP, BERT, BERT prewarmed: max batch
1, 8, 32; queue delay 0 or T; Poisson at 10-90% of the back-to-back capacity, and one stepped run
30% -> 90% -> 30%), measured by an independent torch loop with its back-to-back profiles. This module
turns each run into a request log (:func:`request_log`) and a ``BenchRun`` for ``capsim validate``'s
simulation (:func:`bench_run`), each back-to-back profile into a profile document
(:func:`base_profile_doc`), and runs the leave-one-out validation of docs/validation.md
(:func:`leave_one_out`): per model, calibrate from one run plus the back-to-back profile, and predict
every other run through ``sim.run`` with the same arrivals and batching.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.profiles.fromlog import profile_from_logs
from sim.profiles.fromrun import profile_from_runs
from sim.profiles.profile import load_profile, write_profile
from sim.profiles.requestlog import served_log
from sim.validation.validate import MAX_LOAD, TOLERANCES, BenchRun, figures, simulate

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "recordings" / "h100"
# name: (runs file stem, model key in the files, back-to-back profile file, dtype)
SETS = {"mlp": ("serve_h100_mlp", "mlp", "profile_h100_mlp_resnet50.json", "fp32"),
        "bert": ("serve_h100_bert", "bert", "profile_h100_bert.json", "fp16"),
        "bert_prewarmed": ("serve_h100_bert_prewarmed", "bert", "profile_h100_prewarmed_resnet50_bert.json", "fp16")}
# Sizes that ran in the serving process before its first run besides the profiled ones (README.md there).
PREWARMED = {"bert_prewarmed": frozenset(range(1, 33))}
CALIBRATION_RUN = 3  # B = 8, rho = 0.5 in every set
MAX_BATCH_SIZE = 32  # the largest max batch size in the set
KEYS = ("latency_p50_s", "latency_p99_s", "mean_batch_size", "throughput_rps")


@dataclass(frozen=True)
class H100Run:
    """One served run: its settings (``B`` max batch, ``T`` max queue delay, ``rho`` offered load as a share
    of the back-to-back capacity, a list for the stepped run) and its request log."""

    set_name: str
    index: int
    settings: dict
    log: pd.DataFrame

    @property
    def key(self) -> str:
        return f"{self.set_name}/{self.index}"

    @property
    def peak_load(self) -> float:
        """The offered load a run is judged by: a stepped run's peak segment, not its time average."""
        rho = self.settings["rho"]
        return float(max(rho) if isinstance(rho, list) else rho)

    @property
    def judged(self) -> bool:
        return self.peak_load <= MAX_LOAD


def runs(name: str, folder: Path = DATA) -> list[H100Run]:
    """The runs of one set, in the order they were served (one process)."""
    stem, model, _, _ = SETS[name]
    settings = json.loads((folder / f"{stem}.json").read_text())
    arrays = np.load(folder / f"{stem}.npz")
    out = []
    for key in sorted(settings, key=lambda k: int(k.split("/")[1])):
        i = int(key.split("/")[1])
        arrival, start, end, batch = (arrays[f"{model}__{i}__{field}"] for field in ("arrival", "start", "end", "batch"))
        out.append(H100Run(name, i, settings[key], request_log(arrival, start, end, batch)))
    return out


def request_log(arrival: np.ndarray, start: np.ndarray, end: np.ndarray, batch: np.ndarray) -> pd.DataFrame:
    """A run's per-request arrays (arrival order; the requests of one batch share start and end) as a
    request log (docs/profile.md): arrival_s, start_s, end_s, batch_size, replica, batch_id."""
    order = np.argsort(start, kind="stable")
    batch_id = np.empty(len(start), np.int64)
    batch_id[order] = np.cumsum(np.r_[True, np.diff(start[order]) != 0]) - 1
    return pd.DataFrame({"arrival_s": arrival, "start_s": start, "end_s": end, "batch_size": batch.astype(np.int64),
                         "replica": 0, "batch_id": batch_id})


def base_profile_doc(name: str, folder: Path = DATA) -> dict:
    """The set's back-to-back profile (60 samples per size 1..256, each a batch end to end as a server
    sees it) as a profile document, imported as ``capsim profile import --format batch-json`` does."""
    from sim.profiles.importers import ImportSpec, import_profile

    _, model, profile_file, dtype = SETS[name]
    spec = ImportSpec(format="batch-json", dtype=dtype, model_name=model, model_key=model,
                      measured_with="an independent torch loop, back to back (tests/data/recordings/h100/README.md)")
    return import_profile([folder / profile_file], spec)


def warm_before(name: str, all_runs: list[H100Run], k: int, base_sizes) -> frozenset[int]:
    """Batch sizes the serving process had run before run ``k``: the profiled sizes (measured in the same
    process), the set's prewarmed sizes, and every size an earlier run served."""
    warm = set(map(int, base_sizes)) | set(PREWARMED.get(name, ()))
    for r in all_runs[:k]:
        warm |= set(np.unique(r.log["batch_size"]).tolist())
    return frozenset(warm)


def bench_run(run: H100Run) -> BenchRun:
    """A run as ``capsim validate`` reads one: requests, batches and settings (one replica, FIFO)."""
    log = run.log
    batches = log.groupby("batch_id").agg(start_s=("start_s", "first"), end_s=("end_s", "first"),
                                          size=("batch_size", "first")).reset_index(drop=True)
    requests = pd.DataFrame({"id": np.arange(len(log)), "arrival_s": log["arrival_s"], "start_s": log["start_s"],
                             "end_s": log["end_s"], "latency_s": log["end_s"] - log["arrival_s"],
                             "outcome": "served", "replica": 0, "batch_size": log["batch_size"]})
    _, model, _, dtype = SETS[run.set_name]
    settings = {"model": model, "device": "cuda", "dtype": dtype, "threads": None, "replicas": 1,
                "router": "round_robin", "duration_s": float(log["arrival_s"].max() - log["arrival_s"].min()),
                "batching": {"max_batch_size": int(run.settings["B"]), "max_queue_delay_s": float(run.settings["T"]),
                             "preferred_batch_sizes": []}}
    return BenchRun(Path(run.key.replace("/", "-")), settings, requests, batches.assign(replica=0))


def leave_one_out(name: str, work: Path, *, replications: int = 4, seed: int = 0, cal: int = CALIBRATION_RUN,
                  baselines: bool = False, folder: Path = DATA) -> list[dict]:
    """Calibrate from run ``cal`` of set ``name`` plus its back-to-back profile (``capsim profile
    from-log``'s regime model); predict every other run. Per run: real and simulated figures, relative
    errors, the peak load and whether it is judged. ``baselines``: also the back-to-back profile alone
    and ``capsim profile from-run``'s level model of the same run (linear beyond its sizes)."""
    all_runs = runs(name, folder)
    work.mkdir(parents=True, exist_ok=True)
    base_path = write_profile(base_profile_doc(name, folder), work / f"{name}-back-to-back.json")
    base = load_profile(base_path)
    calibration = all_runs[cal]
    log = served_log(calibration.log, calibration.key, max_batch_size=int(calibration.settings["B"]),
                     max_queue_delay_s=float(calibration.settings["T"]),
                     warm_sizes=warm_before(name, all_runs, cal, base.batch_sizes))
    model = profile_from_logs([log], base=base, speed="regime", max_batch_size=MAX_BATCH_SIZE,
                              source=f"leave-one-out: {calibration.key} + back to back")
    level = None
    if baselines:
        level = write_profile(profile_from_runs([bench_run(calibration)], source="leave-one-out", speed="level",
                                                max_batch_size=MAX_BATCH_SIZE), work / f"{name}-from-run-level.json")
    rows = []
    for k, target in enumerate(all_runs):
        if k == cal:
            continue
        run = bench_run(target)
        doc = copy.deepcopy(model)
        if doc.get("first_call"):
            doc["first_call"]["warm_sizes"] = sorted(warm_before(name, all_runs, k, base.batch_sizes))
        path = write_profile(doc, work / f"{name}-model-for-{target.index}.json")
        predicted = {"model": _figures(run, path, work, replications, seed, warmed_up=False)}
        if baselines:
            predicted["back_to_back"] = _figures(run, base_path, work, replications, seed)
            predicted["from_run_level"] = _figures(run, level, work, replications, seed)
        real = figures(run.requests, run.batches)
        rows.append({"run": target.key, "B": int(target.settings["B"]), "T_ms": float(target.settings["T"]) * 1e3,
                     "load": target.peak_load, "stepped": isinstance(target.settings["rho"], list),
                     "judged": target.judged, "real": {k: real[k] for k in KEYS},
                     "error": {how: {k: f[k] / real[k] - 1 for k in KEYS} for how, f in predicted.items()}})
    return rows


def split_half(requests: pd.DataFrame, batches: pd.DataFrame) -> dict:
    """A run's second half against its first (split at the median arrival): the relative errors the first
    half would have as a prediction of the second. Same server, settings, process and minute, so no
    prediction made from elsewhere can expect to do better than this agreement."""
    cut = float(requests["arrival_s"].median())
    halves = []
    for part in (requests[requests["arrival_s"] < cut], requests[requests["arrival_s"] >= cut]):
        served_in = batches[(batches["start_s"] >= part["start_s"].min()) & (batches["start_s"] <= part["start_s"].max())]
        halves.append(figures(part, served_in))
    first, second = halves
    return {k: first[k] / second[k] - 1 for k in KEYS}


def repeatability(name: str, work: Path, *, seed: int = 0, cal: int = CALIBRATION_RUN,
                  folder: Path = DATA) -> list[dict]:
    """Per run of set ``name`` that :func:`leave_one_out` predicts (all but ``cal``), the split-half agreement (:func:`split_half`) of the real server
    (``error["real_halves"]``) and of a stationary simulated server on the same arrivals and batching
    (``error["stationary_halves"]``: the back-to-back profile, one replication), whose halves differ by
    sampling alone. Where the real halves disagree more than the stationary ones, the server's own speed
    moved within the run: the run-to-run variation a prediction's tolerance has to absorb."""
    all_runs = runs(name, folder)
    work.mkdir(parents=True, exist_ok=True)
    base_path = write_profile(base_profile_doc(name, folder), work / f"{name}-back-to-back.json")
    rows = []
    for target in all_runs:
        if target.index == cal:
            continue
        run = bench_run(target)
        result, _ = simulate(run, base_path, work / "sim", 1, seed)
        rows.append({"run": target.key, "B": int(target.settings["B"]), "load": target.peak_load,
                     "judged": target.judged,
                     "error": {"real_halves": split_half(run.requests, run.batches),
                               "stationary_halves": split_half(result.requests, result.batches)}})
    return rows


def _figures(run: BenchRun, profile: Path, work: Path, replications: int, seed: int, warmed_up: bool = True) -> dict:
    _, pooled = simulate(run, profile, work / "sim", replications, seed, warmed_up=warmed_up)
    return {k: pooled[k] for k in KEYS}


def within(error: dict) -> tuple[bool, bool]:
    """(p50 within its tolerance, p99 within its tolerance)."""
    return (abs(error["latency_p50_s"]) <= TOLERANCES["latency_p50_s"],
            abs(error["latency_p99_s"]) <= TOLERANCES["latency_p99_s"])


def counts(rows: list[dict], how: str = "model") -> tuple[int, int, int]:
    """Judged runs (peak load <= 0.85) with p50 within 10%, with p99 within 20%, and how many were judged."""
    judged = [within(r["error"][how]) for r in rows if r["judged"]]
    return sum(a for a, _ in judged), sum(b for _, b in judged), len(judged)


def markdown(rows: list[dict], hows=("model",)) -> str:
    """The per-run table of docs/validation.md: real p50 / p99, and per service model its errors."""
    head = "| run | B / T | peak load | real p50 / p99 ms | " + " | ".join(
        f"{h.replace('_', ' ')} Δp50 / Δp99 / Δbatch" for h in hows) + " |"
    lines = [head, "| " + " | ".join(["---"] * (4 + len(hows))) + " |"]
    for r in rows:
        cells = []
        for h in hows:
            e = r["error"][h]
            p50, p99 = within(e)
            cells.append(f"{_marked(e['latency_p50_s'], p50 or not r['judged'])} / "
                         f"{_marked(e['latency_p99_s'], p99 or not r['judged'])} / {e['mean_batch_size'] * 100:+.1f}%")
        load = f"{r['load']:.0%}" + (" (stepped)" if r["stepped"] else "")
        lines.append(f"| {r['run']} | {r['B']} / {r['T_ms']:.3g} ms | {load} | {r['real']['latency_p50_s'] * 1e3:.3g} / "
                     f"{r['real']['latency_p99_s'] * 1e3:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _marked(error: float, ok: bool) -> str:
    """A relative error in percent, bold where it misses a judged run's tolerance."""
    return f"{error * 100:+.1f}%" if ok else f"**{error * 100:+.1f}%**"
