"""The real LLM server's parts on torch: the paged-KV decoder computes what the plain decoder computes, the
simulator's scheduler drives it consistently (blocks, tokens, preemption), and a short live run is
recorded and validated (a smoke check: nothing is asserted about how close the simulator came; the
committed recording is judged in tests/test_validation_llm_recorded.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sim.cli import main as capsim_main

torch = pytest.importorskip("torch")

from calibration.llm_runtime import DecoderRuntime, PagedKvCache, SeqWork  # noqa: E402
from calibration.llm_server import Clock, Inbox, LlmServeConfig, build_runtime, prompts_for, serve_iterations  # noqa: E402
from calibration.models import build_model  # noqa: E402
from sim.llm.scheduler import Sequences  # noqa: E402


@pytest.fixture(scope="module")
def decoder():
    torch.set_num_threads(1)
    return build_model("decoder", seed=0).model.eval()


def test_chunks_and_decodes_over_the_paged_cache_match_the_plain_decoder(decoder):
    """A prompt computed in two chunks (the second after the first's KV is cached) and then a decode give
    the next-token logits of one full forward pass over the same tokens; two sequences interleaved in one
    iteration do not see each other."""
    cache = PagedKvCache(len(decoder.layers), 16, 16, 8, 64)
    runtime = DecoderRuntime(decoder, cache)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(0, 32000, (37,), generator=g).tolist(), torch.randint(0, 32000, (20,), generator=g).tolist()
    cache.resize(0, 3)
    cache.resize(1, 2)
    assert runtime.step([SeqWork(0, a[:21], 0, False)]) == []
    first = runtime.step([SeqWork(0, a[21:], 21, True), SeqWork(1, b, 0, True)])
    with torch.inference_mode():
        want = [int(decoder(torch.tensor([a])).argmax(-1)), int(decoder(torch.tensor([b])).argmax(-1))]
    assert first == want
    cache.resize(1, 2)
    second = runtime.step([SeqWork(1, [first[1]], 20, True)])
    with torch.inference_mode():
        assert second == [int(decoder(torch.tensor([b + [first[1]]])).argmax(-1))]


def test_a_position_beyond_the_blocks_is_refused(decoder):
    cache = PagedKvCache(len(decoder.layers), 4, 16, 8, 64)
    cache.resize(0, 1)
    with pytest.raises(RuntimeError, match="beyond its 1 KV blocks"):
        DecoderRuntime(decoder, cache).step([SeqWork(0, list(range(17)), 0, True)])


@pytest.mark.parametrize("chunked", [True, False])
def test_the_scheduler_drives_the_model_through_preemption(chunked):
    """A cache so small that decodes preempt: every request is served, emits exactly its output tokens
    (its token history grows by them), and the cache's block tables always hold what the scheduler counts."""
    config = LlmServeConfig(max_num_seqs=4, max_num_batched_tokens=48 if chunked else 64, enable_chunked_prefill=chunked,
                            block_size=4, kv_blocks=16, max_model_len=64)
    runtime = build_runtime(config)
    inputs, outputs = np.array([20, 9, 14, 30, 5, 12]), np.array([12, 17, 6, 9, 20, 3])
    seqs = Sequences(inputs.tolist(), outputs.tolist())
    inbox = Inbox("block", Clock(0.0))
    for i in range(len(inputs)):
        inbox.put((i, 0.0))
    inbox.close()
    prompts = prompts_for(inputs, 32000, 1)
    from calibration.llm_server import LlmServerRecords

    records = LlmServerRecords(received_s=np.zeros(len(inputs)))
    serve_iterations(runtime, config, seqs, prompts, inbox, records)
    assert all(np.isfinite(seqs.end_s)) and seqs.emitted == seqs.output_tokens
    assert sum(seqs.preemptions) > 0, "the test cache should have forced a preemption"
    log = pd.DataFrame(records.iterations)
    assert (log["kv_blocks_used"] <= 16).all()
    assert log["output_tokens"].sum() == outputs.sum() + 0  # tokens re-emitted by a recompute are not counted twice
    assert runtime.cache.free_blocks == 16 and not runtime.cache.tables


def test_a_short_live_llm_run_is_recorded_and_validated(tmp_path):
    run_dir = tmp_path / "llm-chunked"
    assert capsim_main(["bench-serve", "--llm", "--model", "decoder", "--threads", "1", "--max-num-seqs", "4",
                        "--max-num-batched-tokens", "32", "--max-model-len", "96", "--kv-blocks", "32",
                        "--input-tokens", "{distribution: lognormal, mean_tokens: 20, cv: 0.5, max_tokens: 48}",
                        "--output-tokens", "6", "--rate", "6", "--duration", "1.5", "--seed", "1",
                        "--out", str(run_dir)]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    requests = pd.read_parquet(run_dir / "requests.parquet")
    iterations = pd.read_parquet(run_dir / "batches.parquet")
    assert run["mode"] == "llm" and len(requests) == run["observed"]["requests"] > 0
    assert requests["outcome"].eq("served").all() and (requests["ttft_s"] > 0).all()
    assert iterations["output_tokens"].sum() == requests["output_tokens"].sum()
    for mode in ("replay", "self"):
        out = tmp_path / f"from-run-{mode}"
        assert capsim_main(["validate", str(run_dir), "--from-run", mode, "--replications", "2", "--no-plot",
                            "--out", str(out)]) == 0
        record = json.loads((out / "validation.json").read_text())["runs"][0]
        print(f"\nlive LLM smoke run, from-run {mode}: (sim - real) / real "
              f"{ {k: round(v, 3) for k, v in record['error'].items()} }")
        for key in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "output_tokens_per_s"):
            assert np.isfinite(record["error"][key]), (mode, key)


def test_calibrate_llm_measures_the_idle_response_the_simulator_applies(tmp_path):
    """A small grid and one round of the idle sweep, live: the profile has an idle_response per gap from
    0.1 ms to 1 s (the sizes swept named in its method) and says how the server waited; a scenario on it
    runs. The ratios are this machine's now, so only their form is asserted."""
    out = tmp_path / "llm.json"
    assert capsim_main(["calibrate", "--mode", "llm", "--model", "decoder", "--quick", "--prefill-tokens", "0,16,64",
                        "--decode-seqs", "0,1,4", "--context-tokens", "32", "--idle-rounds", "1", "--threads", "1",
                        "--wait", "poll", "--no-progress", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    response = doc["idle_response"]
    print("\nidle response (poll): " + ", ".join(f"{g * 1e3:.1f} ms x{r:.3f}" for g, r in
                                                  zip(response["gaps_s"], response["ratio"])))
    assert 6 <= len(response["gaps_s"]) <= 9 and response["gaps_s"] == sorted(response["gaps_s"])
    assert response["gaps_s"][0] > 0.9e-4 and 0.9 < response["gaps_s"][-1] < 1.5
    assert all(r > 0 for r in response["ratio"]) and sum(response["counts"]) == 2 * 9  # 2 prompts x 9 gaps
    assert "'prompt 16', 'prompt 64'" in response["method"] and doc["server"] == {"wait": "poll"}
    from sim.llm.calibrated import CalibratedStepTime
    from sim.profiles.llm import load_iteration_profile

    model = CalibratedStepTime.of(load_iteration_profile(out), residuals=False)
    assert model.step_s(16, 0, 16, 136, output_tokens=1, idle_s=2.0) == pytest.approx(
        model.step_s(16, 0, 16, 136, output_tokens=1) * response["ratio"][-1])
