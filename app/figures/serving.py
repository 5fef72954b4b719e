"""Serving many adapters on one base: memory and decode traffic as the fleet grows (live), and the
data flow of a batch that mixes adapters (Punica's SGMV, S-LoRA).

Numbers from `calculators.serving` (merged copies against one base plus adapters, the extra
multiply-adds and bytes of unmerged adapters) and `calculators.params` (one module's adapter).
"""

from __future__ import annotations

import math

from pydantic import Field

from calculators import serving
from calculators.gpus import get_gpu
from calculators.architectures import get_architecture
from calculators.params import lora_module_params

from app.figures.chart import Chart, Scale
from app.figures.parts import box, legend, linear_module
from app.figures.spec import Art, Control, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg
from app.formatting import GIB, format_gpu_bytes, format_int

# ---------------------------------------------------------------------------- the fleet grows (live)


class FleetQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r (all linear layers, bf16)")
    gpu: str = Field("h100-80gb", max_length=32, description="The GPU whose memory is drawn as a line")


TASKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DISTINCT = (1, 2, 4, 8, 16, 32, 64)
RANKS = (8, 16, 64, 256)


def _fits(memory_bytes: int, base_bytes: int, adapter_bytes: int) -> tuple[int, int]:
    """How many merged copies, and how many adapters beside one base, a GPU's memory holds (weights only)."""
    return memory_bytes // base_bytes, max(0, (memory_bytes - base_bytes) // adapter_bytes)


