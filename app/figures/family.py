"""The LoRA family's knobs drawn: DoRA's magnitude and direction, rsLoRA's scale against rank,
LoRA+'s two learning rates, and (IA)³'s scaling vectors.

Counts from `calculators.params.count_trainable` (DoRA's magnitude vector, (IA)³'s vectors),
scales from `calculators.scaling` (scaling_series, loraplus_learning_rates).
"""

from __future__ import annotations

import math

from pydantic import Field

from calculators import params, scaling
from calculators.architectures import get_architecture

from app.figures.chart import Chart, Scale
from app.figures.parts import box, legend, linear_module
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg
from app.formatting import format_int


class ModuleQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    module: str = Field("q_proj", max_length=64, pattern=r"^[A-Za-z0-9_.]+$", description="Linear module kind")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r")


# ---------------------------------------------------------------------------- DoRA: magnitude and direction


def _dora_counts(q: ModuleQuery) -> tuple[int, int, int]:
    module = linear_module(q.model, q.module)
    target = [module.path or module.name]
    lora = params.count_trainable(q.model, "lora", r=q.rank, target_modules=target).per_module[0].n_params_each
    dora = params.count_trainable(q.model, "dora", r=q.rank, target_modules=target).per_module[0].n_params_each
    return lora, dora, module.out_features


