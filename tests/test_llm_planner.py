"""`capsim plan` on llm scenarios: the cheapest configuration worked out by hand, the memory check that
keeps configurations from being simulated, the outputs and resuming, and bad flags as one line."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

import sim
from sim.cli import main
from sim.planner.llm import LlmSpace, llm_space
from sim.planner.search import Evaluator, plan
from sim.scenario.load import scenario_from_dict

BASE_S, PER_SEQ_S, TPOT_SLO_S = 0.010, 0.001, 0.0205  # step = 10 ms + 1 ms per decoding sequence
RATE, OUTPUT = 39.0, 32  # requests/s (deterministic), tokens per answer (and per prompt)
TINY = {
    "name": "llm-tiny",
    "workload": {"arrivals": {"process": "deterministic", "rate_rps": RATE},
                 "input_tokens": {"distribution": "fixed", "tokens": 32},
                 "output_tokens": {"distribution": "fixed", "tokens": OUTPUT}},
    "llm": {"model": "llama-2-7b", "dtype": "fp16", "max_num_seqs": 16, "max_num_batched_tokens": 256,
            "step_time": {"type": "coefficients", "base_s": BASE_S, "per_decode_token_s": PER_SEQ_S},
            "slo": {"ttft_s": 0.2, "tpot_s": TPOT_SLO_S, "percentile": 99}},
    "fleet": {"replicas": 1, "gpu": "L4", "router": "round_robin"},
    "run": {"duration_s": 40, "warmup_s": 5, "seed": 1},
}


def tiny(**llm) -> sim.Scenario:
    return scenario_from_dict({**TINY, "llm": {**TINY["llm"], **llm}})


def analytic_replicas(max_num_seqs: int) -> int:
    """The fewest replicas meeting the TPOT objective, by hand. Every iteration lasts BASE_S + PER_SEQ_S·D with
    D sequences decoding, so a sequence's TPOT is the mean step over its OUTPUT − 1 decode iterations. A
    replica at λ req/s (round robin: λ = RATE/n, deterministic) holds D = λ·(OUTPUT − 1)·step sequences
    decoding (Little), so D = λ·31·BASE_S / (1 − λ·31·PER_SEQ_S), and TPOT ≤ 20.5 ms ⇔ D ≤ 10.5 ⇔
    λ ≤ 16.5 req/s. A cap of B < 10.5 running sequences binds first: B sequences in flight complete one
    request per OUTPUT iterations each, λ ≤ B / (OUTPUT·(BASE_S + PER_SEQ_S·B·31/32)) (9.0 req/s for B = 4)."""
    d_max = (TPOT_SLO_S - BASE_S) / PER_SEQ_S
    per_replica = d_max / ((OUTPUT - 1) * (BASE_S + PER_SEQ_S * d_max))
    if max_num_seqs < d_max:
        per_replica = max_num_seqs / (OUTPUT * (BASE_S + PER_SEQ_S * max_num_seqs * (OUTPUT - 1) / OUTPUT))
    return math.ceil(RATE / per_replica)


def test_plan_finds_the_analytic_cheapest_configuration(tmp_path):
    """Llama-2-7B fp16 with the same iteration times on every GPU: the cheapest GPU the model fits, at TP 1
    (TP 2 doubles the GPUs for the same speed), with the fewest replicas the TPOT objective allows. T4
    (16 GiB, $0.53) cannot hold the weights and one 4,096-token sequence at TP 1 and is not simulated;
    T4 × 2 costs $1.05 a replica, L4 $0.80: L4 × TP 1 × 3 replicas, $2.41/h."""
    assert (analytic_replicas(16), analytic_replicas(4)) == (3, 5)
    scenario = tiny()
    space = llm_space(scenario, gpus=["T4", "L4"], tensor_parallel=[1, 2], max_num_seqs=[4, 16])
    result = plan(scenario, space, Evaluator(scenario, 1, 1, checkpoint_dir=tmp_path / "ck", progress=False),
                  "bisect")
    best = result.best
    assert (best["fleet.gpu"], best["llm.tensor_parallel"], best["llm.max_num_seqs"]) == ("L4", 1, 16)
    assert best["fleet.replicas"] == analytic_replicas(16) == 3
    assert best["cost_per_hour_usd"] == pytest.approx(3 * 0.8048)
    assert best["tpot_upper_s"] <= TPOT_SLO_S < best["tpot_upper_s"] + 0.005  # about 16.8 ms: D ≈ 6.8
    table = result.table.set_index(["fleet.gpu", "llm.tensor_parallel", "llm.max_num_seqs", "fleet.replicas"])
    assert not table.loc[("L4", 1, 16, 2), "meets_slo"]  # one replica fewer: 19.5 req/s each, TPOT 25 ms
    assert table.loc[("L4", 1, 4, 5), "meets_slo"] and not table.loc[("L4", 1, 4, 4), "meets_slo"]
    assert table.loc[("T4", 2, 16, 3), "instances"] == 6  # every GPU counted: replicas × TP
    assert table.loc[("T4", 2, 16, 3), "cost_per_hour_usd"] == pytest.approx(6 * 0.526)
    assert "T4" not in set(result.table.query("`llm.tensor_parallel` == 1")["fleet.gpu"])  # not simulated
    assert any("does not fit memory" in n and "T4 × TP 1" in n for n in result.notes)
    assert result.table["estimate"].tolist() == [g != "L4" for g in result.table["fleet.gpu"]]


def test_memory_and_tpot_checks_leave_configurations_out_before_running():
    """Llama-3-70B (141 GB of weights) on the catalog: what does not fit is never simulated; a TPOT objective
    below one sequence's decode step leaves nothing to run."""
    chat = sim.load_scenario("llm/summarize_llama3_70b_tp4")
    space = llm_space(chat, gpus=["L4", "A100-80GB", "H100-SXM"], max_num_seqs=[64])
    assert space.tensor_parallel == [1, 2, 4, 8]
    configs, notes = space.valid_configs(chat)
    kept = {(c["fleet.gpu"], c["llm.tensor_parallel"]) for c in configs}
    assert ("H100-SXM", 1) not in kept and ("L4", 4) not in kept and {("H100-SXM", 2), ("L4", 8)} <= kept
    assert any("does not fit memory" in n and "L4 × TP 4, A100-80GB × TP 1, H100-SXM × TP 1;" in n for n in notes)
    coeffs = tiny()
    only_own = llm_space(coeffs)
    assert [c.label for c in only_own.candidates] == ["L4"] and "only L4 is searched" in only_own.notes[0]
    slow = tiny(slo={"ttft_s": 0.2, "tpot_s": 0.005})
    configs, notes = llm_space(slow, tensor_parallel=[1]).valid_configs(slow)
    assert configs == [] and "slower than the TPOT objective (5 ms)" in notes[-1] and "11.0 ms" in notes[-1]
    roofline = sim.load_scenario("llm/chat_llama3_8b")
    space = llm_space(roofline)
    assert "T4" not in {c.label for c in space.candidates} and any("no bf16" in n for n in space.notes)
    assert isinstance(space, LlmSpace) and space.max_num_seqs == [64, 128, 256]


