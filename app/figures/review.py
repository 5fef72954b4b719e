"""The review chapter's summaries: LoRA at a glance (formula, shapes, count, memory, knobs, the family,
each with the chapter that derives it), and the memory levers one after another.

Numbers from `calculators.params` (counts), `calculators.memory` (bytes per parameter, the QLoRA
base, one step's estimate), `calculators.nf4`, `calculators.scaling` and `calculators.serving`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from pydantic import Field

from calculators import memory, nf4, params, scaling, serving
from calculators.architectures import get_architecture
from calculators.gpus import get_gpu

from app.figures.memory import COMPONENTS
from app.figures.parts import box, gpu_guides, legend, linear_module
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import TEXT_SIZES, WIDE, Svg, text_width, wrap
from app.formatting import format_gpu_bytes, format_int


@lru_cache(maxsize=1)
def chapter_numbers() -> dict[str, int]:
    """Chapter label → number, from the content directory's file names (empty if it cannot be read)."""
    from app.content import CHAPTER_FILE, read_meta
    from app.settings import Settings

    try:
        paths = sorted(Settings().content_dir.glob("*.md"))
        return {meta.label: meta.number for meta in (read_meta(p) for p in paths if CHAPTER_FILE.match(p.name))}
    except (OSError, ValueError):
        return {}


def _chapter_chip(labels: tuple[str, ...]) -> str:
    numbers = [chapter_numbers().get(label) for label in labels]
    known = [str(n) for n in numbers if n is not None]
    return ("ch. " + ", ".join(known)) if known else ""


# ---------------------------------------------------------------------------- LoRA at a glance


class GlanceQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    module: str = Field("q_proj", max_length=64, pattern=r"^[A-Za-z0-9_.]+$", description="The module whose shapes are shown")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r")
    alpha: float = Field(32.0, gt=0, le=4096, description="lora_alpha")


Body = Callable[[Svg, float, float, float], float]  # draws from (x, y) within width w; returns the bottom


def _paragraph(svg: Svg, x: float, y: float, w: float, text: str, cls: str = "ts") -> float:
    """Wrapped text from baseline y; returns the y below it."""
    size = TEXT_SIZES[cls.split()[0]]
    return svg.lines(x, y, wrap(text, w, size * 1.04), cls) + 2


