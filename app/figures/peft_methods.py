"""Where each PEFT method acts: the map of methods on one model, bottleneck adapters' placement,
and where prefix and prompt tuning's virtual tokens enter.

Trainable counts from `calculators.params` (count_trainable, bottleneck_adapter_params).
"""

from __future__ import annotations

from pydantic import Field

from calculators import params
from calculators.architectures import get_architecture

from app.figures.parts import box, legend
from app.figures.spec import Art, FigureQuery, FigureSpec, drawn, register
from app.figures.svg import WIDE, Svg, wrap
from app.formatting import format_count_short, format_int


class MapQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    bottleneck: int = Field(64, ge=1, le=4096, description="Adapter bottleneck width m")


def _badge(svg: Svg, x: float, y: float, number: int) -> None:
    svg.circle(x, y, 9, "badge")
    svg.text(x, y + 4, str(number), "ts tb badge-text", anchor="middle")


def _methods(q: MapQuery) -> list[tuple[str, str, str, bool]]:
    """(name, where it acts, trainable on the model, merges into the weights)."""
    arch = get_architecture(q.model)
    count = lambda method, **kw: params.count_trainable(arch, method, **kw).trainable  # noqa: E731
    tokens = q.num_virtual_tokens
    bitfit = count("bitfit")
    return [
        ("Prompt tuning", f"{tokens} soft tokens before the input", format_int(count("prompt", num_virtual_tokens=tokens)), False),
        ("Prefix tuning, P-tuning v2", f"{tokens} extra keys and values in every layer",
         format_count_short(count("prefix", num_virtual_tokens=tokens)), False),
        ("LoRA and family", f"B·A beside chosen linear layers (r = {q.rank}, q and v)",
         format_count_short(count("lora", r=q.rank, target_modules="q,v")), True),
        ("(IA)³", "vectors that rescale keys, values, MLP activation", format_int(count("ia3")), True),
        ("Bottleneck adapters", f"small MLPs after each sublayer (m = {q.bottleneck})",
         format_count_short(params.bottleneck_adapter_params(arch, q.bottleneck, "houlsby")), False),
        ("BitFit", "the existing biases", format_int(bitfit) + (" (no biases)" if bitfit == 0 else ""), True),
    ]


def _model_sketch(svg: Svg, x: float, y: float) -> float:
    """A decoder drawn top to bottom (272 units wide) with numbered badges where each method acts;
    returns the bottom."""
    for i in range(10):  # the token row: 3 soft tokens, then the real ones
        svg.rect(x + 24 + i * 17, y, 14, 14, "train" if i < 3 else "vec", rx=2)
    svg.text(x + 24 + 10 * 17 + 4, y + 11, "tokens", "ts tm")
    _badge(svg, x + 9, y + 7, 1)
    box(svg, x + 24, y + 30, 248, 24, "frozen", "embedding", "ts")
    top = y + 70
    mark = svg.mark()
    row = top + 30
    for i, name in enumerate(["q", "k", "v", "o"]):  # attention projections
        bx = x + 60 + i * 54
        box(svg, bx, row, 44, 30, "frozen", name, "t tb")
        if name in ("q", "v"):
            svg.rect(bx + 36, row - 6, 13, 13, "train", rx=2)  # a LoRA adapter
        if name in ("k", "v"):
            svg.circle(bx + 22, row + 40, 5, "ia3")  # (IA)³ scales its output
    svg.rect(x + 30, row, 18, 14, "train", rx=2)  # the prefix's keys and values
    svg.rect(x + 30, row + 16, 18, 14, "train", rx=2)
    _badge(svg, x + 39, row - 14, 2)
    _badge(svg, x + 60 + 42, row - 16, 3)
    _badge(svg, x + 60 + 2 * 54 + 42, row + 40, 4)
    box(svg, x + 84, row + 54, 176, 20, "train", "adapter", "ts")
    _badge(svg, x + 68, row + 64, 5)
    mlp = row + 88
    for i, name in enumerate(["gate", "up", "down"]):
        box(svg, x + 60 + i * 72, mlp, 62, 30, "frozen", name, "t tb")
    svg.circle(x + 60 + 2 * 72 - 5, mlp + 15, 5, "ia3")  # (IA)³ scales down_proj's input
    svg.text(x + 60, mlp + 46, "+ bias", "ts tm")
    _badge(svg, x + 44, mlp + 42, 6)
    box(svg, x + 84, mlp + 56, 176, 20, "train", "adapter", "ts")
    bottom = mlp + 96
    svg.text(x + 266, bottom - 8, "× L blocks", "ts tm", anchor="end")
    svg.behind(mark, lambda layer: layer.rect(x + 24, top, 248, bottom - top, "panel", rx=8))
    box(svg, x + 24, bottom + 12, 248, 24, "frozen", "LM head", "ts")
    return bottom + 36


