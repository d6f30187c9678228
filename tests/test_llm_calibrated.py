"""The ``calibrated`` iteration-time model: its profile section, the fit, the residual draws, the speed
replay, and scenarios that use it (no torch: profiles are built here from a known model)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from sim.cli import main as capsim_main
from sim.errors import ProfileError
from sim.llm.calibrated import CalibratedStepTime
from sim.profiles.llm import (
    IterationFit,
    Operators,
    fit_iterations,
    iteration_profile_from_dict,
    write_iteration_profile,
)
from sim.profiles.profile import profile_from_dict

ROWS = (*range(1, 33), 48, 64, 128, 256)


def step_like(rows, base_ms, per_ms, steps):
    """A measured-looking table: linear in the rows, plus a step at each count in ``steps``."""
    return tuple((base_ms + per_ms * r + sum(2.0 for s in steps if r >= s)) * 1e-3 for r in rows)


OPERATORS = Operators(tuple(map(float, ROWS)), step_like(ROWS, 1.0, 0.12, (4, 7)), step_like(ROWS, 2.5, 0.3, (4, 7)))
TRUE = IterationFit(OPERATORS, base_s=0.004, body_scale=1.1, head_scale=0.9, per_decode_s=1.5e-4,
                    per_kv_token_s=2e-6, per_attention_pair_s=5e-8)


def compositions():
    """(P, D, K, A, S) over a grid like the calibration's: a whole prompt samples, a middle chunk does not."""
    for p in (0, 16, 64, 192):
        for d in (0, 1, 2, 4, 8, 16, 24):
            for length in (32, 128, 320):
                for start in ((0, length) if p else (0,)):
                    if p or d:
                        kv = d * (length + 1) + (start + p if p else 0)
                        pairs = d * (length + 1) + (p * start + p * (p + 1) // 2 if p else 0)
                        yield p, d, kv, pairs, d + int(bool(p) and start == 0)


def llm_doc(noise: float = 0.03, seed: int = 0, samples: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    iterations = []
    for p, d, kv, pairs, sampled in dict.fromkeys(compositions()):
        mean = TRUE.predict(p, d, kv, pairs, sampled)
        step = mean * np.exp(rng.normal(0, noise, samples))
        iterations.append({"prefill_tokens": p, "decode_tokens": d, "kv_tokens_read": kv, "attention_pairs": pairs,
                           "output_tokens": sampled, "step_s": [float(f"{s:.6g}") for s in step]})
    return {"schema": "capsim.profile/3", "kind": "measured",
            "environment": {"device": "cpu", "device_name": "test CPU", "cpu_threads": 1},
            "model": {"name": "decoder", "dtype": "fp32"},
            "llm": {"tensor_parallel": 1, "kv_cache": {"kind": "paged", "block_size": 16, "blocks": 128},
                    "operators": {"rows": list(ROWS), "body_s": list(OPERATORS.body_s),
                                  "head_s": list(OPERATORS.head_s)},
                    "iterations": iterations, "method": "synthetic: a known model times lognormal noise"},
            "memory": {"device_total_bytes": 8 * 2**30, "method": "test", "fit_method": "none"}}


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "llm.json"
    write_iteration_profile(llm_doc(), path)
    return path


# ---------------------------------------------------------------- the fit
def test_the_fit_recovers_a_known_model_within_the_noise():
    """Through 2% noise the fit predicts the true model within 3% at every composition, and between them."""
    profile = iteration_profile_from_dict(llm_doc(noise=0.02))
    for p, d, kv, pairs, sampled in [*compositions(), (32, 6, 900, 1500, 7), (100, 12, 3000, 8000, 13)]:
        assert profile.fit.predict(p, d, kv, pairs, sampled) == pytest.approx(TRUE.predict(p, d, kv, pairs, sampled),
                                                                             rel=0.03)
    for got, want in zip(profile.fit.coefficients(), TRUE.coefficients()):
        assert got == pytest.approx(want, rel=0.25, abs=1e-9)
    q = profile.quality()
    assert q["median_abs_error"] < 0.02 and q["r2"] > 0.99
    assert q["samples"] == 6 * q["compositions"]
    assert 0.95 < q["residual_p50"] < 1.05  # ratios of samples to the fit centre on 1


def test_a_stalled_composition_is_left_out_of_the_fit():
    doc = llm_doc(noise=0.01)
    doc["llm"]["iterations"][5]["step_s"] = [s * 4 for s in doc["llm"]["iterations"][5]["step_s"]]
    profile = iteration_profile_from_dict(doc)
    assert profile.quality()["outliers_left_out"] == 1
    p, d, kv, pairs, sampled = list(dict.fromkeys(compositions()))[5]
    assert profile.fit.predict(p, d, kv, pairs, sampled) == pytest.approx(TRUE.predict(p, d, kv, pairs, sampled),
                                                                         rel=0.03)


def test_fit_iterations_keeps_every_composition_without_noise():
    terms = np.array(list(dict.fromkeys(compositions())), dtype=float)
    fit, kept = fit_iterations(terms, [np.array([TRUE.predict(*row)]) for row in terms], OPERATORS)
    assert kept.all()
    assert fit.predict(64, 8, 1000, 3000, 9) == pytest.approx(TRUE.predict(64, 8, 1000, 3000, 9), rel=1e-3)


def test_without_output_tokens_a_prompt_chunk_counts_as_sampling():
    assert TRUE.predict(16, 3, 100, 200) == TRUE.predict(16, 3, 100, 200, 4)
    assert TRUE.predict(0, 3, 100, 200) == TRUE.predict(0, 3, 100, 200, 3)


# ---------------------------------------------------------------- the profile section
@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(schema="capsim.profile/2"), "llm = '{...}': a capsim.profile/3 section"),
    (lambda d: d["llm"]["iterations"][0].update(prefill_tokens=-1), "llm.iterations[0].prefill_tokens = -1"),
    (lambda d: d["llm"]["iterations"][0].update(prefill_tokens=0, decode_tokens=0),
     "an iteration computes at least one token"),
    (lambda d: d["llm"]["iterations"][1].update(step_s=[]), "llm.iterations[1].step_s"),
    (lambda d: d["llm"]["iterations"][1].update(step_s=[float("nan")]), "llm.iterations[1].step_s = nan"),
    (lambda d: d["llm"].update(iterations=d["llm"]["iterations"][:3]), "at least 6 compositions"),
    (lambda d: d["llm"].pop("operators"), "llm.operators = None: the measured token-wise times"),
    (lambda d: d["llm"]["operators"].update(rows=[1, 1, 2]), "llm.operators.rows = [1, 1, 2]: two or more"),
    (lambda d: d["llm"]["operators"]["head_s"].pop(), "llm.operators.head_s and llm.operators.rows must pair up"),
    (lambda d: d["llm"]["kv_cache"].update(block_size=0), "llm.kv_cache.block_size = 0"),
    (lambda d: d.pop("llm"), "an LLM iteration profile needs its llm section"),
])
def test_a_bad_llm_section_is_one_line_naming_the_key(change, message):
    doc = llm_doc()
    change(doc)
    with pytest.raises(ProfileError, match="^<profile>: .*" + message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("}", r"\}")) as err:
        iteration_profile_from_dict(doc)
    assert "\n" not in str(err.value)


