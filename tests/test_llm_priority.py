"""Request classes (``workload.classes``) and priority scheduling (``llm.scheduling_policy: priority``): the
admission order and the preemption victim worked by hand, Cobham's waiting times of a non-preemptive
priority M/D/1 queue (and Kleinrock's conservation law against FCFS), classes that change nothing under
FCFS, the per-class summary, and the scenario's one-line refusals.

The rules (sim/llm/scheduler.py, rule 6): under ``priority`` the waiting queue is ordered by (priority,
arrival), lower first; a sequence that needs a KV block when none is free preempts the running sequence
of the highest priority value, latest arrival (itself, if that is it), where FCFS preempts the most
recently admitted.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.errors import CapsimError

STEP_S = 0.010


def traced(tmp_path, rows, policy, **llm):
    """rows: (arrival ms, input tokens, output tokens, class name); classes ``hi`` (0) and ``lo`` (1)."""
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{a / 1000!r},{i},{o}\n" for a, i, o, _ in rows))
    names = [r[3] for r in rows]
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(path)},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"},
                     "classes": [{"name": "hi", "share": 0.5, "priority": 0},
                                 {"name": "lo", "share": 0.5, "priority": 1}]},
        "llm": {"model": "llama-2-7b", "block_size": 8, "scheduling_policy": policy,
                "step_time": {"type": "coefficients", "base_s": STEP_S}, **llm},
        "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": rows[-1][0] / 1000 + 2.0}})
    return sc, names


def run_with_classes(monkeypatch, sc, names):
    """Run ``sc`` with each request's class set to ``names`` (the trace's own, not drawn)."""
    import sim.llm.run as llm_run

    order = {"hi": 0, "lo": 1}
    monkeypatch.setattr(llm_run, "draw_classes", lambda scenario, rng, n: np.array([order[c] for c in names]))
    return sim.run(sc, seed=0)


# ---------------------------------------------------------------- worked by hand
def test_priority_admits_by_class_then_arrival(tmp_path, monkeypatch):
    """One sequence at a time (max_num_seqs 1), each 3 iterations of 10 ms. lo₁ at 0 ms starts at once;
    lo₂ (1 ms) and hi (2 ms) wait. FCFS: lo₂ at 30 ms, hi at 60. Priority: hi at 30, lo₂ at 60."""
    rows = [(0, 4, 3, "lo"), (1, 4, 3, "lo"), (2, 4, 3, "hi")]
    for policy, starts in (("fcfs", [0, 30, 60]), ("priority", [0, 60, 30])):
        sc, names = traced(tmp_path, rows, policy, max_num_seqs=1, max_num_batched_tokens=64)
        r = run_with_classes(monkeypatch, sc, names).requests
        assert r["request_class"].tolist() == ["lo", "lo", "hi"] and r["priority"].tolist() == [1, 1, 0]
        np.testing.assert_allclose(r["start_s"] * 1000, starts, atol=1e-6)


def test_priority_preempts_the_lowest_class_not_the_latest_admitted(tmp_path, monkeypatch):
    """4 KV blocks of 8 tokens. A (lo, 0 ms: 8 prompt tokens, 20 out) is admitted at 0 and takes a second
    block at decode round 1; B (hi, 5 ms, the same) is admitted at 10 ms and takes its second block at
    round 2: the pool is full. At round 9 A needs its third block. FCFS preempts B, the most recently
    admitted; priority preempts A itself (priority 1 against 0)."""
    rows = [(0, 8, 20, "lo"), (5, 8, 20, "hi")]
    for policy, preempted in (("fcfs", [0, 1]), ("priority", [1, 0])):
        sc, names = traced(tmp_path, rows, policy, num_gpu_blocks_override=4, max_model_len=32)
        r = run_with_classes(monkeypatch, sc, names).requests
        assert r["preemptions"].tolist() == preempted, policy
        assert (r["outcome"] == "served").all()


# ---------------------------------------------------------------- queueing theory
def md1(policy: str, rate: float = 14.0, requests: int = 20_000):
    """A non-preemptive M/D/1 queue: one sequence at a time, each 1 prefill + 4 decode iterations of 10 ms
    (S = 50 ms); two classes of half the traffic each."""
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": rate},
                     "input_tokens": {"distribution": "fixed", "tokens": 16},
                     "output_tokens": {"distribution": "fixed", "tokens": 5},
                     "classes": [{"name": "hi", "share": 0.5, "priority": 0},
                                 {"name": "lo", "share": 0.5, "priority": 1}]},
        "llm": {"model": "llama-2-7b", "max_num_seqs": 1, "max_num_batched_tokens": 64, "scheduling_policy": policy,
                "step_time": {"type": "coefficients", "base_s": STEP_S}},
        "fleet": {"gpu": "H100-SXM"}, "run": {"requests": requests, "warmup_s": 20, "seed": 3}})
    r = sim.run(sc).requests
    r = r[r["arrival_s"] > 20]
    return {c: float((g["start_s"] - g["arrival_s"]).mean()) for c, g in r.groupby("request_class")}, len(r)


def test_waiting_times_follow_cobham_and_conservation():
    """Cobham (non-preemptive priority M/G/1): W_k = W0 / ((1 − σ_{k−1})(1 − σ_k)), W0 = λ E[S²] / 2, σ_k the
    load of classes 1..k. λ = 14/s, S = 50 ms: ρ = 0.7, W0 = 17.5 ms, W_hi = 26.9 ms, W_lo = 89.7 ms; FCFS
    (Pollaczek-Khinchine) 58.3 ms for both. Kleinrock's conservation law: the load-weighted mean wait is
    the same under both policies. Within 6% over about 19,700 requests each."""
    lam, s = 14.0, 0.050
    w0 = lam * s**2 / 2
    sigma_hi, rho = lam / 2 * s, lam * s
    want = {"hi": w0 / (1 - sigma_hi), "lo": w0 / ((1 - sigma_hi) * (1 - rho))}
    by_priority, n = md1("priority")
    fcfs, _ = md1("fcfs")
    print({"priority": by_priority, "fcfs": fcfs, "Cobham": want, "P-K": w0 / (1 - rho), "n": n})
    assert n > 19_000
    for c in ("hi", "lo"):
        assert by_priority[c] == pytest.approx(want[c], rel=0.06)
        assert fcfs[c] == pytest.approx(w0 / (1 - rho), rel=0.06)
    assert (by_priority["hi"] + by_priority["lo"]) / 2 == pytest.approx((fcfs["hi"] + fcfs["lo"]) / 2, rel=0.06)


# ---------------------------------------------------------------- classes as figures
def chat(**over):
    data = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 3.5},
                         "input_tokens": {"distribution": "lognormal", "mean_tokens": 800, "cv": 1.0, "max_tokens": 3000},
                         "output_tokens": {"distribution": "lognormal", "mean_tokens": 300, "cv": 1.0, "max_tokens": 1000}},
            "llm": {"model": "llama-2-7b", "num_gpu_blocks_override": 700},
            "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 300, "warmup_s": 30, "seed": 2}}
    for key, value in over.items():
        section, name = key.split(".")
        data[section][name] = value
    return sim.scenario_from_dict(data)


CLASSES = [{"name": "chat", "share": 0.7, "priority": 0}, {"name": "batch", "share": 0.3, "priority": 5}]


def test_classes_under_fcfs_change_no_record():
    plain, labelled = sim.run(chat()), sim.run(chat(**{"workload.classes": CLASSES}))
    shared = [c for c in plain.requests.columns if c not in ("request_class", "priority")]
    assert plain.requests[shared].equals(labelled.requests[shared])
    assert plain.batches.equals(labelled.batches)
    assert set(plain.requests["request_class"]) == {"default"}
    shares = labelled.requests["request_class"].value_counts(normalize=True)
    assert shares["chat"] == pytest.approx(0.7, abs=0.03)


def test_priority_protects_the_urgent_class_under_memory_pressure():
    """A replica whose KV holds a few sequences, at about its capacity: under FCFS both classes wait alike;
    by priority, chat's TTFT p99 falls and batch's rises, and every request is still served."""
    fcfs = sim.run(chat(**{"workload.classes": CLASSES})).summary
    prio = sim.run(chat(**{"workload.classes": CLASSES, "llm.scheduling_policy": "priority"})).summary
    key = "ttft_p99_slo_s"
    print({k: (fcfs[f"class__{c}__{key}"], prio[f"class__{c}__{key}"]) for c in ("chat", "batch") for k in [c]})
    assert prio[f"class__chat__{key}"] < 0.5 * fcfs[f"class__chat__{key}"]
    assert prio[f"class__batch__{key}"] > fcfs[f"class__batch__{key}"]
    assert fcfs[f"class__chat__{key}"] == pytest.approx(fcfs[f"class__batch__{key}"], rel=0.5)
    assert prio["requests_unfinished"] == 0 and not prio["unstable"]
    assert prio["class__chat__requests"] + prio["class__batch__requests"] == prio["requests_total"]


def test_a_conversation_keeps_its_class():
    sc = chat(**{"workload.classes": CLASSES, "workload.conversation": {"mean_turns": 4, "think_time_s": 5},
                 "workload.arrivals": {"process": "poisson", "rate_rps": 1}})
    r = sim.run(sc).requests
    assert (r.groupby("conversation")["request_class"].nunique() == 1).all()
    assert set(r["request_class"]) == {"chat", "batch"}


# ---------------------------------------------------------------- the scenario's rules
@pytest.mark.parametrize(("classes", "message"), [
    ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.3}], "workload.classes: the shares add up to 0.8"),
    ([{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}], "the name 'a' is given twice"),
    ([{"name": "Chat!", "share": 1.0}], "workload.classes[0].name = 'Chat!'"),
    ([{"name": "a", "share": 0}], "workload.classes[0].share = 0: must be greater than 0"),
])
def test_bad_classes_are_one_line(classes, message):
    with pytest.raises(CapsimError, match=message.replace("[", r"\[").replace("]", r"\]")):
        chat(**{"workload.classes": classes})


def test_classes_need_an_llm_section():
    with pytest.raises(CapsimError, match="workload.classes: request classes need an llm section"):
        sim.scenario_from_dict({"workload": {"arrivals": {"process": "poisson", "rate_rps": 1},
                                             "classes": [{"name": "a", "share": 1.0}]},
                                "service": {"type": "parametric", "base_s": 0.01}, "run": {"duration_s": 10}})


# ---------------------------------------------------------------- each class against its own objectives
def test_each_class_is_judged_against_its_own_objectives():
    """llm/chat_and_batch_priority: chat against llm.slo (TTFT 500 ms), batch against its own 5 s. By
    priority both meet theirs, so the run meets its SLO; under FCFS chat's TTFT p99 passes 500 ms and the
    run misses, though its pooled goodput counts each request against its own class's objectives."""
    from sim.scenario.keys import updated
    from sim.scenario.load import load_scenario

    sc = updated(load_scenario("llm/chat_and_batch_priority"), {"run.duration_s": 150})
    prio, fcfs = sim.run(sc).summary, sim.run(updated(sc, {"llm.scheduling_policy": "fcfs"})).summary
    for s in (prio, fcfs):
        assert s["class__batch__slo_met"] == (s["class__batch__ttft_p99_slo_s"] <= 5.0 and
                                              s["class__batch__tpot_p99_slo_s"] <= 0.05)
        assert s["slo_met"] == (s["class__chat__slo_met"] and s["class__batch__slo_met"])
        shares = [s[f"class__{c}__goodput_share"] * s[f"class__{c}__requests"] for c in ("chat", "batch")]
        assert s["goodput_share"] == pytest.approx(sum(shares) / (s["class__chat__requests"] + s["class__batch__requests"]))
    assert prio["slo_met"] and prio["class__chat__ttft_p99_slo_s"] <= 0.5 < prio["class__batch__ttft_p99_slo_s"]
    assert not fcfs["slo_met"] and fcfs["class__chat__ttft_p99_slo_s"] > 0.5


