"""QLoRA's storage: NF4's 16 levels as quantiles of N(0, 1), three 4-bit code books side by side,
and blockwise absmax constants with and without double quantization (live: the block size).

Levels, bins and the density from `calculators.nf4` (bit-exact with bitsandbytes); bytes
from `calculators.nf4.nf4_model_bytes` and `bits_per_param` (QLoRA, Dettmers et al. 2023, §3).
"""

from __future__ import annotations

from pydantic import Field

from calculators import nf4
from calculators.architectures import get_architecture

from app.figures.chart import Chart, Scale
from app.figures.parts import legend
from app.figures.spec import Art, Control, FigureQuery, FigureSpec, NoArguments, drawn, register
from app.figures.svg import WIDE, Svg
from app.formatting import format_gpu_bytes, format_int

BLOCKSIZES = (32, 64, 128, 256, 512, 1024)
DQ_BLOCKSIZE = 256  # bitsandbytes' block of absmax constants under double quantization



# ---------------------------------------------------------------------------- the 16 levels on N(0, 1)


def _levels_svg(width: float) -> Svg:
    bins = nf4.nf4_bins()
    density = nf4.normal_pdf_series(z_max=bins.z_max, n_points=161)
    narrow = width < WIDE
    svg = Svg(width, 10, "The 16 NF4 levels at quantiles of the normal distribution, with their equal-probability bins")
    left, right = (14.0, width - 14) if narrow else (40.0, width - 40)
    top, bottom = 40.0, 40.0 + (150 if narrow else 190)
    peak = max(p * bins.z_max for p in density.pdf)
    chart = Chart(svg, Scale(-1.0, 1.0, left, right), Scale(0.0, peak * 1.08, bottom, top))
    for i, (a, b) in enumerate(zip(bins.bin_edges[:-1], bins.bin_edges[1:])):
        svg.rect(chart.x(a), top, chart.x(b) - chart.x(a), bottom - top, "bin-even" if i % 2 == 0 else "bin-odd",
                 tip=f"code {i}: bin from {a:.3f} to {b:.3f}, probability {bins.bin_probabilities[i]:.3f}")
    curve = [(z / bins.z_max, p * bins.z_max) for z, p in zip(density.z, density.pdf)]
    chart.polyline(curve, "curve")
    for code, level in enumerate(bins.levels):
        x = chart.x(level)
        svg.line(x, bottom, x, bottom + 9, "level")
        show = not narrow or code in (0, 3, 7, 11, 15)
        if show:
            svg.text(x, bottom + 22, str(code), "ts tb" if code == 7 else "ts", anchor="middle")
    svg.text(chart.x(0.0), top - 8, "zero is code 7", "ts tm", anchor="middle")
    svg.line(left, bottom, right, bottom, "axis")
    for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
        svg.text(chart.x(value), bottom + 40, f"{value:g}", "ts tm", anchor="middle")
    svg.text(right, bottom + 58, "weight ÷ block absmax", "ts tb", anchor="end")
    svg.text(left, 18, "N(0, 1) density", "ts tb")
    svg.height = bottom + 66
    return svg


def _levels(q: NoArguments) -> Art:
    bins = nf4.nf4_bins()
    caption = (f"NF4's levels (ticks, with their codes) are quantiles of the normal distribution scaled so the outermost "
               f"sits at ±1; the shaded bands are the bins between neighbouring quantiles, so a normally distributed "
               f"weight is about equally likely to land in each (the middle bins hold {min(bins.bin_probabilities[1:-1]):.3f}"
               f" to {max(bins.bin_probabilities[1:-1]):.3f} of the probability). The grid is fine where weights are dense "
               f"and coarse in the tails; 8 levels sit above zero and 7 below, so zero itself is a level.")
    return drawn(_levels_svg, caption)


# ---------------------------------------------------------------------------- three 4-bit code books