def _map_svg(q: MapQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    narrow = width < WIDE
    svg = Svg(width, 10, f"Where each parameter-efficient method acts in {arch.display_name}")
    bottom = _model_sketch(svg, 8 if not narrow else (width - 272) / 2 - 4, 14)
    lx = 312.0 if not narrow else 12.0
    ly = 20.0 if not narrow else bottom + 30
    svg.text(lx, ly, f"On {arch.display_name}: trainable parameters", "ts tb")
    ly += 18
    for number, (name, where, trained, merges) in enumerate(_methods(q), start=1):
        _badge(svg, lx + 9, ly + 2, number)
        svg.text(lx + 24, ly + 6, name, "t tb")
        svg.text(width - 12, ly + 6, trained, "ts tb", anchor="end")
        rows = wrap(f"{where}; {'merges into W' if merges else 'stays in the forward pass'}", width - lx - 36, 11.5)
        for i, row in enumerate(rows):
            svg.text(lx + 24, ly + 22 + i * 14, row, "ts tm")
        ly += 30 + 14 * len(rows)
    svg.height = max(bottom, ly) + 8
    legend_y = svg.height
    svg.height = legend(svg, 12, legend_y, [("train", "trained"), ("frozen", "frozen"), ("ia3", "(IA)³ scale")], width - 24)
    return svg


def _map(q: MapQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"Every PEFT method freezes the model and trains something small; they differ in where it enters the "
               f"computation. Numbers are the trainable parameters each adds to {arch.display_name} with typical "
               f"settings, from the book's calculators. Only the methods that change weights can be folded away after "
               f"training.")
    return drawn(lambda width: _map_svg(q, width), caption)


# ---------------------------------------------------------------------------- bottleneck adapters


class AdapterQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    bottleneck: int = Field(64, ge=1, le=4096, description="Adapter bottleneck width m")


def _block_column(svg: Svg, x: float, y: float, w: float, title: str, placement: str, total: int) -> float:
    """A block top to bottom with its adapters; returns the bottom."""
    svg.text(x, y + 12, title, "t tb")
    svg.text(x, y + 28, f"{'two adapters' if placement == 'houlsby' else 'one adapter'} per block", "ts tm")
    y += 42
    cx = x + w / 2
    steps = [("frozen", "attention")] + ([("train", "adapter")] if placement == "houlsby" else []) + [("sum", "+")]
    steps += [("frozen", "MLP"), ("train", "adapter"), ("sum", "+")]
    for cls, label in steps:
        if cls == "sum":
            svg.circle(cx, y + 10, 9, "sum")
            svg.text(cx, y + 14.5, "+", "t", anchor="middle")
            svg.text(cx + 14, y + 14, "residual", "ts tm")
            y += 20
        else:
            height = 28 if cls == "frozen" else 20
            box(svg, x + 10, y, w - 20, height, cls, label, "ts" if cls == "train" else "t")
            y += height
        svg.arrow(cx, y, cx, y + 12)
        y += 12
    svg.text(x, y + 12, f"{format_count_short(total)} trainable", "ts tb")
    return y + 18


def _adapter_detail(svg: Svg, x: float, y: float, w: float, d: int, m: int, each: int) -> float:
    svg.text(x, y + 12, "One adapter", "t tb")
    svg.text(x, y + 28, "h + W_up σ(W_down h)", "ts tm")
    y += 42
    cx = x + w / 2 + 10
    box(svg, cx - 50, y, 100, 24, "vec", f"h, {format_int(d)}", "ts")
    svg.arrow(cx, y + 24, cx, y + 34)
    svg.polygon([(cx - 50, y + 34), (cx + 50, y + 34), (cx + 10, y + 70), (cx - 10, y + 70)], "train")
    svg.text(cx, y + 52, "W_down", "ts tb", anchor="middle")
    box(svg, cx - 22, y + 76, 44, 20, "vec", f"σ, {m}", "ts")
    svg.polygon([(cx - 10, y + 102), (cx + 10, y + 102), (cx + 50, y + 138), (cx - 50, y + 138)], "train")
    svg.text(cx, y + 126, "W_up", "ts tb", anchor="middle")
    svg.arrow(cx, y + 138, cx, y + 150)
    svg.circle(cx, y + 160, 9, "sum")
    svg.text(cx, y + 164.5, "+", "t", anchor="middle")
    svg.polyline([(cx - 50, y + 12), (x + 8, y + 12), (x + 8, y + 160)], "arrow")
    svg.arrow(x + 8, y + 160, cx - 9, y + 160)
    svg.text(x + 14, y + 100, "skip", "ts tm")
    svg.text(x, y + 192, f"2·d·m + m + d = {format_int(each)}", "ts tb")
    return y + 200


def _adapters_svg(q: AdapterQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    houlsby = params.bottleneck_adapter_params(arch, q.bottleneck, "houlsby")
    pfeiffer = params.bottleneck_adapter_params(arch, q.bottleneck, "pfeiffer")
    each = pfeiffer // arch.num_hidden_layers
    narrow = width < WIDE
    svg = Svg(width, 10, f"Bottleneck adapters in a block: Houlsby's two against Pfeiffer's one, on {arch.display_name}")
    col = (width - 36) / 2 if narrow else 190.0
    a = _block_column(svg, 12, 4, col, "Houlsby et al. 2019", "houlsby", houlsby)
    b = _block_column(svg, 24 + col, 4, col, "Pfeiffer et al. 2021", "pfeiffer", pfeiffer)
    if narrow:
        bottom = _adapter_detail(svg, 12, max(a, b) + 16, width - 24, arch.hidden_size, q.bottleneck, each)
    else:
        bottom = max(a, b, _adapter_detail(svg, 36 + 2 * col + 12, 4, width - 2 * col - 60, arch.hidden_size,
                                           q.bottleneck, each))
    svg.height = bottom + 4
    return svg


def _adapters(q: AdapterQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"A bottleneck adapter projects the hidden state down to m = {q.bottleneck} numbers, applies a "
               f"nonlinearity, projects back up and adds the result to its input. Houlsby et al. put one after the "
               f"attention and one after the MLP of every block; Pfeiffer et al. found one after the MLP about as good. "
               f"Counts for {arch.display_name}. The nonlinearity is why an adapter can never be merged into W: it adds "
               f"sequential layers to every forward pass.")
    return drawn(lambda width: _adapters_svg(q, width), caption)


# ---------------------------------------------------------------------------- virtual tokens


class TokensQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    num_virtual_tokens: int = Field(20, ge=1, le=512)


def _token_grid(svg: Svg, x: float, y: float, w: float, prefix: bool, trainable: int, tokens: int) -> float:
    virtual, real = 3, 6
    cell = min(22.0, (w - 60) / (virtual + real) - 4)
    title = "Prefix tuning" if prefix else "Prompt tuning"
    svg.text(x, y + 12, title, "t tb")
    svg.text(x, y + 28, "keys and values in every layer" if prefix else "soft tokens at the input", "ts tm")
    y += 42
    rows = ["input", "layer 1", "layer 2", "⋮", "layer L"]
    for r, name in enumerate(rows):
        yy = y + r * (cell + 8)
        svg.text(x + 52, yy + cell / 2 + 4, name, "ts tm", anchor="end")
        if name == "⋮":
            continue
        for c in range(virtual + real):
            cx = x + 60 + c * (cell + 4)
            if c < virtual:
                if prefix:
                    cls = "train" if r > 0 else "empty"
                else:
                    cls = "train" if r == 0 else "derived"
            else:
                cls = "vec" if r == 0 else "frozen"
            svg.rect(cx, yy, cell, cell, cls, rx=3)
            if prefix and cls == "train":
                svg.text(cx + cell / 2, yy + cell / 2 + 4, "kv", "ts", anchor="middle")
    y += len(rows) * (cell + 8) + 6
    svg.text(x + 60, y + 8, f"{tokens} virtual tokens ({virtual} drawn):", "ts")
    svg.text(x + 60, y + 24, f"{format_int(trainable)} trained", "ts tb")
    return y + 32


def _tokens_svg(q: TokensQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    prompt = params.count_trainable(arch, "prompt", num_virtual_tokens=q.num_virtual_tokens).trainable
    prefix = params.count_trainable(arch, "prefix", num_virtual_tokens=q.num_virtual_tokens).trainable
    narrow = width < WIDE
    svg = Svg(width, 10, f"Where virtual tokens enter {arch.display_name}: prompt tuning at the input, prefix tuning in every layer")
    y = legend(svg, 12, 6, [("train", "trained"), ("derived", "computed from trained"), ("vec", "real token"),
                           ("frozen", "hidden state")], width - 24) + 4
    if narrow:
        below = _token_grid(svg, 12, y, width - 24, False, prompt, q.num_virtual_tokens)
        below = _token_grid(svg, 12, below + 12, width - 24, True, prefix, q.num_virtual_tokens)
    else:
        half = (width - 36) / 2
        below = max(_token_grid(svg, 12, y, half, False, prompt, q.num_virtual_tokens),
                    _token_grid(svg, 24 + half, y, half, True, prefix, q.num_virtual_tokens))
    svg.height = below + 4
    return svg


def _tokens(q: TokensQuery) -> Art:
    arch = get_architecture(q.model)
    caption = (f"Columns are positions, rows are layers. Prompt tuning trains {q.num_virtual_tokens} embeddings that enter "
               f"with the input; above it they are ordinary hidden states, computed by the frozen model. Prefix tuning "
               f"trains keys and values for every layer directly, so it has {arch.num_hidden_layers} layers' worth of "
               f"them and nothing below. Both take positions of the context window and merge into no weight.")
    return drawn(lambda width: _tokens_svg(q, width), caption)


FIGURES = register(
    FigureSpec("peft-map", "Where each method acts", "why-peft", MapQuery, _map),
    FigureSpec("adapter-placement", "Bottleneck adapters: where and what", "other-peft", AdapterQuery, _adapters),
    FigureSpec("virtual-tokens", "Where virtual tokens enter", "other-peft", TokensQuery, _tokens),
)