def _fleet_svg(q: FleetQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    gpu = get_gpu(q.gpu)
    fleet = [serving.serving_memory(arch, n, q.rank) for n in TASKS]
    one = fleet[0]
    narrow = width < WIDE
    svg = Svg(width, 10, f"Serving {TASKS[0]} to {TASKS[-1]} fine-tunes of {arch.display_name}: weights in memory, merged "
                         f"copies against one base with rank-{q.rank} adapters, and the extra bytes a decode step reads")
    left, right = (46.0, width - 24) if narrow else (58.0, width - 104)
    y = legend(svg, 12, 6, [("sw3", "merged: a copy per task"), ("sw1", "one base + unmerged adapters")], width - 24) + 34
    # Panel 1: memory against the number of tasks, log–log.
    high = 10 ** math.ceil(math.log10(max(m.merged_bytes for m in fleet) / GIB))
    low = 10 ** math.floor(math.log10(one.base_bytes / GIB))
    panel_h = 150.0 if narrow else 180.0
    chart = Chart(svg, Scale(TASKS[0], TASKS[-1], left, right, log=True), Scale(low, high, y + panel_h, y, log=True))
    chart.frame("tasks served", "GiB of weights (log)", x_ticks=[1, 10, 100, 1000], x_fmt=lambda v: f"{v:,.0f}",
                y_fmt=lambda v: f"{v / 1000:g}k" if v >= 10_000 else f"{v:,.0f}")
    gy = chart.y(gpu.memory_bytes / GIB)
    svg.line(left, gy, right, gy, "guide")
    svg.text(chart.x(12), gy + 15, f"one {gpu.name}", "ts tm halo")  # under the line, between the two curves
    merged_fit, shared_fit = _fits(gpu.memory_bytes, one.base_bytes, one.adapter_bytes)
    for cls, attr in (("s3", "merged_bytes"), ("s1", "shared_base_bytes")):
        chart.polyline([(m.n_adapters, getattr(m, attr) / GIB) for m in fleet], f"line {cls}")
        for m in fleet:
            if m.n_adapters in (1, 10, 100, 1000):
                svg.circle(chart.x(m.n_adapters), chart.y(getattr(m, attr) / GIB), 3, f"dot{1 if cls == 's1' else 3}")
    last = fleet[-1]
    if narrow:
        svg.text(right, chart.y(last.merged_bytes / GIB) + 16, format_gpu_bytes(last.merged_bytes), "ts tb halo", anchor="end")
        svg.text(right, chart.y(last.shared_base_bytes / GIB) - 8, format_gpu_bytes(last.shared_base_bytes), "ts tb halo",
                 anchor="end")
    else:
        svg.text(right + 8, chart.y(last.merged_bytes / GIB) + 4, format_gpu_bytes(last.merged_bytes), "ts tb")
        svg.text(right + 8, chart.y(last.shared_base_bytes / GIB) + 4, format_gpu_bytes(last.shared_base_bytes), "ts tb")
    y += panel_h + 56
    fit = [f"One {gpu.name} holds {merged_fit} merged copies,", f"or the base and {format_int(shared_fit)} adapters"]
    y = svg.lines(12, y, fit if narrow else [" ".join(fit)], "ts tb") + 30
    # Panel 2: extra bytes read per decode step against the distinct adapters in a batch.
    reads = [100 * serving.decode_read_overhead(arch, q.rank, k) for k in DISTINCT]
    top = reads[-1] * 1.15
    panel_h = 110.0 if narrow else 120.0
    chart = Chart(svg, Scale(0, DISTINCT[-1], left, right), Scale(0, top, y + panel_h, y))
    chart.frame("distinct adapters in the batch", "% more bytes per decode step", x_ticks=[1, 16, 32, 48, 64],
                y_fmt=lambda v: f"{v:g}%")
    chart.polyline(list(zip(DISTINCT, reads)), "line s1")
    svg.circle(chart.x(DISTINCT[-1]), chart.y(reads[-1]), 3, "dot1")
    label = f"+{reads[-1]:.1f}%"
    if narrow:
        svg.text(chart.x(DISTINCT[-1]) - 10, chart.y(reads[-1]) - 8, label, "ts tb halo", anchor="end")
    else:
        svg.text(right + 8, chart.y(reads[-1]) + 4, label, "ts tb")
    svg.line(left, chart.y(0), right, chart.y(0), "line s3")
    svg.text(right - 4, chart.y(0) - 6, "merged: +0%", "ts tb halo", anchor="end")
    svg.height = y + panel_h + 44
    return svg


def _fleet(q: FleetQuery) -> Art:
    arch = get_architecture(q.model)
    gpu = get_gpu(q.gpu)
    one = serving.serving_memory(arch, 1, q.rank)
    merged_fit, shared_fit = _fits(gpu.memory_bytes, one.base_bytes, one.adapter_bytes)
    per_adapter = 100 * serving.decode_read_overhead(arch, q.rank, 1)
    caption = (f"Top, log–log: the weights resident for N tasks of {arch.display_name} in bf16. Merged serving needs a "
               f"{format_gpu_bytes(one.base_bytes)} copy per task; unmerged adapters at rank {q.rank} on every linear layer "
               f"add {format_gpu_bytes(one.adapter_bytes)} each to one base. The key–value cache comes on top of both. "
               f"Bottom: generation reads every weight once per step, and each distinct adapter in the batch adds its own "
               f"bytes, {per_adapter:.2f}% of the base's, a lower bound on the latency cost. Merged copies read nothing "
               f"extra but hold {merged_fit} tasks where the shared base holds {format_int(shared_fit)}.")
    return drawn(lambda width: _fleet_svg(q, width), caption, readout=(
        f"Rank {q.rank}: an adapter is {format_gpu_bytes(one.adapter_bytes)}; one {gpu.name} holds {merged_fit} merged "
        f"copies or the base and {format_int(shared_fit)} adapters; each distinct adapter in a batch adds "
        f"{per_adapter:.2f}% to a decode step's reads."))


def _fleet_controls(q: FleetQuery) -> tuple[Control, ...]:
    ranks = sorted(set(RANKS) | {q.rank})
    return (
        Control("choice", "rank", "Adapter rank r", str(q.rank), tuple((str(r), str(r)) for r in ranks)),
        Control("hidden", "model", "Model", q.model),
        Control("hidden", "gpu", "GPU", q.gpu),
    )


# ---------------------------------------------------------------------------- one layer, a mixed batch


class BatchQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    module: str = Field("q_proj", max_length=64, pattern=r"^[A-Za-z0-9_.]+$", description="Linear module kind")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r")


# Eight requests for three adapters, as they arrive, and grouped into segments by adapter.
ARRIVALS = ("task-a", "task-b", "task-a", "task-c", "task-c", "task-b", "task-a", "task-c")
ADAPTERS = (("task-a", "1"), ("task-b", "2"), ("task-c", "3"))  # numbers: A and B name LoRA's matrices
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _batch_svg(q: BatchQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    module = linear_module(q.model, q.module)
    d_in, d_out, r = module.in_features, module.out_features, q.rank
    narrow = width < WIDE
    svg = Svg(width, 10, f"One {module.name} layer of {arch.display_name} serving a batch that mixes three adapters: one "
                         f"shared matmul with W₀ and, per segment of requests, that adapter's thin A and B")
    names = dict(ADAPTERS)
    segments = [(cls, [i for i, c in enumerate(ARRIVALS) if c == cls]) for cls, _ in ADAPTERS]
    row_h = 13.0
    gap = 6.0
    x0 = 12.0
    y = 8.0
    # the batch, grouped into segments
    svg.text(x0, y + 12, "batch X", "ts tb")
    svg.text(x0, y + 27, "grouped", "ts tm")
    by = y + 38
    seg_tops = []
    for cls, rows in segments:
        seg_tops.append(by)
        for k, _ in enumerate(rows):
            svg.rect(x0 + 22, by + k * row_h, 34, row_h - 3, cls, rx=2)
        svg.text(x0, by + len(rows) * row_h / 2 + 3, f"#{names[cls]}", "ts tb")
        by += len(rows) * row_h + gap
    batch_bottom = by - gap
    mid = (y + 38 + batch_bottom) / 2
    weight_bytes = d_in * d_out * 2
    adapter_bytes = lora_module_params(d_in, d_out, r) * 2
    if narrow:
        # shared path to the right of the batch, the adapters' path below
        sx = x0 + 64
        box(svg, sx, y + 38, width - sx - 12, batch_bottom - y - 38, "frozen",
            ["W₀X: one matmul", "for the whole batch", f"reads {format_gpu_bytes(weight_bytes)}"], "ts")
        svg.arrow(x0 + 58, mid, sx - 2, mid)
        ay = batch_bottom + 34
        svg.text(x0, ay - 12, "per segment, beside it:", "ts tb")
        for i, (cls, rows) in enumerate(segments):
            _segment_chain(svg, x0, ay + i * 30, width - 24, cls, names[cls], r, compact=True)
        ay += 3 * 30 + 4
        svg.text(x0, ay + 10, f"reads {format_gpu_bytes(adapter_bytes)} per adapter (r = {r})", "ts tm")
        svg.text(x0, ay + 28, "H = W₀X + s·BAX, each row with its own B and A", "ts tb")
        svg.height = ay + 38
        return svg
    sx = x0 + 76
    room = width - sx - 12
    shared_w = room - 84
    box(svg, sx + 14, y + 2, shared_w - 14, 30, "frozen", f"W₀ ({format_int(d_out)} × {format_int(d_in)}): W₀X, one matmul",
        "ts")
    # every row goes through W₀ (the bracket), each segment's rows through their own A and B
    bracket_x = x0 + 62
    svg.polyline([(x0 + 58, y + 38), (bracket_x, y + 38), (bracket_x, batch_bottom), (x0 + 58, batch_bottom)], "arrow")
    svg.polyline([(bracket_x, y + 38), (bracket_x, y + 17)], "arrow")
    svg.arrow(bracket_x, y + 17, sx + 12, y + 17)
    for i, (cls, rows) in enumerate(segments):
        seg_mid = seg_tops[i] + len(rows) * row_h / 2 - 1.5
        svg.arrow(bracket_x + 4, seg_mid, sx + 12, seg_mid)
        _segment_chain(svg, sx + 14, seg_mid - 11, shared_w - 14, cls, names[cls], r)
    # the sum, row by row
    ox = sx + shared_w + 14
    svg.text(ox - 6, mid + 5, "+", "tl", anchor="middle")
    oy = y + 38
    for cls, rows in segments:
        for k, _ in enumerate(rows):
            svg.rect(ox + 8, oy + k * row_h, 34, row_h - 3, cls, rx=2)
        oy += len(rows) * row_h + gap
    svg.text(ox + 25, y + 27, "H", "ts tb", anchor="middle")
    ny = batch_bottom + 22
    svg.text(x0, ny, f"Per token: W₀ does {format_int(d_in * d_out)} multiply-adds, an adapter "
                     f"{format_int(lora_module_params(d_in, d_out, r))} (r = {r}).", "ts tm")
    svg.text(x0, ny + 17, f"Per decode step: W₀'s {format_gpu_bytes(weight_bytes)} is read once; each adapter in the batch "
                          f"adds {format_gpu_bytes(adapter_bytes)}.", "ts tm")
    svg.height = ny + 26
    return svg


def _segment_chain(svg: Svg, x: float, y: float, w: float, cls: str, name: str, r: int, compact: bool = False) -> None:
    """One segment's thin path: X_seg → A (shrink to r) → B (expand back), in the adapter's colour."""
    sub = name.translate(SUBSCRIPTS)
    label_a = f"A{sub}: down to r = {r}" if not compact else f"A{sub}: to r = {r}"
    label_b = f"B{sub}: back to d_out" if not compact else f"B{sub}: to d_out"
    half = (w - 20) / 2
    box(svg, x, y, half, 22, cls, label_a, "ts", rx=3)
    svg.arrow(x + half + 2, y + 11, x + half + 18, y + 11)
    box(svg, x + half + 20, y, half, 22, cls, label_b, "ts", rx=3)


def _batch(q: BatchQuery) -> Art:
    arch = get_architecture(q.model)
    module = linear_module(q.model, q.module)
    extra = lora_module_params(module.in_features, module.out_features, q.rank) / (module.in_features * module.out_features)
    caption = (f"{module.name} of {arch.display_name} serving eight requests for three adapters. The requests are grouped "
               f"by adapter into segments; W₀X is one ordinary matmul for all of them, and each segment's own A and B "
               f"(rank {q.rank}) run beside it, {100 * extra:.2f}% of W₀'s work. Punica's SGMV kernel runs all the "
               f"segments' thin products in one launch instead of one small matmul pair per adapter; S-LoRA pages the "
               f"adapters in and out of GPU memory.")
    return drawn(lambda width: _batch_svg(q, width), caption)


FIGURES = register(
    FigureSpec("serving-fleet", "Many tasks on one base: memory and reads as the fleet grows", "serving", FleetQuery,
               _fleet, _fleet_controls),
    FigureSpec("sgmv-batch", "A batch that mixes adapters", "serving", BatchQuery, _batch),
)
