"""The singular-value spectrum of a low-rank update plus noise, and what a rank-r truncation keeps.

Numbers from `calculators.lowrank` (the same construction as chapter 3's cell and the
svd-rank instrument); the error of the truncation is Eckart–Young's tail of the spectrum.
"""

from __future__ import annotations

import math

from pydantic import Field

from calculators import lowrank

from app.figures.chart import Chart, Scale
from app.figures.parts import legend
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg


class SpectrumQuery(FigureQuery):
    intrinsic_rank: int = Field(8, ge=1, le=32, description="Rank of the signal")
    noise: float = Field(0.05, ge=0.0, le=1.0, description="Noise-to-signal ratio (Frobenius)")
    size: int = Field(128, ge=16, le=256, description="The matrix is size × size")
    rank: int = Field(8, ge=1, le=64, description="Truncation rank r marked on the figure")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def _data(q: SpectrumQuery):
    update = lowrank.make_low_rank_update(q.size, q.size, q.intrinsic_rank,
                                          lowrank.noise_std_for_ratio(q.size, q.size, q.noise), q.seed)
    shown = min(q.size, max(4 * q.intrinsic_rank, q.rank + 8, 24))
    curve = lowrank.svd_error_curve(update.matrix, [q.rank])
    return update, curve.singular_values[:shown], curve.relative_errors[0]


def _svg(q: SpectrumQuery, width: float) -> Svg:
    update, sigma, error = _data(q)
    svg = Svg(width, 10, f"Singular values of a rank-{q.intrinsic_rank} matrix plus noise, truncated at r = {q.rank}")
    narrow = width < WIDE
    left, right = (44.0, width - 10) if narrow else (56.0, width - 16)
    top = legend(svg, 12, 6, [("kept", f"kept by a rank-{q.rank} truncation"), ("dropped", "discarded")], width - 24) + 26
    bottom = top + (190 if narrow else 210)
    positive = [s for s in sigma if s > 0]
    low = 10.0 ** math.floor(math.log10(min(positive)))
    chart = Chart(svg, Scale(1, len(sigma) + 1, left, right), Scale(low, max(positive) * 1.6, bottom, top, log=True))
    step = (right - left) / len(sigma)
    for i, s in enumerate(sigma):
        x = left + i * step + step * 0.15
        svg.rect(x, chart.y(max(s, low)), step * 0.7, bottom - chart.y(max(s, low)), "kept" if i < q.rank else "dropped")
    ticks = [1] + [k for k in range(4, len(sigma) + 1, 4 if len(sigma) <= 32 else 8)]
    chart.x = Scale(0.5, len(sigma) + 0.5, left, right)
    chart.frame("index i (largest first)", "σᵢ (log scale)", x_ticks=ticks, x_fmt=lambda v: f"{v:g}", grid=True)
    cut = chart.x(q.rank + 0.5)
    svg.line(cut, top, cut, bottom, "guide")
    svg.text(cut + 5, top + 12, f"r = {q.rank}", "ts tb")
    tail_note = f"discarded tail: error {error:.3f}"
    svg.text(min(cut + 5, right - 150), top + 28, tail_note, "ts tm")
    floor = f"noise ‖N‖/‖M‖ = {update.noise_floor:.3f}"
    svg.text(12, bottom + 52, floor if narrow else f"{floor}: at r = {q.intrinsic_rank} the error can be no larger",
             "ts tm")
    svg.height = bottom + 62
    return svg


def _spectrum(q: SpectrumQuery) -> Art:
    update, sigma, error = _data(q)
    caption = (f"The spectrum of a {q.size} × {q.size} matrix made of an exact rank-{q.intrinsic_rank} signal plus noise "
               f"({q.noise:g} of its size). The first {q.intrinsic_rank} singular values stand far above the rest; a rank-r "
               f"truncation keeps the tallest r bars and its relative error is the root of the discarded bars' squares, "
               f"{error:.3f} at r = {q.rank} (Eckart–Young). Past the elbow, extra rank only fits noise.")
    return drawn(lambda width: _svg(q, width), caption)


FIGURES = register(
    FigureSpec("singular-spectrum", "A low-rank spectrum and its truncation", "rank-and-targets", SpectrumQuery, _spectrum),
)
