"""LoRA on one layer: W₀ beside B and A to scale (live), the forward path, merged against unmerged.

Shapes come from a real model's layer (`calculators.architectures`), counts from
`calculators.params.lora_module_params`, the scale from `calculators.scaling.lora_scaling`
(Hu et al. 2021, §4.1: h = W₀x + (α/r)·BAx).
"""

from __future__ import annotations

from pydantic import Field

from calculators.architectures import get_architecture
from calculators.params import lora_module_params
from calculators.scaling import lora_scaling

from app.figures.flow import Flow
from app.figures.parts import box, legend, linear_module
from app.figures.spec import Art, Control, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import NARROW, WIDE, Svg
from app.formatting import format_int

RANK_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class LayerQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    module: str = Field("q_proj", max_length=64, pattern=r"^[A-Za-z0-9_.]+$", description="Linear module kind")
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, le=4096, description="lora_alpha")


def _layer(q: LayerQuery):
    """The module's shape, checked against the rank (r ≤ min(in, out), as calculators.params requires)."""
    module = linear_module(q.model, q.module)
    widest = min(module.in_features, module.out_features)
    if q.rank > widest:
        raise ValueError(f"rank: must be at most {widest} for {module.path or module.name} "
                         f"({module.in_features} → {module.out_features}), got {q.rank}")
    return get_architecture(q.model), module


# ---------------------------------------------------------------------------- shapes to scale (live)


def _shapes_svg(q: LayerQuery, width: float) -> Svg:
    arch, module = _layer(q)
    d_in, d_out, r = module.in_features, module.out_features, q.rank
    narrow = width < WIDE
    margin = 56.0
    if narrow:
        k = min(150 / max(d_in, d_out), (width - margin - 70) / (d_in + r))
    else:
        k = min(210 / max(d_in, d_out), (width - margin - 86) / (2 * d_in + r))
    thin = 2.0  # a rank thinner than this is drawn as a hairline (the label says so)
    w0_w, w0_h, r_len = d_in * k, d_out * k, r * k
    svg = Svg(width, 10, f"Shapes of W₀, B and A for {arch.display_name} {module.name} at rank {r}")
    top = 34.0
    svg.text(margin, top - 12, "W₀  (frozen)", "t tb")
    svg.rect(margin, top, w0_w, w0_h, "frozen")
    svg.text(margin + w0_w / 2, top + w0_h + 16, f"{format_int(d_in)} in", "ts tm", anchor="middle")
    svg.text(margin - 6, top + w0_h / 2 + 4, f"{format_int(d_out)}", "ts tm", anchor="end")
    svg.text(margin - 6, top + w0_h / 2 + 18, "out", "ts tm", anchor="end")
    if narrow:
        ax, ay = margin, top + w0_h + 58
    else:
        ax, ay = margin + w0_w + 30, top
    svg.text(ax - (16 if narrow else 18), ay + w0_h / 2 + 6, "+", "tl", anchor="middle")
    b_x, a_x = ax + 4, ax + 4 + max(r_len, thin) + 12
    svg.text(b_x + max(r_len, thin) / 2, ay - 12, "B", "t tb fb-text", anchor="middle")
    svg.rect(b_x, ay, max(r_len, thin), w0_h, "fb")
    svg.text(a_x, ay - 12, "A", "t tb fa-text")
    svg.rect(a_x, ay, w0_w, max(r_len, thin), "fa")
    hair = " (a hairline at this scale)" if r_len < thin else ""
    svg.text(a_x, ay + max(r_len, thin) + 16, f"r = {r}{hair}", "ts tm")
    svg.text(b_x, ay + w0_h + 16, f"{format_int(d_out)} × {r}", "ts tm")
    svg.text(a_x + w0_w, ay + max(r_len, thin) + 32, f"{r} × {format_int(d_in)}", "ts tm", anchor="end")

    # Parameter counts as bars on one scale: W₀'s in·out against A + B's r(in + out).
    base = d_in * d_out
    lora = lora_module_params(d_in, d_out, r)
    y = max(top + w0_h, ay + w0_h) + 50
    bar_w = width - 2 * 16
    svg.text(16, y, "Parameters, on one scale", "t tb")
    svg.rect(16, y + 12, bar_w, 14, "frozen")
    svg.text(16, y + 42, f"W₀: {format_int(base)}", "ts")
    a_w, b_w = bar_w * r * d_in / base, bar_w * d_out * r / base
    svg.rect(16, y + 52, max(a_w, thin / 2), 14, "fa")
    svg.rect(16 + max(a_w, thin / 2), y + 52, max(b_w, thin / 2), 14, "fb")
    svg.text(16, y + 82, f"A + B: {format_int(lora)} ({100 * lora / base:.2f}% of W₀)", "ts")
    svg.height = y + 12 + 2 * 40
    return svg