def _dora_svg(q: ModuleQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    lora, dora, rows = _dora_counts(q)
    narrow = width < WIDE
    svg = Svg(width, 10, "DoRA: a weight row split into its length m and its direction, which LoRA turns")
    # A two-dimensional sketch of one row of the weight (one output feature's input weights).
    ox, oy = 34.0, 232.0
    w0 = (176.0, -66.0)
    delta = (-64.0, -100.0)
    v = (w0[0] + delta[0], w0[1] + delta[1])
    m0 = math.hypot(*w0)
    m = m0 * 0.86  # the trained magnitude: here shorter than ‖w₀ + ΔV‖
    unit = (v[0] / math.hypot(*v), v[1] / math.hypot(*v))
    final = (unit[0] * m, unit[1] * m)
    arc = [(ox + m0 * math.cos(t), oy - m0 * math.sin(t)) for t in [i * math.pi / 2 / 40 for i in range(41)]]
    svg.polyline(arc, "guide")
    svg.text(ox + 4, oy - m0 - 8, "radius ‖w₀‖ = m₀", "ts tm")
    svg.line(ox + final[0], oy + final[1], ox + v[0], oy + v[1], "guide")
    svg.arrow(ox, oy, ox + w0[0], oy + w0[1], "va s4", head=9)
    svg.text(ox + w0[0] + 8, oy + w0[1] + 12, "w₀, a frozen row", "ts tb")
    svg.arrow(ox + w0[0], oy + w0[1], ox + v[0], oy + v[1], "va s3", head=9)
    svg.text(ox + v[0] + 8, oy + v[1] - 2, "+ s·BA (its row)", "ts fb-text tb")
    svg.arrow(ox, oy, ox + final[0], oy + final[1], "va s1", head=9)
    svg.text(ox + final[0] - 8, oy + final[1] + 4, "m · direction", "ts tb", anchor="end")
    svg.circle(ox, oy, 3, "peak")
    svg.text(ox, oy + 18, "0", "ts tm", anchor="middle")
    # The bookkeeping, beside (wide) or below (narrow).
    tx, ty = (356.0, 40.0) if not narrow else (12.0, 272.0)
    lines = [
        ("t tb", "W′ = m ⊙ (W₀ + s·BA) / ‖W₀ + s·BA‖"),
        ("ts tm", "norm per output row (PyTorch layout), m₀ = ‖W₀‖"),
        ("", ""),
        ("ts", "direction: LoRA's B and A turn each row"),
        ("ts", "magnitude: one trained number per row, m"),
        ("", ""),
        ("ts tb", f"{arch.display_name} {q.module}, r = {q.rank}:"),
        ("ts", f"LoRA  {format_int(lora)}"),
        ("ts", f"+ magnitude  {format_int(rows)} (one per output row)"),
        ("ts tb", f"= DoRA  {format_int(dora)}"),
    ]
    for cls, text in lines:
        if text:
            svg.text(tx, ty, text, cls)
        ty += 17 if text else 8
    svg.height = (ty + 4) if narrow else max(ty, oy + 30)
    return svg


def _dora(q: ModuleQuery) -> Art:
    lora, dora, rows = _dora_counts(q)
    caption = (f"A two-dimensional sketch of one row of a weight matrix. LoRA's update moves the row's tip, changing its "
               f"direction and its length together. DoRA (Liu et al. 2024) normalises W₀ + s·BA row by row and multiplies "
               f"by a separately trained magnitude m, so direction and length can move independently. The price is "
               f"{format_int(rows)} numbers per module ({format_int(dora)} against LoRA's {format_int(lora)}) and a "
               f"full-size norm in every forward pass.")
    return drawn(lambda width: _dora_svg(q, width), caption)


# ---------------------------------------------------------------------------- rsLoRA: the scale against rank


class ScaleQuery(FigureQuery):
    alpha: float = Field(16.0, gt=0, le=1024, description="lora_alpha")
    max_rank: int = Field(256, ge=8, le=4096, description="Largest rank drawn (powers of two up to it)")


def _scaling_svg(q: ScaleQuery, width: float) -> Svg:
    ranks = [2**k for k in range(int(math.log2(q.max_rank)) + 1)]
    series = scaling.scaling_series(q.alpha, ranks)
    narrow = width < WIDE
    svg = Svg(width, 10, f"How big the update's effect is against rank, α = {q.alpha:g}: α/r against rsLoRA's α/√r")
    left, right = (44.0, width - 84) if narrow else (56.0, width - 150)
    top = legend(svg, 12, 6, [("sw1", "LoRA, s = α/r"), ("sw2", "rsLoRA, s = α/√r")], width - 24) + 30
    bottom = top + (170 if narrow else 200)
    values = series.lora_effective_scale + series.rslora_effective_scale + series.lora_scaling
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    chart = Chart(svg, Scale(ranks[0], ranks[-1], left, right, log=True), Scale(low, high, bottom, top, log=True))
    tick_ranks = ranks if len(ranks) <= 9 and not narrow else ranks[::2]
    chart.frame("rank r", "size (log scale)", x_ticks=tick_ranks, x_fmt=lambda v: f"{v:g}")
    # rsLoRA's factor α/√r is the same curve as LoRA's effect, so only LoRA's factor gets a thin line.
    chart.polyline(list(zip(ranks, series.lora_scaling)), "line thin s1")
    chart.polyline(list(zip(ranks, series.lora_effective_scale)), "line s1")
    chart.polyline(list(zip(ranks, series.rslora_effective_scale)), "line s2")
    end = ranks[-1]
    svg.text(chart.x(end) + 8, chart.y(series.rslora_effective_scale[-1]) + 4, f"rsLoRA: {series.rslora_effective_scale[-1]:g}", "ts tb")
    svg.text(chart.x(end) + 8, chart.y(series.lora_effective_scale[-1]) + 4, f"LoRA: {series.lora_effective_scale[-1]:.2g}", "ts tb")
    svg.text(chart.x(end) + 8, chart.y(series.lora_scaling[-1]) + 4, f"α/r = {series.lora_scaling[-1]:.2g}", "ts tm")
    note = ["solid: s·√r, the update's effect;", "dashed: LoRA's factor α/r itself"]
    end = svg.lines(12 if narrow else left, bottom + 52, note if narrow else [" ".join(note)], "ts tm")
    svg.height = end - 6
    return svg


def _scaling(q: ScaleQuery) -> Art:
    series = scaling.scaling_series(q.alpha, [1, q.max_rank])
    caption = (f"The factor s multiplies an update whose size grows like √r (its r rank-one terms add up incoherently), "
               f"so what the layer feels is s·√r (thick lines). With LoRA's α/r it falls from {series.lora_effective_scale[0]:g} "
               f"at r = 1 to {series.lora_effective_scale[-1]:.2g} at r = {q.max_rank}: high ranks learn slowly. rsLoRA's "
               f"α/√r holds it at α = {q.alpha:g} for every rank (Kalajdzievski 2023).")
    return drawn(lambda width: _scaling_svg(q, width), caption)


# ---------------------------------------------------------------------------- LoRA+: two learning rates


class RatesQuery(FigureQuery):
    lr: float = Field(2e-4, gt=0, le=1.0, description="Learning rate of A (peft's lr)")
    loraplus_lr_ratio: float = Field(scaling.LORAPLUS_LR_RATIO, ge=1, le=1024)


def _rates_svg(q: RatesQuery, width: float) -> Svg:
    rates = scaling.loraplus_learning_rates(q.lr, q.loraplus_lr_ratio)
    narrow = width < WIDE
    svg = Svg(width, 10, f"LoRA+: B learns {rates.loraplus_lr_ratio:g} times faster than A")
    text_x = 96.0 if narrow else 178.0
    room = width - text_x - 16
    unit = room / rates.lr_B
    rows = [("fa", "A", "r × d_in: reads the whole hidden state", rates.lr_A, "η_A", "va s2", (12.0, 74.0, 26.0)),
            ("fb", "B", "d_out × r: reads only A's r outputs", rates.lr_B,
             f"η_B = {rates.loraplus_lr_ratio:g} · η_A", "va s3", (36.0, 26.0, 96.0))]
    if narrow:
        rows = [(c, n, sh.split(": ")[1], lr, lab, a, (x * 0.6, w * 0.75, h * 0.75)) for c, n, sh, lr, lab, a, (x, w, h) in rows]
    y = 14.0
    for cls, name, role, lr, label, arrow, (bx, bw, bh) in rows:
        box(svg, bx, y, bw, bh, cls, name, "t tb", rx=3)
        svg.text(text_x, y + 12, f"{name}: {role}" if not narrow else role, "ts tm")
        svg.text(text_x, y + 30, f"{label} = {lr:g}", "t tb")
        svg.arrow(text_x, y + 48, text_x + max(lr * unit, 10), y + 48, arrow, head=9)
        y += max(bh, 56) + 24
    svg.text(text_x, y, "arrows: one step of each, to scale", "ts tm")
    svg.height = y + 10
    return svg


def _rates(q: RatesQuery) -> Art:
    rates = scaling.loraplus_learning_rates(q.lr, q.loraplus_lr_ratio)
    caption = (f"LoRA+ (Hayou et al. 2024) keeps LoRA's tensors and gives them two learning rates: B's is λ = "
               f"{rates.loraplus_lr_ratio:g} times A's. A sums over the full hidden width, so a small step already moves "
               f"its output a lot; B sees only r inputs and needs the larger step to learn features at the same pace. "
               f"In peft: create_loraplus_optimizer(..., lr={q.lr:g}, loraplus_lr_ratio={rates.loraplus_lr_ratio:g}).")
    return drawn(lambda width: _rates_svg(q, width), caption)


# ---------------------------------------------------------------------------- (IA)³: three vectors


class ModelOnlyQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")


def _ia3_svg(q: ModelOnlyQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    counted = params.count_trainable(arch, "ia3")
    narrow = width < WIDE
    svg = Svg(width, 10, f"(IA)³ on {arch.display_name}: learned vectors that rescale keys, values and the MLP's activation")
    widest = max(m.n_params_each for m in counted.per_module)
    left = 12.0
    bar_x = left if narrow else 236.0
    room = width - bar_x - 14
    y = 10.0
    for m in counted.per_module:
        scales_input = m.n_params_each == m.in_features and m.in_features != m.out_features
        where = f"input of {m.name}" if scales_input else f"output of {m.name}"
        name = "l_ff" if scales_input else f"l_{m.name[0]}"
        if narrow:
            svg.text(left, y + 12, f"{name} ⊙ {where}", "t tb")
            svg.text(width - 12, y + 12, format_int(m.n_params_each), "ts tm", anchor="end")
            svg.rect(bar_x, y + 20, room * m.n_params_each / widest, 12, "train", rx=2)
            y += 44
        else:
            svg.text(bar_x - 14, y + 12, f"{name} ⊙ {where}", "t tb", anchor="end")
            svg.text(bar_x - 14, y + 27, f"{format_int(m.n_params_each)} numbers × {m.count} layers", "ts tm", anchor="end")
            svg.rect(bar_x, y + 6, room * m.n_params_each / widest, 14, "train", rx=2)
            y += 42
    lora = params.count_trainable(arch, "lora", r=8, target_modules="q,v").trainable
    total = f"All vectors: {format_int(counted.trainable)} parameters"
    versus = f"(LoRA r = 8 on q, v: {format_int(lora)})"
    if narrow:
        svg.text(left, y + 10, total, "ts tb")
        svg.text(left, y + 26, versus, "ts tm")
        y += 16
    else:
        svg.text(left, y + 10, f"{total} {versus}", "ts tb")
    svg.height = y + 20
    return svg


def _ia3(q: ModelOnlyQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"(IA)³ (Liu et al. 2022) learns one vector per targeted module of {arch.display_name} and multiplies it "
               f"elementwise into an activation: the outputs of the key and value projections and the input of the MLP's "
               f"down projection (peft's defaults). Bars are as long as the vectors. They start at ones and merge exactly, "
               f"as a scaling of W's rows or columns.")
    return drawn(lambda width: _ia3_svg(q, width), caption)


FIGURES = register(
    FigureSpec("dora-split", "DoRA: magnitude and direction", "lora-family", ModuleQuery, _dora),
    FigureSpec("rslora-scaling", "α/r against α/√r as the rank grows", "lora-family", ScaleQuery, _scaling),
    FigureSpec("loraplus-rates", "LoRA+: two learning rates", "lora-family", RatesQuery, _rates),
    FigureSpec("ia3-vectors", "(IA)³: three learned scaling vectors", "lora-family", ModelOnlyQuery, _ia3),
)
