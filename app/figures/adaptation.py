"""Where fine-tuning sits: the ladder from prompting to full fine-tuning, DPO's reference model with
and without an adapter, a preference step's memory, and layer-selective training (Spectrum).

Sizes from `calculators.preference` (key–value cache, DPO/GRPO steps on `memory.estimate_memory`),
`calculators.memory` (weights, bytes per trained parameter), `calculators.params` (adapters) and
`calculators.selective` (Spectrum's trainable fraction); shown in binary units (GiB, MiB).
"""

from __future__ import annotations

import math

from pydantic import Field

from calculators import memory, params, preference, selective
from calculators.architectures import get_architecture
from calculators.gpus import get_gpu

from app.figures.chart import Scale
from app.figures.parts import box, gpu_guides, legend
from app.figures.spec import Art, Control, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg, text_width
from app.formatting import GIB, format_count_short, format_gpu_bytes, format_int

# ---------------------------------------------------------------------------- the ladder


class LadderQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r (all linear layers)")
    prompt_tokens: int = Field(1500, ge=1, le=131072, description="Instructions and examples sent with every request")
    retrieved_tokens: int = Field(4000, ge=1, le=131072, description="Retrieved passages sent with every request")


def _ladder_rows(q: LadderQuery) -> list[dict]:
    """Each rung: what it changes, what it stores per task, and its memory to train and per request."""
    arch = get_architecture(q.model)
    weights = memory.weight_bytes(arch.n_params, "bf16")
    per = memory.full_ft_bytes_per_param()
    adapter = params.count_trainable(arch, "lora", r=q.rank, target_modules="all-linear", dtype="bf16")
    return [
        {"name": "Prompting", "changes": "the input", "stores": "a prompt", "part": "input",
         "train": 0, "request": preference.kv_cache_bytes(arch, 1, q.prompt_tokens),
         "request_note": f"{format_int(q.prompt_tokens)} tokens of KV cache"},
        {"name": "Retrieval (RAG)", "changes": "the context", "stores": "an index of documents",
         "part": "context", "train": 0, "request": preference.kv_cache_bytes(arch, 1, q.retrieved_tokens),
         "request_note": f"{format_int(q.retrieved_tokens)} tokens of KV cache"},
        {"name": f"LoRA, r = {q.rank}", "changes": "a low-rank update", "stores": f"an adapter, {format_gpu_bytes(adapter.adapter_bytes)}",
         "part": "adapter", "train": weights + adapter.trainable * per.total, "request": 0,
         "train_note": "frozen weights + adapter state", "request_note": "nothing once merged"},
        {"name": "Full fine-tuning", "changes": "every weight", "stores": f"a copy, {format_gpu_bytes(weights)}",
         "part": "weights", "train": arch.n_params * per.total, "request": 0,
         "train_note": "weights, gradients, Adam", "request_note": "nothing"},
    ]


def _rung_icon(svg: Svg, x: float, y: float, part: str) -> None:
    """A tiny pipeline, input → model, with the part the rung changes in the trained colour."""
    svg.rect(x, y + 4, 18, 22, "train" if part == "input" else "vec", rx=2)
    arrow_from = x + 20
    if part == "context":
        svg.rect(x + 21, y + 4, 14, 22, "train", rx=2)
        arrow_from = x + 37
    model_x = x + 48
    svg.arrow(arrow_from, y + 15, model_x - 2, y + 15, "arrow")
    svg.rect(model_x, y, 40, 30, "train" if part == "weights" else "frozen", rx=3)
    if part == "adapter":
        svg.rect(model_x + 33, y, 7, 30, "train", rx=1)


BAR_KINDS = (("train", "m-optimizer_states", "to train: weights + optimizer state"),
             ("request", "m-activations", "per request: key–value cache"))