CODEBOOKS = (("nf4", "NF4", "normal quantiles"), ("fp4", "FP4", "e2m1 floats"), ("int4", "INT4", "uniform"))


def _codebooks_svg(width: float) -> Svg:
    narrow = width < WIDE
    svg = Svg(width, 10, "The 4-bit code books NF4, FP4 and INT4 on the interval from −1 to 1")
    left = 14.0 if narrow else 176.0
    right = width - 14
    scale = Scale(-1.0, 1.0, left, right)
    y = 20.0
    for method, name, kind in CODEBOOKS:
        levels = sorted(set(nf4.codebook(method)))
        if narrow:
            svg.text(left, y, f"{name}: {kind}, {len(levels)} levels", "ts tb")
            y += 10
        else:
            svg.text(left - 14, y + 15, name, "t tb", anchor="end")
            svg.text(left - 14, y + 30, f"{kind}, {len(levels)} levels", "ts tm", anchor="end")
        svg.line(left, y + 16, right, y + 16, "axis")
        for level in levels:
            svg.circle(scale(level), y + 16, 4.2, f"dot-{method}")
        y += 46 if narrow else 50
    for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
        svg.text(scale(value), y, f"{value:g}", "ts tm", anchor="middle")
    svg.text(right, y + 16, "value ÷ block absmax", "ts tb", anchor="end")
    svg.height = y + 24
    return svg


def _codebooks(q: NoArguments) -> Art:
    caption = ("Where each 4-bit format puts its levels. INT4 spaces them evenly, wasting codes in the sparse tails; FP4's "
               "floating-point grid is finest near zero but jumps in powers of two; NF4 follows the bell curve that "
               "pre-trained weights approximately follow. All three are scaled per block so the largest |weight| maps to ±1.")
    return drawn(_codebooks_svg, caption)


# ---------------------------------------------------------------------------- blocks and their constants (live)


class BlocksQuery(FigureQuery):
    blocksize: int = Field(64, ge=16, le=4096, description="Weights per absmax block")
    double_quant: bool = Field(True, description="Quantize the absmax constants to 8 bits (blocks of 256)")
    model: str = Field("llama-2-70b", max_length=64, description="Architecture slug for the totals")


