"""A small SVG builder for the book's figures: shapes and text with classes, escaped, in a viewBox.

Figures are drawn in user units on a fixed-width canvas (WIDE for the text column, NARROW
for phones) and scale with `width: 100%`; colours come from classes styled in
static/css/figures.css, so one drawing suits the light and the dark theme. No scripts, no
ids (a page may hold a figure twice): the accessible name is `aria-label` plus `<title>`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

WIDE = 640  # user units of a figure drawn for the text column (≈ 1 px per unit on a desktop)
NARROW = 360  # user units of a figure drawn for a phone (≈ 1 px per unit at 360–390 px)
CHAR_WIDTH = 0.56  # average advance of a system-ui character, in font sizes (for layout only)

TEXT_SIZES = {"ts": 11.5, "t": 13.0, "tl": 15.0}  # text classes -> font size in user units


def fmt(value: float) -> str:
    """A coordinate as short text: 12.0 -> '12', 3.14159 -> '3.14'."""
    if not math.isfinite(value):
        raise ValueError(f"coordinate: must be finite, got {value!r}")
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def text_width(text: str, size: float = TEXT_SIZES["t"]) -> float:
    """Approximate rendered width of `text` at `size` (enough to lay labels out, not to typeset)."""
    return len(text) * size * CHAR_WIDTH


def _attrs(pairs: Iterable[tuple[str, object]]) -> str:
    out = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        shown = fmt(value) if isinstance(value, float) else str(value)
        out.append(f' {key}="{escape(shown, quote=True)}"')
    return "".join(out)


@dataclass
class Svg:
    """An SVG drawing: add shapes, then `markup()` once. Text is escaped; classes carry style."""

    width: float
    height: float
    title: str
    description: str = ""
    css_class: str = ""
    parts: list[str] = field(default_factory=list)

    def _add(self, tag: str, attrs: Sequence[tuple[str, object]], content: str | None = None) -> None:
        if content is None:
            self.parts.append(f"<{tag}{_attrs(attrs)}/>")
        else:
            self.parts.append(f"<{tag}{_attrs(attrs)}>{content}</{tag}>")

    # --- shapes ----------------------------------------------------------------------
    def rect(self, x: float, y: float, w: float, h: float, cls: str, rx: float = 0.0, tip: str = "") -> None:
        """A rectangle; `tip` becomes a hover tooltip (an SVG <title> child)."""
        attrs = [("x", float(x)), ("y", float(y)), ("width", float(max(w, 0.0))), ("height", float(max(h, 0.0))),
                 ("rx", float(rx) if rx else None), ("class", cls)]
        self._add("rect", attrs, f"<title>{escape(tip)}</title>" if tip else None)

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str) -> None:
        self._add("line", [("x1", float(x1)), ("y1", float(y1)), ("x2", float(x2)), ("y2", float(y2)), ("class", cls)])

    def polyline(self, points: Sequence[tuple[float, float]], cls: str) -> None:
        self._add("polyline", [("points", " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)), ("class", cls)])

    def polygon(self, points: Sequence[tuple[float, float]], cls: str) -> None:
        self._add("polygon", [("points", " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)), ("class", cls)])

    def path(self, d: str, cls: str) -> None:
        self._add("path", [("d", d), ("class", cls)])

    def circle(self, cx: float, cy: float, r: float, cls: str) -> None:
        self._add("circle", [("cx", float(cx)), ("cy", float(cy)), ("r", float(r)), ("class", cls)])

    def arrow(self, x1: float, y1: float, x2: float, y2: float, cls: str = "arrow", head: float = 6.0) -> None:
        """A line from (x1, y1) ending in a filled arrowhead at (x2, y2)."""
        length = math.hypot(x2 - x1, y2 - y1)
        if length == 0:
            return
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        bx, by = x2 - ux * head, y2 - uy * head
        self.line(x1, y1, bx, by, cls)
        half = head * 0.55
        self.polygon([(x2, y2), (bx - uy * half, by + ux * half), (bx + uy * half, by - ux * half)], f"{cls}-head")

    # --- text --------------------------------------------------------------------------
    def text(self, x: float, y: float, content: str, cls: str = "t", anchor: str = "start",
             rotate: float | None = None) -> None:
        """One line of text, its baseline at y. `anchor`: start | middle | end."""
        if anchor not in ("start", "middle", "end"):
            raise ValueError(f"anchor: must be start, middle or end, got {anchor!r}")
        transform = f"rotate({fmt(rotate)} {fmt(x)} {fmt(y)})" if rotate else None
        self._add("text", [("x", float(x)), ("y", float(y)), ("class", cls),
                           ("text-anchor", anchor if anchor != "start" else None), ("transform", transform)],
                  escape(content, quote=False))

    def lines(self, x: float, y: float, rows: Sequence[str], cls: str = "t", anchor: str = "start",
              leading: float = 1.3) -> float:
        """Several lines of text from baseline y; returns the baseline after the last line."""
        size = TEXT_SIZES.get(cls.split()[0], TEXT_SIZES["t"])
        for i, row in enumerate(rows):
            self.text(x, y + i * size * leading, row, cls, anchor)
        return y + len(rows) * size * leading

    def mark(self) -> int:
        """A position in the drawing order, for `behind`."""
        return len(self.parts)

    def behind(self, mark: int, draw: Callable[[Svg], None]) -> None:
        """Draw with `draw` underneath everything added since `mark` (backgrounds sized after the fact)."""
        layer = Svg(self.width, self.height, self.title)
        draw(layer)
        self.parts[mark:mark] = layer.parts

    def markup(self) -> Markup:
        """The finished <svg>: viewBox, role=img, accessible name and description, no scripts."""
        head = _attrs([
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("viewBox", f"0 0 {fmt(self.width)} {fmt(self.height)}"),
            ("class", f"fig-svg {self.css_class}".strip()),
            ("role", "img"),
            ("aria-label", self.title),
        ])
        desc = f"<desc>{escape(self.description, quote=False)}</desc>" if self.description else ""
        body = "".join(self.parts)
        return Markup(f"<svg{head}><title>{escape(self.title, quote=False)}</title>{desc}{body}</svg>")


def wrap(text: str, width: float, size: float = TEXT_SIZES["t"]) -> list[str]:
    """Greedy word wrap of `text` into lines no wider than `width` user units (by estimate)."""
    rows: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and text_width(candidate, size) > width:
            rows.append(current)
            current = word
        else:
            current = candidate
    if current:
        rows.append(current)
    return rows
