"""Memory per GPU against hand computations: the 7B case (14 GB of fp16 weights, 112 GB of mixed-precision
Adam states: no single 80 GB GPU trains it unsharded), the ZeRO stages, Korthikanti et al.'s activation
counts with and without tensor and sequence parallelism and checkpointing, and the refusal that says
what would fit. Each test prints its figures."""

from __future__ import annotations

import pytest

from sim.errors import ScenarioError
from sim.hardware.gpus import get_gpu
from sim.training.job import estimate
from sim.training.layout import Layout
from sim.training.memory import activations, memory, stage_parameters
from sim.training.models import TrainedModel, TransformerShape, trained_model, transformer_model
from sim.training.scenario import training_plan_from_dict
from sim.training.setup import base_layout, build_setup
from sim.training.states import state_bytes

GB = 1e9
SEVEN_B = {"kind": "training", "name": "seven-b",
           "model": {"name": "my-7b", "parameters": 7e9, "layers": 32, "hidden": 4096, "heads": 32, "ffn": 11008,
                     "vocab": 32000},
           "data": {"tokens": 1e9, "seq_len": 4096}, "batch": {"global_batch": 64, "micro_batch": 1},
           "cluster": {"gpu": "H100-SXM", "gpus": 1}}


def _states(model: TrainedModel, **layout) -> tuple[float, float, float]:
    m = memory(model, Layout(**{"global_batch": 64, **layout}), "bf16-mixed", "adam", 80 * 2**30)
    return m.weights_bytes, m.gradients_bytes, m.optimizer_bytes


def test_seven_billion_parameters_in_mixed_precision_adam():
    b = state_bytes("bf16-mixed", "adam")
    assert (b.weights, b.gradients, b.optimizer, b.total) == (2, 2, 12, 16)
    assert state_bytes("fp32", "adam").total == 16 and state_bytes("fp32", "sgd").total == 8
    model = build_setup(training_plan_from_dict(SEVEN_B)).model
    weights, grads, states = _states(model, gpus=1)
    print(f"\n7B: fp16 weights {weights / GB:.1f} GB, gradients {grads / GB:.1f} GB, Adam states {states / GB:.1f} GB, "
          f"together {(weights + grads + states) / GB:.1f} GB; an H100 holds {get_gpu('H100-SXM').memory_bytes / GB:.1f} GB")
    assert weights == pytest.approx(14 * GB) and grads == pytest.approx(14 * GB) and states == pytest.approx(84 * GB)
    assert weights + grads + states == pytest.approx(112 * GB)
    assert weights + grads + states > get_gpu("H100-SXM").memory_bytes


def test_the_seven_billion_model_on_one_gpu_is_refused_with_the_numbers_and_what_fits():
    setup = build_setup(training_plan_from_dict(SEVEN_B))
    with pytest.raises(ScenarioError) as refused:
        estimate(setup, base_layout(setup.plan))
    text = str(refused.value)
    print("\n" + text)
    assert "\n" not in text
    for part in ("does not fit on H100-SXM", "112.0 GB of weights, gradients and adam states", "16 B per parameter",
                 "> 85.9 GB", "zero: 3 over ≥ 2 GPUs", "tensor: 2 (2 GPUs)", "pipeline: 2 (2 GPUs)"):
        assert part in text
    # and each suggestion does fit
    for layout in (Layout(gpus=2, zero=3, global_batch=64), Layout(gpus=2, tensor=2, global_batch=64),
                   Layout(gpus=2, pipeline=2, global_batch=64)):
        assert memory(setup.model, layout, "bf16-mixed", "adam", setup.device.memory_bytes).fits, layout


@pytest.mark.parametrize("zero,weights,grads,states", [(0, 2, 2, 12), (1, 2, 2, 12 / 8), (2, 2, 2 / 8, 12 / 8),
                                                        (3, 2 / 8, 2 / 8, 12 / 8)])
def test_zero_stages_shard_what_the_zero_paper_says(zero, weights, grads, states):
    model = TrainedModel("one-billion", 10**9, 10, 0, 1.0)
    got = _states(model, gpus=8, zero=zero)
    print(f"\nZeRO-{zero} over 8: {got[0] / GB:.2f} + {got[1] / GB:.2f} + {got[2] / GB:.2f} GB per GPU")
    assert got == pytest.approx((weights * GB, grads * GB, states * GB))


GPT = TransformerShape(layers=96, hidden=12288, heads=96, kv_dim=12288, ffn=4 * 12288, vocab=51200, seq_len=2048,
                       gated_mlp=False, lm_head=False)


def _activations(t: int = 1, sp: bool = False, ckpt: bool = False, b: int = 1) -> float:
    model = transformer_model("gpt-175b", GPT, 175 * 10**9, 0)
    layout = Layout(gpus=t, tensor=t, micro_batch=b, global_batch=b, activation_checkpointing=ckpt,
                    sequence_parallel=sp, flash_attention=False)
    return activations(model, layout, "bf16-mixed")


@pytest.mark.parametrize("t", [1, 2, 8])
def test_activations_are_korthikanti_eq_1_and_2(t):
    s, b, h, a, L = GPT.seq_len, 1, GPT.hidden, GPT.heads, GPT.layers
    no_sp = L * s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    sp = L * s * b * h / t * (34 + 5 * a * s / h)
    print(f"\nGPT-3 175B, s=2048, b=1, TP={t}: {_activations(t) / GB:.1f} GB (eq. 2 {no_sp / GB:.1f}); with "
          f"sequence parallel {_activations(t, sp=True) / GB:.1f} GB ({sp / GB:.1f})")
    assert _activations(t) == pytest.approx(no_sp, rel=1e-12)
    assert _activations(t, sp=True) == pytest.approx(sp, rel=1e-12)
    if t == 1:
        assert _activations(1) == pytest.approx(L * (34 * s * b * h + 5 * a * s * s * b), rel=1e-12)


def test_full_recomputation_keeps_each_layers_input_and_one_layer():
    s, h, a, L = GPT.seq_len, GPT.hidden, GPT.heads, GPT.layers
    one_layer = s * h * (34 + 5 * a * s / h)
    print(f"\ncheckpointed: {_activations(ckpt=True) / GB:.2f} GB against {_activations() / GB:.1f} GB")
    assert _activations(ckpt=True) == pytest.approx(L * 2 * s * h + one_layer, rel=1e-12)


def test_llama_parameters_and_pipeline_stages():
    llama = trained_model("llama-2-7b", 4096)
    assert llama.parameters == 6_738_415_616  # the count of its config.json (sim.models.llm_archs)
    assert stage_parameters(llama, 1) == llama.parameters
    halves = stage_parameters(llama, 2)
    print(f"\nllama-2-7b: {llama.parameters / 1e9:.3f} B parameters, {halves / 1e9:.3f} B on the larger of 2 stages")
    assert halves == pytest.approx(16 * llama.layer_parameters + llama.embedding_parameters / 2)
    # per token: 2 FLOPs per weight but the input embedding's (a lookup), and 4 L s h of attention (PaLM's count)
    per_token = 2 * (llama.parameters - 32000 * 4096) + 4 * 32 * 4096 * 4096
    assert llama.forward_flops_per_sample / 4096 == pytest.approx(per_token, rel=1e-12)
