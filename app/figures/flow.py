"""Drawing a data flow once for two layouts: left-to-right for the text column, top-to-bottom for a phone.

Positions are given in flow coordinates, `u` along the flow and `v` across it; a horizontal
flow maps (u, v) to (x, y), a vertical one to (v, u). Text stays upright in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.figures.parts import box
from app.figures.svg import Svg


@dataclass
class Flow:
    svg: Svg
    vertical: bool

    def at(self, u: float, v: float) -> tuple[float, float]:
        return (v, u) if self.vertical else (u, v)

    def rect(self, u: float, v: float, du: float, dv: float, cls: str, label: Sequence[str] | str = (),
             text_cls: str = "t", rx: float = 6.0) -> None:
        """A box spanning [u, u+du] along the flow and [v, v+dv] across it."""
        x, y = self.at(u, v)
        w, h = (dv, du) if self.vertical else (du, dv)
        box(self.svg, x, y, w, h, cls, label, text_cls, rx)

    def trapezoid(self, u: float, v_mid: float, du: float, dv_start: float, dv_end: float, cls: str) -> None:
        """A shape whose width across the flow goes from dv_start to dv_end: a projection down or up."""
        points = [(u, v_mid - dv_start / 2), (u + du, v_mid - dv_end / 2), (u + du, v_mid + dv_end / 2),
                  (u, v_mid + dv_start / 2)]
        self.svg.polygon([self.at(a, b) for a, b in points], cls)

    def arrow(self, u1: float, v1: float, u2: float, v2: float, cls: str = "arrow") -> None:
        self.svg.arrow(*self.at(u1, v1), *self.at(u2, v2), cls=cls)

    def elbow(self, u1: float, v1: float, u2: float, v2: float, cls: str = "arrow") -> None:
        """An arrow that runs across the flow first, then along it (a branch)."""
        self.svg.polyline([self.at(u1, v1), self.at(u1, v2)], cls)
        self.arrow(u1, v2, u2, v2, cls)

    def text(self, u: float, v: float, content: str, cls: str = "t", anchor: str = "middle",
             vertical_anchor: str | None = None, dy: float = 0.0) -> None:
        """Text at (u, v), its baseline moved down by dy on screen (in either layout);
        `vertical_anchor` overrides the anchor in the top-to-bottom layout."""
        x, y = self.at(u, v)
        self.svg.text(x, y + dy, content, cls, vertical_anchor if self.vertical and vertical_anchor else anchor)

    def polyline(self, points: list[tuple[float, float]], cls: str = "arrow") -> None:
        self.svg.polyline([self.at(u, v) for u, v in points], cls)

    def circle(self, u: float, v: float, r: float, cls: str) -> None:
        self.svg.circle(*self.at(u, v), r, cls)