def test_the_planner_judges_every_class_by_its_own_objectives():
    import pandas as pd

    from sim.planner.search import judge, objectives
    from sim.scenario.load import load_scenario

    sc = load_scenario("llm/chat_and_batch_priority")
    objs = objectives(sc)
    assert [(o.name, o.target_s) for o in objs] == [("chat_ttft", 0.5), ("chat_tpot", 0.05), ("batch_ttft", 5.0),
                                                    ("batch_tpot", 0.05)]
    row = {"unstable": False, "class__chat__ttft_p99_slo_s": 0.4, "class__chat__tpot_p99_slo_s": 0.02,
           "class__batch__ttft_p99_slo_s": 4.0, "class__batch__tpot_p99_slo_s": 0.02}
    slow_batch = {**row, "class__batch__ttft_p99_slo_s": 6.0}
    table = judge(pd.DataFrame([row, slow_batch]), sc)
    assert table["meets_slo"].tolist() == [True, False]
    assert table["slo_ratio"].tolist() == pytest.approx([0.8, 1.2])


# ---------------------------------------------------------------- lengths of a class's own
def test_a_class_s_own_lengths_replace_the_workload_s_for_its_requests_only():
    own = [{"name": "chat", "share": 0.7},
           {"name": "docs", "share": 0.3, "input_tokens": {"distribution": "fixed", "tokens": 2500},
            "output_tokens": {"distribution": "lognormal", "mean_tokens": 60, "cv": 0.5, "max_tokens": 400}}]
    same = [{"name": "chat", "share": 0.7}, {"name": "docs", "share": 0.3}]
    a = sim.run(chat(**{"workload.classes": own, "llm.num_gpu_blocks_override": 5000})).requests
    b = sim.run(chat(**{"workload.classes": same, "llm.num_gpu_blocks_override": 5000})).requests
    docs, chats = a["request_class"] == "docs", a["request_class"] == "chat"
    assert (a["request_class"] == b["request_class"]).all()  # the same draw of classes
    assert (a.loc[docs, "input_tokens"] == 2500).all()
    assert a.loc[docs, "output_tokens"].mean() == pytest.approx(60, rel=0.08)
    # the other class keeps the very lengths it had: the class's draws come from the classes stream
    assert a.loc[chats, ["input_tokens", "output_tokens"]].equals(b.loc[chats, ["input_tokens", "output_tokens"]])