def test_plan_command_writes_outputs_and_resumes(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "plan"
    args = ["plan", str(path), "--tensor-parallel", "1", "--max-num-seqs", "16", "--workers", "1", "--no-progress",
            "--out", str(out)]
    assert main(args) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "TTFT p99 ≤ 200 ms, TPOT p99 ≤ 20.5 ms" in printed and "only L4 is searched" in printed
    assert "recommended" in printed and "fleet.replicas=3" in printed and "(3 GPUs)" in printed
    for name in ("candidates.parquet", "pareto.parquet", "pareto.png", "recommended.yaml", "bisection.parquet"):
        assert (out / name).is_file(), name
    fronts = pd.read_parquet(out / "pareto.parquet")
    assert set(fronts["frontier"]) == {"cost_vs_ttft", "cost_vs_tpot", "cost_vs_violation"}
    recommended = sim.load_scenario(out / "recommended.yaml")
    assert (recommended.fleet.replicas, recommended.fleet.gpu, recommended.llm.max_num_seqs) == (3, "L4", 16)
    assert main(args) == 0
    assert "simulated 0 runs" in capsys.readouterr().out


@pytest.mark.parametrize("ref,flags,expected", [
    ("llm/chat_llama3_8b", ["--slo-p99-ms", "100"], "--slo-p99-ms: does not apply to an llm scenario"),
    ("llm/chat_llama3_8b", ["--batch-sizes", "8"], "use --max-num-seqs"),
    ("llm/chat_llama3_8b", ["--tensor-parallel", "3"], "llm.tensor_parallel = 3: must divide"),
    ("llm/chat_llama3_8b", ["--max-num-seqs", "0,8"], "--max-num-seqs = '0,8': a comma-separated list"),
    ("llm/chat_llama3_8b", ["--gpus", "B200"], "--gpus = 'B200': catalog GPUs"),
    ("llm/chat_llama3_8b", ["--tpot-ms", "-1"], "--tpot-ms = -1: must be > 0"),
    ("fraud_mlp", ["--tensor-parallel", "2"], "--tensor-parallel: applies to llm scenarios only"),
])
def test_bad_llm_plan_flags_are_one_line(tmp_path, capsys, ref, flags, expected):
    code = main(["plan", ref, *flags, "--workers", "1", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "p").exists()


def test_tpot_below_one_decode_step_is_one_line(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    code = main(["plan", str(path), "--tpot-ms", "5", "--workers", "1", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "search space is empty" in err and "slower than the TPOT objective" in err
