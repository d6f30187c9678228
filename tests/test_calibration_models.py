"""The built-in torch models agree with the roofline's analytic counts, and run as servers run them."""

from __future__ import annotations

import pytest

from sim.models.archs import BUILTIN_ARCHS
from sim.models.costs import model_cost

torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from calibration.harness import Harness, _split  # noqa: E402
from calibration.models import build_model  # noqa: E402

OUTPUT_SHAPES = {"mlp": (2, 1), "resnet50": (2, 1000), "bert-base": (2, 2), "decoder": (2, 32000),
                 "mlp-2048": (2, 1), "bert-encoder": (2, 2)}


@pytest.fixture(scope="module", params=list(OUTPUT_SHAPES))
def built(request):
    return build_model(request.param)


def test_parameters_and_buffers_match_the_analytic_count(built):
    cost = model_cost(built.name)
    assert sum(p.numel() for p in built.model.parameters()) == cost.parameters
    floats = sum(b.numel() for b in built.model.buffers() if b.is_floating_point())
    assert floats == cost.buffers


def test_flops_match_torch_flop_counter(built):
    """torch's counter sees matmuls and convolutions; on cpu it does not count fused attention."""
    cost = model_cost(built.name)
    arch = BUILTIN_ARCHS[built.name]
    attention = 4 * arch.seq_len**2 * arch.d_model * arch.n_layers if hasattr(arch, "seq_len") else 0
    counter = FlopCounterMode(display=False)
    # without grad, torch's own encoder layers run fused (one op the counter cannot see into)
    with counter, torch.set_grad_enabled(built.name == "bert-encoder"):
        built.model.eval()(built.make_input(2))
    assert counter.get_total_flops() == pytest.approx(2 * (cost.flops - attention), rel=1e-9)


def test_outputs_have_the_expected_shapes(built):
    with torch.inference_mode():
        out = built.model.eval()(built.make_input(2))
    assert tuple(out.shape) == OUTPUT_SHAPES[built.name]


def test_the_harness_assembles_requests_and_splits_responses():
    built = build_model("test-tiny")
    h = Harness(built.model.eval(), built.make_input, torch.device("cpu"), torch.bfloat16)
    requests = h.requests(3)
    assert all(r[0].shape == (1, 16) and r[0].dtype == torch.bfloat16 for r in requests)
    (batch,) = h.to_device(requests)
    assert batch.shape == (3, 16)
    h.model.to(torch.bfloat16)
    timing = h.through_loop(requests)
    assert timing.latency_s > 0 and timing.host_overhead_s > 0
    assert h.time_forward(requests) > 0
    pair = (torch.zeros(3, 2), torch.ones(3))
    assert [tuple(t.shape) for t in _split(pair, 3)[0]] == [(2,), ()]
    assert len(_split({"a": torch.zeros(3)}, 3)) == 3


def test_a_sequence_length_changes_the_transformer_inputs():
    built = build_model("decoder", seq_len=16)
    assert tuple(built.make_input(2).shape) == (2, 16)
