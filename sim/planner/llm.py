"""Planning token-level LLM serving: GPU type × tensor parallelism × scheduler knobs × replicas, against the
TTFT and TPOT objectives of ``llm.slo`` and the cost of every GPU.

The search is ``sim.planner.search.plan``'s own (grid, bisect or Optuna through the one sweep loop, with its
checkpoint, ranking, Pareto fronts and report); this module gives it the space, :class:`LlmSpace`, whose
configurations set ``fleet.gpu``, ``llm.tensor_parallel``, ``llm.max_num_seqs`` and
``llm.max_num_batched_tokens``. Before anything runs, a configuration is left out, with a note, when

* the model does not fit its GPUs (``sim.llm.memory.fitting_plan``: weights, the activation peak, the
  runtime reserve and the KV cache of one ``max_model_len`` sequence), or a replica would span more GPUs
  than one node of that GPU holds;
* one sequence decoding alone is slower than the TPOT objective: every iteration takes at least that long
  (the deterministic iteration-time models only grow with the work), so no replica count can meet it.

GPUs: every catalog GPU with the scenario's dtype when the iteration time is a roofline estimate; only the
scenario's own GPU when it is ``coefficients`` or ``calibrated`` (one GPU's times; other GPUs named with
``gpus`` are searched with the same coefficients and labelled estimates; a calibrated profile also fixes the
TP degree). Cost: replicas × TP × PP × price per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.errors import ScenarioError, bad_value
from sim.experiments.sweep import grid
from sim.hardware.gpus import gpu_catalog
from sim.llm.build import catalog_gpu, llm_setup
from sim.llm.capacity import cached_prompt_tokens, replica_capacity_rps
from sim.llm.memory import fitting_plan
from sim.models.llm_archs import llm_arch
from sim.runner import streams
from sim.scenario.keys import updated
from sim.scenario.model import Scenario
from sim.workload.arrivals import arrival_times
from sim.workload.classes import draw_classes, strictest_tpot_s
from sim.workload.tokens import prefix_groups, token_counts

DEFAULT_TENSOR_PARALLEL = (1, 2, 4, 8)
CAPACITY_SAMPLE = 10_000  # requests whose token counts set the mean lengths of the capacity estimate


@dataclass(frozen=True)
class LlmCandidate:
    """One GPU type: its price per GPU and whether its iteration times are an estimate."""

    label: str  # catalog key, the value of fleet.gpu
    usd_per_gpu_hour: float
    estimate: bool
    set_price: bool = False  # the scenario prices its GPU itself: every candidate sets llm.usd_per_gpu_hour

    def updates(self) -> dict:
        return {"fleet.gpu": self.label, **({"llm.usd_per_gpu_hour": self.usd_per_gpu_hour} if self.set_price else {})}


def llm_candidates(scenario: Scenario, gpus: list[str] | None = None,
                   estimates: bool = True) -> tuple[list[LlmCandidate], list[str]]:
    """The GPU types to search and notes on those left out (see the module docstring)."""
    llm, catalog = scenario.llm, gpu_catalog()
    own = catalog_gpu(scenario.fleet.gpu).key
    measured = llm.step_time.type != "roofline"  # coefficients or a calibrated profile: one GPU's times
    notes = []
    if gpus is None:
        keys = [own] if measured else list(catalog)
        if measured:
            notes.append(f"llm.step_time is {llm.step_time.type} (iteration times of one GPU): only {own} is "
                         "searched; name other GPUs with --gpus to compare their memory and price at the same "
                         "iteration times")
    else:
        lookup = {k.lower(): k for k in catalog}
        unknown = [g for g in gpus if g.lower() not in lookup]
        if unknown:
            raise ScenarioError(bad_value("--gpus", ",".join(unknown), f"catalog GPUs: {', '.join(catalog)}"))
        keys = list(dict.fromkeys(lookup[g.lower()] for g in gpus))
    no_dtype = [k for k in keys if not catalog[k].peak_tflops.get(llm.dtype)]
    if no_dtype:
        notes.append(f"{', '.join(no_dtype)}: no {llm.dtype} tensor cores (llm.dtype); not searched")
    found, dropped = [], []
    for key in (k for k in keys if k not in no_dtype):
        estimate = not measured or key != own
        if estimate and not estimates:
            dropped.append(key)
            continue
        price = llm.usd_per_gpu_hour if key == own and llm.usd_per_gpu_hour is not None else catalog[key].usd_per_hour
        found.append(LlmCandidate(key, price, estimate, llm.usd_per_gpu_hour is not None))
    if dropped:
        notes.append(f"--no-estimates: {', '.join(dropped)} left out (their iteration times would be estimates)")
    if not found:
        raise ScenarioError(f"no GPU left to search for {llm.model} {llm.dtype}: " + "; ".join(notes))
    return found, notes


def tensor_parallel_values(scenario: Scenario, given: list[int] | None = None) -> list[int]:
    """The TP degrees to try: ``given`` (each must divide the model's heads), else 1, 2, 4, 8 where they do (only
    the scenario's own with a calibrated profile, which measured one TP degree)."""
    arch, pp = llm_arch(scenario.llm.model), scenario.llm.pipeline_parallel
    if given:
        for tp in given:
            arch.check_parallel(tp, pp)
        return sorted(set(given))
    if scenario.llm.step_time.type == "calibrated":
        return [scenario.llm.tensor_parallel]
    return [tp for tp in DEFAULT_TENSOR_PARALLEL if arch.heads % tp == 0 and arch.kv_heads % tp == 0]


def max_num_seqs_values(scenario: Scenario, given: list[int] | None = None) -> list[int]:
    """``given``, else the scenario's ``llm.max_num_seqs``, its half and its quarter (a smaller batch is a
    shorter iteration: TPOT traded against queueing)."""
    own = scenario.llm.max_num_seqs
    return sorted(set(given or (max(1, own // 4), max(1, own // 2), own)))


# ---------------------------------------------------------------- the space
@dataclass
class LlmSpace:
    """What the planner varies for an llm scenario; the same interface as ``sim.planner.search.Space``."""

    candidates: list[LlmCandidate]
    tensor_parallel: list[int]
    max_num_seqs: list[int]
    max_num_batched_tokens: list[int]
    replicas: list[int] | None = None  # None: derived from capacity (grid) or searched (bisect)
    extra: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def configs(self) -> list[dict]:
        """Every (GPU, TP, max_num_seqs, max_num_batched_tokens, extra) combination, without replicas."""
        return [{**cand.updates(), "llm.tensor_parallel": tp, "llm.max_num_seqs": seqs,
                 "llm.max_num_batched_tokens": tokens, **extra}
                for cand in self.candidates for tp in self.tensor_parallel for seqs in self.max_num_seqs
                for tokens in self.max_num_batched_tokens for extra in grid(self.extra)]

    def valid_configs(self, scenario: Scenario) -> tuple[list[dict], list[str]]:
        """The configurations worth simulating, and notes on every one left out (never simulated)."""
        good, rejected = [], []
        unfit: dict[tuple, list[str]] = {}
        too_wide: dict[tuple, int] = {}
        slow: dict[tuple, float] = {}
        total: dict[tuple, int] = {}
        for config in self.configs():
            gpu = catalog_gpu(config["fleet.gpu"])
            tp = config["llm.tensor_parallel"]
            group = (gpu.key, tp)
            total[group] = total.get(group, 0) + 1
            gpus = tp * config.get("llm.pipeline_parallel", scenario.llm.pipeline_parallel)
            if gpu.gpus_per_node and gpus > gpu.gpus_per_node:
                too_wide[group] = gpu.gpus_per_node
                continue
            problem = memory_problem(scenario, config)
            if problem is not None:
                unfit.setdefault(group, []).append(problem)
                continue
            try:
                candidate = updated(scenario, config, "--param")
            except ScenarioError as exc:
                rejected.append(str(exc))
                continue
            floor = decode_floor_s(candidate) if candidate.llm.step_time.type != "calibrated" else 0.0
            if floor > strictest_tpot_s(candidate):  # (a calibrated model's residuals may dip below its mean: no floor)
                slow[group] = floor
                continue
            good.append(config)
        return good, [*self.notes, *_skip_notes(scenario, unfit, too_wide, slow, rejected, total)]

    def estimates(self, table: pd.DataFrame) -> pd.Series:
        """Per row of a plan's table: whether its iteration times are an estimate."""
        by_gpu = {c.label: c.estimate for c in self.candidates}
        return table["fleet.gpu"].map(by_gpu).fillna(False).astype(bool)


def _skip_notes(scenario: Scenario, unfit: dict, too_wide: dict, slow: dict, rejected: list[str],
                total: dict) -> list[str]:

    def name(group: tuple) -> str:
        return f"{group[0]} × TP {group[1]}"

    notes = []
    if unfit:
        llm = scenario.llm
        arch = llm_arch(llm.model)
        where = ", ".join(name(g) + (f" ({len(p)} of {total[g]} scheduler settings)" if len(p) < total[g] else "")
                          for g, p in unfit.items())
        notes.append(f"not simulated, {arch.name} {llm.dtype} does not fit memory (weights, activations and the KV "
                     f"cache of one {llm.max_model_len or arch.max_positions:,}-token sequence) on: {where}; "
                     f"e.g. {next(iter(unfit.values()))[0]}")
    if too_wide:
        notes.append("not simulated, a replica would span more GPUs than one node holds: "
                     + ", ".join(f"{name(g)} ({n} per node)" for g, n in too_wide.items()))
    if slow:
        tpot = strictest_tpot_s(scenario)
        notes.append(f"not simulated, one sequence decoding alone is slower than the TPOT objective "
                     f"({tpot * 1e3:g} ms) on: " + ", ".join(f"{name(g)} ({s * 1e3:.1f} ms)" for g, s in slow.items()))
    if rejected:
        notes.append(f"{len(rejected)} combinations the scenario rejects were skipped, e.g. {rejected[0]}")
    return notes


def memory_problem(scenario: Scenario, config: dict) -> str | None:
    """Why ``scenario`` with ``config``'s dotted updates would not fit its GPUs' memory (None if it fits)."""
    llm = scenario.llm

    def value(name: str):
        return config.get(f"llm.{name}", getattr(llm, name))

    arch = llm_arch(value("model"))
    try:
        fitting_plan(arch, catalog_gpu(config.get("fleet.gpu", scenario.fleet.gpu)), value("dtype"),
                     value("tensor_parallel"), value("pipeline_parallel"),
                     gpu_memory_utilization=value("gpu_memory_utilization"), block_size=value("block_size"),
                     max_num_batched_tokens=value("max_num_batched_tokens"), max_num_seqs=value("max_num_seqs"),
                     max_model_len=value("max_model_len") or arch.max_positions,
                     kv_blocks_override=value("num_gpu_blocks_override"))
    except ScenarioError as exc:
        return str(exc)
    return None


def decode_floor_s(scenario: Scenario) -> float:
    """The shortest iteration in which a sequence decodes (alone, reading no KV): a lower bound of its TPOT."""
    return llm_setup(scenario).step_time.step_s(0, 1, 0, 0)


# ---------------------------------------------------------------- capacity
def llm_replica_capacity_rps(scenario: Scenario) -> float:
    """Most requests/s one replica completes (``sim.llm.capacity``'s mean-field estimate, a ceiling), with the
    mean token counts of the scenario's own requests (replication 0, at most the first 10,000)."""
    setup = llm_setup(scenario)
    rng = streams(scenario.run.seed, 0)
    n = max(1, min(CAPACITY_SAMPLE, arrival_times(scenario, rng["arrivals"]).size))
    prompt, output = token_counts(scenario, rng["tokens"], n, setup.max_model_len,
                                  prefix_groups(scenario, rng["prefixes"], n),
                                  draw_classes(scenario, rng["classes"], n), rng["classes"])
    plan, llm = setup.plan, scenario.llm
    return replica_capacity_rps(setup.step_time, kv_tokens=plan.kv_tokens, block_size=plan.block_size,
                                max_num_seqs=llm.max_num_seqs, max_num_batched_tokens=llm.max_num_batched_tokens,
                                mean_input_tokens=float(np.mean(prompt)), mean_output_tokens=float(np.mean(output)),
                                mean_cached_tokens=cached_prompt_tokens(scenario))


def llm_space(scenario: Scenario, *, gpus: list[str] | None = None, estimates: bool = True,
              tensor_parallel: list[int] | None = None, max_num_seqs: list[int] | None = None,
              max_num_batched_tokens: list[int] | None = None, replicas: list[int] | None = None,
              extra: dict[str, list] | None = None) -> LlmSpace:
    """The search space of an llm scenario, defaults filled in (values of one key are checked alone first)."""
    candidates, notes = llm_candidates(scenario, gpus, estimates)
    space = LlmSpace(candidates, tensor_parallel_values(scenario, tensor_parallel),
                     max_num_seqs_values(scenario, max_num_seqs),
                     sorted(set(max_num_batched_tokens or [scenario.llm.max_num_batched_tokens])),
                     replicas, dict(extra or {}), notes)
    for key, values in (("llm.tensor_parallel", space.tensor_parallel), ("llm.max_num_seqs", space.max_num_seqs),
                        ("llm.max_num_batched_tokens", space.max_num_batched_tokens),
                        ("fleet.replicas", replicas or [])):
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScenarioError(bad_value(key, value, "a whole number ≥ 1"))
    return space