def test_the_request_level_reader_points_at_the_llm_reader():
    with pytest.raises(ProfileError, match="llm.step_time"):
        profile_from_dict(llm_doc())


def test_the_json_schema_accepts_an_llm_profile_and_refuses_what_the_reader_refuses():
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[1] / "sim/data/profile.schema.json").read_text())
    jsonschema.validate(llm_doc(), schema)
    bad = llm_doc()
    bad["llm"]["iterations"][0]["decode_tokens"] = -3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    old = llm_doc()
    old["schema"] = "capsim.profile/1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, schema)


# ---------------------------------------------------------------- the model's draws
def test_residual_draws_are_seeded_and_keep_the_mean():
    profile = iteration_profile_from_dict(llm_doc(noise=0.05))
    model = CalibratedStepTime.of(profile)
    a = [model.seeded(np.random.default_rng(3)).step_s(16, 8, 1000, 1200) for _ in range(1)]
    first = model.seeded(np.random.default_rng(3))
    again = model.seeded(np.random.default_rng(3))
    draws = [first.step_s(16, 8, 1000, 1200) for _ in range(5000)]
    assert draws[:50] == [again.step_s(16, 8, 1000, 1200) for _ in range(50)]
    assert a[0] == draws[0]
    fitted = profile.fit.predict(16, 8, 1000, 1200)
    assert np.mean(draws) == pytest.approx(fitted * profile.residuals.mean(), rel=0.01)
    assert set(np.round(np.array(draws) / fitted, 9)) <= set(np.round(profile.residuals, 9))
    assert model.step_s(16, 8, 1000, 1200) == pytest.approx(fitted * profile.residuals.mean())  # unseeded: the mean


