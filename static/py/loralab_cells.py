"""Plot helpers for the book's Python cells: `plot_xy(...)` and `plot.line/bar/hist`.

One module, two hosts. In the browser the cell worker loads it into Pyodide and sets
`sink` to a function that posts the figure to the page, where Plotly draws it in the
book's theme. The test suite imports it by path in CPython and sets `sink` to a recorder
(tests/app/test_cells_execute.py), so every chapter's cells run against the same API.

A figure is plain data (a dict of lists, JSON-serialisable): the page only draws it. Any
arithmetic (histogram bins) happens here, in Python, never in JavaScript.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["plot", "plot_xy", "sink", "figures"]

# Where finished figures go: set by the host. Without one, figures are kept in `figures`.
sink: Callable[[str], None] | None = None
figures: list[dict[str, Any]] = []


def _floats(values: Any, what: str) -> list[float | None]:
    """A flat list of floats from a list, tuple, range or numpy array (NaN/inf -> None)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a sequence of numbers, got {type(values).__name__}")
    out: list[float | None] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            raise ValueError(f"{what} must be one-dimensional")
        f = float(v)
        out.append(f if math.isfinite(f) else None)
    return out


def _emit(figure: dict[str, Any]) -> None:
    """Hand a finished figure to the host. Returns None so a cell's last line shows nothing."""
    if sink is None:
        figures.append(figure)
    else:
        sink(json.dumps(figure, allow_nan=False))


def _figure(traces: list[dict], title: str, xlabel: str, ylabel: str, logy: bool = False, kind: str = "line") -> dict:
    return {
        "kind": kind,
        "traces": traces,
        "layout": {"title": str(title), "xlabel": str(xlabel), "ylabel": str(ylabel), "logy": bool(logy)},
    }


class Plot:
    """The `plot` object in every cell: line, bar and histogram figures."""

    def line(
        self,
        x: Any,
        y: Any,
        *more: Any,
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        logy: bool = False,
        labels: Sequence[str] | None = None,
        markers: bool = False,
    ) -> None:
        """`plot.line(x, y)` or several series: `plot.line(x, y1, y2, labels=["a", "b"])`.

        `y` may also be a list of series (each as long as `x`).
        """
        xs = _floats(x, "x")
        series = [y, *more]
        if not more and hasattr(y, "__len__") and len(y) and _is_sequence(_first(y)):
            series = list(y.tolist() if hasattr(y, "tolist") else y)
        traces = []
        for i, ys in enumerate(series):
            values = _floats(ys, "y")
            if len(values) != len(xs):
                raise ValueError(f"x has {len(xs)} values but series {i} has {len(values)}")
            if logy and any(v is not None and v <= 0 for v in values):
                raise ValueError("logy=True needs positive y values")
            name = labels[i] if labels and i < len(labels) else (f"series {i + 1}" if len(series) > 1 else "")
            traces.append({"type": "line", "x": xs, "y": values, "name": str(name), "markers": bool(markers)})
        _emit(_figure(traces, title, xlabel, ylabel, logy))

    def bar(
        self, labels: Sequence[Any], values: Any, *, title: str = "", xlabel: str = "", ylabel: str = "", logy: bool = False
    ) -> None:
        """`plot.bar(["q", "k", "v"], [1.0, 2.0, 3.0])`: one bar per label."""
        names = [str(label) for label in (labels.tolist() if hasattr(labels, "tolist") else labels)]
        heights = _floats(values, "values")
        if len(names) != len(heights):
            raise ValueError(f"{len(names)} labels but {len(heights)} values")
        trace = {"type": "bar", "x": names, "y": heights, "name": ""}
        _emit(_figure([trace], title, xlabel, ylabel, logy, kind="bar"))

    def hist(
        self, values: Any, bins: int = 30, *, title: str = "", xlabel: str = "", ylabel: str = "count", logy: bool = False
    ) -> None:
        """`plot.hist(samples, bins=40)`: counts in `bins` equal-width bins over [min, max]."""
        data = [v for v in _floats(values, "values") if v is not None]
        if not data:
            raise ValueError("plot.hist needs at least one finite value")
        if not isinstance(bins, int) or bins < 1:
            raise ValueError("bins must be a positive integer")
        lo, hi = min(data), max(data)
        width = (hi - lo) / bins if hi > lo else 1.0
        counts = [0] * bins
        for v in data:
            counts[min(int((v - lo) / width), bins - 1)] += 1
        centres = [lo + (i + 0.5) * width for i in range(bins)]
        trace = {"type": "hist", "x": centres, "y": [float(c) for c in counts], "width": width, "name": ""}
        _emit(_figure([trace], title, xlabel, ylabel, logy, kind="hist"))

    def __call__(self, x: Any, y: Any, **kwargs: Any) -> None:
        self.line(x, y, **kwargs)


def _first(values: Any) -> Any:
    return values[0]


def _is_sequence(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes))


plot = Plot()


def plot_xy(x: Any, y: Any, title: str = "", xlabel: str = "", ylabel: str = "", logy: bool = False, **kwargs: Any) -> None:
    """A line plot of y against x (y may be a list of series; see `plot.line`)."""
    plot.line(x, y, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy, **kwargs)
