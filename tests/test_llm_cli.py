"""Token-level serving through `capsim simulate`: the shipped LLM examples and their result files, bad
input as one line with exit code 2, the docs covering every column and key, the engine contract that
lets `sim.scaling` drive LLM replicas, and an HPA scaling an LLM fleet on its KV cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import sim
from sim.cli import main
from sim.llm.engine import LlmEngine
from sim.llm.scheduler import Sequences
from sim.scenario.load import dump_scenario
from sim.serving.routers import build_router

REPO = Path(__file__).resolve().parents[1]
LLM_EXAMPLES = sorted((REPO / "examples" / "llm").glob("*.yaml"))
SUMMARY_KEYS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p99_s", "output_tokens_per_s",
                "goodput_rps", "kv_utilization_mean", "preemptions")
REQUEST_COLUMNS = ("arrival_s", "end_s", "latency_s", "replica", "outcome", "input_tokens", "output_tokens",
                   "ttft_s", "tpot_s")
CHAT = {
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 10},
                 "input_tokens": {"distribution": "lognormal", "mean_tokens": 300, "cv": 1.0, "max_tokens": 3000},
                 "output_tokens": {"distribution": "lognormal", "mean_tokens": 100, "cv": 1.0, "max_tokens": 1000}},
    "llm": {"model": "llama-3-8b"},
    "fleet": {"gpu": "H100-SXM", "replicas": 2},
    "run": {"duration_s": 20, "warmup_s": 2, "seed": 1},
}


def test_the_examples_are_listed():
    names = {p.stem for p in LLM_EXAMPLES}
    assert {"chat_llama3_8b", "summarize_llama3_70b_tp4", "chat_hpa_kv_cache"} <= names
    chat = yaml.safe_load((REPO / "examples/llm/chat_llama3_8b.yaml").read_text())
    assert (chat["llm"]["model"], chat["llm"]["tensor_parallel"], chat["fleet"]["gpu"]) == ("llama-3-8b", 1, "H100-SXM")
    tp = yaml.safe_load((REPO / "examples/llm/summarize_llama3_70b_tp4.yaml").read_text())
    assert (tp["llm"]["model"], tp["llm"]["tensor_parallel"]) == ("llama-3-70b", 4)


@pytest.mark.parametrize("path", LLM_EXAMPLES, ids=lambda p: p.stem)
def test_examples_simulate_and_write_the_contract(capsys, tmp_path, path):
    out = tmp_path / "run"
    code = main(["simulate", f"llm/{path.stem}", "--set", "run.duration_s=40", "--set", "run.warmup_s=5",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "TTFT p99" in printed and "ESTIMATE" in printed
    summary = json.loads((out / "summary.json").read_text())
    print({k: summary[k] for k in SUMMARY_KEYS})
    for key in SUMMARY_KEYS:
        assert summary[key] is not None, key
    assert summary["requests_served"] > 0 and summary["step_time_estimated"] is True
    requests = pd.read_parquet(out / "requests.parquet")
    assert set(REQUEST_COLUMNS) <= set(requests.columns)
    assert (requests["input_tokens"] >= 1).all() and (requests["output_tokens"] >= 1).all()
    again = tmp_path / "again"  # the scenario as run is a valid scenario again, with the same results
    assert main(["simulate", str(out / "scenario.yaml"), "--quiet", "--out", str(again)]) == 0
    assert json.loads((again / "summary.json").read_text())["ttft_p99_s"] == summary["ttft_p99_s"]


def test_results_doc_covers_every_llm_column_and_key():
    doc = (REPO / "docs" / "results.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_{}P]+)` \|", doc, flags=re.M))
    classes = [{"name": "chat", "share": 0.5}, {"name": "batch", "share": 0.5, "priority": 1}]
    result = sim.run(sim.scenario_from_dict({**CHAT, "workload": {**CHAT["workload"], "classes": classes}}),
                     replications=2)
    assert "class__batch__ttft_p99_slo_s" in result.summary
    for frame in (result.requests, result.batches, result.timeseries, result.replicas):
        assert set(frame.columns) <= documented, set(frame.columns) - documented
    keys = {re.sub(r"^class__.+?__", "class__{name}__", re.sub(r"_p[0-9.]+_slo_s$", "_p{P}_slo_s", k))
            for k in result.summary if not k.endswith(("_ci95_low", "_ci95_high"))}
    assert keys <= documented, keys - documented


def bad(tweak):
    data = json.loads(json.dumps(CHAT))
    tweak(data)
    return data


@pytest.mark.parametrize(("data", "message"), [
    (bad(lambda d: d["workload"].update(input_tokens={"distribution": "fixed", "tokens": 0})),
     "workload.input_tokens.tokens = 0: must be greater than or equal to 1"),
    (bad(lambda d: d["workload"]["output_tokens"].update(mean_tokens=-5)),
     "workload.output_tokens.mean_tokens = -5: must be greater than 0"),
    (bad(lambda d: d["workload"].update(input_tokens={"distribution": "fixed", "tokens": 9000})),
     "workload.input_tokens.tokens = 9000: a prompt must leave room for output within llm.max_model_len (8192)"),
    (bad(lambda d: (d["workload"]["input_tokens"].pop("max_tokens"), d["llm"].update(max_model_len=1024))),
     "prompts leave no room for output in llm.max_model_len = 1,024 (the longest: "),
    (bad(lambda d: d["llm"].update(model="llama-3-70b")),
     "llm.tensor_parallel = 1: llama-3-70b bf16 needs 141.1 GB of weights"),
    (bad(lambda d: d["llm"].update(tensor_parallel=3)),
     "llm.tensor_parallel = 3: must divide the 32 attention heads and 8 KV heads of llama-3-8b (1, 2, 4, 8)"),
    (bad(lambda d: d["llm"].update(max_num_seqs=4096)),
     "llm: max_num_batched_tokens (2048) must be ≥ max_num_seqs (4096)"),
    (bad(lambda d: d["fleet"].update(gpu="TPU")), "fleet.gpu = 'TPU': an llm scenario runs on a catalog GPU"),
    (bad(lambda d: d.update(service={"type": "parametric", "base_s": 0.01})),
     "service: an llm scenario has no service section"),
    (bad(lambda d: d["workload"].pop("output_tokens")), "workload.output_tokens: missing required key"),
    (bad(lambda d: d.update(batching={"max_batch_size": 8})), "batching: does not apply to an llm scenario"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, write_scenario, data, message):
    path = write_scenario(data)
    assert main(["simulate", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    print(err, end="")
    assert message in err and err.count("\n") == 1


def test_token_columns_of_a_trace_must_be_whole_and_positive(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("arrival_s,input_tokens,output_tokens\n0.1,10,5\n0.2,0,5\n")
    data = bad(lambda d: d["workload"].update(arrivals={"process": "trace", "path": "t.csv"},
                                              input_tokens={"distribution": "trace"},
                                              output_tokens={"distribution": "trace"}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert main(["simulate", str(tmp_path / "s.yaml"), "--quiet"]) == 2
    assert "input_tokens in row 2 = 0.0: token counts are whole numbers ≥ 1" in capsys.readouterr().err


def test_empirical_lengths_are_drawn_from_the_file(tmp_path):
    (tmp_path / "lengths.csv").write_text("prompt\n17\n230\n1200\n")
    data = bad(lambda d: d["workload"].update(input_tokens={"distribution": "empirical", "path": "lengths.csv",
                                                            "column": "prompt"}))
    sc = sim.scenario_from_dict(data, base_dir=tmp_path)
    r = sim.run(sc).requests
    assert set(r["input_tokens"]) == {17, 230, 1200}


def test_a_request_level_scenario_dumps_as_before():
    text = dump_scenario(sim.load_scenario("fraud_mlp"))
    assert "llm" not in yaml.safe_load(text) and "input_tokens" not in text and "service:" in text
    llm_text = dump_scenario(sim.scenario_from_dict(CHAT))
    assert "service" not in yaml.safe_load(llm_text) and "tokens" in llm_text


def test_the_engine_contract_holds_for_llm_replicas():
    """sim.scaling drives an LLM engine by add_replica / mark_ready / stop_routing, as the request engine."""
    sc = sim.scenario_from_dict({**CHAT, "fleet": {"gpu": "H100-SXM", "replicas": 2},
                                 "llm": {"model": "llama-3-8b", "step_time": {"type": "coefficients", "base_s": 0.05}}})
    arrivals = np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(0)
    engine = LlmEngine(sc, arrivals, Sequences([10] * 4, [2] * 4), sim.llm.build.llm_setup(sc).step_time,
                       build_router("round_robin", rng), kv_blocks=100, sample_interval_s=0.1, horizon_s=0.45)
    a, b = engine.replicas()
    extra = engine.add_replica(created_s=0.0)
    assert engine.ready_count() == 2 and len(engine.replicas()) == 3
    idle_at = []
    engine.env.timeout(0.12).callbacks.append(
        lambda _: engine.stop_routing(a, when_idle=lambda rep: idle_at.append((rep.index, engine.env.now))))
    engine.env.timeout(0.15).callbacks.append(lambda _: engine.mark_ready(extra))
    records = engine.run()
    assert records.replica.tolist() == [a.index, extra.index, b.index, extra.index]  # round robin over the ready
    assert idle_at == [(a.index, pytest.approx(0.2))]  # its request: prefill 0.1-0.15, decode 0.15-0.2
    per, held = engine.snapshot()
    assert held == 0 and all(len(v) == 6 for v in per.values())


def test_an_hpa_scales_an_llm_fleet_on_its_kv_cache():
    sc = sim.load_scenario("llm/chat_hpa_kv_cache")
    from sim.scenario.keys import updated

    result = sim.run(updated(sc, {"run.duration_s": 240}))
    ts = result.timeseries
    before, spike = ts[ts["time_s"] < 110], ts[ts["time_s"].between(200, 240)]
    print(f"\nready replicas before the spike {before['ready_replicas'].max():.0f}, in it "
          f"{spike['ready_replicas'].min():.0f}-{spike['ready_replicas'].max():.0f}; "
          f"KV use in it {spike['kv_utilization'].mean():.2f}")
    assert spike["ready_replicas"].min() > before["ready_replicas"].max()
    assert result.replicas["created_s"].max() > 120  # replicas launched for the spike, with cold starts
    assert (result.replicas["gpus"] == 1).all()


def test_the_llm_doc_example_is_a_valid_scenario():
    block = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "llm.md").read_text(), flags=re.S)[0]
    from sim.scenario.keys import updated

    result = sim.run(updated(sim.scenario_from_dict(yaml.safe_load(block)), {"run.duration_s": 5, "run.warmup_s": 1}))
    assert result.summary["requests_served"] > 0


def test_the_planner_takes_llm_objectives(capsys, tmp_path):
    """`capsim plan` plans llm scenarios (tests/test_llm_planner.py); a request-level SLO flag points to TTFT/TPOT."""
    assert main(["plan", "llm/chat_llama3_8b", "--slo-p99-ms", "100", "--out", str(tmp_path / "plan")]) == 2
    assert "use --ttft-ms and --tpot-ms" in capsys.readouterr().err
