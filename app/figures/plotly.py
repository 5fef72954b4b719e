"""Plotly figure specs (plain dicts) from series the calculators computed.

Presentation only: trace kinds, colours, axis titles, hover text. The browser applies the
theme's text and grid colours (static/js/instruments.js), so figures suit light and dark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PALETTE = ("#6d5bd0", "#2a9d8f", "#e76f51", "#3a86ff", "#f4a261", "#8d99ae", "#d1495b", "#43aa8b", "#b56576", "#577590")


def _layout(xaxis: dict[str, Any], yaxis: dict[str, Any], **extra: Any) -> dict[str, Any]:
    if "title" in extra:  # left-aligned: a centred title is clipped on both sides of a narrow plot
        extra["title"] = {"x": 0, "xanchor": "left", "xref": "paper", **extra["title"]}
    return {
        "margin": {"l": 60, "r": 16, "t": 36, "b": 48},
        "height": 320,
        "xaxis": {"automargin": True, **xaxis},
        "yaxis": {"automargin": True, **yaxis},
        "legend": {"orientation": "h", "x": 0, "y": -0.4, "yanchor": "top"},
        **extra,
    }


def stacked_bar(title: str, categories: Sequence[str], stacks: Sequence[tuple[str, Sequence[float]]],
                axis_title: str, hover_unit: str = "", vlines: Sequence[tuple[float, str]] = ()) -> dict[str, Any]:
    """One horizontal bar per category, stacked by component (e.g. the memory breakdown);
    all-zero components are left out. `vlines`: labelled reference levels (GPU sizes)."""
    data = [
        {"type": "bar", "orientation": "h", "name": name, "y": list(categories), "x": list(values),
         "marker": {"color": PALETTE[i % len(PALETTE)]},
         "hovertemplate": f"{name}: %{{x:.2f}} {hover_unit}<extra></extra>"}
        for i, (name, values) in enumerate(stacks)
        if any(values)
    ]
    lines = [vline(x, label) for x, label in vlines]
    for i, (_, note) in enumerate(lines):  # neighbouring labels (24 and 48 GB) alternate heights instead of overlapping
        note["yshift"] = 13 * (i % 2)
    # The unit goes in the title: an axis title under horizontal bars collides with the legend.
    layout = _layout({}, {"autorange": "reversed"}, barmode="stack",
                     title={"text": f"{title} ({axis_title})", "font": {"size": 14}}, height=300 + 40 * len(categories),
                     shapes=[s for s, _ in lines], annotations=[a for _, a in lines])
    layout["margin"] = {**layout["margin"], "t": 72}
    layout["legend"] = {**layout["legend"], "y": -0.15, "font": {"size": 11}, "traceorder": "normal"}
    return {"data": data, "layout": layout}


def bars(title: str, labels: Sequence[str], values: Sequence[float], yaxis_title: str,
         text: Sequence[str] | None = None, show_text: bool = True) -> dict[str, Any]:
    """Vertical bars; `text` labels each bar (or, with show_text=False, only its hover)."""
    trace: dict[str, Any] = {"type": "bar", "x": list(labels), "y": list(values), "marker": {"color": PALETTE[0]}}
    if text is not None:
        trace.update(text=list(text), hovertemplate="%{x}: %{text}<extra></extra>")
        trace.update(textposition="auto" if show_text else "none")
    return {"data": [trace], "layout": _layout({}, {"title": {"text": yaxis_title}}, title={"text": title, "font": {"size": 14}}, showlegend=False)}


def lines(title: str, series: Sequence[dict[str, Any]], xaxis: dict[str, Any], yaxis: dict[str, Any],
          shapes: Sequence[dict[str, Any]] = (), annotations: Sequence[dict[str, Any]] = (),
          height: int = 320) -> dict[str, Any]:
    """Line/marker traces; each series dict has name, x, y and optional mode, dash, text."""
    data = []
    for i, s in enumerate(series):
        trace = {
            "type": "scatter", "mode": s.get("mode", "lines+markers"), "name": s["name"], "x": list(s["x"]), "y": list(s["y"]),
            "line": {"color": s.get("color", PALETTE[i % len(PALETTE)]), "width": 2.5, "dash": s.get("dash", "solid")},
            "marker": {"size": s.get("marker_size", 6)},
        }
        if "text" in s:
            trace["text"] = list(s["text"])
            trace["hovertemplate"] = "%{text}<extra>" + s["name"] + "</extra>"
        data.append(trace)
    layout = _layout(xaxis, yaxis, title={"text": title, "font": {"size": 14}}, shapes=list(shapes),
                     annotations=list(annotations), height=height)
    return {"data": data, "layout": layout}


def hline(y: float, label: str, color: str = "#8d99ae", log_axis: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A labelled horizontal reference line (e.g. a GPU's memory). On a log axis Plotly places
    annotations at log10 of the value, shapes at the value itself."""
    at = math.log10(y) if log_axis else y
    shape = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y, "line": {"color": color, "width": 1, "dash": "dot"}}
    note = {"xref": "paper", "x": 0.0, "y": at, "xanchor": "left", "yanchor": "bottom", "text": label, "showarrow": False,
            "font": {"size": 10, "color": color}}
    return shape, note


