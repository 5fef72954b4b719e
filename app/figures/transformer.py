"""Where adapters sit: one transformer block with its linear layers, and the LoRA budget per module kind.

Each linear layer is drawn as a bar as long as its output is wide (so grouped-query
attention's narrower k_proj and v_proj show), shapes from `calculators.architectures`, LoRA
counts from `calculators.params.count_trainable` (peft's own count).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from calculators.architectures import Architecture, LinearModule, get_architecture
from calculators.params import count_trainable

from app.figures.parts import legend
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg, text_width
from app.formatting import format_count_short, format_int
from app.queries import split_modules

NORMS = {"bert": "LayerNorm", "gpt2": "LayerNorm"}


class BlockQuery(FigureQuery):
    model: str = Field("llama-3-8b", max_length=64, description="Architecture slug")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], description="peft names or a preset")
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")

    _split = field_validator("target_modules", mode="before")(split_modules)


def _targets(q: BlockQuery) -> str | list[str]:
    return q.target_modules[0] if len(q.target_modules) == 1 else q.target_modules


def _block_rows(arch: Architecture) -> list[tuple[str, LinearModule | str]]:
    """The block top to bottom: ('linear', module) and ('step', text) rows, attention then MLP."""
    attention = [m for m in arch.linear_modules() if m.group == "attention"]
    mlp = [m for m in arch.linear_modules() if m.group == "mlp"]
    norm = NORMS.get(arch.family, "RMSNorm")
    post_norm = arch.family == "bert"
    rows: list[tuple[str, LinearModule | str]] = [] if post_norm else [("step", norm)]
    rows += [("linear", m) for m in attention[:-1]]
    kv = (f"{arch.num_attention_heads} query heads, {arch.num_key_value_heads} key/value heads"
          if arch.num_key_value_heads != arch.num_attention_heads else f"{arch.num_attention_heads} heads")
    rows += [("step", "attention: softmax(QKᵀ/√d)·V"), ("note", kv), ("linear", attention[-1]), ("add", "attention")]
    rows += [("step", norm)]
    if mlp:
        rows += [("linear", m) for m in mlp[:-1]]
        act = {"swiglu": "SiLU(gate) ⊙ up", "geglu": "GELU(gate) ⊙ up"}.get(arch.mlp_kind, "GELU")
        rows += [("step", act), ("linear", mlp[-1])]
    else:
        rows += [("step", f"{arch.num_local_experts} experts, {arch.num_experts_per_tok} per token"),
                 ("note", "(expert weights are not nn.Linear layers)")]
    rows += [("add", "MLP")]
    return rows


def _block_svg(q: BlockQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    counted = count_trainable(arch, "lora", r=q.rank, target_modules=_targets(q))
    adapted = {m.path or m.name: m for m in counted.per_module}
    rows = _block_rows(arch)
    narrow = width < WIDE
    widest = max(m.out_features for kind, m in rows if kind == "linear")
    name_x = 34.0
    bar_x = name_x if narrow else 124.0
    bar_room = (width - bar_x - 14) if narrow else 250.0
    scale = bar_room / widest
    svg = Svg(width, 10, f"One {arch.display_name} block with LoRA on {', '.join(sorted({m.name for m in counted.per_module}))}")
    y = 34.0
    rail = name_x - 22  # the residual stream runs down the left edge
    svg.text(rail, 16, f"hidden state, {format_int(arch.hidden_size)} wide", "ts tm")
    top = y - 8
    mark = svg.mark()
    panels: list[tuple[float, float, str]] = []
    start = y
    for kind, item in rows:
        if kind == "linear":
            module: LinearModule = item  # type: ignore[assignment]
            hit = adapted.get(module.path or module.name)
            cls = "train" if hit else "frozen"
            shape = f"{format_int(module.in_features)} → {format_int(module.out_features)}"
            extra = f"+{format_int(hit.n_params_each)} LoRA" if hit else "frozen"
            bar_w = max(module.out_features * scale, 3.0)
            if narrow:
                svg.text(name_x, y + 10, module.name, "t tb mono")
                svg.text(width - 10, y + 10, f"{shape} · {extra}", "ts tm", anchor="end")
                svg.rect(bar_x, y + 16, bar_w, 12, cls, rx=2)
                y += 40
            else:
                svg.text(bar_x - 10, y + 13, module.name, "t tb mono", anchor="end")
                svg.rect(bar_x, y + 2, bar_w, 14, cls, rx=2)
                svg.text(bar_x + bar_room + 14, y + 8, shape, "ts")
                svg.text(bar_x + bar_room + 14, y + 21, extra, "ts tm")
                y += 30
        elif kind in ("step", "note"):
            svg.text(name_x if narrow else bar_x, y + 12, str(item), "ts tm" if kind == "note" else "ts")
            y += 18 if kind == "note" else 20
        else:
            panels.append((start - 6, y + 2, str(item)))
            svg.circle(rail, y + 12, 8, "sum")
            svg.text(rail, y + 16.5, "+", "t", anchor="middle")
            svg.text(rail + 14, y + 16, "add to the residual stream", "ts tm")
            y += 30
            start = y

    def background(layer: Svg) -> None:
        for y0, y1, label in panels:
            layer.rect(rail + 10, y0, width - rail - 16, y1 - y0, "panel", rx=8)
            layer.text(width - 14, y0 + 14, label, "ts tb tm", anchor="end")
        layer.line(rail, top - 4, rail, y, "rail")

    svg.behind(mark, background)
    svg.arrow(rail, y - 6, rail, y + 6)
    y += 26
    share = 100 * counted.trainable / counted.total
    summary = (f"× {arch.num_hidden_layers} blocks: {format_int(counted.trainable)} trainable at r = {q.rank} "
               f"({share:.2f}% of {format_count_short(arch.n_params)})")
    if narrow and text_width(summary, 11.5) > width - 24:
        svg.text(12, y, f"× {arch.num_hidden_layers} blocks: {format_int(counted.trainable)} trainable at r = {q.rank}", "ts tb")
        svg.text(12, y + 16, f"({share:.2f}% of {format_count_short(arch.n_params)} parameters)", "ts tm")
        y += 16
    else:
        svg.text(12, y, summary, "ts tb")
    y = legend(svg, 12, y + 12, [("train", "LoRA adapter (A, B) attached"), ("frozen", "frozen")], width - 24)
    svg.height = y + 2
    return svg


def _block(q: BlockQuery) -> Art:
    arch = get_architecture(q.model)
    gqa = arch.num_key_value_heads != arch.num_attention_heads
    caption = (f"One of {arch.display_name}'s {arch.num_hidden_layers} blocks, top to bottom, each linear layer drawn as "
               f"long as its output is wide. LoRA attaches to the layers named in target_modules (purple); everything "
               f"else stays frozen.")
    if gqa:
        caption += (f" Grouped-query attention shares each key/value head among "
                    f"{arch.num_attention_heads // arch.num_key_value_heads} query heads, so k_proj and v_proj are "
                    f"{arch.num_attention_heads // arch.num_key_value_heads} times narrower than q_proj, and so are their adapters.")
    return drawn(lambda width: _block_svg(q, width), caption)


# ---------------------------------------------------------------------------- the budget per module kind


class BudgetQuery(FigureQuery):
    models: list[str] = Field(default_factory=lambda: ["llama-2-7b", "llama-3-8b"], min_length=1, max_length=3)
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")

    _split = field_validator("models", mode="before")(split_modules)


def _budget_svg(q: BudgetQuery, width: float) -> Svg:
    counts = [count_trainable(model, "lora", r=q.rank, target_modules="all-linear") for model in q.models]
    archs = [get_architecture(model) for model in q.models]
    kinds: list[str] = []
    for counted in counts:
        kinds += [m.path or m.name for m in counted.per_module if (m.path or m.name) not in kinds]
    per = [{m.path or m.name: m.n_params for m in counted.per_module} for counted in counts]
    largest = max(v for p in per for v in p.values())
    narrow = width < WIDE
    label_w = 0.0 if narrow else 112.0
    bar_x = 12 + label_w
    value_room = 92.0
    bar_room = width - bar_x - value_room - 12
    svg = Svg(width, 10, f"LoRA parameters per module kind at r = {q.rank}, all linear layers, "
                         + " and ".join(a.display_name for a in archs))
    y = legend(svg, 12, 6, [(f"series-{i + 1}", a.display_name) for i, a in enumerate(archs)], width - 24) + 6
    bar_h = 13.0
    for kind in kinds:
        name = kind.rsplit(".", 1)[-1]
        if narrow:
            svg.text(12, y + 11, name, "ts tb mono")
            y += 15
        else:
            svg.text(bar_x - 10, y + 12 + (len(per) - 1) * (bar_h + 3) / 2, name, "t tb mono", anchor="end")
        for i, values in enumerate(per):
            value = values.get(kind, 0)
            svg.rect(bar_x, y + 2, max(bar_room * value / largest, 1.5), bar_h, f"series-{i + 1}", rx=2)
            svg.text(bar_x + bar_room * value / largest + 6, y + 13, format_count_short(value) if value else "—", "ts")
            y += bar_h + 3
        y += 10
    totals = ", ".join(f"{a.display_name} {format_int(c.trainable)}" for a, c in zip(archs, counts))
    svg.text(12, y + 8, "All seven kinds, whole model:", "ts tb")
    svg.text(12, y + 24, totals, "ts tm")
    svg.height = y + 32
    return svg


def _budget(q: BudgetQuery) -> Art:
    archs = [get_architecture(model) for model in q.models]
    caption = (f"LoRA at r = {q.rank} on every linear layer, parameters per module kind summed over all blocks. The three "
               f"MLP kinds carry most of the count because the intermediate width enters r·(d_in + d_out); under "
               f"grouped-query attention k_proj and v_proj shrink. Every bar is linear in r.")
    if len(archs) == 1:
        caption = caption.replace("under grouped-query attention ", "")
    return drawn(lambda width: _budget_svg(q, width), caption)


FIGURES = register(
    FigureSpec("transformer-block", "Where LoRA attaches in a transformer block", "rank-and-targets", BlockQuery, _block),
    FigureSpec("module-budget", "The LoRA budget per module kind", "rank-and-targets", BudgetQuery, _budget),
)
