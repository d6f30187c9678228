"""The planner against queueing theory, its outputs, and its rules (unstable never recommended)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.optimize import brentq

from sim.cli import main as cli_main
from sim.experiments.executors import LocalExecutor, SerialExecutor
from sim.planner.candidates import gpu_candidates
from sim.planner.search import Evaluator, Space, pareto_front, plan
from sim.scenario.load import scenario_from_dict

LAM, MU = 400.0, 100.0  # arrivals/s, services/s of one server (mean service 10 ms, exponential)


def mm_scenario(**over) -> dict:
    data = {
        "name": "mm",
        "workload": {"arrivals": {"process": "poisson", "rate_rps": LAM}},
        "service": {"type": "parametric", "base_s": 1 / MU, "distribution": "exponential"},
        "batching": {"max_batch_size": 1},
        "fleet": {"replicas": 1, "router": "random"},
        "slo": {"latency_s": 0.18, "percentile": 99},
        "cost": {"usd_per_replica_hour": 1.0},
        "run": {"duration_s": 120, "warmup_s": 10, "seed": 3},
    }
    for key, value in over.items():
        section, field = key.split("__")
        data[section] = {**data[section], field: value}
    return data


def space_for(scenario, replicas=None, extra=None) -> Space:
    return Space(gpu_candidates(scenario), [1], [0.0], replicas, extra or {})


def erlang_c(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    below = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) / (1 - a / c)
    return top / (below + top)


def mmc_sojourn_tail(t: float, lam: float, mu: float, c: int) -> float:
    """P(T > t) for M/M/c FCFS: T = W + S, W = 0 w.p. 1 − C, else Exp(cμ − λ); S ~ Exp(μ)."""
    wait_rate = c * mu - lam
    if math.isclose(wait_rate, mu):  # Erlang-2 sum of two equal rates
        both = (1 + mu * t) * math.exp(-mu * t)
    else:
        both = (wait_rate * math.exp(-mu * t) - mu * math.exp(-wait_rate * t)) / (wait_rate - mu)
    prob_wait = erlang_c(lam, mu, c)
    return (1 - prob_wait) * math.exp(-mu * t) + prob_wait * both


def mmc_min_servers_sojourn(lam: float, mu: float, slo_s: float, q: float = 0.99) -> int:
    c = math.floor(lam / mu) + 1
    while brentq(lambda t, c=c: mmc_sojourn_tail(t, lam, mu, c) - (1 - q), 1e-9, 60) > slo_s:
        c += 1
    return c


def test_bisect_matches_mm1_per_replica_under_random_routing(tmp_path):
    """Replicas behind a *random* router: Poisson splitting makes each replica an independent M/M/1
    at λ/n, whose sojourn time is Exp(μ − λ/n), so p99 = ln(100)/(μ − λ/n) and the fewest replicas
    meeting the SLO is the least n with that ≤ SLO. (A round-robin or least-outstanding router would
    not give Poisson streams per replica; an M/M/c with one shared queue is tested below with
    ``fleet.instances_per_replica`` as c.) λ=400, μ=100, SLO 180 ms: n=5 gives 230 ms, n=6 138 ms."""
    scenario = scenario_from_dict(mm_scenario())
    analytic = next(n for n in range(1, 50) if n * MU > LAM and math.log(100) / (MU - LAM / n) <= 0.18)
    assert analytic == 6
    runner = Evaluator(scenario, 3, 3, LocalExecutor(2), tmp_path / "ck", progress=False)
    result = plan(scenario, space_for(scenario), runner, "bisect")
    best = result.best
    assert int(best["fleet.replicas"]) == analytic
    # the search's own rate estimate: one M/M/1 replica sustains λ with ln(100)/(μ − λ) ≤ SLO, λ ≤ 74.4/s;
    # judged on the upper 95% bound of p99 over 3 short runs, so it errs low (conservative)
    rate = result.bisections.loc["result", "max_rate_per_replica_rps"].iloc[0]
    exact = MU - math.log(100) / 0.18
    assert 0.8 * exact <= rate <= 1.03 * exact
    checked = result.table.set_index("fleet.replicas")["meets_slo"]
    assert bool(checked[analytic]) and not bool(checked[analytic - 1])


def test_grid_matches_erlang_c_with_instances_as_servers(tmp_path):
    """Exact M/M/c: one replica with c execution instances shares one FIFO queue, which is the M/M/c
    queue (max batch 1, exponential service). The planner varies c through the generic --param
    mechanism; every c costs the same (one replica), and ties go to the fewest instances, so the
    recommendation is the least c whose sojourn p99 (Erlang C wait convolved with the service time,
    solved numerically) meets the SLO. SLO 55 ms: c=5 gives 60.8 ms, c=6 48.5 ms."""
    scenario = scenario_from_dict(mm_scenario(slo__latency_s=0.055))
    analytic = mmc_min_servers_sojourn(LAM, MU, 0.055)
    assert analytic == 6
    runner = Evaluator(scenario, 3, 3, LocalExecutor(2), tmp_path / "ck", progress=False)
    space = space_for(scenario, replicas=[1], extra={"fleet.instances_per_replica": [4, 5, 6, 7, 8]})
    result = plan(scenario, space, runner, "grid")
    assert int(result.best["fleet.instances_per_replica"]) == analytic
    table = result.table.set_index("fleet.instances_per_replica")
    assert bool(table.loc[4, "unstable"])  # ρ = 1
    assert not bool(table.loc[5, "meets_slo"])


def test_unstable_never_recommended_and_empty_when_slo_impossible(tmp_path):
    scenario = scenario_from_dict(mm_scenario(slo__latency_s=0.001, run__duration_s=20))
    runner = Evaluator(scenario, 2, 3, SerialExecutor(), None, progress=False)
    result = plan(scenario, space_for(scenario, replicas=[3, 4, 5, 8]), runner, "grid")
    assert result.best is None  # 1 ms is below most single services (mean 10 ms)
    assert bool(result.table.set_index("fleet.replicas").loc[4, "unstable"])
    assert not result.table["meets_slo"].any()


def test_pareto_front_drops_dominated_and_unstable():
    table = pd.DataFrame({"cost_per_hour_usd": [1, 2, 2, 3, 0.5], "p": [5.0, 3.0, 4.0, 3.5, 0.1],
                          "unstable": [False, False, False, False, True]})
    front = pareto_front(table, "p")
    assert front.index.tolist() == [0, 1]


def test_gpu_candidates_label_estimates(tmp_path):
    data = mm_scenario()
    data["service"] = {"type": "profile", "profile": "h100-mlp-fp16"}
    scenario = scenario_from_dict(data)
    cands = {c.label: c for c in gpu_candidates(scenario, profile_dir=tmp_path)}
    assert {"H100-SXM", "A100-80GB", "L4", "T4"} <= set(cands)
    assert cands["T4"].estimate and cands["T4"].profile.endswith("t4-mlp-fp16-estimate.json")
    assert cands["T4"].usd_per_hour == pytest.approx(0.526)


def test_plan_cli_writes_outputs(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(mm_scenario(run__duration_s=30)))
    out = tmp_path / "plan"
    code = cli_main(["plan", str(path), "--slo-p99-ms", "180", "--search", "grid", "--replicas", "4..7",
                     "--batch-sizes", "1",
                     "--replications", "2", "--workers", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    for name in ("candidates.parquet", "pareto.parquet", "pareto.png", "recommended.yaml"):
        assert (out / name).is_file(), name
    recommended = yaml.safe_load((out / "recommended.yaml").read_text())
    assert recommended["fleet"]["replicas"] in (6, 7)
    assert recommended["slo"]["latency_s"] == pytest.approx(0.18)
    fronts = pd.read_parquet(out / "pareto.parquet")
    assert set(fronts["frontier"]) == {"cost_vs_p99", "cost_vs_violation"}
    assert not fronts["unstable"].any()
    assert "recommended" in capsys.readouterr().out


def test_optuna_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("no optuna")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(mm_scenario(run__duration_s=20)))
    code = cli_main(["plan", str(path), "--search", "optuna", "--replicas", "5", "--workers", "1",
                     "--no-progress", "--out", str(tmp_path / "p")])
    assert code == 2
    assert "pip install optuna" in capsys.readouterr().err


def test_optuna_finds_the_analytic_minimum(tmp_path):
    """TPE over replicas 4..10 on the M/M/1-per-replica case: the cheapest configuration it finds that
    meets the SLO is the analytic minimum (6 replicas), and no cheaper one meets it."""
    pytest.importorskip("optuna")
    scenario = scenario_from_dict(mm_scenario())
    runner = Evaluator(scenario, 3, 2, SerialExecutor(), tmp_path / "ck", progress=False)
    result = plan(scenario, space_for(scenario, replicas=list(range(4, 11))), runner, "optuna", trials=14)
    assert int(result.best["fleet.replicas"]) == 6
    table = result.table.set_index("fleet.replicas")
    assert not table[table.index < 6]["meets_slo"].any()