def _tiles(q: GlanceQuery) -> list[tuple[str, tuple[str, ...], Body]]:
    arch = get_architecture(q.model)
    module = linear_module(q.model, q.module)
    d_in, d_out, r = module.in_features, module.out_features, q.rank
    s = scaling.lora_scaling(q.alpha, r)
    per_module = params.lora_module_params(d_in, d_out, r)
    counted = params.count_trainable(arch, "lora", r=r, target_modules="all-linear")
    per = memory.full_ft_bytes_per_param()
    bits = 4 + nf4.bits_per_param(64, double_quant=True)
    unmerged = 100 * serving.prefill_flop_overhead(arch, r)
    adapter_bf16 = params.count_trainable(arch, "lora", r=r, target_modules="all-linear", dtype="bf16").adapter_bytes

    def layer(svg: Svg, x: float, y: float, w: float) -> float:
        svg.text(x, y + 14, f"h = W₀x + (α/r)·BAx,  α/r = {q.alpha:g}/{r} = {s:g}", "t tb")
        y += 26
        svg.text(x, y + 19, "x", "t tb")
        svg.arrow(x + 12, y + 15, x + 30, y + 15)
        box(svg, x + 32, y, 78, 28, "frozen", "W₀ frozen", "ts")
        svg.polyline([(x + 20, y + 15), (x + 20, y + 50), (x + 30, y + 50)], "arrow")
        box(svg, x + 32, y + 38, 36, 24, "fa", "A", "ts tb fa-text", rx=3)
        svg.arrow(x + 70, y + 50, x + 82, y + 50)
        box(svg, x + 84, y + 38, 26, 24, "fb", "B", "ts tb fb-text", rx=3)
        svg.circle(x + 132, y + 32, 9, "sum")
        svg.text(x + 132, y + 36, "+", "t tb", anchor="middle")
        svg.polyline([(x + 112, y + 14), (x + 132, y + 14), (x + 132, y + 21)], "arrow")
        svg.polyline([(x + 112, y + 50), (x + 132, y + 50), (x + 132, y + 43)], "arrow")
        svg.arrow(x + 143, y + 32, x + 160, y + 32)
        svg.text(x + 166, y + 36, "h", "t tb")
        if w - 190 > 90:
            _paragraph(svg, x + 190, y + 12, w - 190, "A and B train; W₀ never changes.", "ts tm")
            return y + 66
        return _paragraph(svg, x, y + 80, w, "A and B train; W₀ never changes.", "ts tm")

    def shapes(svg: Svg, x: float, y: float, w: float) -> float:
        side, thin = 54.0, 5.0
        svg.rect(x, y + 14, side, side, "frozen")
        svg.text(x, y + 8, "W₀", "ts tb")
        svg.text(x, y + side + 28, f"{format_int(d_out)} × {format_int(d_in)}", "ts tm")
        bx = x + 112
        svg.rect(bx, y + 14, thin, side, "fb")
        svg.text(bx, y + 8, "B", "ts tb fb-text")
        svg.text(bx - 10, y + side + 28, f"{format_int(d_out)} × {r}", "ts tm")
        ax = x + 182
        svg.rect(ax, y + 14, side, thin, "fa")
        svg.text(ax, y + 8, "A", "ts tb fa-text")
        svg.text(ax, y + 36, f"{r} × {format_int(d_in)}", "ts tm")
        y += side + 44
        y = _paragraph(svg, x, y, w, f"{module.name} of {arch.display_name}: r(d_in + d_out) = {format_int(per_module)} "
                                     f"parameters, against {format_int(d_in * d_out)} in W₀.")
        return _paragraph(svg, x, y + 2, w, f"Every linear layer at r = {r}: {format_int(counted.trainable)} "
                                            f"({counted.percent:.2f}% of the model).", "ts tb")

    def start_merge(svg: Svg, x: float, y: float, w: float) -> float:
        y = _paragraph(svg, x, y + 12, w, "Start: B = 0 and A random, so step 0 computes exactly the base model and "
                                          "B's gradient is not zero.")
        y = _paragraph(svg, x, y + 6, w, "Merge: W = W₀ + (α/r)·BA has W₀'s shape, so a merged model costs what the "
                                         "base costs.")
        return _paragraph(svg, x, y + 6, w, f"Unmerged: +{unmerged:.2f}% matmul work per token at r = {r} on every "
                                            f"linear layer; {format_gpu_bytes(adapter_bf16)} per adapter in bf16.")

    def memory_tile(svg: Svg, x: float, y: float, w: float) -> float:
        weights = memory.weight_bytes(arch.n_params, "bf16")
        lora_state = counted.trainable * per.total
        rows = [("full fine-tuning", [("m-weights", arch.n_params * per.weights),
                                      ("m-gradients", arch.n_params * per.grads),
                                      ("m-master_weights", arch.n_params * per.master),
                                      ("m-optimizer_states", arch.n_params * per.optimizer)]),
                ("LoRA", [("m-weights", weights), ("m-adapter_weights", lora_state)]),
                ("QLoRA", [("m-weights", memory.qlora_base_bytes(arch)), ("m-adapter_weights", lora_state)])]
        largest = sum(n for _, n in rows[0][1])
        y += 4
        for label, parts in rows:
            svg.text(x, y + 10, f"{label}: {format_gpu_bytes(sum(n for _, n in parts))}", "ts tb")
            bx = x
            for cls, n in parts:
                svg.rect(bx, y + 14, max(n * w / largest, 1.5), 9, cls)
                bx += n * w / largest
            y += 30
        y = legend(svg, x, y, [("m-weights", "weights"), ("m-gradients", "gradients"),
                               ("m-master_weights", "fp32 master"), ("m-optimizer_states", "Adam"),
                               ("m-adapter_weights", f"adapter state, {per.total:g} B/param")], w) + 8
        return _paragraph(svg, x, y, w, f"Before activations, which LoRA does not shrink: checkpointing does. "
                                        f"NF4 stores a weight in {bits:.3f} bits.", "ts tm")

    def knobs(svg: Svg, x: float, y: float, w: float) -> float:
        rows = [("r", "capacity: start small, raise it if the loss plateaus"),
                ("lora_alpha", f"s = α/r = {s:g}; under Adam, a learning-rate multiplier"),
                ("target_modules", "every linear layer (\"all-linear\")"),
                ("learning_rate", "larger than full fine-tuning's"),
                ("use_rslora", "s = α/√r, for ranks in the hundreds")]
        y += 2
        for name, text in rows:
            svg.text(x, y + 12, name, "ts tb mono")
            y = _paragraph(svg, x + 12, y + 27, w - 12, text, "ts tm") - 2
        return y

    def family(svg: Svg, x: float, y: float, w: float) -> float:
        rows = [("DoRA", "a magnitude per output row; LoRA turns the direction"),
                ("LoRA+", f"B learns {scaling.LORAPLUS_LR_RATIO:g}× faster than A"),
                ("PiSSA, LoRA-GA", "start from W₀'s or the gradient's top directions"),
                ("AdaLoRA", "moves rank between modules during training"),
                ("QLoRA", f"the same adapter on an NF4 base, {bits:.3f} bits per weight")]
        y += 2
        for name, text in rows:
            svg.text(x, y + 12, name, "ts tb")
            y = _paragraph(svg, x + 12, y + 27, w - 12, text, "ts tm") - 2
        return y

    return [
        ("The layer", ("lora",), layer),
        ("Shapes and the count", ("lora", "rank-and-targets"), shapes),
        ("Start, merge, serve", ("lora", "serving"), start_merge),
        ("Memory of a training step", ("why-peft", "memory", "qlora"), memory_tile),
        ("The knobs", ("practice",), knobs),
        ("The family", ("lora-family",), family),
    ]


