"""Token-level serving against hand formulas: a constant iteration time gives TPOT = step time and TTFT on
the iteration grid; KV capacity is the block arithmetic of the public configs; memory refusal comes at
the right tensor-parallel degree; cold starts and cost count every GPU of a replica."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.errors import ScenarioError
from sim.hardware.gpus import get_gpu, gpu_catalog
from sim.llm.build import MEASURED_LOAD_BYTES_PER_S, MEASURED_RUNTIME_START_S, llm_setup
from sim.llm.memory import RUNTIME_RESERVE_BYTES, activation_peak_bytes
from sim.models.llm_archs import llm_arch
from sim.scaling.lifecycle import PhaseSampler
from sim.scenario.scaling import ColdStart

GIB = 1 << 30
STEP_S = 0.01


def llm_scenario(**over):
    llm = {"model": "llama-3-8b", "step_time": {"type": "coefficients", "base_s": STEP_S}}
    llm.update(over.pop("llm", {}))
    return sim.scenario_from_dict({
        "workload": {"arrivals": over.pop("arrivals", {"process": "poisson", "rate_rps": 20}),
                     "input_tokens": over.pop("input_tokens", {"distribution": "fixed", "tokens": 100}),
                     "output_tokens": over.pop("output_tokens", {"distribution": "fixed", "tokens": 50})},
        "llm": llm, "fleet": {"gpu": "H100-SXM", **over.pop("fleet", {})},
        "run": over.pop("run", {"duration_s": 30, "warmup_s": 2, "seed": 4}), **over})


def test_alone_a_request_follows_the_iteration_grid():
    """Requests 2 s apart never meet: TTFT = ceil(prompt / budget) iterations, TPOT = the step time,
    e2e = TTFT + (output − 1) steps, throughput = the arrival rate."""
    sc = llm_scenario(arrivals={"process": "deterministic", "rate_rps": 0.5},
                      input_tokens={"distribution": "fixed", "tokens": 3000},
                      output_tokens={"distribution": "fixed", "tokens": 40}, llm={"max_num_batched_tokens": 1024},
                      run={"duration_s": 20})
    r = sim.run(sc).requests
    chunks = math.ceil(3000 / 1024)
    print(f"\nTTFT {r['ttft_s'].unique() * 1e3} ms (hand: {chunks} × 10 ms), TPOT {r['tpot_s'].unique() * 1e3} ms")
    np.testing.assert_allclose(r["ttft_s"], chunks * STEP_S, rtol=1e-9)
    np.testing.assert_allclose(r["tpot_s"], STEP_S, rtol=1e-9)
    np.testing.assert_allclose(r["latency_s"], (chunks + 39) * STEP_S, rtol=1e-9)


def test_steady_stream_tpot_ttft_and_little():
    """Poisson at 50/s, 20-token prompts, 100-token outputs, 10 ms per iteration, no memory limit: the
    replica is never idle, so every TPOT is exactly 10 ms, a prompt waits a uniform residual of the
    running iteration then one iteration (mean TTFT 15 ms), output tokens/s = λ·100 and, by Little's
    law, sequences per iteration = λ × (end − start)."""
    sc = llm_scenario(arrivals={"process": "poisson", "rate_rps": 50},
                      input_tokens={"distribution": "fixed", "tokens": 20},
                      output_tokens={"distribution": "fixed", "tokens": 100}, run={"duration_s": 200, "seed": 9})
    result = sim.run(sc)
    r, s, b = result.requests, result.summary, result.batches
    lam = len(r) / 200
    little = lam * (r["end_s"] - r["start_s"]).mean()
    print(f"\nTPOT {r['tpot_s'].min() * 1e3:.6f}..{r['tpot_s'].max() * 1e3:.6f} ms; TTFT mean "
          f"{r['ttft_s'].mean() * 1e3:.2f} ms (hand 15); output {s['output_tokens_per_s']:.0f} tok/s "
          f"(hand {lam * 100:.0f}); sequences/iteration {b['size'].mean():.2f} (Little {little:.2f})")
    np.testing.assert_allclose(r["tpot_s"], STEP_S, rtol=1e-9)
    assert r["ttft_s"].between(STEP_S - 1e-12, 2 * STEP_S + 1e-12).all()
    assert r["ttft_s"].mean() == pytest.approx(1.5 * STEP_S, rel=0.03)
    assert s["output_tokens_per_s"] == pytest.approx(lam * 100, rel=0.02)
    assert b["size"].mean() == pytest.approx(little, rel=0.02)


@pytest.mark.parametrize(("model", "tp", "kv_bytes_per_token"), [
    ("llama-2-7b", 1, 2 * 32 * 4096 * 2),  # 512 KiB: every head has its own K and V
    ("llama-3-8b", 1, 2 * 32 * 1024 * 2),  # 128 KiB: 8 KV heads of 128
    ("llama-3-70b", 4, 2 * 80 * 1024 * 2),  # 320 KiB, a quarter on each of 4 GPUs
])
def test_kv_capacity_is_the_block_arithmetic(model, tp, kv_bytes_per_token):
    sc = llm_scenario(llm={"model": model, "tensor_parallel": tp, "max_model_len": 4096},
                      input_tokens={"distribution": "fixed", "tokens": 100})
    setup = llm_setup(sc)
    arch, gpu, plan = llm_arch(model), get_gpu("H100-SXM"), setup.plan
    weights = arch.parameters * 2 // tp
    free = 0.9 * 80 * GIB - weights - activation_peak_bytes(arch, 2, tp, 2048, 256) - RUNTIME_RESERVE_BYTES
    blocks = int(free // (16 * kv_bytes_per_token // tp))
    print(f"\n{model} TP={tp}: weights {arch.parameters * 2 / 1e9:.2f} GB, KV {kv_bytes_per_token // 1024} KiB/token, "
          f"{blocks:,} blocks = {blocks * 16:,} tokens per replica")
    assert gpu.memory_bytes == 80 * GIB
    assert plan.kv_bytes_per_token_per_gpu == kv_bytes_per_token // tp
    assert plan.kv_blocks == blocks and plan.kv_tokens == 16 * blocks


def test_the_seeds_7b_model_is_14_gb_in_fp16():
    plan = llm_setup(llm_scenario(llm={"model": "llama-2-7b", "dtype": "fp16"})).plan
    assert plan.weight_bytes == 6_738_415_616 * 2 == pytest.approx(14e9, rel=0.04)


@pytest.mark.parametrize(("gpu", "refused", "fits"), [("H100-SXM", 1, 2), ("A100-40GB", 2, 4), ("L4", 4, 8)])
def test_llama_70b_is_refused_below_the_tensor_parallel_that_fits(gpu, refused, fits):
    def scenario(tp):
        return llm_scenario(llm={"model": "llama-3-70b", "tensor_parallel": tp}, fleet={"gpu": gpu})

    with pytest.raises(ScenarioError) as err:
        scenario(refused)
    print("\n" + str(err.value))
    assert f"llm.tensor_parallel = {refused}: llama-3-70b bf16 needs 141.1 GB of weights" in str(err.value)
    assert f"tensor_parallel = {fits} fits" in str(err.value)
    assert llm_setup(scenario(fits)).plan.kv_blocks > 0


def test_roofline_decode_of_one_sequence_reads_the_weights():
    """Batch-1 decode is memory bound: weights + KV + activations over 80% of 3.35 TB/s, plus launches
    (32 layers × 2 µs) and 0.3 ms of host work; TP adds 2 ring all-reduces per layer."""
    arch, kv = llm_arch("llama-3-8b"), 1000
    step = llm_setup(llm_scenario(llm={"step_time": {"type": "roofline"}})).step_time
    moved = arch.parameters * 2 + kv * arch.kv_bytes_per_token(2) + 32 * (10 * 4096 + 4 * 14336) * 2
    hand = moved / (3.35e12 * 0.8) + 32 * 2e-6 + 300e-6
    print(f"\nLlama-3-8B decode, batch 1, {kv} tokens of context: {step.step_s(0, 1, kv, kv) * 1e3:.3f} ms "
          f"(hand {hand * 1e3:.3f} ms)")
    assert step.step_s(0, 1, kv, kv) == pytest.approx(hand, rel=1e-9)
    tp2 = llm_setup(llm_scenario(llm={"tensor_parallel": 2, "step_time": {"type": "roofline"}})).step_time
    moved2 = arch.parameters + kv * arch.kv_bytes_per_token(2) / 2 + 32 * (10 * 4096 + 2 * 14336) * 2
    ring = 2 * 32 * (10e-6 + 2 * (2 - 1) / 2 * 4096 * 2 / (450e9 * 0.7))
    assert tp2.step_s(0, 1, kv, kv) == pytest.approx(moved2 / (3.35e12 * 0.8) + 32 * 2e-6 + 300e-6 + ring, rel=1e-9)


def test_cold_start_loads_each_gpus_shard_in_parallel():
    """The measured H100 rate (14 GB cold to GPU in 9.83 s), one GPU's shard: TP 4 loads a quarter each."""
    seeds_14_gb_s = 15_032_390_096 / MEASURED_LOAD_BYTES_PER_S
    assert seeds_14_gb_s == pytest.approx(9.835, abs=1e-3)
    for tp in (2, 4):
        setup = llm_setup(llm_scenario(llm={"model": "llama-3-70b", "tensor_parallel": tp}))
        sampler = PhaseSampler(ColdStart(), setup.weight_load, True, np.random.default_rng(0))
        hand = 141_107_412_992 / tp / MEASURED_LOAD_BYTES_PER_S + MEASURED_RUNTIME_START_S
        print(f"\nLlama-3-70B TP={tp}: weight load {sampler.weight_load:.1f} s (hand {hand:.1f} s)")
        assert sampler.weight_load == pytest.approx(hand, rel=1e-6)


