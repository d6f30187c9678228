"""Multi-turn conversations (``workload.conversation``): each turn's prompt carries the conversation so far,
the next turn comes a think time after the reply (closed loop), and the prefix cache serves the history.

Proved here: an exact trace of a conversation through the scheduler worked by hand; the closed loop and
the turns' bookkeeping over a long seeded run (every later turn arrives after the reply to the one before,
never overlapping it, a think time of the stated mean later; its history is the earlier messages and
replies); with a
cache that never evicts, every later turn takes exactly the full blocks of its history from it (the closed
form); the number of turns is geometric with the stated mean; and the scenario's one-line refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.errors import CapsimError
from sim.llm.scheduler import Scheduler, Sequences
from sim.runner import streams
from sim.workload.conversations import conversation_turns


def run_to_end(sched: Scheduler, i: int, now: float = 0.0) -> tuple[float, list]:
    """Serve request ``i`` alone to its end, one time unit an iteration: (end, the iterations' prefill tokens)."""
    sched.add(i)
    prefills = []
    while sched.has_work():
        it = sched.schedule(now)
        prefills.append(it.prefill_tokens)
        now += 1.0
        sched.complete(it, now)
    return now, prefills


def test_an_exact_conversation_through_the_cache():
    # Block size 8. Turn 1: a 10-token message, a 7-token reply; at its end its KV holds 16 tokens (the last
    # reply token's is never written): 2 full blocks become the conversation's entry. Turn 2: the 17 tokens
    # so far + a 5-token message = 22; 16 come from the cache, 6 are computed; a 9-token reply; its KV then
    # holds 30 tokens: 3 full blocks, the entry grows to 3. Turn 3: 31 + 4 = 35 tokens, 24 from the cache.
    seqs = Sequences([10, 22, 35], [7, 9, 2], conversation=[0, 0, 0])
    sched = Scheduler(seqs, max_num_seqs=4, max_num_batched_tokens=64, block_size=8, kv_blocks=20)
    end, prefills = run_to_end(sched, 0)
    assert prefills[0] == 10 and sched.size == {("conversation", 0): 2} and sched.used_blocks == 0
    end, prefills = run_to_end(sched, 1, end)
    assert prefills[0] == 6 and seqs.cached_tokens[1] == 16 and sched.size == {("conversation", 0): 3}
    end, prefills = run_to_end(sched, 2, end)
    assert prefills[0] == 11 and seqs.cached_tokens[2] == 24
    assert sched.free_blocks == sched.total_blocks  # the entry is evictable: free, and kept


def chat(**conversation) -> dict:
    return {"workload": {"arrivals": {"process": "poisson", "rate_rps": 0.5},
                         "input_tokens": {"distribution": "lognormal", "mean_tokens": 120, "cv": 1.0,
                                          "max_tokens": 1000},
                         "output_tokens": {"distribution": "lognormal", "mean_tokens": 200, "cv": 1.0,
                                           "max_tokens": 800},
                         "conversation": {"mean_turns": 4, "think_time_s": 10, **conversation}},
            "llm": {"model": "llama-3-8b"}, "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 600, "seed": 5}}


@pytest.fixture(scope="module")
def result():
    return sim.run(sim.scenario_from_dict(chat()), seed=5)


def test_each_later_turn_comes_its_think_time_after_the_reply(result):
    r = result.requests.sort_values(["conversation", "turn"])
    assert (r["outcome"] == "served").all()
    thinks = []
    for _, turns in r.groupby("conversation"):
        assert turns["turn"].tolist() == list(range(1, len(turns) + 1))
        ends, arrivals = turns["end_s"].to_numpy()[:-1], turns["arrival_s"].to_numpy()[1:]
        assert (arrivals > ends).all()  # never before the reply: turns of one conversation never overlap
        thinks.extend(arrivals - ends)
        mine = turns["input_tokens"].to_numpy()
        replies = turns["output_tokens"].to_numpy()
        history = turns["history_tokens"].to_numpy()
        assert history[0] == 0 and (history[1:] == mine[:-1] + replies[:-1]).all()  # the whole exchange so far
    assert len(thinks) > 200 and np.mean(thinks) == pytest.approx(10, rel=0.15)  # exponential, mean 10 s
    assert (result.requests["arrival_s"] < 600).all() and result.requests["arrival_s"].is_monotonic_increasing


def test_with_room_for_everything_every_later_turn_takes_its_whole_history_from_the_cache(result):
    """One replica, a cache that never fills: turn k finds the entry turn k-1 left, the full blocks of its
    KV (its prompt and reply but the last reply token), which are the full blocks of turn k's history
    less one token: cached = floor((history - 1) / 16) × 16 tokens, exactly, for every later turn."""
    r = result.requests
    later = r[r["turn"] > 1]
    assert len(later) > 200 and result.summary["preemptions"] == 0
    expected = (later["history_tokens"] - 1) // 16 * 16
    assert (later["cached_tokens"] == expected).all()
    assert (r.loc[r["turn"] == 1, "cached_tokens"] == 0).all()
    assert result.summary["prefix_cache_hit_rate"] > 0.5


def test_turns_are_geometric_with_the_stated_mean():
    sc = sim.scenario_from_dict(chat(mean_turns=6))
    turns = conversation_turns(sc, np.arange(20_000, dtype=float), streams(1, 0), max_model_len=10**9)
    counts = np.bincount(turns.conversation)
    assert counts.mean() == pytest.approx(6, rel=0.02) and counts.min() == 1
    assert np.mean(counts == 1) == pytest.approx(1 / 6, abs=0.01)  # P(one turn) = 1 / mean for a geometric


def test_a_conversation_stops_before_a_turn_that_would_not_fit():
    sc = sim.scenario_from_dict(chat(mean_turns=50))
    turns = conversation_turns(sc, np.arange(200, dtype=float), streams(2, 0), max_model_len=2000)
    assert (turns.input_tokens + turns.output_tokens <= 2000).all()
    assert np.bincount(turns.conversation).mean() < 20  # long ones were cut short


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("llm") and d.update(service={"type": "parametric", "base_s": 0.01}) or d,
     "workload.conversation: multi-turn conversations need an llm section"),
    (lambda d: d["workload"]["conversation"].update(mean_turns=0.5) or d, "mean_turns"),
    (lambda d: d["workload"]["conversation"].update(think_time_s=0) or d, "think_time_s"),
])
def test_bad_conversations_are_one_line_errors(change, message):
    doc = change(chat())
    if "llm" not in doc:
        doc["workload"].pop("input_tokens")
        doc["workload"].pop("output_tokens")
    with pytest.raises(CapsimError) as err:
        sim.scenario_from_dict(doc)
    assert message in str(err.value) and "\n" not in str(err.value).strip(), str(err.value)
