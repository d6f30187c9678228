"""Token counts of LLM requests: each request's prompt (``input_tokens``) and output (``output_tokens``).

A registry maps ``workload.input_tokens.distribution`` (and ``output_tokens``) to a drawing function
``(spec, rng, n, scenario, default_column) -> int array``: ``fixed``, ``lognormal`` (mean and cv, rounded,
raised to ``min_tokens`` and clipped at ``max_tokens`` only when the user sets it), ``empirical``
(uniform draws from a file's column) and ``trace`` (the arrival trace's own columns, row for row).
Prompts and outputs are drawn from independent children of the ``tokens`` stream, so changing one
leaves the other as it was. A request must fit ``llm.max_model_len``: prompt + output ≤ it, as vLLM
refuses a request whose prompt plus ``max_tokens`` exceeds the model length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.distributions import Lognormal
from sim.errors import ScenarioError, TraceError, bad_value
from sim.workload.arrivals import finite_column, read_table

TOKEN_SOURCES: dict[str, Callable[..., np.ndarray]] = {}


def register(name: str):
    def wrap(fn):
        TOKEN_SOURCES[name] = fn
        return fn

    return wrap


def token_counts(scenario, rng: np.random.Generator, n: int, max_model_len: int,
                 prefix_group: np.ndarray | None = None, classes: np.ndarray | None = None,
                 class_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_tokens, output_tokens) of ``n`` requests, in arrival order, checked against ``max_model_len``;
    a request with a shared prefix (``prefix_group`` ≥ 0, :func:`prefix_groups`) has its tokens in front. A
    request of a class with lengths of its own (``classes``: each request's index into ``workload.classes``)
    takes them, drawn from children of ``class_rng``, so the other requests' draws stay as they were."""
    work = scenario.workload
    counts = list(draw_token_counts(scenario, rng, n))
    own = [] if classes is None or not work.classes else [
        (k, c) for k, c in enumerate(work.classes) if c.input_tokens is not None or c.output_tokens is not None]
    children = class_rng.spawn(2 * len(own)) if own else []
    for j, (k, c) in enumerate(own):
        members = classes == k
        for side, key in enumerate(("input_tokens", "output_tokens")):
            spec = getattr(c, key)
            if spec is not None:
                counts[side][members] = TOKEN_SOURCES[spec.distribution](spec, children[2 * j + side],
                                                                         int(members.sum()), scenario, key)
    if prefix_group is not None and work.shared_prefix is not None:
        counts[0] = counts[0] + np.where(prefix_group >= 0, work.shared_prefix.tokens, 0)
    for k, _ in own:  # a class's own lengths named as its own keys when they do not fit
        members = classes == k
        check_lengths(counts[0][members], counts[1][members], max_model_len, f"workload.classes[{k}]")
    check_lengths(*counts, max_model_len)
    return counts[0], counts[1]


def draw_token_counts(scenario, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_tokens, output_tokens) drawn for ``n`` requests, unchecked (:func:`token_counts` checks them)."""
    work = scenario.workload
    rng_in, rng_out = rng.spawn(2)
    counts = []
    for key, spec, child in (("input_tokens", work.input_tokens, rng_in), ("output_tokens", work.output_tokens,
                                                                          rng_out)):
        counts.append(TOKEN_SOURCES[spec.distribution](spec, child, n, scenario, key).astype(np.int64))
    return counts[0], counts[1]


def prefix_groups(scenario, rng: np.random.Generator, n: int) -> np.ndarray:
    """Which shared prefix each of ``n`` requests starts with (``workload.shared_prefix``): a group index, or
    -1 for none. A request has one with probability ``share``; the k-th group has weight k^-zipf_s."""
    spec = scenario.workload.shared_prefix
    if spec is None:
        return np.full(n, -1, dtype=np.int64)
    rng_has, rng_which = rng.spawn(2)
    has = rng_has.random(n) < spec.share
    weights = np.arange(1, spec.groups + 1, dtype=float) ** -spec.zipf_s
    which = rng_which.choice(spec.groups, size=n, p=weights / weights.sum())
    return np.where(has, which, -1).astype(np.int64)


def check_lengths(input_tokens: np.ndarray, output_tokens: np.ndarray, max_model_len: int,
                  where: str = "workload") -> None:
    """Every prompt leaves room for its output within ``max_model_len``; else one line with the worst case,
    naming ``where``'s ``input_tokens`` / ``output_tokens`` (``workload``, or a class's)."""
    long = input_tokens >= max_model_len
    if long.any():
        raise ScenarioError(
            f"{where}.input_tokens: {int(long.sum()):,} of {input_tokens.size:,} prompts leave no room for output "
            f"in llm.max_model_len = {max_model_len:,} (the longest: {int(input_tokens.max()):,} tokens, a shared "
            f"prefix included); set {where}.input_tokens.max_tokens or raise llm.max_model_len")
    over = input_tokens + output_tokens > max_model_len
    if over.any():
        k = int(np.argmax(input_tokens + output_tokens))
        raise ScenarioError(
            f"{where}.output_tokens: {int(over.sum()):,} of {input_tokens.size:,} requests need more than "
            f"llm.max_model_len = {max_model_len:,} tokens, prompt + output (the most: {int(input_tokens[k]):,} + "
            f"{int(output_tokens[k]):,}); set {where}.output_tokens.max_tokens or raise llm.max_model_len")


@register("fixed")
def fixed(spec, rng, n, scenario, key) -> np.ndarray:
    return np.full(n, spec.tokens, dtype=np.int64)


@register("lognormal")
def lognormal(spec, rng, n, scenario, key) -> np.ndarray:
    draws = np.rint(spec.mean_tokens * Lognormal(spec.cv).sample(rng, n))
    return np.clip(draws, spec.min_tokens, spec.max_tokens if spec.max_tokens is not None else None)


@register("empirical")
def empirical(spec, rng, n, scenario, key) -> np.ndarray:
    path = scenario.resolve(spec.path)
    values = read_counts(path, spec.column, f"workload.{key}.path = {str(path)!r}", f"set workload.{key}.column")
    return rng.choice(values, n)


@register("trace")
def trace(spec, rng, n, scenario, key) -> np.ndarray:
    arrivals = scenario.workload.arrivals
    path = scenario.resolve(arrivals.path)
    column = spec.column or key
    values = read_counts(path, column, f"workload.arrivals.path = {str(path)!r}", f"set workload.{key}.column")
    if values.size < n:
        raise TraceError(f"workload.arrivals.path = {str(path)!r}: {column} has {values.size:,} rows for "
                         f"{n:,} arrivals")
    return values[:n]


def read_counts(path, column: str, where: str, hint: str) -> np.ndarray:
    """A column of token counts (integers ≥ 1) from a CSV or Parquet file; one line on the first bad row."""
    frame = read_table(path, where, "token-count")
    values = finite_column(frame, column, where, TraceError, hint, "a token column needs at least one row",
                           "token counts")
    bad = np.flatnonzero((values < 1) | (values != np.floor(values)))
    if bad.size:
        raise TraceError(bad_value(f"{where}: {column} in row {bad[0] + 1}", float(values[bad[0]]),
                                   "token counts are whole numbers ≥ 1"))
    return values.astype(np.int64)