def test_without_residuals_every_iteration_takes_the_mean():
    profile = iteration_profile_from_dict(llm_doc(noise=0.05))
    model = CalibratedStepTime.of(profile, residuals=False).seeded(np.random.default_rng(0))
    times = {model.step_s(64, 4, 600, 2500) for _ in range(20)}
    assert len(times) == 1
    assert times.pop() == pytest.approx(profile.fit.predict(64, 4, 600, 2500) * profile.residuals.mean())


def test_a_speed_trace_replays_the_real_iteration_where_it_ran():
    """Real iterations at 0, 0.02, 0.05 ran at 1.5x, 1x, 2x the fit: the same composition started at
    the same moment takes the real time; the speed is integrated across a boundary."""
    doc = llm_doc(noise=0.0, samples=1)
    doc["service_level"] = {"phase": "aligned", "path": [float(np.log(1.5)), 0.0, float(np.log(2.0))],
                            "path_start_s": [0.0, 0.02, 0.05], "method": "test"}
    model = CalibratedStepTime.of(iteration_profile_from_dict(doc))
    fit = model.fit.predict(0, 1, 100, 100)
    assert model.step_s(0, 1, 100, 100, start_s=0.0) == pytest.approx(1.5 * fit)
    assert model.step_s(0, 1, 100, 100, start_s=0.03) == pytest.approx(fit)
    assert model.step_s(0, 1, 100, 100, start_s=0.06) == pytest.approx(2 * fit)
    # from 0.015: 0.005 s at 1/1.5, then the rest at 1
    assert model.step_s(0, 1, 100, 100, start_s=0.015) == pytest.approx(0.005 + fit - 0.005 / 1.5)


IDLE = {"gaps_s": [1e-3, 1e-2, 3e-2], "ratio": [1.0, 1.2, 1.5], "back_to_back_s": 5e-5, "method": "test"}


def test_an_iteration_after_idle_takes_the_measured_idle_response():
    """1 back to back and below 50 us; linear to the first bin; linear in log(gap) between bins (at
    sqrt(0.01 × 0.03) s: halfway, 1.35); flat after the last; nothing with idle_response false."""
    doc = llm_doc(noise=0.0, samples=1)
    doc["idle_response"] = IDLE
    profile = iteration_profile_from_dict(doc)
    model = CalibratedStepTime.of(profile, residuals=False)
    base = model.step_s(48, 0, 48, 1176, output_tokens=1)
    for idle_s, ratio in ((0.0, 1.0), (4e-5, 1.0), (1e-3, 1.0), (1e-2, 1.2), ((1e-2 * 3e-2) ** 0.5, 1.35),
                          (0.03, 1.5), (5.0, 1.5)):
        assert model.step_s(48, 0, 48, 1176, output_tokens=1, idle_s=idle_s) == pytest.approx(base * ratio)
    plain = CalibratedStepTime.of(profile, residuals=False, idle_response=False)
    assert plain.step_s(48, 0, 48, 1176, output_tokens=1, idle_s=5.0) == pytest.approx(base)


