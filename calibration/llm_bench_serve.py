"""``capsim bench-serve --llm``: the continuous-batching decoder server, fed open-loop, recorded per request
and per iteration in the simulator's record layout.

Writes ``RUN_DIR/requests.parquet`` (the simulator's token-level request columns,
``sim.results.records.token_request_frame``: arrival, first token, end, TTFT, TPOT, token counts,
preemptions), ``batches.parquet`` (one row per iteration: the simulator's iteration columns plus
``attention_pairs`` and ``late_s``), ``loadgen.parquet`` (when each request was released and received)
and ``run.json`` (``mode: llm``: the scheduler's knobs, the token workload, environment, diagnostics).
``capsim validate RUN_DIR`` replays it through the simulator (sim/validation/llm.py; docs/validation.md).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from calibration.bench_serve import _machine, _r


def serve_llm(config_fields: dict, arrivals: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
              settings: dict, out: Path, force: bool = False) -> int:
    """Serve the requests with the server ``config_fields`` describes (``LlmServeConfig``'s fields), write
    the run directory ``out`` and print what it saw."""
    from calibration.llm_server import LlmServeConfig, run_llm_server
    from calibration.memory import host_memory_bytes
    from calibration.models import check_model_name

    config = LlmServeConfig(**config_fields)
    check_model_name(config.model)
    started, before = time.perf_counter(), _machine()
    raw = run_llm_server(config, arrivals, input_tokens, output_tokens)
    after = _machine()
    raw["machine"] = {"cores": os.cpu_count(), "memory_bytes": host_memory_bytes(),
                      "loadavg_1m_before": before["loadavg_1m"],
                      "loadavg_1m_after": after["loadavg_1m"],
                      "involuntary_switches": after["involuntary_switches"] - before["involuntary_switches"],
                      "note": "load average includes this run; involuntary context switches of this process "
                              "during warm-up and run: the machine was contended when they are many"}
    out = write_llm_run_dir(out, raw, arrivals, config, settings, time.perf_counter() - started, force=force)
    s = json.loads((out / "run.json").read_text())["observed"]
    print(f"wrote {out}/ ({s['requests']} requests, {s['served']} served, {s['iterations']} iterations, TTFT p50 "
          f"{s['ttft_p50_s'] * 1e3:.1f} ms p99 {s['ttft_p99_s'] * 1e3:.1f} ms, TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms "
          f"p99 {s['tpot_p99_s'] * 1e3:.1f} ms, {s['output_tokens_per_s']:.1f} output tokens/s)")
    return 0


def llm_frames(raw: dict, arrival_s: np.ndarray):
    """(requests, iterations, loadgen) frames in the simulator's layout from the server's records."""
    import pandas as pd

    from sim.results.records import SERVED, UNFINISHED, batch_frame, token_request_frame

    seqs, rec = raw["seqs"], raw["records"]
    n = arrival_s.size
    end = np.asarray(seqs.end_s, dtype=float)
    served = np.isfinite(end)
    requests = token_request_frame(
        arrival_s, np.asarray(seqs.start_s, dtype=float), np.asarray(seqs.first_token_s, dtype=float), end,
        np.where(served, 0, -1), np.asarray(seqs.first_batch), np.where(served, SERVED, UNFINISHED),
        np.asarray(seqs.input_tokens), np.asarray(seqs.output_tokens), np.asarray(seqs.preemptions))
    requests.insert(0, "replication", np.zeros(n, dtype=np.int64))
    log = rec.iterations
    count = len(log["start_s"])
    ints = ("prefill_tokens", "decode_tokens", "output_tokens", "kv_tokens_read", "kv_blocks_used", "preempted",
            "attention_pairs")
    iterations = batch_frame(np.zeros(count, dtype=np.int32), log["start_s"], log["end_s"], log["size"],
                             np.zeros(count, dtype=bool), **{k: np.asarray(log[k], dtype=np.int64) for k in ints},
                             late_s=np.asarray(log["late_s"], dtype=float))
    loadgen = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "sent_s": raw["sent_s"],
                            "received_s": rec.received_s})
    return requests, iterations, loadgen


def write_llm_run_dir(out: Path, raw: dict, arrival_s: np.ndarray, config, settings: dict, wall_s: float,
                      force: bool = False) -> Path:
    """The run directory, written atomically (``sim.results.files``)."""
    import torch

    from calibration.writer import environment
    from sim.results.files import writing_folder

    requests, iterations, loadgen = llm_frames(raw, arrival_s)
    lag = (loadgen["sent_s"] - requests["arrival_s"]).to_numpy()
    served = requests[requests["outcome"] == "served"]
    ttft, tpot = served["ttft_s"].to_numpy(), served["tpot_s"].to_numpy()
    tpot = tpot[np.isfinite(tpot)]
    start, end = iterations["start_s"].to_numpy(), iterations["end_s"].to_numpy()
    gaps = start[1:] - end[:-1]
    span = float(end.max() - requests["arrival_s"].min()) if len(iterations) else float("nan")
    run = {
        "schema": "capsim.bench-serve/1",
        "mode": "llm",
        "model": config.model, "device": "cpu", "dtype": "fp32", "threads": raw["threads"],
        "llm": {"max_num_seqs": config.max_num_seqs, "max_num_batched_tokens": config.max_num_batched_tokens,
                "enable_chunked_prefill": config.enable_chunked_prefill, "block_size": config.block_size,
                "kv_blocks": config.kv_blocks, "max_model_len": config.max_model_len,
                "operators": _operators(raw["warmup"].pop("operators")),
                "scheduler": "sim.llm.scheduler.Scheduler (the simulator's own)",
                "kv_cache": "paged: per layer K and V in kv_blocks blocks of block_size token slots "
                            "(calibration/llm_runtime.py)"},
        **settings,
        "warmup": raw["warmup"],
        "environment": environment(torch.device("cpu")),
        "clock": "time.perf_counter (CLOCK_MONOTONIC), seconds from a common t0; arrival_s is the schedule",
        "loadgen": {"lag_mean_s": _r(np.mean(lag)), "lag_p99_s": _r(np.percentile(lag, 99)),
                    "lag_max_s": _r(np.max(lag)), "late_over_1ms_share": _r(float(np.mean(lag > 1e-3)))},
        "server": {"wait": config.wait,
                   "iteration_late_median_s": _r(np.median(iterations["late_s"])) if len(iterations) else None,
                   "iteration_late_p99_s": _r(np.percentile(iterations["late_s"], 99)) if len(iterations) else None,
                   "gap_back_to_back_median_s": _r(np.median(gaps[gaps < 1e-3])) if (gaps < 1e-3).any() else None,
                   "late_note": "iteration start - when it was due (the previous iteration's end, or the arrival "
                                "that woke an idle server); the simulator starts iterations exactly when due",
                   "busy_s": _r(float((end - start).sum())) if len(iterations) else 0.0},
        "observed": {"requests": int(len(requests)), "served": int(len(served)), "iterations": int(len(iterations)),
                     "ttft_p50_s": _stat(ttft, 50), "ttft_p99_s": _stat(ttft, 99),
                     "tpot_p50_s": _stat(tpot, 50), "tpot_p99_s": _stat(tpot, 99),
                     "output_tokens_per_s": _r(served["output_tokens"].sum() / span) if span > 0 else None,
                     "preemptions": int(requests["preemptions"].sum())},
        "machine": raw.get("machine", {}),
        "wall_s": round(wall_s, 2),
    }
    with writing_folder(out, force=force) as tmp:
        requests.to_parquet(tmp / "requests.parquet", index=False)
        iterations.to_parquet(tmp / "batches.parquet", index=False)
        loadgen.to_parquet(tmp / "loadgen.parquet", index=False)
        (tmp / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return out


def _operators(measured: dict) -> dict:
    """The warm-up's token-wise times per token count, as a profile's ``llm.operators`` holds them."""
    return {"rows": measured["rows"], "body_s": [_r(v) for v in measured["body_s"]],
            "head_s": [_r(v) for v in measured["head_s"]], "samples": measured["samples"],
            "method": "DecoderRuntime.operator_times after the warm-up, before t0: medians"}


def _stat(values: np.ndarray, q: float) -> float | None:
    return _r(np.percentile(values, q)) if values.size else None
