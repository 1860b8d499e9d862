"""Plotly figures (as plain dicts): the loss graph and the yaw x pitch heatmaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from swapd.dashboard.loss_history import LossSeries, examples_per_second, smooth, thin
from swapd.state import Mark

SIDE_COLORS = {"a": "#2563eb", "b": "#ea580c"}
COMPONENT_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot")
LR_COLOR = "#64748b"
EGS_COLOR = "#16a34a"
MARK_COLORS = {"rollback": "#b91c1c", "restore": "#7c3aed"}
SIDE_LABELS = {"a": "A", "b": "B"}


@dataclass(frozen=True)
class GraphOptions:
    """What the user chose to see (the job page's graph controls)."""

    sides: tuple[str, ...] = ("a", "b")
    components: tuple[str, ...] = ()  # e.g. "a.ssim", "b.eyes", "discriminator"
    smoothing: float = 0.9  # faceswap's default
    scale: str = "log"  # log | linear
    last: int = 0  # only the last N iterations (0 = all)
    learning_rate: bool = False
    egs: bool = False


def empty_figure(message: str) -> dict[str, Any]:
    return {"data": [], "layout": {
        "template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 20, "b": 40},
        "xaxis": {"visible": False}, "yaxis": {"visible": False},
        "annotations": [{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                         "x": 0.5, "y": 0.5, "font": {"size": 15, "color": "#64748b"}}],
    }}


REGIONS = ("eyes", "mouth", "mask", "true_face")  # the other parts are the face's loss functions


def component_label(name: str) -> str:
    """'a.ssim' -> 'A face: ssim', 'b.eyes' -> 'B eyes', 'discriminator' -> 'true face
    discriminator'."""
    if name == "discriminator":
        return "true face discriminator"
    side, _, part = name.partition(".")
    shown = part.replace("_", " ") if part in REGIONS else f"face: {part}"
    return f"{SIDE_LABELS.get(side, side)} {shown}"


def loss_figure(job: str, series: LossSeries, options: GraphOptions, batch_size: int,
                marks: list[Mark]) -> dict[str, Any]:
    """Loss per side (and the chosen components) against iteration, smoothed over every row
    first, then thinned; the learning rate and EG/s on axes of their own; rollbacks and
    restores as marked lines."""
    if len(series) == 0:
        return empty_figure("No loss history yet: it appears once training starts")
    keep = np.arange(len(series))
    if options.last > 0:
        keep = np.flatnonzero(series.iteration >= series.iteration[-1] - options.last)
    picked = keep[thin(len(keep))]
    x = series.iteration[picked].tolist()
    traces = []
    for side in options.sides:
        if side in series.values:
            traces += _loss_traces(x, series.values[side], picked, options.smoothing,
                                   f"loss {SIDE_LABELS[side]}", SIDE_COLORS[side], "solid", 1.8)
    for k, name in enumerate(c for c in options.components if c in series.values):
        color = SIDE_COLORS.get(name.partition(".")[0], "#0f766e")
        traces += _loss_traces(x, series.values[name], picked, options.smoothing,
                               component_label(name), color,
                               COMPONENT_DASHES[k % len(COMPONENT_DASHES)], 1.3)
    right = []
    if options.learning_rate and np.isfinite(series.learning_rate).any():
        traces.append(_line(x, series.learning_rate[picked], "learning rate", LR_COLOR, "y2",
                            "dot", 1.4, ".3g"))
        right.append("y2")
    if options.egs:
        egs = examples_per_second(series, batch_size)
        if np.isfinite(egs).any():
            axis = "y3" if right else "y2"
            traces.append(_line(x, smooth(egs, options.smoothing)[picked], "EG/s", EGS_COLOR,
                                axis, "solid", 1.2, ".1f"))
            right.append(axis)
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "uirevision": f"{job}:{options.scale}:{options.last}",
        "margin": {"l": 60, "r": 20 + 60 * len(right), "t": 30, "b": 45},
        "xaxis": {"title": {"text": "iteration"}, "tickformat": ",d",
                  "domain": [0, 1 - 0.07 * max(0, len(right) - 1)]},
        "yaxis": {"title": {"text": "loss"}, "type": options.scale},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02,
                   "yanchor": "bottom"},
        "hovermode": "x unified",
        "shapes": [], "annotations": [],
    }
    titles = {"learning rate": "learning rate", "EG/s": "EG/s"}
    for k, axis in enumerate(right):
        name = next(t["name"] for t in traces if t.get("yaxis") == axis)
        layout["yaxis" + axis[1:]] = {
            "title": {"text": titles.get(name, name)}, "overlaying": "y", "side": "right",
            "showgrid": False, "anchor": "x" if k == 0 else "free",
            **({"position": 1.0} if k else {}),
            **({"type": "log", "exponentformat": "e"} if name == "learning rate" else {})}
    first = x[0] if x else 0
    for mark in marks:
        if mark.iteration < first:
            continue
        color = MARK_COLORS.get(mark.kind, "#475569")
        layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper",
                                 "x0": mark.iteration, "x1": mark.iteration, "y0": 0, "y1": 1,
                                 "line": {"color": color, "width": 1.2, "dash": "dash"}})
        reason = mark.info.get("reason") or mark.info.get("what") or ""
        layout["annotations"].append({
            "x": mark.iteration, "y": 1, "xref": "x", "yref": "paper", "showarrow": False,
            "yanchor": "bottom", "font": {"size": 10, "color": color},
            "text": f"{mark.kind}{': ' + reason if reason else ''}",
            "hovertext": _mark_hover(mark)})
    return {"data": traces, "layout": layout}


