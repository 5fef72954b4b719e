"""The lab's training run as a pipeline: data prepared once, then the step loop, and what comes out.

No quantities: the sizes of the lab's model are drawn by the transformer-block figure.
"""

from __future__ import annotations

from app.figures.parts import box, legend
from app.figures.spec import Art, FigureSpec, NoArguments, drawn, register
from app.figures.svg import WIDE, Svg

PREPARE = (
    ("vec", ["Examples", "(prompt, answer) pairs"]),
    ("vec", ["Chat template + tokenizer", "token ids"]),
    ("vec", ["Labels", "−100 on the prompt tokens"]),
)
LOOP = (
    ("frozen", ["Forward", "frozen base (bf16 or NF4) + LoRA"]),
    ("frozen", ["Loss", "cross-entropy on answer tokens"]),
    ("train", ["Backward", "gradients for lora_A, lora_B only"]),
    ("train", ["AdamW step", "warm-up, then linear decay"]),
)
OUTPUTS = (
    ("Every step, streamed", "loss, tokens/s, peak memory"),
    ("Before and after", "answers to held-out prompts"),
    ("At the end", "adapter_config.json +", "adapter_model.safetensors"),
)



def _pipeline_svg(width: float) -> Svg:
    narrow = width < WIDE
    svg = Svg(width, 10, "The lab's run: examples prepared once, then forward, loss, backward and an optimizer step per batch")
    col_x, col_w = (40.0, width - 52) if narrow else (40.0, 290.0)
    y = 8.0
    svg.text(col_x, y + 10, "once", "ts tb tm")
    y += 18
    for cls, label in PREPARE:
        box(svg, col_x, y, col_w, 40, cls, label, "ts", title_first=True)
        svg.arrow(col_x + col_w / 2, y + 40, col_x + col_w / 2, y + 54)
        y += 54
    svg.text(col_x, y + 12, "per batch, for the chosen number of steps", "ts tb tm")
    y += 20
    loop_top = y
    for i, (cls, label) in enumerate(LOOP):
        box(svg, col_x, y, col_w, 40, cls, label, "ts", title_first=True)
        if i < len(LOOP) - 1:
            svg.arrow(col_x + col_w / 2, y + 40, col_x + col_w / 2, y + 54)
        y += 54
    # the loop back to the next batch's forward pass
    svg.polyline([(col_x, y - 34), (col_x - 24, y - 34), (col_x - 24, loop_top + 20)], "arrow")
    svg.arrow(col_x - 24, loop_top + 20, col_x, loop_top + 20)
    bottom = y
    if narrow:
        y += 6
        for title, *rows in OUTPUTS:
            box(svg, col_x, y, col_w, 20 + 15 * len(rows), "out", [title, *rows], "ts", title_first=True)
            y += 28 + 15 * len(rows)
        bottom = y
    else:
        out_x = col_x + col_w + 40
        out_w = width - out_x - 12
        for k, (title, *rows) in enumerate(OUTPUTS):
            oy = loop_top + k * 64
            box(svg, out_x, oy, out_w, 20 + 15 * len(rows), "out", [title, *rows], "ts", title_first=True)
            svg.arrow(col_x + col_w + 4, oy + 20, out_x - 2, oy + 20, "guide")
    svg.height = legend(svg, 12, bottom + 4, [("vec", "data"), ("frozen", "frozen model"), ("train", "adapters train"),
                                              ("out", "what you see and keep")], width - 24)
    return svg


def _pipeline(q: NoArguments) -> Art:
    caption = ("What one lab run does. The examples are formatted with the model's chat template and tokenized once, with "
               "the prompt's labels masked; then each batch goes forward through the frozen base and its adapters, the "
               "loss is taken on the answer tokens only, and the backward pass and AdamW touch only lora_A and lora_B. "
               "The page streams each step's numbers; the adapter you download is in peft's format.")
    return drawn(_pipeline_svg, caption)


FIGURES = register(
    FigureSpec("lab-pipeline", "What a lab run does", "lab", NoArguments, _pipeline),
)