def _ladder_svg(q: LadderQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    rows = _ladder_rows(q)
    narrow = width < WIDE
    svg = Svg(width, 10, f"Four ways to adapt {arch.display_name}: what each changes, the memory to train it and the "
                         "memory each request costs")
    left, right = 12.0, width - 12
    y = legend(svg, left, 6, [("train", "changed"), ("frozen", "frozen model"), ("vec", "input")]
               + [(cls, label) for _, cls, label in BAR_KINDS], right - left) + 6
    chart_x = left if narrow else 292.0
    largest = max(max(row["train"], row["request"]) for row in rows)
    scale = Scale(GIB / 20, 2 ** math.ceil(math.log2(largest * 8)), chart_x, right - 4, log=True)  # room for labels
    row_h = 104.0 if narrow else 64.0
    for row in rows:
        top = y
        svg.line(left, top, right, top, "rule")
        svg.text(left, top + 18, row["name"], "t tb")
        if narrow:
            _rung_icon(svg, left, top + 28, row["part"])
            svg.text(left + 98, top + 40, f"changes {row['changes']}", "ts tm")
            svg.text(left + 98, top + 56, f"stores {row['stores']}", "ts tm")
            bars_y = top + 66
        else:
            svg.text(left, top + 35, f"changes {row['changes']}", "ts tm")
            svg.text(left, top + 51, f"stores {row['stores']}", "ts tm")
            _rung_icon(svg, 190, top + 16, row["part"])
            bars_y = top + 10
        for i, (key, cls, _) in enumerate(BAR_KINDS):
            _value_bar(svg, scale, bars_y + i * 19, row[key], cls, "nothing to train" if key == "train"
                       else "nothing per request" + (" once merged" if row["part"] == "adapter" else ""))
        y = top + row_h
    svg.line(left, y, right, y, "rule")
    for tick in (t for t in (0.1, 1, 10, 100, 1000) if scale.low <= t * GIB and scale(t * GIB) + 28 < width):
        tx = scale(tick * GIB)
        svg.line(tx, y, tx, y + 4, "axis")
        svg.text(tx, y + 17, f"{tick:g} GiB", "ts tm", anchor="middle")
    svg.text(chart_x, y + 34, "bars: log scale", "ts tm")
    svg.height = y + 42
    return svg


def _value_bar(svg: Svg, scale: Scale, y: float, value: float, cls: str, nothing: str) -> None:
    """A bar from the scale's start to the value (log scale) with its size at its end; text where there is none."""
    if not value:
        svg.text(scale.start, y + 11, nothing, "ts tm")
        return
    end = scale(value)
    svg.rect(scale.start, y + 1, end - scale.start, 13, cls, rx=2)
    svg.text(end + 5, y + 12, format_gpu_bytes(value), "ts tb")


def _ladder(q: LadderQuery) -> Art:
    arch = get_architecture(q.model)
    rows = _ladder_rows(q)
    caption = (f"The rungs for {arch.display_name}, in the chapter's order. Prompting and retrieval leave the weights alone "
               f"and pay on every request: {format_gpu_bytes(rows[0]['request'])} of key–value cache for "
               f"{format_int(q.prompt_tokens)} tokens of instructions, {format_gpu_bytes(rows[1]['request'])} for "
               f"{format_int(q.retrieved_tokens)} retrieved tokens, per concurrent request. An adapter and full fine-tuning "
               f"pay once, to train (weights and optimizer state, before activations; the adapter at rank {q.rank} on every "
               f"linear layer), and nothing per request once merged. Bars share one log scale.")
    return drawn(lambda width: _ladder_svg(q, width), caption)


# ---------------------------------------------------------------------------- DPO's reference model


class ReferenceQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")


def _reference_panel(svg: Svg, x: float, y: float, w: float, adapter: bool, copy_bytes: int) -> float:
    """One panel's content: a chosen and a rejected answer through the policy and the reference; returns its bottom."""
    svg.text(x + 12, y + 22, "LoRA or QLoRA" if adapter else "Full fine-tuning", "t tb")
    svg.text(x + 12, y + 38, "reference: 0 extra bytes" if adapter else f"reference: a second copy, {format_gpu_bytes(copy_bytes)}",
             "ts tm")
    pair_y = y + 56
    svg.rect(x + 12, pair_y, 56, 16, "task-b", rx=3)
    svg.text(x + 40, pair_y + 12, "chosen", "ts", anchor="middle")
    svg.rect(x + 12, pair_y + 22, 56, 16, "hot", rx=3)
    svg.text(x + 40, pair_y + 34, "rejected", "ts", anchor="middle")
    svg.polyline([(x + 70, pair_y + 8), (x + 76, pair_y + 8), (x + 76, pair_y + 30), (x + 70, pair_y + 30)], "arrow")
    mx, mw = x + 90, w - 102
    if adapter:
        box(svg, mx, pair_y - 6, mw - 30, 50, "frozen", ["W₀", "frozen, shared"], "ts")
        box(svg, mx + mw - 30, pair_y - 6, 30, 50, "train", "BA", "ts tb", rx=4)
        svg.arrow(x + 76, pair_y + 19, mx - 2, pair_y + 19)
        rows = [("adapter on:", "the policy, forward + backward"),
                ("disable_adapter():", "the reference, forward only")]
    else:
        box(svg, mx, pair_y - 6, mw, 23, "train", "policy: every weight trained", "ts")
        box(svg, mx, pair_y + 21, mw, 23, "frozen", "reference: a frozen copy", "ts")
        svg.polyline([(x + 76, pair_y + 19), (x + 82, pair_y + 19), (x + 82, pair_y + 5)], "arrow")
        svg.arrow(x + 82, pair_y + 5, mx - 2, pair_y + 5)
        svg.polyline([(x + 82, pair_y + 19), (x + 82, pair_y + 33)], "arrow")
        svg.arrow(x + 82, pair_y + 33, mx - 2, pair_y + 33)
        rows = [("policy:", "forward + backward"), ("reference:", "forward only, nothing kept")]
    ry = pair_y + 64
    # bold and monospace characters run wider than the average the estimate assumes
    rest_x = x + 12 + max(text_width(head, 11.5) * (1.2 if "(" in head else 1.1) for head, _ in rows) + 6
    for head, rest in rows:
        svg.text(x + 12, ry, head, "ts tb mono" if "(" in head else "ts tb")
        svg.text(rest_x, ry, rest, "ts tm")
        ry += 18
    return ry - 4


def _reference_svg(q: ReferenceQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    step = preference.preference_step(arch, "dpo", "full")
    narrow = width < WIDE
    svg = Svg(width, 10, f"DPO's frozen reference for {arch.display_name}: a second copy of the weights under full "
                         "fine-tuning, the same weights with the adapter switched off under LoRA")
    mark = svg.mark()
    if narrow:
        top_a = 4.0
        bottom_a = _reference_panel(svg, 6, top_a, width - 12, False, step.reference_weights_bytes)
        top_b = bottom_a + 12
        bottom_b = _reference_panel(svg, 6, top_b, width - 12, True, step.reference_weights_bytes)
        panels = [(6.0, top_a, width - 12, bottom_a), (6.0, top_b, width - 12, bottom_b)]
    else:
        col = (width - 24) / 2
        bottom = max(_reference_panel(svg, 6, 4, col, False, step.reference_weights_bytes),
                     _reference_panel(svg, 18 + col, 4, col, True, step.reference_weights_bytes))
        panels = [(6.0, 4.0, col, bottom), (18 + col, 4.0, col, bottom)]

    def backgrounds(layer: Svg) -> None:
        for px, py, pw, pb in panels:
            layer.rect(px, py, pw, pb - py, "panel", rx=6)

    svg.behind(mark, backgrounds)
    svg.height = panels[-1][3] + 6
    return svg


def _reference(q: ReferenceQuery) -> Art:
    arch = get_architecture(q.model)
    step = preference.preference_step(arch, "dpo", "full")
    caption = (f"DPO scores each chosen and rejected answer under the policy being trained and under a frozen reference, "
               f"the model before preference tuning. Full fine-tuning overwrites its weights, so it keeps a second, frozen "
               f"copy: {format_gpu_bytes(step.reference_weights_bytes)} for {arch.display_name} in bf16. Under an adapter "
               f"the base is still there: the same weights with the adapter switched off are the reference (peft's "
               f"disable_adapter(), which TRL's DPOTrainer uses for a peft model), so the reference costs forward passes "
               f"but no memory.")
    return drawn(lambda width: _reference_svg(q, width), caption)


# ---------------------------------------------------------------------------- a preference step's memory


class PreferenceQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r (all linear layers)")
    seq_len: int = Field(1024, ge=16, le=32768, description="Tokens per sequence")
    group_size: int = Field(8, ge=2, le=64, description="GRPO's completions per prompt")


ALGORITHM_LABELS = {"sft": "SFT, 1 sequence", "dpo": "DPO, 2 sequences", "grpo": "GRPO, group of {g}"}
METHOD_LABELS = {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}
GPU_GUIDES = ("rtx-4090", "h100-80gb")


def _preference_steps(q: PreferenceQuery) -> list[tuple[str, list[tuple[str, preference.PreferenceStep]]]]:
    return [(algorithm, [(method, preference.preference_step(q.model, algorithm, method, r=q.rank, seq_len=q.seq_len,
                                                              group_size=q.group_size, prompt_len=min(256, q.seq_len // 4)))
                         for method in METHOD_LABELS]) for algorithm in ALGORITHM_LABELS]


def _preference_svg(q: PreferenceQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    groups = _preference_steps(q)
    narrow = width < WIDE
    svg = Svg(width, 10, f"Peak memory of one SFT, DPO and GRPO step of {arch.display_name}: full fine-tuning, LoRA "
                         "and QLoRA, with the reference copy full fine-tuning needs")
    left = 12.0
    label_w = 0.0 if narrow else 52.0
    bar_x = left + label_w
    room = width - bar_x - 14 - (112 if narrow else 66)  # the total is written after each bar
    y = legend(svg, left, 6, [("m-activations", "training step (or sampling, if larger)"),
                              ("hot", "second copy: the reference")], width - 24) + 34
    gpus = [get_gpu(slug) for slug in GPU_GUIDES]
    largest = max(max(s.total_bytes for _, steps in groups for _, s in steps), max(g.memory_bytes for g in gpus))
    scale = room / (largest * 1.02)
    mark = svg.mark()
    top = y
    for algorithm, steps in groups:
        svg.text(left, y + 12, ALGORITHM_LABELS[algorithm].format(g=q.group_size), "t tb halo")
        y += 20
        for method, step in steps:
            step_bytes = max(step.train_bytes, step.generation_bytes)
            w1 = step_bytes * scale
            if not narrow:
                svg.text(bar_x - 6, y + 12, METHOD_LABELS[method], "ts halo", anchor="end")
            phase = "sampling" if step.generation_bytes > step.train_bytes else "training"
            svg.rect(bar_x, y + 2, w1, 14, "m-activations", tip=f"{phase}: {format_gpu_bytes(step_bytes)}")
            if step.reference_weights_bytes:
                svg.rect(bar_x + w1, y + 2, step.reference_weights_bytes * scale, 14, "hot",
                         tip=f"reference copy: {format_gpu_bytes(step.reference_weights_bytes)}")
            label = format_gpu_bytes(step.total_bytes)
            if narrow:
                label = f"{METHOD_LABELS[method]}: {label}"
            svg.text(bar_x + step.total_bytes * scale + 5, y + 13, label, "ts tb halo")
            y += 20
        y += 10

    gpu_guides(svg, mark, gpus, bar_x, scale, top, y - 6, short_labels=narrow)
    svg.text(left, y + 6, f"{format_int(q.seq_len)} tokens per sequence, r = {q.rank} on all linear layers, "
                          "checkpointing" if not narrow else f"{format_int(q.seq_len)} tokens, r = {q.rank}, checkpointing",
             "ts tm")
    svg.height = y + 14
    return svg


def _preference(q: PreferenceQuery) -> Art:
    arch = get_architecture(q.model)
    groups = dict(_preference_steps(q))
    dpo_full = dict(groups["dpo"])["full"]
    grpo_lora = dict(groups["grpo"])["lora"]
    caption = (f"One step on one prompt for {arch.display_name}, from the book's estimator with gradient checkpointing and "
               f"AdamW. With an adapter, DPO costs what SFT costs for twice the tokens: the reference is the base with the "
               f"adapter off. Full fine-tuning adds a frozen copy, {format_gpu_bytes(dpo_full.reference_weights_bytes)}. GRPO "
               f"trains on the whole group of {q.group_size} and, while sampling it, holds "
               f"{format_gpu_bytes(grpo_lora.kv_cache_bytes)} of key–value cache; each bar is the larger of its training "
               f"and sampling phases. Dotted lines: the memory of common GPUs.")
    return drawn(lambda width: _preference_svg(q, width), caption)


# ---------------------------------------------------------------------------- Spectrum: which weights train


class SelectiveQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    fraction: float = Field(0.25, gt=0, le=1, description="Share of each module kind trained in full")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r for the comparison (all linear layers)")


FRACTIONS = (0.125, 0.25, 0.5)
SHORT_NAMES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
               "down_proj": "down"}


def _fraction_label(fraction: float) -> str:
    return {0.125: "⅛", 0.25: "¼", 0.5: "½", 1.0: "all"}.get(fraction, f"{100 * fraction:g}%")


def _module_grid(svg: Svg, x: float, y: float, w: float, h: float, q: SelectiveQuery, spectrum: bool) -> None:
    """Every linear module of the blocks: a column per kind (width ∝ its parameters), a cell per module,
    each kind's modules ranked by signal-to-noise ratio, highest at the top."""
    arch = get_architecture(q.model)
    kinds = [m for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    layers = arch.num_hidden_layers
    chosen = selective.selective_training(arch, q.fraction).layers_per_kind
    gap = 3.0
    total = sum(m.in_features * m.out_features * (m.count // layers) for m in kinds)
    unit = (w - gap * (len(kinds) - 1)) / total
    cell = h / layers
    cx = x
    for m in kinds:
        cw = m.in_features * m.out_features * (m.count // layers) * unit
        if spectrum:
            svg.rect(cx, y, cw, chosen * cell, "train", tip=f"{m.name}: {chosen} of {layers} trained in full")
            svg.rect(cx, y + chosen * cell, cw, (layers - chosen) * cell, "frozen", tip=f"{m.name}: frozen")
        else:
            svg.rect(cx, y, cw, h, "frozen", tip=f"{m.name}: frozen, with a rank-{q.rank} adapter")
            lora = params.lora_module_params(m.in_features, m.out_features, q.rank) * (m.count // layers)
            strip = max(cw * lora / (m.in_features * m.out_features * (m.count // layers)), 1.2)
            svg.rect(cx + cw - strip, y, strip, h, "train")
        for k in range(1, layers):
            if k % 8 == 0:
                svg.line(cx, y + k * cell, cx + cw, y + k * cell, "grid")
        cx += cw + gap
    # labels: short names under wide columns; the narrow k and v share one
    cx = x
    pending = []
    for m in kinds:
        cw = m.in_features * m.out_features * (m.count // layers) * unit
        pending.append((cx, cw, SHORT_NAMES.get(m.name, m.name)))
        cx += cw + gap
    merged: list[tuple[float, float, str]] = []
    for px, pw, name in pending:
        if merged and (merged[-1][1] < 12 or pw < 12) and text_width(merged[-1][2] + name, 11.5) > merged[-1][1] + pw:
            lx, lw, ln = merged.pop()
            merged.append((lx, px + pw - lx, f"{ln},{name}"))
        else:
            merged.append((px, pw, name))
    for lx, lw, name in merged:
        svg.text(lx + lw / 2, y + h + 14, name, "ts tm", anchor="middle")


def _selective_svg(q: SelectiveQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    chosen = selective.selective_training(arch, q.fraction)
    counted = params.count_trainable(arch, "lora", r=q.rank, target_modules="all-linear")
    per = memory.full_ft_bytes_per_param()
    narrow = width < WIDE
    svg = Svg(width, 10, f"Which weights of {arch.display_name} train: LoRA at rank {q.rank} on every linear module "
                         f"against Spectrum training {_fraction_label(q.fraction)} of each module kind in full")
    left = 12.0
    y = legend(svg, left, 6, [("train", "trained"), ("frozen", "frozen")], width - 24) + 10
    grid_h = 128.0
    panels = [(False, f"LoRA, r = {q.rank}", f"{format_count_short(counted.trainable)} trained, every module"),
              (True, f"Spectrum, {_fraction_label(q.fraction)} of each kind",
               f"{format_count_short(chosen.trainable)} trained, {chosen.layers_per_kind} of "
               f"{arch.num_hidden_layers} per kind")]
    if narrow:
        for spectrum, title, sub in panels:
            svg.text(left, y + 12, title, "t tb")
            svg.text(left, y + 28, sub, "ts tm")
            _module_grid(svg, left, y + 38, width - 24, grid_h * 0.8, q, spectrum)
            y += 38 + grid_h * 0.8 + 30
    else:
        col = (width - 24 - 28) / 2
        for i, (spectrum, title, sub) in enumerate(panels):
            px = left + i * (col + 28)
            svg.text(px, y + 12, title, "t tb")
            svg.text(px, y + 28, sub, "ts tm")
            _module_grid(svg, px, y + 38, col, grid_h, q, spectrum)
        y += 38 + grid_h + 30
    svg.text(left, y, "columns: module kinds, widths ∝ parameters; top to bottom: each kind's "
                      f"{arch.num_hidden_layers} modules by SNR" if not narrow
             else "top to bottom: each kind's modules by SNR", "ts tm")
    y += 26
    # training state, one linear scale
    weights = memory.weight_bytes(arch.n_params, "bf16")
    rows = [(f"LoRA r = {q.rank}", weights, counted.trainable * per.total),
            (f"Spectrum {_fraction_label(q.fraction)}", weights, chosen.state_bytes - weights),
            ("full fine-tuning", 0, arch.n_params * per.total)]
    svg.text(left, y, "Training state before activations", "t tb")
    y += 12
    room = width - 24
    largest = max(a + b for _, a, b in rows)
    for label, frozen, trained in rows:
        svg.text(left, y + 12, f"{label}: {format_gpu_bytes(frozen + trained)}", "ts tb")
        svg.rect(left, y + 17, frozen * room / largest, 12, "m-weights")
        svg.rect(left + frozen * room / largest, y + 17, max(trained * room / largest, 1.5), 12, "m-optimizer_states")
        y += 36
    y = legend(svg, left, y + 2, [("m-weights", "bf16 weights"),
                                   ("m-optimizer_states", f"trained: {per.total:g} B per parameter")], room)
    svg.height = y + 2
    return svg


def _selective(q: SelectiveQuery) -> Art:
    arch = get_architecture(q.model)
    chosen = selective.selective_training(arch, q.fraction)
    caption = (f"LoRA constrains how every chosen weight may change; Spectrum (Hartford et al. 2024) constrains which "
               f"weights change. It ranks each kind's {arch.num_hidden_layers} modules of {arch.display_name} by a "
               f"signal-to-noise ratio of their singular values, computed before training, and trains the top "
               f"{_fraction_label(q.fraction)} of each kind in full: {format_int(chosen.trainable)} parameters, "
               f"{chosen.percent:.1f}% of the model. Which modules those are depends on the weights, not on their depth; "
               f"the drawing only ranks them. Its state sits between LoRA's and full fine-tuning's, and each task is a "
               f"full checkpoint.")
    return drawn(lambda width: _selective_svg(q, width), caption, readout=(
        f"{_fraction_label(q.fraction)} of each kind: {format_int(chosen.trainable)} trained parameters "
        f"({chosen.percent:.1f}%), {format_gpu_bytes(chosen.state_bytes)} of training state"))


def _selective_controls(q: SelectiveQuery) -> tuple[Control, ...]:
    fractions = sorted(set(FRACTIONS) | {q.fraction})
    return (
        Control("choice", "fraction", "Share of each kind trained", f"{q.fraction:g}",
                tuple((f"{f:g}", _fraction_label(f)) for f in fractions)),
        Control("hidden", "model", "Model", q.model),
        Control("hidden", "rank", "Rank", str(q.rank)),
    )


FIGURES = register(
    FigureSpec("adaptation-ladder", "Prompting, retrieval, an adapter, full fine-tuning", "fine-tuning-in-context",
               LadderQuery, _ladder),
    FigureSpec("dpo-reference", "DPO's reference: a second copy, or the adapter switched off", "fine-tuning-in-context",
               ReferenceQuery, _reference),
    FigureSpec("preference-memory", "One preference-tuning step, with and without an adapter", "fine-tuning-in-context",
               PreferenceQuery, _preference),
    FigureSpec("selective-layers", "Which weights train: LoRA against Spectrum", "fine-tuning-in-context",
               SelectiveQuery, _selective, _selective_controls),
)
