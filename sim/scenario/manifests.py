"""Reading Kubernetes ``autoscaling/v2`` HorizontalPodAutoscaler manifests (and optionally the
Deployment they target) into capsim's ``autoscaler`` / ``cold_start`` sections.

Metric names are mapped to what capsim measures: Resource metrics (cpu, memory, nvidia.com/gpu) with a
Utilization target become ``gpu_utilization`` (the replica's busy share); Pods and External metrics are
mapped by name (``requests_per_second``, ``in_flight``, ``queue_length`` — see ``NAME_HINTS``) or by an
explicit ``metric_map: {their_name: capsim_name}`` next to ``from_manifest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.errors import ScenarioError, shown
from sim.scenario.yaml_reader import read_text_file, read_yaml_all

API_VERSIONS = ("autoscaling/v2",)
METRIC_TYPES = ("Resource", "Pods", "External", "Object", "ContainerResource")
NAME_HINTS = (
    (("queue", "pending", "waiting", "backlog"), "queue_length"),
    (("inflight", "in_flight", "in-flight", "concurrency", "ongoing", "active_requests", "num_requests_running"),
     "in_flight"),
    (("requests_per_second", "rps", "qps", "request_rate", "requests_rate", "http_requests"), "requests_per_second"),
    (("gpu_util", "dcgm_fi_dev_gpu_util", "utilization", "utilisation", "duty_cycle"), "gpu_utilization"),
)


def hpa_from_manifest(spec: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """The ``autoscaler`` mapping for a scenario whose autoscaler says ``from_manifest: FILE``.

    Keys given next to ``from_manifest`` (e.g. ``sync_period_s``) override what the manifest implies.
    """
    spec = dict(spec)
    rel = spec.pop("from_manifest")
    metric_map = spec.pop("metric_map", {}) or {}
    path = Path(rel) if Path(rel).is_absolute() else Path(base_dir) / rel
    doc = _read(path, "autoscaler.from_manifest")
    hpa = _find(doc, path, "HorizontalPodAutoscaler")
    api = hpa.get("apiVersion")
    if api not in API_VERSIONS:
        raise ScenarioError(f"{path}: apiVersion = {api!r}: capsim reads {', '.join(API_VERSIONS)} "
                            "(convert older HPAs with `kubectl convert`)")
    body = hpa.get("spec") or {}
    target = body.get("scaleTargetRef")
    if not isinstance(target, dict) or not target.get("name") or not target.get("kind"):
        raise ScenarioError(f"{path}: spec.scaleTargetRef = {target!r}: required, with kind and name "
                            "(the Deployment the HPA scales)")
    if "maxReplicas" not in body:
        raise ScenarioError(f"{path}: spec.maxReplicas: missing required key")
    out: dict[str, Any] = {"type": "hpa", "max_replicas": body["maxReplicas"],
                           "min_replicas": body.get("minReplicas", 1), "from_manifest": str(path)}
    metrics = body.get("metrics") or [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]  # API default
    out["metrics"] = [_metric(m, k, path, metric_map) for k, m in enumerate(metrics)]
    if "behavior" in body and body["behavior"] is not None:
        out["behavior"] = _behavior(body["behavior"], path)
    out.update(spec)
    return out


def deployment_overrides(path_rel: str, base_dir: str | Path) -> tuple[int | None, dict[str, Any]]:
    """(spec.replicas, cold_start keys) from a Deployment manifest's readiness probe."""
    path = Path(path_rel) if Path(path_rel).is_absolute() else Path(base_dir) / path_rel
    dep = _find(_read(path, "autoscaler.deployment"), path, "Deployment")
    spec = dep.get("spec") or {}
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or []
    cold: dict[str, Any] = {}
    for c in containers:
        probe = c.get("readinessProbe")
        if probe:
            cold["readiness_period_s"] = float(probe.get("periodSeconds", 10))
            break
    return spec.get("replicas"), cold


