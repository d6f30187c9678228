"""Altair charts for the pages; axes always say their unit. Pure: data in, chart out."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

HEIGHT = 280
RUN_COLORS = alt.Scale(domain=["baseline", "candidate"], range=["#8c8c8c", "#e4572e"])
PALETTE = alt.Scale(range=["#1f77b4", "#e4572e", "#2ca02c", "#8c8c8c", "#9467bd", "#ff7f0e"])


def _legend(title: str | None = None, columns: int | None = None) -> alt.Legend:
    if columns:
        return alt.Legend(title=title, orient="top", columns=columns, labelLimit=240)
    return alt.Legend(title=title, orient="top", direction="horizontal", labelLimit=240)


def latency_cdf(cdfs: dict[str, pd.DataFrame], slo_s: float | None = None, log_x: bool = True) -> alt.Chart:
    """Fraction of served requests at or below each latency, one line per run."""
    frames = [f.assign(run=name, latency_ms=f["latency_s"] * 1e3) for name, f in cdfs.items() if len(f)]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"latency_ms": [], "fraction": [], "run": []})
    scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    lines = alt.Chart(data).mark_line(interpolate="step-after").encode(
        x=alt.X("latency_ms:Q", title="latency (ms, log scale)" if log_x else "latency (ms)", scale=scale),
        y=alt.Y("fraction:Q", title="fraction of requests ≤ latency", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("run:N", scale=RUN_COLORS, legend=_legend()),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("latency_ms:Q", title="latency (ms)", format=",.3f"),
                 alt.Tooltip("fraction:Q", title="fraction", format=".2%")],
    )
    if slo_s:
        rule = alt.Chart(pd.DataFrame({"slo_ms": [slo_s * 1e3], "label": ["SLO"]})).mark_rule(
            strokeDash=[4, 3], color="#444").encode(x="slo_ms:Q", tooltip=[alt.Tooltip("slo_ms:Q", title="SLO (ms)")])
        lines = lines + rule
    return lines.properties(height=300)


def series(frames: dict[str, pd.DataFrame], column: str, title: str, scale: float = 1.0,
           x_title: str = "time (s)", height: int = HEIGHT, step: bool = False,
           legend_columns: int | None = None) -> alt.Chart:
    """One quantity over time, one line per run (skips runs without the column)."""
    parts = [pd.DataFrame({"time_s": f["time_s"], "value": f[column] * scale, "run": name})
             for name, f in frames.items() if column in f]
    data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"time_s": [], "value": [], "run": []})
    data = data[np.isfinite(data["value"].to_numpy(dtype=float))]
    return alt.Chart(data).mark_line(interpolate="step-after" if step else "linear", strokeWidth=1.5).encode(
        x=alt.X("time_s:Q", title=x_title),
        y=alt.Y("value:Q", title=title),
        color=alt.Color("run:N", scale=RUN_COLORS if set(data["run"]) <= {"baseline", "candidate"} else PALETTE,
                        legend=_legend(columns=legend_columns)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("time_s:Q", title="time (s)", format=",.2f"),
                 alt.Tooltip("value:Q", title=title, format=",.3f")],
    ).properties(height=height)


def lines(data: pd.DataFrame, x: str, x_title: str, y: str, y_title: str, color: str, color_title: str,
          *, log_x: bool = False, log_y: bool = False, height: int = HEIGHT, legend: bool = True,
          whole_x: bool = False) -> alt.Chart:
    """A line per value of ``color`` with points, for small sweeps (``whole_x``: x ticks on whole numbers)."""
    axis = alt.Axis(format="d", tickMinStep=1) if whole_x else alt.Axis()
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(type="log", base=2) if log_x else alt.Scale(zero=False),
                axis=axis),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=True)),
        color=alt.Color(f"{color}:N", title=color_title, scale=PALETTE,
                        legend=_legend(color_title) if legend else None),
        tooltip=[alt.Tooltip(f"{color}:N", title=color_title), alt.Tooltip(f"{x}:Q", title=x_title),
                 alt.Tooltip(f"{y}:Q", title=y_title, format=",.3f")],
    ).properties(height=height)


def long_lines(data: pd.DataFrame, x: str, x_title: str, columns: dict[str, str], y_title: str,
               *, scale: float = 1.0, height: int = 300, dashed: tuple[str, ...] = ()) -> alt.Chart:
    """Several columns of one frame as labelled lines (theory and simulation curves)."""
    long = data.melt(id_vars=[x], value_vars=list(columns), var_name="curve", value_name="value")
    long["value"] = long["value"] * scale
    long["curve"] = long["curve"].map(columns)
    long["style"] = np.where(long["curve"].isin([columns[c] for c in dashed]), "theory", "simulation")
    long = long[np.isfinite(long["value"].to_numpy(dtype=float))]
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(type="log")),
        color=alt.Color("curve:N", title=None, scale=PALETTE, legend=_legend(columns=2)),
        strokeDash=alt.StrokeDash("style:N", title=None, legend=None,
                                  scale=alt.Scale(domain=["theory", "simulation"], range=[[5, 3], [1, 0]])),
        tooltip=[alt.Tooltip("curve:N"), alt.Tooltip(f"{x}:Q", title=x_title, format=",.0f"),
                 alt.Tooltip("value:Q", title=y_title, format=",.3f")],
    ).properties(height=height)


def bars(data: pd.DataFrame, x: str, x_title: str, y: str, y_title: str, height: int = HEIGHT) -> alt.Chart:
    return alt.Chart(data).mark_bar().encode(
        x=alt.X(f"{x}:O", title=x_title),
        y=alt.Y(f"{y}:Q", title=y_title),
        tooltip=[alt.Tooltip(f"{x}:O", title=x_title), alt.Tooltip(f"{y}:Q", title=y_title, format=",.3f")],
    ).properties(height=height)


def with_rule(chart: alt.Chart, y: float, label: str) -> alt.LayerChart:
    """``chart`` with a dashed horizontal line at ``y`` (an objective, in the chart's units)."""
    rule = alt.Chart(pd.DataFrame({"y": [y], "label": [label]})).mark_rule(strokeDash=[4, 3], color="#444").encode(
        y="y:Q", tooltip=[alt.Tooltip("label:N", title=""), alt.Tooltip("y:Q", title="value", format=",.3g")])
    return chart + rule


def memory_bars(frame: pd.DataFrame, chosen_tp: int, height_per_bar: int = 44) -> alt.Chart:
    """One horizontal bar per tensor-parallel degree: one GPU's memory stacked by part (GiB), the chosen
    degree marked."""
    data = frame.assign(label=frame["tp"] + np.where(frame["tensor_parallel"] == chosen_tp, " (chosen)", ""))
    parts = list(dict.fromkeys(frame.sort_values("order")["part"]))
    colors = ["#4c78a8", "#f58518", "#9d9d9d", "#54a24b", "#e0e0e0"][:len(parts)]
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("label:N", title=None, sort=list(dict.fromkeys(data["label"]))),
        x=alt.X("gib:Q", title="memory of one GPU (GiB)", stack="zero"),
        color=alt.Color("part:N", title=None, scale=alt.Scale(domain=parts, range=colors), legend=_legend()),
        order=alt.Order("order:Q"),
        tooltip=[alt.Tooltip("label:N", title="replica"), alt.Tooltip("part:N"),
                 alt.Tooltip("gib:Q", title="GiB", format=",.2f")],
    ).properties(height=alt.Step(height_per_bar))