def _mark_hover(mark: Mark) -> str:
    details = ", ".join(f"{k} {v}" for k, v in mark.info.items())
    return f"{mark.kind} to iteration {mark.iteration:,}" + (f" ({details})" if details else "")


def _loss_traces(x: list[int], values: np.ndarray, picked: np.ndarray, amount: float,
                 name: str, color: str, dash: str, width: float) -> list[dict[str, Any]]:
    smoothed = smooth(values, amount)[picked]
    traces = []
    if amount > 0:  # the raw values faintly behind, as faceswap's graph shows them
        traces.append({**_line(x, values[picked], f"{name} (raw)", color, "y", dash, 0.8,
                               ".5f"), "opacity": 0.25, "showlegend": False,
                       "hoverinfo": "skip"})
    traces.append(_line(x, smoothed, name, color, "y", dash, width, ".5f"))
    return traces


def _line(x: list[int], y: np.ndarray, name: str, color: str, axis: str, dash: str,
          width: float, number: str) -> dict[str, Any]:
    values = [None if not np.isfinite(v) else float(v) for v in y]
    return {"type": "scattergl" if len(x) > 5000 else "scatter", "mode": "lines", "name": name,
            "x": x, "y": values, "yaxis": axis, "connectgaps": False,
            "line": {"color": color, "width": width, "dash": dash},
            "hovertemplate": f"{name} %{{y:{number}}}<extra></extra>"}


def pose_heatmap(cells: dict[str, Any], value: str, selected: tuple[float, float] | None = None
                 ) -> dict[str, Any]:
    """A yaw x pitch heatmap of ``value`` ("count" or "mean_loss") over cells from
    :func:`swapd.dashboard.tracker_reads.pose_cells`; ``selected`` (a cell's yaw and pitch low
    edges) is outlined."""
    if not cells["count"]:
        return empty_figure("No pose known for these faces")
    step = cells["cell"]
    z = cells[value]
    counts = cells["count"]
    label = "faces" if value == "count" else "mean loss"
    text = [[("" if n == 0 else (f"{n}" if value == "count" else
                                 ("" if v is None else f"{v:.3f}")))
             for n, v in zip(count_row, value_row, strict=True)]
            for count_row, value_row in zip(counts, z, strict=True)]
    z_shown = [[None if n == 0 else v for n, v in zip(count_row, value_row, strict=True)]
               for count_row, value_row in zip(counts, z, strict=True)]
    x = [low + step / 2 for low in cells["yaw"]]
    y = [low + step / 2 for low in cells["pitch"]]
    figure: dict[str, Any] = {
        "data": [{
            "type": "heatmap", "x": x, "y": y, "z": z_shown, "text": text,
            "texttemplate": "%{text}", "textfont": {"size": 10},
            "colorscale": "Blues" if value == "count" else "YlOrRd", "reversescale": True,
            "xgap": 1, "ygap": 1,
            "hoverongaps": False, "colorbar": {"title": {"text": label}, "thickness": 12},
            "customdata": [[[low_y, low_y + step, low_p, low_p + step, n]
                            for low_y, n in zip(cells["yaw"], count_row, strict=True)]
                           for low_p, count_row in zip(cells["pitch"], counts, strict=True)],
            "hovertemplate": ("yaw %{customdata[0]}° to %{customdata[1]}°, pitch "
                              "%{customdata[2]}° to %{customdata[3]}°<br>%{customdata[4]} "
                              "faces<br>" + label + " %{z}<extra>click to filter</extra>"),
        }],
        "layout": {
            "template": "plotly_white", "margin": {"l": 55, "r": 10, "t": 10, "b": 45},
            "xaxis": {"title": {"text": "yaw (°)"}, "dtick": step, "zeroline": False},
            "yaxis": {"title": {"text": "pitch (°)"}, "dtick": step, "zeroline": False},
            "clickmode": "event", "shapes": [],
        },
    }
    if selected is not None:
        figure["layout"]["shapes"].append({
            "type": "rect", "x0": selected[0], "x1": selected[0] + step, "y0": selected[1],
            "y1": selected[1] + step, "line": {"color": "#111827", "width": 2.5}})
    return figure
