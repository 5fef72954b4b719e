"""Helpers for the book's Python cells: `check(...)`, `plot_xy(...)` and `plot.line/bar/hist`.

One module, two hosts. In the browser the cell worker loads it into Pyodide and sets
`sink` to a function that posts the figure to the page, where Plotly draws it in the
book's theme. The test suite imports it by path in CPython and sets `sink` to a recorder
(tests/app/test_cells_execute.py), so every chapter's cells run against the same API.

A figure is plain data (a dict of lists, JSON-serialisable): the page only draws it. Any
arithmetic (histogram bins) happens here, in Python, never in JavaScript.

`check` is how a cell proves what it shows: it compares a number the cell computed from
scratch with the book's `calculators` (or states an identity), prints a visible
"✓ ..." line when they agree and stops the cell with a `CheckFailed` naming both numbers
when they do not. The test suite runs every cell, so a wrong number fails the build.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from typing import Any

__all__ = ["check", "CheckFailed", "plot", "plot_xy", "sink", "figures"]

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


# ---------------------------------------------------------------------------------- checks


class CheckFailed(AssertionError):
    """A cell's result disagrees with what it is checked against."""


def _show(value: Any) -> str:
    """A number as a reader expects it: integers with thousands separators, floats to 6 significant digits."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        return f"{float(value):.6g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _close(value: float, expected: float, rel: float, atol: float) -> bool:
    return math.isclose(float(value), float(expected), rel_tol=rel, abs_tol=atol)


def check(label: str, value: Any, expected: Any = True, *, rel: float = 1e-9, atol: float = 0.0,
          source: str = "calculators") -> None:
    """Print `✓ label: value (calculators: expected)` when `value` matches `expected`; raise CheckFailed otherwise.

    Numbers match within `rel` (relative) or `atol` (absolute) tolerance, as in `math.isclose`;
    sequences (lists, tuples, numpy arrays) match element by element. Without `expected` the
    value is a condition that must be true, such as `np.allclose(merged, unmerged)`, and the
    line is just `✓ label`. `source` names what the number is checked against.
    """
    if not isinstance(label, str) or not label:
        raise ValueError("label: describe what is checked, e.g. 'LoRA parameters at r=8'")
    if rel < 0 or atol < 0:
        raise ValueError("rel and atol must not be negative")
    if isinstance(expected, bool):
        if bool(value) is not expected:
            raise CheckFailed(f"✗ {label}: this is {not expected}")
        print(f"✓ {label}")
        return
    tolerance = f"relative {rel:g}" + (f" or absolute {atol:g}" if atol else "")
    if _is_number(expected):
        if not _is_number(value):
            raise CheckFailed(f"✗ {label}: expected a number, the cell computed {value!r}")
        if not _close(value, expected, rel, atol):
            raise CheckFailed(
                f"✗ {label}: the cell computed {_show(value)}, but {source} gives {_show(expected)} (allowed: {tolerance})"
            )
        print(f"✓ {label}: {_show(value)} ({source}: {_show(expected)})")
        return
    ours, theirs = _floats(value, "value"), _floats(expected, "expected")
    if len(ours) != len(theirs):
        raise CheckFailed(f"✗ {label}: the cell computed {len(ours)} values, {source} gives {len(theirs)}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a is None or b is None or not _close(a, b, rel, atol):
            raise CheckFailed(
                f"✗ {label}: value {i} is {_show(a)}, but {source} gives {_show(b)} (allowed: {tolerance})"
            )
    if len(ours) <= 4:
        print(f"✓ {label}: {', '.join(map(_show, ours))} ({source}: {', '.join(map(_show, theirs))})")
    else:
        print(f"✓ {label}: all {len(ours)} values match {source}")