def test_a_replica_costs_all_its_gpus():
    sc = llm_scenario(llm={"model": "llama-3-70b", "tensor_parallel": 4, "step_time": {"type": "coefficients",
                                                                                         "base_s": 0.02}},
                      fleet={"replicas": 2}, arrivals={"process": "poisson", "rate_rps": 2}, run={"duration_s": 36})
    s = sim.run(sc).summary
    assert s["gpus_per_replica"] == 4
    assert s["gpu_hours"] == pytest.approx(2 * 4 * 36 / 3600)
    assert s["cost_usd"] == pytest.approx(s["gpu_hours"] * get_gpu("H100-SXM").usd_per_hour)


def test_every_catalog_gpu_has_an_interconnect_with_its_source():
    for key, gpu in gpu_catalog().items():
        assert gpu.interconnect_bytes_per_s > 0 and gpu.sources["interconnect"].startswith("https://"), key
    assert get_gpu("H100-SXM").interconnect_bytes_per_s == 450e9  # NVLink 4: 900 GB/s both ways
    assert get_gpu("A100-80GB").interconnect_bytes_per_s == 300e9  # NVLink 3: 600 GB/s both ways
    assert get_gpu("L4").interconnect_bytes_per_s == get_gpu("L4").host_link_bytes_per_s  # PCIe only