@pytest.mark.parametrize(("over", "message"), [
    ({"workload.classes": [{"name": "a", "share": 1.0, "input_tokens": {"distribution": "trace"}}]},
     "workload.classes[0].input_tokens.distribution = 'trace': a class draws its own lengths"),
    ({"workload.classes": [{"name": "a", "share": 1.0, "output_tokens": {"distribution": "fixed", "tokens": 5}}],
      "workload.conversation": {"mean_turns": 3, "think_time_s": 5}},
     "workload.classes[0].output_tokens: lengths per class are not modelled with workload.conversation"),
])
def test_class_lengths_that_cannot_be_drawn_are_one_line(over, message):
    with pytest.raises(CapsimError, match=message.replace("[", r"\[").replace("]", r"\]")):
        chat(**over)


def test_a_class_s_lengths_that_do_not_fit_name_the_class(tmp_path, capsys):
    import yaml

    from sim.cli import main

    data = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 2},
                         "input_tokens": {"distribution": "fixed", "tokens": 100},
                         "output_tokens": {"distribution": "fixed", "tokens": 10},
                         "classes": [{"name": "a", "share": 0.5},
                                     {"name": "b", "share": 0.5, "input_tokens": {"distribution": "fixed", "tokens": 5000}}]},
            "llm": {"model": "llama-2-7b"}, "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 10}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert main(["simulate", str(tmp_path / "s.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "workload.classes[1].input_tokens:" in err and "llm.max_model_len = 4,096" in err and err.count("\n") == 1