def _read(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise ScenarioError(f"{key} = {str(path)!r}: file not found")
    docs = [d for d in read_yaml_all(read_text_file(path, "a manifest"), str(path), "a manifest") if d]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ScenarioError(f"{path}: expected Kubernetes object(s), found {shown(docs)}")
    return docs


def _find(docs: list[dict], path: Path, kind: str) -> dict:
    for d in docs:
        if d.get("kind") == kind:
            return d
    kinds = ", ".join(str(d.get("kind")) for d in docs)
    raise ScenarioError(f"{path}: kind = {kinds!r}: expected a {kind}")


def _metric(m: dict, k: int, path: Path, metric_map: dict[str, str]) -> dict[str, Any]:
    kind = m.get("type")
    where = f"{path}: spec.metrics[{k}]"
    if kind not in METRIC_TYPES:
        raise ScenarioError(f"{where}.type = {kind!r}: must be one of {', '.join(METRIC_TYPES)}")
    if kind in ("Resource", "ContainerResource"):
        body = m.get(kind[0].lower() + kind[1:]) or {}
        target = body.get("target") or {}
        if target.get("type") != "Utilization":
            raise ScenarioError(f"{where}.{kind.lower()}.target.type = {target.get('type')!r}: capsim models "
                                "Utilization targets of resource metrics (busy share of the replica's GPU)")
        return {"type": "resource", "name": "gpu_utilization",
                "target_utilization": float(target["averageUtilization"]) / 100.0}
    body = m.get({"Pods": "pods", "External": "external", "Object": "object"}[kind]) or {}
    name = ((body.get("metric") or {}).get("name")) or ""
    target = body.get("target") or {}
    mapped = metric_map.get(name) or _guess(name)
    if mapped is None:
        raise ScenarioError(f"{where}: metric name {name!r} is not one capsim can measure; map it with "
                            f"autoscaler.metric_map: {{{name}: requests_per_second|in_flight|queue_length|"
                            "gpu_utilization|latency}")
    value = _quantity(target.get("averageValue", target.get("value")), where)
    if kind == "Pods":
        return {"type": "pods", "name": mapped, "target_average_value": value}
    if mapped == "latency":
        return {"type": "latency", "name": "latency", "target_value": value}
    key = "target_average_value" if "averageValue" in target else "target_value"
    return {"type": "external", "name": mapped, key: value}


def _guess(name: str) -> str | None:
    low = name.lower()
    if "latency" in low or "duration" in low:
        return "latency"
    for hints, mapped in NAME_HINTS:
        if any(h in low for h in hints):
            return mapped
    return None


def _quantity(q: Any, where: str) -> float:
    """A Kubernetes quantity (e.g. 500m, 2, 1.5k) as a float."""
    if q is None:
        raise ScenarioError(f"{where}.target: needs value or averageValue")
    text = str(q).strip()
    scale = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    try:
        if text and text[-1] in scale:
            return float(text[:-1]) * scale[text[-1]]
        return float(text)
    except ValueError:
        raise ScenarioError(f"{where}.target = {q!r}: not a Kubernetes quantity (e.g. 10, 500m, 2k)") from None


def _behavior(b: dict, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for theirs, ours in (("scaleUp", "scale_up"), ("scaleDown", "scale_down")):
        rules = b.get(theirs)
        if not rules:
            continue
        r: dict[str, Any] = {}
        if "stabilizationWindowSeconds" in rules:
            r["stabilization_window_s"] = rules["stabilizationWindowSeconds"]
        if "selectPolicy" in rules:
            r["select_policy"] = rules["selectPolicy"]
        if "tolerance" in rules:
            r["tolerance"] = _quantity(rules["tolerance"], f"{path}: spec.behavior.{theirs}.tolerance")
        if "policies" in rules:
            r["policies"] = [{"type": p.get("type"), "value": p.get("value"), "period_s": p.get("periodSeconds")}
                             for p in rules["policies"]]
        out[ours] = r
    return out