def _blocks_svg(q: BlocksQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    footprint = nf4.nf4_model_bytes(arch.n_params_linear, q.blocksize, double_quant=q.double_quant,
                                    dq_blocksize=DQ_BLOCKSIZE)
    narrow = width < WIDE
    svg = Svg(width, 10, f"NF4 storage in blocks of {q.blocksize}: 4-bit codes and "
                         f"{'8-bit' if q.double_quant else 'fp32'} absmax constants")
    left, room = 12.0, width - 24
    code_bytes = q.blocksize / 2  # two 4-bit codes per byte
    const_bytes = 1.0 if q.double_quant else 4.0
    n_blocks = 3 if narrow else 4
    y = legend(svg, left, 6, [("codes", "4-bit codes"), ("const", "8-bit absmax" if q.double_quant else "fp32 absmax")],
               room) + 18
    svg.text(left, y, f"{n_blocks} blocks of {q.blocksize} weights, bytes to scale", "ts tb")
    y += 8
    per_block = code_bytes + const_bytes
    unit = (room - (n_blocks - 1) * 6) / (n_blocks * max(per_block, 36.0))  # user units per byte
    x = left
    for b in range(n_blocks):
        svg.rect(x, y, code_bytes * unit, 30, "codes", tip=f"block {b + 1}: {q.blocksize} codes, {code_bytes:g} bytes")
        svg.rect(x + code_bytes * unit, y, const_bytes * unit, 30, "const",
                 tip=f"its absmax: {const_bytes:g} byte{'s' if const_bytes != 1 else ''}")
        if code_bytes * unit > 60:
            svg.text(x + code_bytes * unit / 2, y + 19, f"{code_bytes:g} B", "ts tb", anchor="middle")
        x += per_block * unit + 6
    y += 44
    if q.double_quant:
        if narrow:
            svg.text(left, y, f"+ per {DQ_BLOCKSIZE} blocks: one fp32 scale (4 B)", "ts tm")
            svg.text(left, y + 15, "for their 8-bit constants", "ts tm")
            y += 15
        else:
            svg.text(left, y, f"+ per {DQ_BLOCKSIZE} blocks: one fp32 scale (4 B) for their 8-bit constants", "ts tm")
        y += 16

    # Bits per parameter, one bar on a fixed 0–5 bit scale so the constants' share is comparable.
    bits_const = nf4.bits_per_param(q.blocksize, double_quant=q.double_quant, dq_blocksize=DQ_BLOCKSIZE)
    y += 12
    svg.text(left, y, f"Bits per parameter: 4 + {bits_const:.3f} = {4 + bits_const:.3f}", "t tb")
    scale = room / 5.0
    svg.rect(left, y + 8, 4 * scale, 18, "codes")
    svg.rect(left + 4 * scale, y + 8, bits_const * scale, 18, "const")
    for tick in range(6):
        svg.line(left + tick * scale, y + 26, left + tick * scale, y + 31, "axis")
        svg.text(left + tick * scale, y + 44, str(tick), "ts tm", anchor="middle")
    y += 64
    total = f"{arch.display_name}'s linear layers: {format_gpu_bytes(footprint.code_bytes)} of codes"
    consts = f"+ {format_gpu_bytes(footprint.constant_bytes)} of constants"
    if narrow:
        svg.text(left, y, total, "ts")
        svg.text(left, y + 16, consts, "ts")
        y += 16
    else:
        svg.text(left, y, f"{total} {consts}", "ts")
    svg.height = y + 10
    return svg


def _blocks(q: BlocksQuery) -> Art:
    arch = get_architecture(q.model)
    bits_const = nf4.bits_per_param(q.blocksize, double_quant=q.double_quant, dq_blocksize=DQ_BLOCKSIZE)
    footprint = nf4.nf4_model_bytes(arch.n_params_linear, q.blocksize, double_quant=q.double_quant,
                                    dq_blocksize=DQ_BLOCKSIZE)
    kind = f"8-bit constants (one fp32 scale per {DQ_BLOCKSIZE} blocks)" if q.double_quant else "fp32 constants"
    readout = (f"Blocks of {q.blocksize} with {kind}: {4 + bits_const:.3f} bits per parameter, "
               f"{bits_const:.3f} of them constants; {arch.display_name}'s {format_int(arch.n_params_linear)} "
               f"quantized parameters take {format_gpu_bytes(footprint.n_bytes)}.")
    caption = ("NF4 stores a tensor as blocks of consecutive weights: each weight a 4-bit code, each block one absmax "
               "constant. Smaller blocks confine an outlier's damage to fewer neighbours but pay for more constants; "
               "double quantization stores the constants themselves in 8 bits, which makes small blocks affordable. "
               "Change the block size and watch the constants' share.")
    return drawn(lambda width: _blocks_svg(q, width), caption, readout)


def _blocks_controls(q: BlocksQuery) -> tuple[Control, ...]:
    sizes = sorted(set(BLOCKSIZES) | {q.blocksize})
    return (
        Control("choice", "blocksize", "Block size", str(q.blocksize), tuple((str(s), str(s)) for s in sizes)),
        Control("toggle", "double_quant", "Double quantization", "true" if q.double_quant else "false"),
        Control("hidden", "model", "Model", q.model),
    )


FIGURES = register(
    FigureSpec("nf4-levels", "NF4's levels are quantiles of a normal distribution", "qlora", NoArguments, _levels),
    FigureSpec("codebooks", "Three ways to spend 16 codes", "qlora", NoArguments, _codebooks),
    FigureSpec("nf4-blocks", "Blockwise absmax and its constants", "qlora", BlocksQuery, _blocks, _blocks_controls),
)
