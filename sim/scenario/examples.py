"""The example scenarios (and training plans) shipped with capsim, found by name wherever capsim is installed.

They live in the repository's ``examples/`` folder, which the package carries as ``sim/data/examples``,
so ``capsim simulate fraud_mlp`` works from any directory, in a checkout or after ``pip install``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from sim.errors import ScenarioError

EXAMPLES_DIR = (Path(__file__).resolve().parents[1] / "data" / "examples").resolve()
DEFAULT_EXAMPLE = "fraud_mlp"


def list_examples() -> dict[str, Path]:
    """Example name (its path under the examples folder, without ``.yaml``) -> file, sorted by name.
    Kubernetes manifests that examples point at are not scenarios and are left out."""
    found = {}
    for path in sorted(EXAMPLES_DIR.rglob("*.yaml")):
        name = path.relative_to(EXAMPLES_DIR).with_suffix("").as_posix()
        if not name.startswith("k8s/"):
            found[name] = path
    return found


def scenario_path(ref: str | Path) -> Path:
    """A scenario as given by a user: an existing file, else the name of a shipped example
    (``fraud_mlp``, ``autoscaling/spike_cold_start``)."""
    path = Path(ref)
    if path.is_file():
        return path
    examples = list_examples()
    key = str(ref).removesuffix(".yaml")
    if key in examples:
        return examples[key]
    if path.exists():
        raise ScenarioError(f"scenario file {str(ref)!r} is not a file (a scenario is a YAML file or an example's name)")
    hint = difflib.get_close_matches(key, list(examples), n=1, cutoff=0.6)
    raise ScenarioError(f"scenario file {str(ref)!r} not found, and no example has that name"
                        + (f"; did you mean {hint[0]!r}?" if hint else "") + " (`capsim examples` lists them)")


def example_kind(path: Path) -> str:
    """``training`` for a training plan (``kind: training``, run by ``capsim train-plan``), else ``serving``."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return "serving"
    return "training" if isinstance(data, dict) and data.get("kind") == "training" else "serving"


def describe_example(path: Path) -> str:
    """The example's first comment line, or its description, for listings."""
    text = path.read_text()
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return ""
    return " ".join(str(data.get("description", "")).split()) if isinstance(data, dict) else ""
