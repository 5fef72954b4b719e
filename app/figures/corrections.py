"""The appendix of corrections: how far each usual figure is from the computed one, and the repair of
the most quoted one ("56 GB" to fully fine-tune a 7B model) term by term.

The usual figures come from the shortcuts they are made with (`calculators.usual_figures`: a
nominal parameter count times bytes per parameter, a normal initialisation's scale), or from the
count they were copied from; two are percentages as the tutorials quote them. The computed ones come
from `calculators.memory`, `calculators.params` and `calculators.usual_figures`.
"""

from __future__ import annotations

from dataclasses import dataclass

from calculators import memory, params, quantities, usual_figures
from calculators.architectures import get_architecture
from calculators.gpus import get_gpu

from app.figures.chart import Scale
from app.figures.parts import legend
from app.figures.spec import Art, FigureSpec, NoArguments, drawn, register
from app.figures.svg import WIDE, Svg, text_width
from app.formatting import format_bytes, format_count_short, format_gpu_bytes

NOMINAL_7B = 7e9  # "a 7B model", as the shortcut counts it
NOMINAL_70B = 70e9
# Two figures quoted as percentages or shares rather than computed by a shortcut (the appendix's
# "350M parameters, 5%" and "about 0.001%" entries): the tutorials' numbers, not ours.
QUOTED_LORA_SHARE = 0.05
QUOTED_PREFIX_PERCENT = 0.001


@dataclass(frozen=True)
class Claim:
    """One entry of the appendix: the usual figure against the computed one, in the same unit."""

    quote: str  # the claim, short
    usual: float
    computed: float
    unit: str  # bytes | count | percent | std

    @property
    def ratio(self) -> float:
        return self.usual / self.computed

    def shown(self, value: float, usual: bool) -> str:
        if self.unit == "bytes":
            decimal = f"{format_bytes(value, 'gb')} = " if usual else ""
            return f"{decimal}{format_gpu_bytes(value)}"
        if self.unit == "count":
            return format_count_short(value)
        if self.unit == "percent":
            return f"{value:.3g}%"
        return f"{value:.3f}"


def claims() -> list[Claim]:
    """The appendix's entries that reduce to one number, in the appendix's order."""
    per = memory.full_ft_bytes_per_param()
    llama7, llama70 = get_architecture("llama-2-7b"), get_architecture("llama-2-70b")
    eight_bytes = per.weights + per.grads + per.optimizer / 2  # Adam's two moments kept in 16 bits
    lora_qv = lambda r: params.count_trainable(llama7, "lora", r=r, target_modules="q,v").trainable  # noqa: E731
    return [
        Claim("Full FT of a 7B model needs 56 GB", usual_figures.nominal_bytes(NOMINAL_7B, eight_bytes),
              llama7.n_params * per.total, "bytes"),
        Claim("A 7B full fine-tune is 112 GB", usual_figures.nominal_bytes(NOMINAL_7B, per.total),
              llama7.n_params * per.total, "bytes"),
        Claim("70B: 140 GB for gradients and Adam", usual_figures.nominal_bytes(NOMINAL_70B, per.weights),
              llama70.n_params * (per.grads + per.master + per.optimizer), "bytes"),
        Claim("QLoRA stores a 70B base in 35 GB", usual_figures.nominal_bytes(NOMINAL_70B, 0.5),
              memory.qlora_base_bytes(llama70), "bytes"),
        Claim("LoRA on a 7B trains 350M parameters", QUOTED_LORA_SHARE * NOMINAL_7B,
              params.count_trainable(llama7, "lora", r=8, target_modules="all-linear").trainable, "count"),
        Claim("Rank 16 on q, v trains 4.2M", lora_qv(8), lora_qv(16), "count"),
        Claim("Prefix tuning trains 0.001%", QUOTED_PREFIX_PERCENT,
              params.count_trainable(llama7, "prefix", num_virtual_tokens=20).percent, "percent"),
        Claim("Initialise A with randn · √(2/r)", usual_figures.normal_init_std(2, 32),
              usual_figures.kaiming_uniform_std(512), "std"),
    ]


