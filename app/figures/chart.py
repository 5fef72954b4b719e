"""Axes for the few figures that are charts: linear or log scales, ticks, grid and labels.

A `Chart` maps data values to user units inside a plot area of an `Svg`; the figure draws
its marks through `x()` and `y()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.figures.parts import nice_ticks, tick_label
from app.figures.svg import Svg


@dataclass(frozen=True)
class Scale:
    """Data interval [low, high] onto user units [start, end] (end < start for a y axis)."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.high > self.low or (self.log and self.low <= 0):
            raise ValueError(f"scale: need 0 < low < high on a log axis and low < high otherwise, got {self.low}, {self.high}")

    def __call__(self, value: float) -> float:
        if self.log:
            t = (math.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        else:
            t = (value - self.low) / (self.high - self.low)
        return self.start + t * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            first, last = math.ceil(math.log10(self.low) - 1e-9), math.floor(math.log10(self.high) + 1e-9)
            step = max(1, math.ceil((last - first + 1) / (count + 1)))
            return [10.0**e for e in range(first, last + 1, step)]
        return [t for t in nice_ticks(self.high, count) if self.low - 1e-9 <= t <= self.high + 1e-9]


def power_label(value: float) -> str:
    """10**e as text: 1, 10, 100, 0.1, 1e-3 (compact enough for an axis)."""
    exponent = round(math.log10(value))
    if -2 <= exponent <= 3:
        return f"{value:g}"
    return f"1e{exponent}"


@dataclass
class Chart:
    svg: Svg
    x: Scale
    y: Scale

    def frame(self, x_title: str, y_title: str, x_ticks: Sequence[float] | None = None,
              x_fmt: Callable[[float], str] = tick_label, y_fmt: Callable[[float], str] | None = None,
              grid: bool = True) -> None:
        """Axes with ticks and grid lines, the y title above the axis (never rotated)."""
        svg = self.svg
        y_fmt = y_fmt or (power_label if self.y.log else tick_label)
        left, right = self.x.start, self.x.end
        bottom, top = self.y.start, self.y.end
        for value in self.y.ticks():
            yy = self.y(value)
            if grid:
                svg.line(left, yy, right, yy, "grid")
            svg.text(left - 6, yy + 4, y_fmt(value), "ts tm", anchor="end")
        for value in (x_ticks if x_ticks is not None else self.x.ticks()):
            xx = self.x(value)
            svg.line(xx, bottom, xx, bottom + 4, "axis")
            svg.text(xx, bottom + 17, x_fmt(value), "ts tm", anchor="middle")
        svg.line(left, bottom, right, bottom, "axis")
        svg.line(left, top, left, bottom, "axis")
        svg.text(left, top - 10, y_title, "ts tb")
        svg.text(right, bottom + 34, x_title, "ts tb", anchor="end")

    def polyline(self, points: Sequence[tuple[float, float]], cls: str) -> None:
        self.svg.polyline([(self.x(a), self.y(b)) for a, b in points], cls)
