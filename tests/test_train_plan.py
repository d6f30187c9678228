"""`capsim train-plan`: every shipped training example runs and prints its tables, --out writes its files,
bad input is one line with exit status 2, the planner's pick is the cheapest meeting the deadline, the
step's parts add up to the closed forms, and scaling bends where a job leaves one node."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.scenario.examples import example_kind, list_examples
from sim.theory.collectives import ring_allreduce_s
from sim.training import planner
from sim.training.job import estimate
from sim.training.layout import Layout
from sim.training.scenario import load_training_plan, training_plan_from_dict
from sim.training.setup import build_setup
from sim.training.step import ddp_buckets

EXAMPLES = {name: path for name, path in list_examples().items() if example_kind(path) == "training"}
BASE = {"kind": "training", "model": {"name": "bert-base"}, "data": {"samples": 1e6, "seq_len": 128},
        "batch": {"global_batch": 256, "micro_batch": 8}, "cluster": {"gpu": "A100-40GB", "gpus": 8}}


def test_training_examples_are_listed_as_training(capsys):
    assert {"training/llama_7b", "training/llama_7b_deadline", "training/bert_finetune"} <= set(EXAMPLES)
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    assert "training/llama_7b" in out and "training" in out and "capsim train-plan NAME" in out
    assert example_kind(list_examples()["fraud_mlp"]) == "serving"


def test_a_training_example_given_to_simulate_is_one_line_pointing_to_train_plan(capsys):
    assert main(["simulate", "training/llama_7b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "capsim train-plan" in err


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_training_example_runs(name, capsys):
    assert main(["train-plan", name, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "memory per GPU" in out and "time to train" in out and "scaling" in out
    print(out[-1500:])


def test_out_writes_summary_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["train-plan", "training/llama_7b_deadline", "--out", str(out), "--no-progress"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"summary.json", "scaling.parquet", "scaling.png", "memory.png", "candidates.parquet"}
    candidates = pd.read_parquet(out / "candidates.parquet")
    meeting = candidates[candidates["meets_deadline"]]
    best = candidates.iloc[0] if meeting.empty else meeting.iloc[0]
    assert best["cost_usd"] == meeting["cost_usd"].min() and best["time_h"] <= 72
    print(f"\nplanner: {len(candidates):,} layouts fit; cheapest meeting 72 h: {best['gpus']} × {best['gpu']} "
          f"{best['layout']}, {best['time_h']:.1f} h, ${best['cost_usd']:,.0f}")
    assert main(["train-plan", "training/llama_7b", "--out", str(out)]) == 0  # an earlier train-plan's: replaced
    assert not (out / "candidates.parquet").exists()


def _plan_file(tmp_path: Path, **changes) -> str:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        section = data
        for name in parents:
            section = section.setdefault(name, {})
        section[key] = value
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("changes,expected", [
    ({"cluster__gpus": 0}, "cluster.gpus = 0: must be greater than or equal to 1"),
    ({"batch__global_batch": 250}, "batch.global_batch = 250 must be a multiple of data-parallel ranks × "
                                   "micro_batch = 8 × 8 = 64"),
    ({"cluster__gpu": "H900"}, "cluster.gpu = 'H900': a catalog GPU (H100-SXM"),
    ({"parallel__tensor": 2, "parallel__pipeline": 3}, "parallel.tensor × parallel.pipeline = 2 × 3 must divide "
                                                       "cluster.gpus = 8"),
    ({"parallel__tensor": 5, "cluster__gpus": 10, "batch__global_batch": 16}, "parallel.tensor = 5: must divide the 12"),
    ({"parallel__zero": 4}, "parallel.zero = 4: must be 0, 1, 2 or 3"),
    ({"parallel__tensr": 2}, "unknown key 'tensr' in parallel; did you mean 'tensor'?"),
    ({"model__name": "gpt-9"}, "model.name = 'gpt-9': a shipped model (llama-2-7b"),
    ({"data__tokens": 1e9}, "data: give one of samples or tokens"),
    ({"kind": "serving"}, "kind = 'serving': a training plan says kind: training"),
    ({"precision": "fp8"}, "precision = 'fp8': must be 'fp32', 'fp16-mixed' or 'bf16-mixed'"),
    ({"cluster__gpu": "T4"}, "precision = 'bf16-mixed': T4 has no bf16 peak"),
    ({"model__name": "mlp", "data__seq_len": None, "parallel__tensor": 2}, "parallel.tensor = 2: tensor parallelism "
                                                                         "is modelled for transformers"),
])
def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys, changes, expected):
    assert main(["train-plan", _plan_file(tmp_path, **changes)]) == 2
    err = capsys.readouterr().err.strip()
    print(f"\n{err}")
    assert err.count("\n") == 0 and expected in err


def test_bad_flags_are_one_line(capsys):
    assert main(["train-plan", "training/llama_7b", "--gpus", "0"]) == 2
    assert "--gpus = '0': an integer ≥ 1" in capsys.readouterr().err
    assert main(["train-plan", "training/llama_7b", "--gpus", "1"]) == 2  # 108 GB of states on one GPU
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not fit" in err and "fits with: " in err


def test_the_gradient_sync_is_the_ring_all_reduce_of_ddp_buckets():
    setup = build_setup(training_plan_from_dict(BASE))
    job = estimate(setup, Layout(gpus=8, micro_batch=8, global_batch=256))
    grads = setup.model.parameters * 2
    fabric = setup.device.fabric
    buckets = ddp_buckets(grads, 25 * 2**20)
    closed = sum(ring_allreduce_s(b, 8, fabric.intra_bytes_per_s, fabric.intra_latency_s) for b in buckets)
    print(f"\nbert-base DDP on 8 A100s: {len(buckets)} buckets, all-reduce {closed * 1e3:.3f} ms "
          f"({job.step.sync_exposed_s * 1e3:.3f} ms exposed) of a {job.step.total_s * 1e3:.2f} ms step")
    assert sum(buckets) == pytest.approx(grads) and buckets[0] == 2**20
    assert job.step.sync_s == pytest.approx(closed, rel=1e-12)
    assert 0 < job.step.sync_exposed_s < job.step.sync_s


def test_pipeline_bubble_in_the_step_is_the_closed_form():
    plan = training_plan_from_dict({**BASE, "model": {"name": "llama-2-7b"}, "data": {"tokens": 1e9},
                                    "batch": {"global_batch": 64}, "cluster": {"gpu": "H100-SXM", "gpus": 4},
                                    "parallel": {"pipeline": 4, "zero": 0}})
    setup = build_setup(plan)
    step = estimate(setup, Layout(gpus=4, pipeline=4, global_batch=64)).step
    per_mb = (step.compute_s + step.pipeline_comm_s) / step.microbatches
    print(f"\nllama-2-7b PP=4, m=64: bubble {step.bubble_s:.3f} s = {step.bubble_s / (step.bubble_s + step.compute_s + step.pipeline_comm_s):.4f}"
          f" of the pipelined part; (p-1)/(m+p-1) = {3 / 67:.4f}")
    assert step.bubble_s == pytest.approx(3 * per_mb, rel=1e-12)
    assert step.bubble_s / (step.bubble_s + step.microbatches * per_mb) == pytest.approx(3 / 67, rel=1e-12)


def test_data_parallel_scaling_bends_where_the_job_leaves_the_node():
    plan = training_plan_from_dict({**BASE, "batch": {"global_batch": 256, "micro_batch": 4}})
    table = planner.points_table(planner.scaling(build_setup(plan), [1, 2, 4, 8, 16, 32]))
    eff = dict(zip(table["gpus"], table["scaling_efficiency"], strict=True))
    print("\nbert-base DDP on A100s (8 per node, NVLink 300 GB/s, 50 GB/s per node): "
          + ", ".join(f"{n}: {e:.0%}" for n, e in eff.items()))
    assert eff[1] == 1 and eff[8] > 0.75  # NVLink inside the node
    assert eff[16] < eff[8] - 0.2  # the all-reduce crosses the node's network
    assert eff[32] < eff[16]


def test_the_shipped_seven_b_example_fits_only_sharded():
    plan = load_training_plan("training/llama_7b")
    job = estimate(build_setup(plan), Layout(gpus=64, zero=3, global_batch=1024))
    print(f"\nllama_7b: {job.memory.total_bytes / 1e9:.1f} GB per GPU, {job.wall_s / 3600:.1f} h, ${job.cost_usd:,.0f}")
    assert job.memory.fits and job.memory.states_bytes < 2e9


def _keys(model, prefix: str = "") -> set[str]:
    """Every dotted key of a plan section, nested sections included."""
    from sim.scenario.base import Section

    keys = set()
    for name, field in model.model_fields.items():
        if name == "base_dir":
            continue
        keys.add(prefix + name)
        inner = field.annotation
        for candidate in getattr(inner, "__args__", (inner,)):
            if isinstance(candidate, type) and issubclass(candidate, Section):
                keys |= _keys(candidate, f"{prefix}{name}.")
    return keys


def test_every_plan_key_is_documented():
    from sim.training.scenario import TrainingPlan

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    block = doc.split("```yaml", 1)[1].split("```", 1)[0]
    lines = [line.strip().lstrip("#").strip() for line in block.splitlines()]  # "# samples: ..." documents samples
    documented = {line.split(":")[0] for line in lines if ":" in line}
    missing = sorted(k for k in _keys(TrainingPlan) if k.rsplit(".", 1)[-1] not in documented)
    assert not missing, f"docs/training.md's plan file lacks {missing}"
