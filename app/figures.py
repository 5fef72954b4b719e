"""Plotly figure specs (plain dicts) from series the calculators computed.

Presentation only: trace kinds, colours, axis titles, hover text. The browser applies the
theme's text and grid colours (static/js/instruments.js), so figures suit light and dark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PALETTE = ("#6d5bd0", "#2a9d8f", "#e76f51", "#3a86ff", "#f4a261", "#8d99ae", "#d1495b", "#43aa8b", "#b56576", "#577590")


def _layout(xaxis: dict[str, Any], yaxis: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "margin": {"l": 60, "r": 16, "t": 36, "b": 48},
        "height": 320,
        "xaxis": {"automargin": True, **xaxis},
        "yaxis": {"automargin": True, **yaxis},
        "legend": {"orientation": "h", "y": -0.22},
        **extra,
    }


def stacked_bar(title: str, categories: Sequence[str], stacks: Sequence[tuple[str, Sequence[float]]],
                yaxis_title: str, hover_unit: str = "") -> dict[str, Any]:
    """One bar per category, stacked by component (e.g. the memory breakdown)."""
    data = [
        {"type": "bar", "name": name, "x": list(categories), "y": list(values), "marker": {"color": PALETTE[i % len(PALETTE)]},
         "hovertemplate": f"{name}: %{{y:.2f}} {hover_unit}<extra></extra>"}
        for i, (name, values) in enumerate(stacks)
    ]
    return {"data": data, "layout": _layout({}, {"title": {"text": yaxis_title}}, barmode="stack",
                                            title={"text": title, "font": {"size": 14}})}


def bars(title: str, labels: Sequence[str], values: Sequence[float], yaxis_title: str,
         text: Sequence[str] | None = None) -> dict[str, Any]:
    trace: dict[str, Any] = {"type": "bar", "x": list(labels), "y": list(values), "marker": {"color": PALETTE[0]}}
    if text is not None:
        trace.update(text=list(text), textposition="auto", hovertemplate="%{x}: %{text}<extra></extra>")
    return {"data": [trace], "layout": _layout({}, {"title": {"text": yaxis_title}}, title={"text": title, "font": {"size": 14}}, showlegend=False)}


def lines(title: str, series: Sequence[dict[str, Any]], xaxis: dict[str, Any], yaxis: dict[str, Any],
          shapes: Sequence[dict[str, Any]] = (), annotations: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
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
    return {"data": data, "layout": _layout(xaxis, yaxis, title={"text": title, "font": {"size": 14}},
                                            shapes=list(shapes), annotations=list(annotations))}


def hline(y: float, label: str, color: str = "#8d99ae") -> tuple[dict[str, Any], dict[str, Any]]:
    """A labelled horizontal reference line (e.g. a GPU's memory)."""
    shape = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y, "line": {"color": color, "width": 1, "dash": "dot"}}
    note = {"xref": "paper", "x": 0.0, "y": y, "xanchor": "left", "yanchor": "bottom", "text": label, "showarrow": False,
            "font": {"size": 10, "color": color}}
    return shape, note