def vline(x: float, label: str, color: str = "#8d99ae") -> tuple[dict[str, Any], dict[str, Any]]:
    """A labelled vertical reference line (e.g. a GPU's memory on a horizontal bar chart)."""
    shape = {"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": x, "x1": x, "line": {"color": color, "width": 1, "dash": "dot"}}
    note = {"yref": "paper", "y": 1.0, "x": x, "xanchor": "left", "yanchor": "bottom", "text": label, "showarrow": False,
            "textangle": 0, "font": {"size": 10, "color": color}}
    return shape, note


def nf4_levels_figure(bins: Any, density: Any) -> dict[str, Any]:
    """The N(0,1) density with the 16 NF4 levels and their equal-probability bins.

    The x axis is in the code book's normalized units (z / z_max), where the levels live.
    """
    scale = 1.0 / bins.z_max  # z -> normalized units, a change of axis units only
    x = [z * scale for z in density.z]
    y = [p * bins.z_max for p in density.pdf]  # density per normalized unit
    shapes = []
    for i in range(len(bins.bin_edges) - 1):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": bins.bin_edges[i], "x1": bins.bin_edges[i + 1],
                       "y0": 0, "y1": 1, "line": {"width": 0}, "fillcolor": PALETTE[0], "opacity": 0.05 if i % 2 else 0.11,
                       "layer": "below"})
    level_trace = {"type": "scatter", "mode": "markers", "name": "NF4 levels", "x": list(bins.levels), "y": [0.0] * len(bins.levels),
                   "marker": {"size": 10, "color": PALETTE[2], "symbol": "line-ns-open", "line": {"width": 3}},
                   "customdata": [[i, p] for i, p in enumerate(bins.bin_probabilities)],
                   "hovertemplate": "level %{customdata[0]}: %{x:.4f}<br>bin mass %{customdata[1]:.3f}<extra></extra>"}
    curve = {"type": "scatter", "mode": "lines", "name": "N(0,1) density", "x": x, "y": y, "line": {"color": PALETTE[0], "width": 2.5},
             "hoverinfo": "skip"}
    return {"data": [curve, level_trace],
            "layout": _layout({"title": {"text": "normalized weight (value / block absmax)"}, "range": [-1.05, 1.05]},
                              {"title": {"text": "probability density"}, "rangemode": "tozero"},
                              title={"text": "16 levels, equal probability mass each", "font": {"size": 14}}, shapes=shapes)}


def error_histograms(histograms: Sequence[tuple[str, Sequence[float], Sequence[int]]]) -> dict[str, Any]:
    """Histograms of quantization error, one outline per code book (bin edges precomputed).

    Step outlines rather than overlaid bars: three translucent bar sets blend into colours no
    legend names. The y axis is the share of the sample in each bin, so the code books compare
    at any sample size.
    """
    data = []
    dashes = ("solid", "dash", "dot")
    for i, (name, edges, counts) in enumerate(histograms):
        total = sum(counts) or 1
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        data.append({"type": "scatter", "mode": "lines", "name": name, "x": centres, "y": [c / total for c in counts],
                     "line": {"shape": "hvh", "width": 2.5, "color": PALETTE[i % len(PALETTE)], "dash": dashes[i % 3]},
                     "hovertemplate": "%{y:.1%} of values err by %{x:.3f}<extra>" + name + "</extra>"})
    return {"data": data, "layout": _layout({"title": {"text": "error: dequantized − original (σ units)"}, "zeroline": True},
                                            {"title": {"text": "share of values"}, "tickformat": ".0%", "rangemode": "tozero"},
                                            title={"text": "Quantization error", "font": {"size": 14}})}
