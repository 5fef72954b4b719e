"""Practice: which tokens a chat fine-tune learns from (the loss mask), and serving adapters merged
against hot-swapped in one batch.

Sizes from `calculators.memory.weight_bytes` and `calculators.params` (the adapter's bytes).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from calculators import memory, params
from calculators.architectures import get_architecture

from app.figures.parts import box, legend
from app.figures.spec import Art, FigureQuery, FigureSpec, NoArguments, drawn, register
from app.figures.svg import WIDE, Svg, text_width
from app.formatting import format_gpu_bytes
from app.queries import split_modules

# One user turn and the assistant's answer in a ChatML-style template (SmolLM2's, the lab's
# model, uses <|im_start|> and <|im_end|>). Words stand in for sub-word tokens, for legibility.
PROMPT_TOKENS = ("<|im_start|>", "user", "↵", "What", "is", "the", "capital", "of", "France", "?", "<|im_end|>", "↵",
                 "<|im_start|>", "assistant", "↵")
ANSWER_TOKENS = ("Paris", "is", "the", "capital", ".", "<|im_end|>")



def _mask_svg(width: float) -> Svg:
    svg = Svg(width, 10, "A chat example's tokens and their labels: −100 on the prompt, the token itself on the answer")
    y = legend(svg, 12, 6, [("vec", "prompt: label −100, no loss"), ("train", "answer: label = the token, in the loss")],
               width - 24) + 6
    x, row_h = 12.0, 52.0
    for i, token in enumerate(PROMPT_TOKENS + ANSWER_TOKENS):
        answer = i >= len(PROMPT_TOKENS)
        special = token.startswith("<|")
        w = max(text_width(token, 11.5) + 12, 34)
        if x + w > width - 12:
            x, y = 12.0, y + row_h
        box(svg, x, y, w, 24, "train" if answer else "vec", token, "ts mono" if special else "ts", rx=4)
        svg.text(x + w / 2, y + 39, "✓" if answer else "−100", "ts tb" if answer else "ts tm", anchor="middle")
        x += w + 5
    y += row_h + 6
    note = ["The end-of-turn token is a label too:", "it is how the model learns to stop."]
    if width >= WIDE:
        note = [" ".join(note)]
    y = svg.lines(12, y, note, "ts tm") - 15
    svg.height = y + 10
    return svg


def _mask(q: NoArguments) -> Art:
    caption = ("One training example after apply_chat_template. Every prompt token, the generation prompt included, gets "
               "the label −100, which PyTorch's cross-entropy ignores; the answer's tokens keep their ids, so the loss "
               "(shifted by one position inside the model) scores only the answer, up to and including <|im_end|>.")
    return drawn(_mask_svg, caption)


# ---------------------------------------------------------------------------- serving


class ServingQuery(FigureQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])

    _split = field_validator("target_modules", mode="before")(split_modules)


TASKS = (("task-a", "A"), ("task-b", "B"), ("task-c", "C"))


def _serving_svg(q: ServingQuery, width: float) -> Svg:
    arch = get_architecture(q.model)
    targets = q.target_modules[0] if len(q.target_modules) == 1 else q.target_modules
    base = memory.weight_bytes(arch.n_params, "bf16")
    adapter = params.count_trainable(arch, "lora", r=q.rank, target_modules=targets, dtype="bf16").adapter_bytes
    narrow = width < WIDE
    svg = Svg(width, 10, f"Serving three tasks on {arch.display_name}: merged copies against one base with hot-swapped adapters")
    col = width - 24 if narrow else (width - 48) / 2
    # Merged: one whole model per task.
    x, y = 12.0, 4.0
    svg.text(x, y + 12, "Merged: a model per task", "t tb")
    svg.text(x, y + 28, f"3 × {format_gpu_bytes(base)} of weights", "ts tm")
    y += 40
    for i, (cls, name) in enumerate(TASKS):
        bx = x + i * (col / 3)
        box(svg, bx, y, col / 3 - 8, 40, "frozen", ["W₀ + ΔW", f"task {name}"], "ts")
        for k in range(2):
            svg.rect(bx + 6 + k * 14, y + 48, 10, 10, cls, rx=2)
    svg.text(x, y + 76, "a request goes to its task's model", "ts tm")
    left_bottom = y + 84
    # Hot-swap: one base, a mixed batch, the adapters applied per request.
    x, y = (12.0, left_bottom + 20) if narrow else (36.0 + col, 4.0)
    svg.text(x, y + 12, "Hot-swap: one base, many adapters", "t tb")
    svg.text(x, y + 28, f"{format_gpu_bytes(base)} + 3 × {format_gpu_bytes(adapter)}", "ts tm")
    y += 40
    batch = ("task-a", "task-b", "task-a", "task-c")
    names = dict(TASKS)
    row_h = 15.0
    for k, cls in enumerate(batch):
        svg.rect(x, y + k * row_h, 30, row_h - 3, cls, rx=2)
    svg.text(x + 15, y + 4 * row_h + 14, "batch", "ts tm", anchor="middle")
    svg.arrow(x + 32, y + 2 * row_h - 2, x + 46, y + 2 * row_h - 2)
    w0 = col - 170
    box(svg, x + 48, y - 2, w0, 4 * row_h, "frozen", ["W₀x", "shared"], "ts")
    svg.text(x + 58 + w0, y + 2 * row_h + 3, "+", "tl", anchor="middle")
    for k, cls in enumerate(batch):
        box(svg, x + 70 + w0, y + k * row_h, 52, row_h - 3, cls, f"BAx ({names[cls]})", "ts", rx=2)
    svg.text(x + 96 + w0, y + 4 * row_h + 14, "per row (SGMV)", "ts tm", anchor="middle")
    svg.arrow(x + 126 + w0, y + 2 * row_h - 2, x + col - 4, y + 2 * row_h - 2)
    y += 76
    svg.height = max(left_bottom, y) + 8
    svg.height = legend(svg, 12, svg.height, [(cls, f"task {name}") for cls, name in TASKS], width - 24)
    return svg


def _serving(q: ServingQuery) -> Art:
    arch = get_architecture(q.model)
    targets = q.target_modules[0] if len(q.target_modules) == 1 else q.target_modules
    adapter = params.count_trainable(arch, "lora", r=q.rank, target_modules=targets, dtype="bf16").adapter_bytes
    caption = (f"Merged: merge_and_unload() gives each task its own full copy of {arch.display_name}, running at the "
               f"base model's speed. Hot-swapped: one copy of W₀ serves a batch that mixes tasks; the shared matmul runs once, and a "
               f"segmented kernel (Punica's SGMV, S-LoRA) applies each request's own adapter, {format_gpu_bytes(adapter)} "
               f"each at r = {q.rank} in bf16.")
    return drawn(lambda width: _serving_svg(q, width), caption)


FIGURES = register(
    FigureSpec("loss-mask", "The loss mask of a chat example", "practice", NoArguments, _mask),
    FigureSpec("serving-batch", "Serving: merged or hot-swapped", "practice", ServingQuery, _serving),
)
