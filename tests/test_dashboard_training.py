"""The training page under streamlit's AppTest: the default plan renders its numbers and charts, a change of
GPU count moves them, a layout that does not fit shows the refusal as a message (never an exception)."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from dashboard_pages import metric as _metric  # noqa: E402
from dashboard_pages import page_app  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402


def _app(**state) -> AppTest:
    return page_app("training", **state)


def test_the_training_page_shows_time_cost_scaling_and_layouts():
    at = _app(tr_plan="training/llama_7b")
    time_64, cost_64 = _metric(at, "Time to train"), _metric(at, "Cost")
    print(f"\nllama_7b on 64 H100s: {time_64}, {cost_64}, memory {_metric(at, 'Memory per GPU')}")
    assert len(at.get("vega_lite_chart")) >= 3  # time, cost, memory
    assert not at.error
    layouts = at.dataframe[0].value
    assert {"yes", "no"} <= set(layouts["fits"])  # some layouts fit on 64 GPUs, some (DDP: 108 GB) do not
    at.sidebar.number_input(key="tr_gpus").set_value(128).run()
    assert not at.exception
    time_128 = _metric(at, "Time to train")
    print(f"on 128: {time_128}")
    assert float(time_128.split()[0].replace(",", "")) < float(time_64.split()[0].replace(",", ""))


def test_a_layout_that_does_not_fit_says_so_with_the_numbers():
    at = _app(tr_plan="training/llama_7b", tr_gpus=1, tr_zero=0)
    assert at.error and "does not fit" in at.error[0].value and "fits with" in at.error[0].value
    print("\n" + at.error[0].value)


def test_the_pipeline_schedule_is_drawn_with_pipeline_stages():
    at = _app(tr_plan="training/llama_7b", tr_pipeline=4, tr_zero=1)
    assert not at.error, [e.value for e in at.error]
    assert any("1F1B" in m.value for m in at.markdown)
