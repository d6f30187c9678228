"""The LLM serving page under streamlit's AppTest (it starts from the chat example, its inputs move the
numbers, a model that does not fit is an error beside its memory chart), and every other page with an llm
scenario loaded: its content where it applies, else one note pointing to the LLM page; never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
from dashboard_pages import metric as _metric  # noqa: E402
from dashboard_pages import page_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import llm, whatif  # noqa: E402
from dashboard.state import Baseline  # noqa: E402
from sim.scenario.examples import list_examples  # noqa: E402
from sim.scenario.load import load_scenario  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHAT = list_examples()["llm/chat_llama3_8b"]
CHAT_SID = whatif.scenario_key(load_scenario(CHAT))
SUMMARIZE_SID = whatif.scenario_key(load_scenario("llm/summarize_llama3_70b_tp4"))


def _app(page: str, **state) -> AppTest:
    return page_app(page, timeout=180, **state)


def _charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def _chat_loaded() -> Baseline:
    text = CHAT.read_text().replace("duration_s: 120, warmup_s: 10", "duration_s: 40, warmup_s: 5")
    return Baseline(text, str(CHAT.parent), "the llm/chat_llama3_8b example, 40 s")


def test_the_page_is_in_the_navigation():
    source = (REPO / "dashboard" / "app.py").read_text()
    assert "st.Page(llm.render, title=llm.TITLE, icon=llm.ICON, url_path=\"llm\")" in source


def test_llm_page_starts_from_the_chat_example_and_draws_every_chart():
    at = _app("llm")
    assert not [e.value for e in at.error]
    assert any("fraud-mlp has no llm section" in c.value and "llm/chat_llama3_8b" in c.value for c in at.caption)
    assert _metric(at, "TTFT p99").endswith("ms") and _metric(at, "TPOT p99").endswith("ms")
    assert _metric(at, "Cost per hour") == "$24.58/h"  # 2 replicas × 1 H100 × $12.29
    assert _charts(at) == 3 + 2 + 4 + 1  # replicas × TP, scheduler knob, timelines, memory
    assert any("KV cache for 456k tokens" in c.value for c in at.caption)  # TP 1: 28,519 blocks of 16 (docs/llm.md)


def test_llm_page_inputs_change_the_fleet(monkeypatch):
    monkeypatch.setattr(llm, "SWEEP_REQUESTS", 500)
    at = _app("llm", capsim_baseline=_chat_loaded())
    assert not any("has no llm section" in c.value for c in at.caption)  # the loaded llm scenario itself
    tpot = _metric(at, "TPOT p99")
    at.selectbox(key=f"{_sid()}:llm_tp").set_value(2).run()
    assert not at.exception and not [e.value for e in at.error]
    assert _metric(at, "Cost per hour") == "$49.16/h"  # every GPU counted: 2 replicas × TP 2
    assert _metric(at, "TPOT p99") != tpot


def _sid() -> str:
    from sim.scenario.load import scenario_from_yaml_text

    b = _chat_loaded()
    return whatif.scenario_key(scenario_from_yaml_text(b.yaml_text, b.base_dir))


def test_a_model_that_does_not_fit_is_an_error_beside_its_memory():
    at = _app("llm", llm_example="llm/summarize_llama3_70b_tp4", **{f"{SUMMARIZE_SID}:llm_tp": 1})
    errors = [e.value for e in at.error]
    assert errors and "does not fit" in errors[0] and "tensor_parallel = 2 fits" in errors[0]
    assert _charts(at) == 1
    assert any("TP 1: does not fit (over by" in c.value for c in at.caption)


@pytest.mark.parametrize("page,note", [
    ("what_if", "request-level"), ("batching", "token by token"), ("planner", "capsim plan"),
    ("calibration", "no service profile"), ("autoscaling", "spike example"),
])
def test_every_page_handles_an_llm_scenario(page, note):
    at = _app(page, capsim_baseline=_chat_loaded())
    infos = [i.value for i in at.info]
    assert any("token-level LLM scenario" in i and note in i and "LLM serving" in i for i in infos), infos
    assert not [e.value for e in at.error]
    if page == "calibration":  # what applies is still shown: the shipped profiles
        assert _metric(at, "Weights")
    if page == "autoscaling":
        assert list(at.table[0].value.columns) == ["static fleet", "autoscaled fleet"]


def test_a_scenario_naming_a_server_token_file_is_refused():
    data = yaml.safe_load(CHAT.read_text())
    data["workload"]["input_tokens"] = {"distribution": "empirical", "path": "/etc/passwd", "column": "x"}
    at = _app("llm")
    at.file_uploader(key="scenario_upload").set_value(("s.yaml", yaml.safe_dump(data).encode(),
                                                        "application/x-yaml")).run()
    assert not at.exception
    errors = [e.value for e in at.error if "Scenario not loaded" in e.value]
    assert errors and "workload.input_tokens.path = '/etc/passwd'" in errors[0]


def test_a_scenario_with_shared_prefixes_says_what_the_cache_served_and_the_toggle_turns_it_off(monkeypatch):
    monkeypatch.setattr(llm, "SWEEP_REQUESTS", 300)
    at = _app("llm", llm_example="llm/chat_system_prompt")
    assert not at.exception and not [e.value for e in at.error]

    def served() -> str:
        return next(m.value for m in at.markdown if "of the prompt tokens from the prefix cache" in m.value)

    assert "0.0 % of the prompt tokens" not in served()
    ttft = _metric(at, "TTFT p99")
    sid = whatif.scenario_key(load_scenario("llm/chat_system_prompt"))
    at.toggle(key=f"{sid}:llm_prefix_cache").set_value(False).run()
    assert not at.exception and not [e.value for e in at.error]
    assert "0.0 % of the prompt tokens" in served() and _metric(at, "TTFT p99") != ttft
    at.selectbox(key=f"{sid}:llm_router").set_value("least_kv_cache").run()
    assert not at.exception and not [e.value for e in at.error]


def test_separate_prefill_and_decode_replicas_from_the_sidebar(monkeypatch):
    """The chat example's 2 mixed replicas split into 1 prefill + 1 decode (the same GPUs and cost, other
    latencies), then 2 + 1; the replica chart sweeps the decode pool; switched back, its mixed fleet again."""
    monkeypatch.setattr(llm, "SWEEP_REQUESTS", 300)
    at = _app("llm", capsim_baseline=_chat_loaded())
    sid = _sid()
    tpot = _metric(at, "TPOT p99")
    at.toggle(key=f"{sid}:llm_disagg").set_value(True).run()
    assert not at.exception and not [e.value for e in at.error]
    assert at.number_input(key=f"{sid}:llm_prefill").value == 1 and at.number_input(key=f"{sid}:llm_decode").value == 1
    assert _metric(at, "Cost per hour") == "$24.58/h" and _metric(at, "TPOT p99") != tpot
    assert any("with 1 prefill replica" in c.value for c in at.caption)
    at.number_input(key=f"{sid}:llm_prefill").set_value(2).run()
    assert not at.exception and _metric(at, "Cost per hour") == "$36.87/h"  # 3 H100s
    at.toggle(key=f"{sid}:llm_disagg").set_value(False).run()  # back to the scenario's 2 mixed replicas
    assert not at.exception and _metric(at, "Cost per hour") == "$24.58/h" and _metric(at, "TPOT p99") == tpot


def test_the_disaggregated_example_opens_with_its_pools():
    at = _app("llm", llm_example="llm/rag_disaggregated")
    assert not at.exception and not [e.value for e in at.error]
    sid = whatif.scenario_key(load_scenario("llm/rag_disaggregated"))
    assert at.toggle(key=f"{sid}:llm_disagg").value is True
    assert _metric(at, "Cost per hour") == "$49.16/h"


def test_request_classes_get_a_table_and_the_policy_a_choice(monkeypatch):
    monkeypatch.setattr(llm, "SWEEP_REQUESTS", 300)
    at = _app("llm", llm_example="llm/chat_and_batch_priority")
    assert not at.exception and not [e.value for e in at.error]
    sid = whatif.scenario_key(load_scenario("llm/chat_and_batch_priority"))

    def classes() -> list[dict]:
        frame = next(d.value for d in at.dataframe if "class" in d.value.columns)
        return frame.set_index("class").to_dict("index")

    rows = classes()
    assert list(rows) == ["chat", "batch"] and rows["batch"]["TTFT objective"] == "5.00 s"
    assert rows["chat"]["SLO"] == "met"
    at.selectbox(key=f"{sid}:llm_policy").set_value("fcfs").run()
    assert not at.exception and classes()["chat"]["SLO"] == "missed"
