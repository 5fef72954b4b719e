"""Drawing pieces several figures share: labelled boxes, matrices, legends, stacked bars, axes.

Presentation only: every length passed in was computed from `calculators` numbers by the
figure that calls these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from calculators.architectures import LinearModule, get_architecture
from calculators.gpus import Gpu

from app.figures.svg import TEXT_SIZES, Svg, text_width
from app.formatting import GIB


def linear_module(model: str, name: str) -> LinearModule:
    """The model's linear module kind called `name` (peft's suffix or its path); ValueError lists the names."""
    arch = get_architecture(model)
    for module in arch.linear_modules():
        if name in (module.name, module.path):
            return module
    names = ", ".join(m.path or m.name for m in arch.linear_modules() if m.group in ("attention", "mlp"))
    raise ValueError(f"module: {name!r} is not a linear module of {arch.slug}; choose from {names}")


def box(svg: Svg, x: float, y: float, w: float, h: float, cls: str, label: Sequence[str] | str = (),
        text_cls: str = "t", rx: float = 6.0, title_first: bool = False) -> None:
    """A rounded box with centred lines of text (the first in bold with `title_first`)."""
    svg.rect(x, y, w, h, cls, rx=rx)
    rows = [label] if isinstance(label, str) else list(label)
    if not rows:
        return
    size = TEXT_SIZES[text_cls.split()[0]]
    leading = size * 1.25
    first = y + h / 2 - (len(rows) - 1) * leading / 2 + size * 0.35
    for i, row in enumerate(rows):
        bold = " tb" if title_first and i == 0 and len(rows) > 1 else ""
        svg.text(x + w / 2, first + i * leading, row, text_cls + bold, anchor="middle")


def dimension(svg: Svg, x1: float, y1: float, x2: float, y2: float, label: str, side: str = "above") -> None:
    """A dimension line with end ticks and its label (side: above | below | left | right)."""
    svg.line(x1, y1, x2, y2, "dim")
    if y1 == y2:  # horizontal
        svg.line(x1, y1 - 4, x1, y1 + 4, "dim")
        svg.line(x2, y2 - 4, x2, y2 + 4, "dim")
        ty = y1 - 6 if side == "above" else y1 + 15
        svg.text((x1 + x2) / 2, ty, label, "ts tm", anchor="middle")
    else:  # vertical
        svg.line(x1 - 4, y1, x1 + 4, y1, "dim")
        svg.line(x2 - 4, y2, x2 + 4, y2, "dim")
        if side == "left":
            svg.text(x1 - 7, (y1 + y2) / 2 + 4, label, "ts tm", anchor="end")
        else:
            svg.text(x1 + 7, (y1 + y2) / 2 + 4, label, "ts tm")


def legend(svg: Svg, x: float, y: float, items: Sequence[tuple[str, str]], max_width: float,
           swatch: float = 11.0) -> float:
    """Swatches with labels, wrapped into rows within max_width; returns the y below the legend."""
    cx, cy = x, y
    row_height = 18.0
    for cls, label in items:
        item_width = swatch + 6 + text_width(label, TEXT_SIZES["ts"]) + 14
        if cx > x and cx + item_width > x + max_width:
            cx, cy = x, cy + row_height
        svg.rect(cx, cy, swatch, swatch, cls, rx=2)
        svg.text(cx + swatch + 5, cy + swatch - 1.5, label, "ts")
        cx += item_width
    return cy + row_height


def gpu_guides(svg: Svg, mark: int, gpus: Sequence[Gpu], x0: float, scale: float, top: float, bottom: float,
               short_labels: bool) -> None:
    """Dotted lines at each GPU's memory on a bar chart (x0 + bytes × scale), drawn behind what was drawn
    since `mark`, labelled above `top` (staggered; "80 GiB" rather than the card's name with `short_labels`)."""
    def draw(layer: Svg) -> None:
        for i, gpu in enumerate(gpus):
            gx = x0 + gpu.memory_bytes * scale
            layer.line(gx, top - 8 - (i % 2) * 13, gx, bottom, "guide")
            label = f"{gpu.memory_bytes // GIB} GiB" if short_labels else gpu.name
            layer.text(gx, top - 12 - (i % 2) * 13, label, "ts tm", anchor="end" if gx > svg.width - 60 else "middle")

    svg.behind(mark, draw)


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `high` (1, 2, 2.5 or 5 times a power of ten)."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < high - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def tick_label(value: float) -> str:
    return f"{value:g}" if value < 1e4 else f"{value:,.0f}"
