"""What a training step keeps in GPU memory: bytes per parameter, copies per task, the breakdown
of a step's peak, and the step as a timeline.

Every size comes from `calculators.memory` (estimate_memory, full_ft_bytes_per_param,
weight_bytes), `calculators.params` (adapter sizes) and `calculators.memory_timeline`; sizes
are shown in binary units (GiB, MiB) like the GPUs they are compared with.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from calculators import memory, params
from calculators.architectures import get_architecture
from calculators.gpus import get_gpu
from calculators.memory_timeline import step_timeline

from app.figures.chart import Chart, Scale
from app.figures.parts import gpu_guides, legend, nice_ticks
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg, text_width
from app.formatting import GIB, format_gpu_bytes, format_int
from app.queries import split_modules

COMPONENTS = {
    "weights": "base weights", "quant_constants": "quantization constants", "adapter_weights": "adapter weights",
    "gradients": "gradients", "optimizer_states": "optimizer states", "master_weights": "fp32 master weights",
    "weight_copies": "autocast weight copies", "activations": "activations", "logits_and_loss": "logits and loss", "temporary": "temporary buffers",
}
METHOD_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA"}
GPU_LINES = ("rtx-4090", "rtx-a6000", "h100-80gb")


class ModelQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], description="peft names or a preset")

    _split = field_validator("target_modules", mode="before")(split_modules)

    def targets(self) -> str | list[str]:
        return self.target_modules[0] if len(self.target_modules) == 1 else self.target_modules


def _gib(n_bytes: float) -> str:
    return format_gpu_bytes(n_bytes)


# ---------------------------------------------------------------------------- bytes per parameter


def _per_param_svg(q: ModelQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    per = memory.full_ft_bytes_per_param()
    parts = [("m-weights", "bf16 weights", per.weights), ("m-gradients", "bf16 gradients", per.grads),
             ("m-master_weights", "fp32 master copy", per.master), ("m-optimizer_states", "Adam m and v (fp32)", per.optimizer)]
    narrow = width < WIDE
    svg = Svg(width, 10, f"Bytes per trained parameter, and the training state of {arch.display_name}, full fine-tuning against LoRA")
    left, room = 12.0, width - 24
    svg.text(left, 18, f"Per trained parameter: {per.total:g} bytes" + ("" if narrow else " (mixed-precision AdamW)"), "t tb")
    y = 46.0
    x = left
    for cls, label, n_bytes in parts:
        w = room * n_bytes / per.total
        svg.rect(x, y, w, 28, cls, rx=2)
        svg.text(x + w / 2, y - 6, f"{n_bytes:g} B", "ts tb", anchor="middle")
        x += w
    y = legend(svg, left, y + 38, [(c, label) for c, label, _ in parts], room) + 14

    counted = params.count_trainable(arch, "lora", r=q.rank, target_modules=q.targets())
    full_bytes = arch.n_params * per.total
    frozen = memory.weight_bytes(arch.n_params, "bf16")
    lora_state = counted.trainable * per.total
    svg.text(left, y + 4, f"{arch.display_name}, before any activation:", "t tb")
    y += 30
    rows_top = y
    scale = room / full_bytes
    label_w = 0.0
    rows = [("Full fine-tuning", [(c, arch.n_params * b) for c, _, b in parts]),
            (f"LoRA r = {q.rank}", [("m-weights", frozen), ("m-adapter_weights", lora_state)])]
    h100 = get_gpu("h100-80gb")
    for title, segments in rows:
        total = sum(b for _, b in segments)
        svg.text(left, y + 14, f"{title}: {_gib(total)}", "ts tb")
        x = left + label_w
        for cls, n_bytes in segments:
            svg.rect(x, y + 20, max(n_bytes * scale, 1.5), 20, cls, rx=1)
            x += n_bytes * scale
        y += 50
    gx = left + h100.memory_bytes * scale
    svg.line(gx, rows_top - 10, gx, y - 6, "guide")
    svg.text(gx + 4, rows_top - 4, h100.name, "ts tm")
    note = (f"LoRA: frozen bf16 weights plus {format_int(counted.trainable)} trained parameters at {per.total:g} B each "
            f"({_gib(lora_state)})")
    if narrow or text_width(note, 11.5) > room:
        svg.text(left, y + 4, f"LoRA: frozen bf16 weights + {_gib(lora_state)}", "ts tm")
        svg.text(left, y + 19, f"of training state for {format_int(counted.trainable)} parameters", "ts tm")
        y += 15
    else:
        svg.text(left, y + 4, note, "ts tm")
    svg.height = y + 12
    return svg


def _per_param(q: ModelQuery) -> Art:
    arch = get_architecture(q.model)
    per = memory.full_ft_bytes_per_param()
    caption = (f"Top: what mixed-precision AdamW keeps for every parameter it trains, {per.total:g} bytes, of which only "
               f"the first {per.weights:g} would be needed to serve the model. Bottom, to scale: full fine-tuning of "
               f"{arch.display_name} pays that for all {format_int(arch.n_params)} parameters; LoRA keeps the frozen "
               f"weights and pays it only for the adapter.")
    return drawn(lambda width: _per_param_svg(q, width), caption)


# ---------------------------------------------------------------------------- a copy per task


class FleetQuery(ModelQuery):
    rank: int = Field(16, ge=1, le=4096)
    tasks: int = Field(10, ge=2, le=20, description="Fine-tuned variants to store")


def _fleet_svg(q: FleetQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    base = memory.weight_bytes(arch.n_params, "bf16")
    adapter = params.count_trainable(arch, "lora", r=q.rank, target_modules=q.targets(), dtype="bf16").adapter_bytes
    narrow = width < WIDE
    per_row = 5 if narrow else 10
    gap = 8.0
    side = min(54.0, (width - 24 - gap * (per_row - 1)) / per_row)
    svg = Svg(width, 10, f"Storage of {q.tasks} fine-tuned variants of {arch.display_name}: full copies against LoRA adapters")
    y = 18.0
    svg.text(12, y, f"Full fine-tuning: {q.tasks} copies, {_gib(q.tasks * base)}", "t tb")
    y += 10
    for i in range(q.tasks):
        row, col = divmod(i, per_row)
        svg.rect(12 + col * (side + gap), y + row * (side + gap), side, side, "m-weights", rx=3,
                 tip=f"variant {i + 1}: {_gib(base)}")
    y += math.ceil(q.tasks / per_row) * (side + gap) + 26
    svg.text(12, y, f"LoRA: one base + {q.tasks} adapters, {_gib(base + q.tasks * adapter)}", "t tb")
    y += 10
    svg.rect(12, y, side, side, "m-weights", rx=3, tip=f"the base model: {_gib(base)}")
    tiny = side * math.sqrt(adapter / base)  # area to scale
    ax = 12 + side + 16
    for i in range(q.tasks):
        svg.rect(ax + i * (max(tiny, 2.0) + 5), y + side - max(tiny, 2.0), max(tiny, 2.0), max(tiny, 2.0),
                 "m-adapter_weights", tip=f"adapter {i + 1}: {_gib(adapter)}")
    svg.text(ax, y + side - max(tiny, 2.0) - 8, f"each adapter {_gib(adapter)} ({100 * adapter / base:.2f}% of a copy)", "ts tm")
    svg.text(12, y + side + 20, f"Areas to scale; one copy of {arch.display_name} in bf16 is {_gib(base)}.", "ts tm")
    # The two totals as bars on one scale.
    y += side + 44
    full_total = q.tasks * base
    room = width - 24
    rows = (("full copies", [("m-weights", full_total)]),
            ("one base + adapters", [("m-weights", base), ("m-adapter_weights", q.tasks * adapter)]))
    for label, segments in rows:
        svg.text(12, y + 10, f"{label}: {_gib(sum(n for _, n in segments))}", "ts tb")
        x = 12.0
        for cls, n_bytes in segments:
            svg.rect(x, y + 16, max(room * n_bytes / full_total, 1.5), 14, cls)
            x += room * n_bytes / full_total
        y += 38
    svg.height = y + 4
    return svg


def _fleet(q: FleetQuery) -> Art:
    arch = get_architecture(q.model)
    adapter = params.count_trainable(arch, "lora", r=q.rank, target_modules=q.targets(), dtype="bf16").adapter_bytes
    base = memory.weight_bytes(arch.n_params, "bf16")
    caption = (f"Storing {q.tasks} fine-tunes of {arch.display_name}. Full fine-tuning writes a whole model per task; "
               f"LoRA (rank {q.rank}, bf16) writes only the adapter, {100 * adapter / base:.2f}% of a copy, beside one "
               f"shared base. Each square's area is proportional to its bytes.")
    return drawn(lambda width: _fleet_svg(q, width), caption)


# ---------------------------------------------------------------------------- the peak, by component


class StepQuery(ModelQuery):
    rank: int = Field(16, ge=1, le=4096)
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)
    gradient_checkpointing: bool = False
    methods: list[str] = Field(default_factory=lambda: ["full", "lora", "qlora"], min_length=1, max_length=4)

    _split_methods = field_validator("methods", mode="before")(split_modules)

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METHOD_LABELS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; choose from {', '.join(METHOD_LABELS)}")
        return value


def _estimate(q: StepQuery, method: str, gradient_checkpointing: bool | None = None) -> memory.MemoryEstimate:
    return memory.estimate_memory(
        q.model, method=method, r=q.rank, target_modules=q.targets(), batch_size=q.batch_size, seq_len=q.seq_len,
        gradient_checkpointing=q.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing,
    )


def _breakdown_svg(q: StepQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    estimates = [(m, _estimate(q, m)) for m in q.methods]
    gpus = [get_gpu(slug) for slug in GPU_LINES]
    narrow = width < WIDE
    svg = Svg(width, 10, f"Peak memory of one training step of {arch.display_name} by component: "
                         + ", ".join(METHOD_LABELS[m] for m, _ in estimates))
    left, room = 12.0, width - 24
    used = [k for k in COMPONENTS if any(e.breakdown().get(k) for _, e in estimates)]
    y = legend(svg, left, 6, [(f"m-{k}", COMPONENTS[k]) for k in used] + [("ctx", "CUDA context")], room) + 40
    mark = svg.mark()
    largest = max(max(e.total_with_context_bytes for _, e in estimates), max(g.memory_bytes for g in gpus))
    scale = room / largest
    top = y
    for method, estimate in estimates:
        svg.text(left, y + 12, f"{METHOD_LABELS[method]}: {_gib(estimate.total_with_context_bytes)}", "ts tb halo")
        x = left
        for key in used:
            n_bytes = estimate.breakdown().get(key, 0)
            if n_bytes:
                svg.rect(x, y + 18, n_bytes * scale, 22, f"m-{key}", tip=f"{COMPONENTS[key]}: {_gib(n_bytes)}")
                x += n_bytes * scale
        svg.rect(x, y + 18, estimate.cuda_context_bytes * scale, 22, "ctx", tip=f"CUDA context: {_gib(estimate.cuda_context_bytes)}")
        y += 54

    gpu_guides(svg, mark, gpus, left, scale, top, y - 8, short_labels=narrow)
    ckpt = "with" if q.gradient_checkpointing else "without"
    svg.text(left, y + 6, f"batch {q.batch_size} × {format_int(q.seq_len)} tokens, {ckpt} gradient checkpointing, "
                          f"r = {q.rank}" if not narrow else f"batch {q.batch_size} × {format_int(q.seq_len)} tokens, {ckpt} checkpointing",
             "ts tm")
    svg.height = y + 14
    return svg


def _breakdown(q: StepQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"The peak of one training step of {arch.display_name}, split into what is allocated at that moment, "
               f"from the book's estimator. Full fine-tuning's peak is its weights, gradients and optimizer states; "
               f"LoRA's is the frozen weights and the activations; QLoRA shrinks the weights to 4 bits, and the "
               f"activations do not shrink with them. Dotted lines: the memory of common GPUs.")
    return drawn(lambda width: _breakdown_svg(q, width), caption)


# ---------------------------------------------------------------------------- the step as a timeline


class TimelineQuery(ModelQuery):
    rank: int = Field(16, ge=1, le=4096)
    method: str = Field("lora", pattern="^(full|lora|qlora|dora)$")
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)


BANDS = (("persistent", "m-weights", "weights, adapters, optimizer states"), ("gradients", "m-gradients", "gradients"),
         ("activations", "m-activations", "saved for the backward pass"), ("logits_and_loss", "m-logits_and_loss", "logits and loss"),
         ("temporary", "m-temporary", "temporary buffers"))


def _timeline_panel(svg: Svg, chart: Chart, timeline, title: str) -> None:
    points = timeline.points
    lower = [0.0] * len(points)
    for key, cls, _ in BANDS:
        upper = [lo + getattr(p, f"{key}_bytes") / GIB for lo, p in zip(lower, points)]
        if any(u > lo for u, lo in zip(upper, lower)):
            outline = [(chart.x(p.position), chart.y(u)) for p, u in zip(points, upper)]
            outline += [(chart.x(p.position), chart.y(lo)) for p, lo in reversed(list(zip(points, lower)))]
            svg.polygon(outline, cls)
        lower = upper
    peak = max(points, key=lambda p: p.total_bytes)
    px, py = chart.x(peak.position), chart.y(peak.total_bytes / GIB)
    svg.circle(px, py, 3.5, "peak")
    label = f"peak {_gib(timeline.peak_bytes)} ({timeline.peak_phase})"
    if px + 6 + text_width(label, 12.5) < chart.x.end:
        svg.text(px + 6, py - 7, label, "ts tb halo")
    else:  # two lines, on the side with room
        anchor, dx = ("start", 6) if px < (chart.x.start + chart.x.end) / 2 else ("end", -6)
        svg.text(px + dx, py - 20, f"peak {_gib(timeline.peak_bytes)}", "ts tb halo", anchor=anchor)
        svg.text(px + dx, py - 6, f"({timeline.peak_phase})", "ts halo", anchor=anchor)
    svg.text(chart.x.end, chart.y.end - 10, title, "t tb", anchor="end")


def _timeline_svg(q: TimelineQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    lines = {ckpt: step_timeline(_estimate_timeline(q, ckpt), arch.num_hidden_layers) for ckpt in (False, True)}
    narrow = width < WIDE
    svg = Svg(width, 10, f"Allocated memory during one {METHOD_LABELS[q.method]} training step of {arch.display_name}, "
                         "without and with gradient checkpointing")
    left, right = (42.0, width - 10) if narrow else (52.0, width - 16)
    y = legend(svg, 12, 6, [(cls, label) for _, cls, label in BANDS], width - 24) + 46
    high = max(t.peak_bytes for t in lines.values()) / GIB
    ticks = nice_ticks(high, 4)
    panel_h = 120.0 if narrow else 130.0
    for ckpt, timeline in lines.items():
        chart = Chart(svg, Scale(0, 1, left, right), Scale(0, ticks[-1], y + panel_h, y))
        chart.frame("", "GiB", x_ticks=[], y_fmt=lambda v: f"{v:g}")
        _timeline_panel(svg, chart, timeline, "with gradient checkpointing" if ckpt else "without gradient checkpointing")
        for stage, start, end in timeline.stage_spans:
            if stage == "next step":
                continue
            label = {"optimizer": "optim." if narrow else "optimizer"}.get(stage, stage)
            svg.text(chart.x((start + end) / 2), y + panel_h + 15, label, "ts tm", anchor="middle")
            if start > 0:
                svg.line(chart.x(start), y, chart.x(start), y + panel_h, "grid")
        y += panel_h + 62
    svg.text(12, y - 34, f"batch {q.batch_size} × {format_int(q.seq_len)} tokens, r = {q.rank}", "ts tm")
    svg.height = y - 26
    return svg


def _estimate_timeline(q: TimelineQuery, ckpt: bool) -> memory.MemoryEstimate:
    return memory.estimate_memory(q.model, method=q.method, r=q.rank, target_modules=q.targets(),
                                  batch_size=q.batch_size, seq_len=q.seq_len, gradient_checkpointing=ckpt)


def _timeline(q: TimelineQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"One {METHOD_LABELS[q.method]} step of {arch.display_name}, left to right. The forward pass stacks up each "
               f"block's saved activations; the loss adds its fp32 buffers; the backward pass frees the activations block "
               f"by block while gradients appear; the optimizer updates in place and zero_grad frees the gradients. "
               f"Checkpointing keeps only each block's input and recomputes one block at a time, so the hump shrinks. "
               f"The estimator's moments are exact; between them the walk is drawn block by block.")
    return drawn(lambda width: _timeline_svg(q, width), caption)


FIGURES = register(
    FigureSpec("full-ft-memory", "What full fine-tuning keeps per parameter", "why-peft", ModelQuery, _per_param),
    FigureSpec("storage-per-task", "A full copy per task, or an adapter", "why-peft", FleetQuery, _fleet),
    FigureSpec("memory-breakdown", "The peak of a training step, by component", "memory", StepQuery, _breakdown),
    FigureSpec("memory-timeline", "Memory over one training step", "memory", TimelineQuery, _timeline),
)
