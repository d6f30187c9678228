"""Multi-turn conversations (``workload.conversation``): every turn of every conversation as one request.

Each arrival of ``workload.arrivals`` starts a conversation of a geometric number of turns (mean
``mean_turns``). Turn ``k``'s prompt is the conversation so far: the shared prefix, if the conversation
has one (one group per conversation, ``workload.shared_prefix``), every earlier turn's message and reply,
then its own message (``workload.input_tokens``); its reply is ``workload.output_tokens``. A later turn
comes a think time (exponential, mean ``think_time_s``) after the reply to the one before, so its
arrival is known only when that reply ends (closed loop, ``sim.llm.engine``). A conversation stops at
its first turn whose prompt and reply would not fit ``llm.max_model_len`` (a first turn that does not
fit is an error, as for single requests).

Requests are numbered first turns first, in arrival order, then the later turns conversation by
conversation; draws come from the ``conversations`` stream (turn counts, think times), the ``tokens``
stream (messages and replies, in that numbering's conversation-major order) and ``prefixes`` (groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.workload.tokens import check_lengths, draw_token_counts, prefix_groups


@dataclass(frozen=True)
class Turns:
    arrival_s: np.ndarray  # first turns' arrival times; NaN for later turns (set when they come)
    input_tokens: np.ndarray  # the whole prompt: shared prefix + earlier turns + its message
    output_tokens: np.ndarray
    history_tokens: np.ndarray  # of the prompt, the earlier turns' messages and replies
    prefix_group: np.ndarray  # -1: none
    conversation: np.ndarray
    turn: np.ndarray  # 1 for a conversation's first
    next_turn: np.ndarray  # request id of the conversation's next turn, -1 after its last
    think_s: np.ndarray  # before this turn, from the reply to the one before (NaN for first turns)


def turns_per_arrival(scenario) -> float:
    """Requests each arrival brings on average: ``mean_turns`` with conversations (before a horizon or
    ``max_model_len`` cuts any short), else 1."""
    spec = scenario.workload.conversation
    return spec.mean_turns if spec is not None else 1.0


def conversation_turns(scenario, first_arrival_s: np.ndarray, rng: dict[str, np.random.Generator],
                       max_model_len: int) -> Turns:
    """The requests of the conversations started at ``first_arrival_s`` (ascending); ``rng`` holds the
    ``conversations``, ``tokens`` and ``prefixes`` streams."""
    spec, work = scenario.workload.conversation, scenario.workload
    n = first_arrival_s.size
    rng_turns, rng_think = rng["conversations"].spawn(2)
    turns = rng_turns.geometric(1.0 / spec.mean_turns, n).astype(np.int64)
    total = int(turns.sum())
    conversation = np.repeat(np.arange(n), turns)
    starts = np.cumsum(turns) - turns
    turn = np.arange(total) - np.repeat(starts, turns) + 1
    groups = prefix_groups(scenario, rng["prefixes"], n)[conversation]
    message, output = draw_token_counts(scenario, rng["tokens"], total)
    exchanged = np.cumsum(message + output)
    history = exchanged - (message + output) - np.repeat(exchanged[starts] - (message + output)[starts], turns)
    prefix = np.where(groups >= 0, work.shared_prefix.tokens if work.shared_prefix is not None else 0, 0)
    prompt = prefix + history + message
    first = turn == 1
    check_lengths(prompt[first], output[first], max_model_len)
    over = (prompt + output > max_model_len).astype(np.int64)
    kept = (np.cumsum(over) - np.repeat(np.cumsum(over)[starts] - over[starts], turns)) == 0
    order = np.concatenate([np.flatnonzero(first), np.flatnonzero(kept & ~first)])  # conversation-major
    new_id = np.full(total, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    following = np.append(np.arange(1, total), -1)
    following[np.cumsum(turns) - 1] = -1  # a conversation's last turn has none
    nxt = np.where(following >= 0, new_id[np.maximum(following, 0)], -1)
    think = rng_think.exponential(spec.think_time_s, total)
    arrival = np.full(total, np.nan)
    arrival[first] = first_arrival_s
    return Turns(arrival_s=arrival[order], input_tokens=prompt[order], output_tokens=output[order],
                 history_tokens=history[order], prefix_group=groups[order], conversation=conversation[order],
                 turn=turn[order], next_turn=nxt[order], think_s=np.where(first, np.nan, think)[order])
