"""How many requests per second an LLM replica sustains at most: a mean-field estimate.

At saturation a replica runs as many sequences as it can hold: ``B = min(max_num_seqs, KV tokens /
tokens a running sequence holds on average)``, with a sequence holding its prompt plus half its output
(and half a block of slack). In steady state ``c`` requests complete per iteration; by Little's law
``c·(out − 1)`` sequences decode and ``c·in`` prompt tokens are prefilled each iteration, so ``c`` is
capped by ``B`` decoding sequences and by the token budget. Throughput ``c / step_s`` grows with ``c``
(bigger batches amortise the weight reads), so the cap is the capacity. It ignores the spread of
lengths, preemptions and the iterations that are not full: a ceiling, used to flag overload and to
set loads in benchmarks, never to report latency. With a prefix cache it takes every shared prefix as
cached (``cached_prompt_tokens``): those tokens are neither prefilled nor held per sequence, only read.
Disaggregated (:func:`disaggregated_capacity_rps`), the two pools are capped separately and the fleet by
the smaller: a prefill replica by full prefill iterations, a decode replica by the sequences its KV holds.
"""

from __future__ import annotations


def replica_capacity_rps(step_time, *, kv_tokens: int, block_size: int, max_num_seqs: int,
                         max_num_batched_tokens: int, mean_input_tokens: float, mean_output_tokens: float,
                         mean_cached_tokens: float = 0.0) -> float:
    """Requests/s one replica completes at most (an estimate, see the module docstring);
    ``mean_cached_tokens`` of each prompt come from the prefix cache."""
    computed = mean_input_tokens - mean_cached_tokens
    held = computed + mean_output_tokens / 2 + block_size / 2
    running = max(1.0, min(max_num_seqs, kv_tokens / held))
    decode_rounds = max(mean_output_tokens - 1, 0.0)
    per_iteration = max_num_batched_tokens / (decode_rounds + computed)
    if decode_rounds:
        per_iteration = min(per_iteration, running / decode_rounds)
    decode = per_iteration * decode_rounds
    prefill = per_iteration * computed
    kv_read = decode * (mean_input_tokens + mean_output_tokens / 2)
    pairs = kv_read + per_iteration * (mean_input_tokens**2 - mean_cached_tokens**2) / 2
    step_s = step_time.step_s(round(prefill), round(decode), round(kv_read), round(pairs))
    return per_iteration / step_s


def disaggregated_capacity_rps(prefill_step, decode_step, *, prefill_replicas: int, decode_replicas: int,
                               kv_tokens: int,
                               block_size: int, max_num_seqs: int, max_num_batched_tokens: int,
                               mean_input_tokens: float, mean_output_tokens: float,
                               mean_cached_tokens: float = 0.0) -> float:
    """Requests/s prefill and decode pools complete at most: the smaller of the two pools' ceilings.

    A prefill replica runs iterations of ``max_num_batched_tokens`` prompt tokens (``mean_cached_tokens``
    of each prompt from its cache); a decode replica holds each sequence's whole prompt plus half its
    output and runs ``min(that many, max_num_seqs, budget)`` decodes an iteration, each request taking
    ``output − 1`` of them (its first token came from the prefill). Each pool has its own iteration-time
    model; ``kv_tokens`` is a decode replica's."""
    computed = max(mean_input_tokens - mean_cached_tokens, 1.0)
    per_prefill = max_num_batched_tokens / computed  # requests whose prompt one prefill iteration computes
    pairs = per_prefill * (mean_input_tokens**2 - mean_cached_tokens**2) / 2
    prefill_rps = per_prefill / prefill_step.step_s(max_num_batched_tokens, 0, round(per_prefill * mean_input_tokens),
                                                  round(pairs))
    rounds = mean_output_tokens - 1
    if rounds <= 0:
        return prefill_replicas * prefill_rps
    held = mean_input_tokens + mean_output_tokens / 2 + block_size / 2
    running = max(1.0, min(max_num_seqs, max_num_batched_tokens, kv_tokens / held))
    kv_read = running * (mean_input_tokens + mean_output_tokens / 2)
    decode_rps = running / rounds / decode_step.step_s(0, round(running), round(kv_read), round(kv_read))
    return min(prefill_replicas * prefill_rps, decode_replicas * decode_rps)


def cached_prompt_tokens(scenario) -> float:
    """Prompt tokens per request a prefix cache can serve at most: the full blocks of every shared prefix
    (``workload.shared_prefix``), when ``llm.enable_prefix_caching``; 0 otherwise."""
    prefix, llm = scenario.workload.shared_prefix, scenario.llm
    if prefix is None or not llm.enable_prefix_caching:
        return 0.0
    return prefix.share * (prefix.tokens // llm.block_size) * llm.block_size