def _ratio_label(ratio: float) -> str:
    if ratio >= 1:
        return f"×{ratio:.2f}" if ratio < 1.995 else f"×{ratio:.1f}"
    return f"×{ratio:.2f}" if ratio >= 0.095 else f"×{ratio:.3f}"


def _ratios_svg(width: float) -> Svg:
    rows = claims()
    narrow = width < WIDE
    svg = Svg(width, 10, "How far each usual figure is from the computed one: the usual figure divided by the computed, "
                         "on a log scale")
    left = 12.0
    chart_x, chart_end = (left + 8, width - 18) if narrow else (296.0, width - 22)
    scale = Scale(0.005, 200, chart_x, chart_end, log=True)
    y = 14.0
    svg.text(scale(1), y, "right", "ts tb", anchor="middle")
    svg.text(scale(1) - 10, y + 16, "← usual too small", "ts tm", anchor="end")
    svg.text(scale(1) + 10, y + 16, "too large →", "ts tm")
    y += 28
    top = y
    row_h = 66.0 if narrow else 44.0
    mark = svg.mark()
    for claim in rows:
        svg.text(left, y + 14, f"“{claim.quote}”", "ts tb halo")
        values = f"usual {claim.shown(claim.usual, True)}, computed {claim.shown(claim.computed, False)}"
        svg.text(left, y + 30, values, "ts tm halo")
        line_y = y + (50 if narrow else 22)
        x1, x2 = scale(1), scale(claim.ratio)
        svg.line(x1, line_y, x2, line_y, "line s3" if claim.ratio < 1 else "line s1")
        svg.circle(x2, line_y, 4.5, "dot3" if claim.ratio < 1 else "dot1")
        label = _ratio_label(claim.ratio)
        if claim.ratio < 1:
            lx, anchor = x2 - 8, "end"
            if lx - text_width(label, 11.5) < chart_x - 4:
                lx, anchor = x1 + 8, "start"
        else:
            lx, anchor = x2 + 8, "start"
            if lx + text_width(label, 11.5) > width - 6:
                lx, anchor = x1 - 8, "end"
        svg.text(lx, line_y + 4, label, "ts tb halo", anchor=anchor)
        y += row_h
    bottom = y

    def axis(layer: Svg) -> None:
        for tick in (0.01, 0.1, 1, 10, 100):
            tx = scale(tick)
            layer.line(tx, top - 4, tx, bottom, "axis" if tick == 1 else "grid")

    svg.behind(mark, axis)
    for tick, text in ((0.01, "1/100"), (0.1, "1/10"), (1, "1"), (10, "10"), (100, "100")):
        svg.text(scale(tick), bottom + 14, text, "ts tm", anchor="middle")
    svg.text(chart_end, bottom + 32, "usual ÷ computed (log scale)", "ts tb", anchor="end")
    svg.height = bottom + 40
    return svg


def _ratios(q: NoArguments) -> Art:
    rows = claims()
    worst = max(rows, key=lambda c: max(c.ratio, 1 / c.ratio))
    caption = (f"Each of the appendix's single-number claims as the usual figure divided by the computed one, on a log "
               f"scale: 1 is right, left is too small, right too large. Byte figures are the shortcut's (a nominal "
               f"parameter count times bytes per parameter, in decimal GB) against the book's calculators, in GiB. The "
               f"farthest, “{worst.quote}”, is off by a factor of {max(worst.ratio, 1 / worst.ratio):.0f}.")
    return drawn(_ratios_svg, caption)


# ---------------------------------------------------------------------------- repairing "56 GB"