# ---------------------------------------------------------------- minutes outside the objectives
def test_llm_slo_violation_windows_count_ttft_and_tpot_by_hand(tmp_path):
    """One sequence at a time, 10 ms iterations, answers of 2 tokens (20 ms a request), TTFT objective
    25 ms at p50, windows of 10 s. 0-10 s: requests 1 s apart, TTFT 10 ms each. At 10 s five arrive
    together: TTFTs 10, 30, 50, 70, 90 ms, four of five late, more than half: that window violates.
    One window of two: 1/6 minute, as the sweep reports it (the planner's violation column)."""
    from sim.experiments.sweep import run_scenarios
    from sim.llm.metrics import late_requests
    from sim.results.metrics import slo_violation

    rows = [(1000 * k, 4, 2, "hi") for k in range(10)] + [(10_000, 4, 2, "hi")] * 5
    sc, _ = traced(tmp_path, rows, "fcfs", max_num_seqs=1, max_num_batched_tokens=64,
                   slo={"ttft_s": 0.025, "tpot_s": 1.0, "percentile": 50})
    sc = sim.scenario_from_dict({**sc.model_dump(mode="json", exclude={"base_dir"}), "workload": {
        **sc.workload.model_dump(mode="json"), "classes": None}, "run": {"duration_s": 20.0, "seed": 0}})
    r = sim.run(sc).requests
    np.testing.assert_allclose(r["ttft_s"].to_numpy()[-5:] * 1000, [10, 30, 50, 70, 90], atol=1e-6)
    late = late_requests(r, sc)
    assert late.tolist() == [False] * 11 + [True] * 4
    v = slo_violation(r, 0.0, 20.0, sc.slo.latency_s, 50, 10.0, late)
    assert (v["slo_windows"], v["slo_windows_violated"]) == (2, 1)
    rows = run_scenarios([({"v": 1}, sc)], ["v"], seed=0, progress=False, window_s=10.0).records
    assert rows[0]["slo_violation_min"] == pytest.approx(10 / 60)