def _shapes(q: LayerQuery) -> Art:
    arch, module = _layer(q)
    lora = lora_module_params(module.in_features, module.out_features, q.rank)
    base = module.in_features * module.out_features
    readout = (f"r = {q.rank}: B is {format_int(module.out_features)} × {q.rank} and A is {q.rank} × "
               f"{format_int(module.in_features)}, {format_int(lora)} parameters, {100 * lora / base:.2f}% of "
               f"W₀'s {format_int(base)}.")
    caption = (f"{arch.display_name}'s {module.name} drawn to scale. LoRA trains B (d_out × r) and A (r × d_in) beside "
               f"the frozen W₀: r·(d_in + d_out) numbers instead of d_in·d_out. Raise the rank and the two strips "
               f"widen in proportion; W₀ never changes.")
    return drawn(lambda width: _shapes_svg(q, width), caption, readout)


def _shape_controls(q: LayerQuery) -> tuple[Control, ...]:
    arch = get_architecture(q.model)
    _, module = _layer(q)
    widest = min(module.in_features, module.out_features)
    ranks = sorted({r for r in RANK_CHOICES if r <= widest} | {q.rank})
    kinds = [m for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    names = [m.name for m in kinds]
    key = lambda m: m.name if names.count(m.name) == 1 else m.path  # noqa: E731  (GPT-2, BERT: the path tells apart)
    modules = [(key(m), f"{key(m)} ({format_int(m.in_features)} → {format_int(m.out_features)})") for m in kinds]
    return (
        Control("choice", "rank", "Rank r", str(q.rank), tuple((str(r), str(r)) for r in ranks)),
        Control("select", "module", "Layer", key(module), tuple(modules)),
        Control("hidden", "model", "Model", q.model),
        Control("hidden", "alpha", "Alpha", f"{q.alpha:g}"),
    )


# ---------------------------------------------------------------------------- the forward path


def _forward_svg(q: LayerQuery, vertical: bool) -> Svg:
    arch, module = _layer(q)
    d_in, d_out, r = module.in_features, module.out_features, q.rank
    s = lora_scaling(q.alpha, r)
    svg = Svg(NARROW if vertical else WIDE, 10, f"Forward pass of a LoRA layer: h = W₀x + s·BAx, {module.name} of {arch.display_name}")
    f = Flow(svg, vertical)
    top, bottom = (72.0, 200.0) if vertical else (62.0, 206.0)
    mid = (top + bottom) / 2
    off = 36.0 if vertical else 0.0  # room above the flow for the legend in the phone layout
    u = lambda value: value + off  # noqa: E731  (shift along the flow)
    f.rect(u(8), mid - 30, 56, 60, "vec", ["x", format_int(d_in)])
    f.elbow(u(64), mid, u(150), top)
    f.elbow(u(64), mid, u(108), bottom)
    f.rect(u(150), top - 44, 150, 88, "frozen", ["W₀ (frozen)", f"{format_int(d_out)} × {format_int(d_in)}"])
    f.trapezoid(u(108), bottom, 84, 88, 26, "fa")
    f.text(u(150), bottom, "A", "t tb", dy=5)
    f.arrow(u(192), bottom, u(206), bottom)
    f.rect(u(206), bottom - 13, 30, 26, "vec", [str(r)], "ts", rx=3)
    f.arrow(u(236), bottom, u(250), bottom)
    f.trapezoid(u(250), bottom, 84, 26, 88, "fb")
    f.text(u(292), bottom, "B", "t tb", dy=5)
    f.arrow(u(334), bottom, u(358), bottom)
    f.rect(u(358), bottom - 22, 56, 44, "scale", [f"× {s:g}"], "t tb", rx=22)
    f.polyline([(u(300), top), (u(452), top)])
    f.arrow(u(452), top, u(452), mid - 16)
    f.polyline([(u(414), bottom), (u(452), bottom)])
    f.arrow(u(452), bottom, u(452), mid + 16)
    f.circle(u(452), mid, 16, "sum")
    f.text(u(452), mid, "+", "tl", dy=5.5)
    f.arrow(u(468), mid, u(500), mid)
    f.rect(u(500), mid - 30, 56, 60, "vec", ["h", format_int(d_out)])
    notes = [(150, [f"A: {r} × {format_int(d_in)}"]), (292, [f"B: {format_int(d_out)} × {r}", "starts at 0"]),
             (386, [f"s = α/r = {q.alpha:g}/{r}"])]
    note_v = bottom + (50 if vertical else 62)
    for along, rows in notes:
        for i, row in enumerate(rows):
            f.text(u(along), note_v, row, "ts tm", vertical_anchor="start", dy=i * 15 + (4 if vertical else 0))
    items = [("frozen", "frozen"), ("fa", "A (trained)"), ("fb", "B (trained)")]
    if vertical:
        svg.height = u(556) + 12
        legend(svg, 12, 8, items, NARROW - 24)
    else:
        svg.height = note_v + 24
        legend(svg, WIDE - 280, 6, items, 280)
    return svg


def _forward(q: LayerQuery) -> Art:
    arch, module = _layer(q)
    s = lora_scaling(q.alpha, q.rank)
    caption = (f"One adapted layer: {arch.display_name}'s {module.name} at r = {q.rank}, α = {q.alpha:g}. The input x "
               f"takes two paths: through the frozen W₀, and through the adapter, which projects it down to r = {q.rank} "
               f"numbers with A, back up with B and scales the result by s = α/r = {s:g}. The layer outputs their sum. "
               f"B starts at zero, so at step 0 the layer is exactly the pre-trained one.")
    return drawn(lambda width: _forward_svg(q, width < WIDE), caption)


# ---------------------------------------------------------------------------- merged against unmerged


def _merge_panel(svg: Svg, x: float, y: float, width: float, merged: bool, d_in: int, d_out: int, r: int,
                 s: float) -> float:
    """One panel: the layer as it runs; returns the y below it."""
    title = "Merged: W = W₀ + s·BA" if merged else "Unmerged: W₀ and the adapter"
    svg.text(x, y + 14, title, "t tb")
    y += 28
    box(svg, x, y + 20, 44, 40, "vec", "x")
    box(svg, x + width - 44, y + 20, 44, 40, "vec", "h")
    inner = x + 64, x + width - 64
    if merged:
        box(svg, inner[0], y + 4, inner[1] - inner[0], 72, "merged", ["W₀ + s·BA", f"{format_int(d_out)} × {format_int(d_in)}"])
        svg.arrow(x + 44, y + 40, inner[0], y + 40)
        svg.arrow(inner[1], y + 40, x + width - 44, y + 40)
        macs = d_in * d_out
        notes = [f"{format_int(macs)} multiply-adds per token", "one matmul: the base model's cost",
                 "W₀ is overwritten: keep a copy to unmerge"]
    else:
        span = inner[1] - inner[0]
        box(svg, inner[0] + 10, y, span - 50, 34, "frozen", "W₀", "t")
        third = (span - 50) / 3
        box(svg, inner[0] + 10, y + 46, third, 30, "fa", "A", "t", rx=4)
        box(svg, inner[0] + 10 + third * 1.2, y + 46, third * 0.6, 30, "vec", str(r), "ts", rx=3)
        box(svg, inner[0] + 10 + third * 2, y + 46, third, 30, "fb", "s·B", "t", rx=4)
        svg.arrow(inner[0] + 10 + third, y + 61, inner[0] + 10 + third * 1.2, y + 61, head=4)
        svg.arrow(inner[0] + 10 + third * 1.8, y + 61, inner[0] + 10 + third * 2, y + 61, head=4)
        svg.arrow(x + 44, y + 40, inner[0] + 10, y + 17)
        svg.arrow(x + 44, y + 40, inner[0] + 10, y + 61)
        cx = inner[1] - 14
        svg.circle(cx, y + 40, 11, "sum")
        svg.text(cx, y + 45, "+", "t", anchor="middle")
        svg.arrow(inner[0] + span - 40, y + 17, cx - 8, y + 33)
        svg.arrow(inner[0] + 10 + third * 3, y + 61, cx - 8, y + 47)
        svg.arrow(cx + 11, y + 40, x + width - 44, y + 40)
        lora = lora_module_params(d_in, d_out, r)
        notes = [f"{format_int(d_in * d_out)} + {format_int(lora)} multiply-adds per token",
                 f"(+{100 * lora / (d_in * d_out):.2f}%), three matmuls", "W₀ untouched: swap adapters freely"]
    yy = y + 100
    for note in notes:
        svg.text(x, yy, note, "ts tm")
        yy += 16
    return yy


def _merge_svg(q: LayerQuery, vertical: bool) -> Svg:
    arch, module = _layer(q)
    s = lora_scaling(q.alpha, q.rank)
    width = NARROW if vertical else WIDE
    svg = Svg(width, 10, f"Unmerged and merged LoRA layer ({module.name} of {arch.display_name}, r = {q.rank})")
    args = (module.in_features, module.out_features, q.rank, s)
    if vertical:
        below = _merge_panel(svg, 12, 4, width - 24, False, *args)
        below = _merge_panel(svg, 12, below + 10, width - 24, True, *args)
    else:
        panel = (width - 48) / 2
        left = _merge_panel(svg, 12, 4, panel, False, *args)
        right = _merge_panel(svg, 36 + panel, 4, panel, True, *args)
        svg.line(24 + panel, 10, 24 + panel, max(left, right) - 8, "rule")
        below = max(left, right)
    svg.height = below + 4
    return svg


def _merge(q: LayerQuery) -> Art:
    arch, module = _layer(q)
    caption = (f"Unmerged, as while training or when serving many adapters: the frozen W₀ and the thin A and B run "
               f"side by side. Merged, after merge_and_unload(): one matrix of the original shape and the base model's "
               f"exact cost. Unmerging subtracts s·BA again, which in 16-bit floats does not restore W₀ bit for bit.")
    return drawn(lambda width: _merge_svg(q, width < WIDE), caption)


FIGURES = register(
    FigureSpec("lora-shapes", "W₀ beside B and A, to scale", "lora", LayerQuery, _shapes, _shape_controls),
    FigureSpec("lora-forward", "The forward pass of a LoRA layer", "lora", LayerQuery, _forward),
    FigureSpec("lora-merge", "Unmerged and merged", "lora", LayerQuery, _merge),
)