def _tile(svg: Svg, x: float, y: float, w: float, title: str, chip: str, body: Body, height: float | None = None) -> float:
    """A tile with a title, the chapters that derive it, and its body; returns its bottom."""
    mark = svg.mark()
    svg.text(x + 12, y + 20, title, "t tb")
    if chip:
        svg.text(x + w - 12, y + 20, chip, "ts tm", anchor="end")
    bottom = body(svg, x + 12, y + 30, w - 24) + 6
    if height is not None:
        bottom = max(bottom, y + height)
    svg.behind(mark, lambda layer: layer.rect(x, y, w, bottom - y, "panel", rx=6))
    return bottom


def _glance_svg(q: GlanceQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    tiles = _tiles(q)
    narrow = width < WIDE
    svg = Svg(width, 10, f"LoRA at a glance, on {arch.display_name}: the layer, the shapes and the count, start and merge, "
                         "memory, the knobs and the family, each with the chapter that derives it")
    gap = 10.0
    y = 4.0
    if narrow:
        for title, labels, body in tiles:
            y = _tile(svg, 4, y, width - 8, title, _chapter_chip(labels), body) + gap
    else:
        col = (width - 8 - gap) / 2
        for i in range(0, len(tiles), 2):
            pair = tiles[i:i + 2]
            # draw once to learn each tile's height, then again at the pair's height
            probe = Svg(width, 10, "")
            height = max(_tile(probe, 4, y, col, t, "", b) for t, _, b in pair) - y
            for k, (title, labels, body) in enumerate(pair):
                _tile(svg, 4 + k * (col + gap), y, col, title, _chapter_chip(labels), body, height)
            y += height + gap
    svg.height = y - gap + 4
    return svg


def _glance(q: GlanceQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"A one-page map of the method, with {arch.display_name}'s numbers at rank {q.rank} and α = {q.alpha:g}. "
               f"Each tile is one group of the questions in this chapter, and names the chapters that derive it; the "
               f"numbers are the calculators', as everywhere in the book.")
    return drawn(lambda width: _glance_svg(q, width), caption)


# ---------------------------------------------------------------------------- the memory levers


class LeversQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r (all linear layers)")
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)


LEVERS = (("Full fine-tuning", "full", False, ""),
          ("LoRA", "lora", False, "freeze the base, train an adapter"),
          ("LoRA + checkpointing", "lora", True, "gradient checkpointing"),
          ("QLoRA + checkpointing", "qlora", True, "store the base in NF4"))


def _levers(q: LeversQuery) -> list[tuple[str, str, memory.MemoryEstimate]]:
    return [(label, lever, memory.estimate_memory(q.model, method=method, r=q.rank, target_modules="all-linear",
                                                  batch_size=q.batch_size, seq_len=q.seq_len,
                                                  gradient_checkpointing=ckpt))
            for label, method, ckpt, lever in LEVERS]