def test_the_engine_applies_the_idle_response_to_the_iteration_after_idle_only(tmp_path):
    """A trace worked by hand: one replica, ready from 0, fixed residuals; request 0 (a 16-token prompt, 3
    output tokens) arrives at 1 s: its prefill follows 1 s of idleness (× 1.5, flat beyond 30 ms), its two
    decodes run back to back (× 1); request 1 arrives 5 ms after request 0's last token: its prefill is
    × the response at 5 ms (between 1 ms at 1.0 and 10 ms at 1.2, linear in log gap)."""
    import math

    import sim

    doc = llm_doc(noise=0.0, samples=1)
    doc["idle_response"] = IDLE
    path = tmp_path / "idle.json"
    write_iteration_profile(doc, path)
    fit = CalibratedStepTime.of(iteration_profile_from_dict(doc), residuals=False)
    prefill, decode = fit.step_s(16, 0, 16, 136, output_tokens=1), fit.step_s(0, 1, 17, 17, output_tokens=1)
    decode2 = fit.step_s(0, 1, 18, 18, output_tokens=1)
    end0 = 1.0 + 1.5 * prefill + decode + decode2
    trace = tmp_path / "trace.csv"
    trace.write_text(f"arrival_s,input_tokens,output_tokens\n1.0,16,3\n{end0 + 0.005!r},16,3\n")
    data = scenario(path)
    data["workload"] = {"arrivals": {"process": "trace", "path": str(trace)},
                        "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"}}
    data["llm"]["step_time"]["residuals"] = False
    data["run"] = {"requests": 2, "seed": 1}
    requests = sim.run(sim.scenario_from_dict(data)).requests.sort_values("arrival_s")
    ttft = requests["ttft_s"].to_list()
    at_5ms = 1.0 + 0.2 * math.log(5e-3 / 1e-3) / math.log(10)
    print(f"\nTTFT {ttft[0] * 1e3:.3f} ms (prefill {prefill * 1e3:.3f} ms x 1.5), "
          f"{ttft[1] * 1e3:.3f} ms (x {at_5ms:.4f})")
    assert ttft[0] == pytest.approx(1.5 * prefill, rel=1e-9)
    assert requests["latency_s"].iloc[0] == pytest.approx(end0 - 1.0, rel=1e-9)  # e2e: the decodes × 1
    assert ttft[1] == pytest.approx(at_5ms * prefill, rel=1e-9)


# ---------------------------------------------------------------- scenarios
def scenario(profile_path, **llm) -> dict:
    return {"name": "cpu-decoder",
            "workload": {"arrivals": {"process": "poisson", "rate_rps": 4},
                         "input_tokens": {"distribution": "lognormal", "mean_tokens": 48, "cv": 0.6, "max_tokens": 256},
                         "output_tokens": {"distribution": "fixed", "tokens": 24}},
            "llm": {"model": "decoder", "dtype": "fp32", "max_num_seqs": 8, "max_num_batched_tokens": 64,
                    "max_model_len": 384, "num_gpu_blocks_override": 64,
                    "step_time": {"type": "calibrated", "profile": str(profile_path)}, **llm},
            "run": {"duration_s": 20, "seed": 1}}


def test_a_calibrated_scenario_runs_on_the_profiles_cpu(profile_path):
    import sim

    result = sim.run(sim.scenario_from_dict(scenario(profile_path)))
    s = result.summary
    assert s["step_time_estimated"] is False
    assert s["kv_cache_blocks"] == 64 and s["gpus_per_replica"] == 1
    assert s["cost_usd"] == 0  # a CPU host has no catalog price; llm.usd_per_gpu_hour sets one
    assert result.requests["outcome"].eq("served").all()
    # one decode alone takes the fit of one decode times a drawn residual
    again = sim.run(sim.scenario_from_dict(scenario(profile_path)))
    assert result.requests["ttft_s"].equals(again.requests["ttft_s"])  # seeded draws