def _repair_steps() -> list[tuple[str, str, float, float, str]]:
    """(label, note, start, end, class) of each step, in bytes: from the usual figure to the computed one."""
    per = memory.full_ft_bytes_per_param()
    arch = get_architecture("llama-2-7b")
    eight = per.weights + per.grads + per.optimizer / 2
    usual = usual_figures.nominal_bytes(NOMINAL_7B, eight)
    with_master = usual + NOMINAL_7B * per.master
    sixteen = usual_figures.nominal_bytes(NOMINAL_7B, per.total)
    computed = arch.n_params * per.total
    return [
        ("The usual “56 GB”", f"7 × 10⁹ × {eight:g} B, read as {format_bytes(usual, 'gb')}", 0, usual, "vec"),
        ("+ the fp32 master copy", f"{per.master:g} B per parameter", usual, with_master, "m-master_weights"),
        ("+ Adam's moments in fp32", f"{per.optimizer:g} B, not {per.optimizer / 2:g}", with_master, sixteen, "m-optimizer_states"),
        ("= the “112 GB” figure", f"7 × 10⁹ × {per.total:g} B", 0, sixteen, "vec"),
        ("− the real count", f"{format_count_short(arch.n_params)} parameters, not 7 × 10⁹", computed, sixteen, "hot"),
        ("= computed for Llama-2-7B", "before any activation", 0, computed, "train"),
    ]


def _repair_svg(width: float) -> Svg:
    steps = _repair_steps()
    gpu = get_gpu("h100-80gb")
    narrow = width < WIDE
    svg = Svg(width, 10, "From the usual 56 GB to the computed training state of Llama-2-7B, one missing term at a time")
    left = 12.0
    bar_x, bar_end = (left, width - 78) if narrow else (236.0, width - 78)
    largest = max(end for *_, end, _ in steps)
    scale = Scale(0, largest, bar_x, bar_end)
    y = legend(svg, left, 6, [("m-master_weights", "fp32 master copy"), ("m-optimizer_states", "Adam's moments"),
                              ("hot", "removed")], width - 24) + 30
    top = y
    row_h = 58.0 if narrow else 40.0
    mark = svg.mark()
    for label, note, start, end, cls in steps:
        svg.text(left, y + 12, label, "ts tb halo")
        svg.text(left + (text_width(label, 11.5) * 1.1 + 8 if narrow else 0), y + (12 if narrow else 27), note, "ts tm halo")
        bar_y = y + (20 if narrow else 2)
        svg.rect(scale(start), bar_y, scale(end) - scale(start), 20, cls, rx=2)
        size = end - start
        text = format_gpu_bytes(end) if start == 0 else f"{'−' if cls == 'hot' else '+'}{format_gpu_bytes(size)}"
        svg.text(scale(end) + 6, bar_y + 14, text, "ts tb halo")
        y += row_h
    gx = scale(gpu.memory_bytes)

    def guide(layer: Svg) -> None:
        layer.line(gx, top - 8, gx, y - 6, "guide")
        layer.text(gx, top - 12, gpu.name, "ts tm", anchor="middle")

    svg.behind(mark, guide)
    svg.text(bar_x, y + 6, "GiB, linear scale; the dotted line is one H100's memory" if not narrow else "dotted: one H100",
             "ts tm")
    svg.height = y + 14
    return svg


def _repair(q: NoArguments) -> Art:
    steps = _repair_steps()
    caption = (f"The usual figure counts 8 bytes per parameter: bf16 weights and gradients and Adam's two moments in 16 "
               f"bits. Mixed-precision AdamW keeps an fp32 master copy and fp32 moments as well, which doubles it to the "
               f"“112 GB” figure; the real parameter count takes it down to {format_gpu_bytes(steps[-1][3])}. Decimal "
               f"GB against binary GiB moves each figure by another {quantities.value('gib_over_gb_percent'):.1f}%. Either way, it does not "
               f"fit one 80 GiB GPU before a single activation.")
    return drawn(_repair_svg, caption)


FIGURES = register(
    FigureSpec("usual-vs-computed", "The usual figures against the computed ones", "tutorial-numbers", NoArguments,
               _ratios),
    FigureSpec("full-ft-repair", "Repairing “56 GB”, term by term", "tutorial-numbers", NoArguments, _repair),
)