def _component_label(key: str) -> str:
    return COMPONENTS.get(key, key.replace("_", " "))


def _change(before: memory.MemoryEstimate, after: memory.MemoryEstimate) -> str:
    """What a lever changed: the total's difference and the components that moved most the same way."""
    a, b = before.breakdown(), after.breakdown()
    delta = after.total_bytes - before.total_bytes
    moved = sorted(((b[k] - a.get(k, 0), k) for k in b), key=lambda t: t[0] if delta < 0 else -t[0])
    named = [_component_label(k) for change, k in moved if change * delta > 0 and abs(change) > 0.02 * before.total_bytes][:3]
    sign = "−" if delta < 0 else "+"
    return f"{sign}{format_gpu_bytes(abs(delta))}" + (f": {', '.join(named)}" if named else "")


def _levers_svg(q: LeversQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    steps = _levers(q)
    narrow = width < WIDE
    svg = Svg(width, 10, f"One training step of {arch.display_name}, pulling one memory lever after another: LoRA, "
                         "gradient checkpointing, a 4-bit base")
    left, room = 12.0, width - 24
    used = [k for k in steps[0][2].breakdown() if any(e.breakdown()[k] for _, _, e in steps)]
    y = legend(svg, left, 6, [(f"m-{k}", _component_label(k)) for k in used], room) + 30
    gpus = [get_gpu(slug) for slug in ("rtx-4090", "h100-80gb")]
    largest = max(max(e.total_bytes for _, _, e in steps), max(g.memory_bytes for g in gpus))
    scale = room / largest
    mark = svg.mark()
    top = y
    previous = None
    for label, lever, estimate in steps:
        if previous is not None:
            svg.text(left + 10, y + 4, f"↓ {lever}", "ts tb halo")
            change = _change(previous, estimate)
            if narrow or text_width(f"↓ {lever}   {change}", 11.5) > room - 20:
                rows = wrap(change, room - 22, TEXT_SIZES["ts"] * 1.04)
                svg.lines(left + 22, y + 19, rows, "ts tm halo")
                y += 15 * len(rows)
            else:
                svg.text(left + 22 + text_width(f"↓ {lever}", 11.5) * 1.1, y + 4, change, "ts tm halo")
            y += 14
        svg.text(left, y + 12, f"{label}: {format_gpu_bytes(estimate.total_bytes)}", "ts tb halo")
        x = left
        for key in used:
            n_bytes = estimate.breakdown()[key]
            if n_bytes:
                svg.rect(x, y + 17, n_bytes * scale, 18, f"m-{key}", tip=f"{_component_label(key)}: {format_gpu_bytes(n_bytes)}")
                x += n_bytes * scale
        y += 46
        previous = estimate

    gpu_guides(svg, mark, gpus, left, scale, top, y - 8, short_labels=narrow)
    svg.text(left, y + 4, f"batch {q.batch_size} × {format_int(q.seq_len)} tokens, r = {q.rank} on all linear layers"
             if not narrow else f"batch {q.batch_size} × {format_int(q.seq_len)} tokens, r = {q.rank}", "ts tm")
    svg.height = y + 12
    return svg


def _levers_art(q: LeversQuery) -> Art:
    arch = get_architecture(q.model)
    steps = _levers(q)
    caption = (f"The book's estimate of one step's peak for {arch.display_name}, from full fine-tuning "
               f"({format_gpu_bytes(steps[0][2].total_bytes)}) to QLoRA with checkpointing "
               f"({format_gpu_bytes(steps[-1][2].total_bytes)}), one lever at a time, CUDA context excluded. LoRA removes "
               f"the training state of the frozen weights but keeps their activations; checkpointing trades the "
               f"activations for a second forward pass; the 4-bit base shrinks what is left of the weights. Each lever "
               f"is labelled with what it changed most.")
    return drawn(lambda width: _levers_svg(q, width), caption)


FIGURES = register(
    FigureSpec("lora-at-a-glance", "LoRA at a glance", "review", GlanceQuery, _glance),
    FigureSpec("memory-levers", "Three memory levers, one after another", "review", LeversQuery, _levers_art),
)