@pytest.mark.parametrize(("change", "message"), [
    ({"model": "llama-3-8b", "dtype": "bf16"}, "llm.model = 'llama-3-8b': the profile llm.json measured 'decoder'"),
    ({"dtype": "bf16"}, "llm.dtype = 'bf16': the profile llm.json measured fp32"),
    ({"tensor_parallel": 2}, "llm.tensor_parallel = 2: the profile llm.json measured tensor_parallel 1"),
    ({"step_time": {"type": "roofline"}}, "dtype fp32 is for a calibrated profile"),
    ({"step_time": {"type": "calibrated", "profile": "missing.json"}}, "llm.step_time.profile: .*no such profile"),
])
def test_a_scenario_that_contradicts_its_profile_is_one_line(tmp_path, profile_path, write_scenario, capsys, change,
                                                              message):
    data = scenario(profile_path, **change)
    path = write_scenario(data)
    assert capsim_main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re

    assert re.search(message, err), err


def test_a_cpu_profile_refuses_a_gpu(tmp_path, profile_path, write_scenario, capsys):
    data = scenario(profile_path)
    data["fleet"] = {"gpu": "H100-SXM"}
    assert capsim_main(["simulate", str(write_scenario(data)), "--out", str(tmp_path / "out")]) == 2
    assert "fleet.gpu = 'H100-SXM': the profile llm.json was measured on a CPU" in capsys.readouterr().err


def test_the_profile_path_is_relative_to_the_scenario(tmp_path, write_scenario):
    import sim

    doc = llm_doc()
    (tmp_path / "profiles").mkdir()
    write_iteration_profile(copy.deepcopy(doc), tmp_path / "profiles" / "cpu.json")
    path = write_scenario(scenario("profiles/cpu.json"))
    assert sim.load_scenario(path).llm.step_time.profile == "profiles/cpu.json"
    assert sim.run(sim.load_scenario(path)).summary["requests_served"] > 0


# ---------------------------------------------------------------- the commands' flags, checked before torch
@pytest.mark.parametrize(("argv", "message"), [
    (["calibrate", "--mode", "llm", "--model", "mlp"], "--model = 'mlp': --mode llm measures capsim's built-in decoder"),
    (["calibrate", "--mode", "llm", "--model", "decoder", "--decode-seqs", "1,x"], "--decode-seqs = '1,x': integers"),
    (["calibrate", "--mode", "llm", "--model", "decoder", "--device", "cuda"], "--mode llm measures on --device cpu"),
    (["calibrate", "--mode", "llm", "--model", "decoder", "--wait", "sleep"], "--wait = 'sleep': use block"),
    (["calibrate", "--mode", "llm", "--model", "decoder", "--idle-rounds", "-1"], "--idle-rounds = '-1': an integer >= 0"),
    (["bench-serve", "--llm", "--model", "mlp", "--rate", "1", "--out", "OUT"], "--llm serves capsim's built-in decoder"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--max-num-seqs", "32",
      "--max-num-batched-tokens", "16", "--out", "OUT"], "--max-num-batched-tokens = 16: at least --max-num-seqs"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--no-chunked-prefill", "--out", "OUT"],
     "without chunked prefill a whole prompt must fit one iteration"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--kv-blocks", "4", "--out", "OUT"],
     "--kv-blocks = 4: at least 32"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--max-model-len", "2000", "--out", "OUT"],
     "--max-model-len = 2000: at most 1024"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--input-tokens", "{distribution: empirical}",
      "--out", "OUT"], "--input-tokens = .*distribution fixed or lognormal"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "1", "--input-tokens",
      "{distribution: lognormal, mean_tokens: 48}", "--out", "OUT"], "--input-tokens = .*cv: Field required"),
    (["bench-serve", "--llm", "--model", "decoder", "--rate", "50", "--input-tokens", "500", "--out", "OUT"],
     "requests need more than --max-model-len = 512 tokens"),
])
def test_bad_llm_flags_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    import re

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert capsim_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()
