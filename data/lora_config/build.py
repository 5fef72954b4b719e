"""Build the lab's task: turn a plain-English request into the peft `LoraConfig` it describes.

    "I'd like DoRA at rank 16 with alpha 32 on the attention layers."
    -> LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], use_dora=True)

Why this task: a reader can judge every answer at a glance, exact match is an honest metric
(one right answer per request), and the skill is the book's own: rank, alpha, the target
presets and the method switches. The model has to copy the numbers from the request, map
phrases like "the feed-forward layers" to peft's module names, and stop after one line. The
target lists come from `calculators.architectures.TARGET_PRESETS` (Llama names, SmolLM2's).

Held out honestly: the held-out requests use sentence frames that never occur in training
and (method, r, alpha, targets, dropout) combinations that never occur in training either.
Deterministic: `python data/lora_config/build.py` rewrites train.jsonl / test.jsonl byte for
byte.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from calculators.architectures import TARGET_PRESETS  # noqa: E402

SEED = 20261201
TRAIN_EXAMPLES = 320
TEST_EXAMPLES = 16

RANKS = (2, 4, 8, 16, 32, 64)
ALPHAS = (8, 16, 32, 64, 128)
DROPOUTS = ("0", "0.05", "0.1")
METHODS = ("LoRA", "DoRA", "rsLoRA")

# preset -> ways a reader names it
_LLAMA = TARGET_PRESETS["llama"]
TARGETS: dict[str, tuple[str, ...]] = {
    "q,v": ("the query and value projections", "q_proj and v_proj", "q and v"),
    "attention": ("all attention projections", "q, k, v and o", "the attention layers"),
    "mlp": ("the MLP", "gate, up and down projections", "the feed-forward layers"),
    "all-linear": ("every linear layer", "all linear layers", "all-linear"),
}
TARGET_MODULES: dict[str, tuple[str, ...] | str] = {
    "q,v": _LLAMA["q,v"],
    "attention": _LLAMA["attention"],
    "mlp": tuple(name for name in _LLAMA["all-linear"] if name not in _LLAMA["attention"]),
    "all-linear": "all-linear",  # peft's own shorthand
}
METHOD_WORDS = {
    "LoRA": ("LoRA", "a LoRA adapter", "plain LoRA"),
    "DoRA": ("DoRA", "a DoRA adapter", "weight-decomposed LoRA"),
    "rsLoRA": ("rsLoRA", "rank-stabilized LoRA", "an rsLoRA adapter"),
}
RANK_WORDS = ("rank {r}", "r={r}", "r = {r}", "a rank of {r}")
ALPHA_WORDS = ("alpha {a}", "lora_alpha={a}", "an alpha of {a}", "alpha = {a}")
DROPOUT_WORDS = ("dropout {p}", "{p} dropout", "lora_dropout={p}")

# {method} {rank} {alpha} {targets} {dropout} (dropout phrase includes its leading ", " or is empty)
TRAIN_FRAMES = (
    "Write the LoraConfig for {method} with {rank} and {alpha} on {targets}{dropout}.",
    "I want {method}, {rank}, {alpha}, applied to {targets}{dropout}. What is the config?",
    "Config for {method} on {targets}: {rank}, {alpha}{dropout}.",
    "Give me a peft config: {method}, {rank}, {alpha}, targets {targets}{dropout}.",
    "{method} on {targets} with {rank} and {alpha}{dropout}, please.",
    "Set up {method} using {rank} and {alpha} for {targets}{dropout}.",
    "Which LoraConfig gives {method} with {rank}, {alpha} on {targets}{dropout}?",
    "Fine-tune {targets} with {method}, {rank}, {alpha}{dropout}.",
)
TEST_FRAMES = (
    "I'd like {method} at {rank} with {alpha} on {targets}{dropout}.",
    "Please configure {method} for {targets}, {rank}, {alpha}{dropout}.",
)


def answer(method: str, r: int, alpha: int, targets: str, dropout: str) -> str:
    """The one right LoraConfig, written as peft's keyword arguments (defaults left out)."""
    modules = TARGET_MODULES[targets]
    written = json.dumps(modules) if isinstance(modules, str) else json.dumps(list(modules))
    parts = [f"r={r}", f"lora_alpha={alpha}", f"target_modules={written}"]
    if dropout != "0":
        parts.append(f"lora_dropout={dropout}")
    if method == "DoRA":
        parts.append("use_dora=True")
    if method == "rsLoRA":
        parts.append("use_rslora=True")
    return f"LoraConfig({', '.join(parts)})"


def request(rng: random.Random, frame: str, method: str, r: int, alpha: int, targets: str, dropout: str) -> str:
    dropout_words = "" if dropout == "0" else ", " + rng.choice(DROPOUT_WORDS).format(p=dropout)
    return frame.format(
        method=rng.choice(METHOD_WORDS[method]),
        rank=rng.choice(RANK_WORDS).format(r=r),
        alpha=rng.choice(ALPHA_WORDS).format(a=alpha),
        targets=rng.choice(TARGETS[targets]),
        dropout=dropout_words,
    )


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    combos = list(itertools.product(METHODS, RANKS, ALPHAS, TARGETS, DROPOUTS))
    rng.shuffle(combos)
    test_combos, train_combos = combos[:TEST_EXAMPLES], combos[TEST_EXAMPLES:]
    test = []
    for i, combo in enumerate(test_combos):
        test.append({"prompt": request(rng, TEST_FRAMES[i % len(TEST_FRAMES)], *combo), "answer": answer(*combo)})
    train = []
    for i in range(TRAIN_EXAMPLES):
        combo = train_combos[i % len(train_combos)]
        train.append({"prompt": request(rng, rng.choice(TRAIN_FRAMES), *combo), "answer": answer(*combo)})
    return train, test


def main() -> None:
    train, test = build()
    for name, rows in (("train", train), ("test", test)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train and {len(test)} held-out requests to {HERE.name}/")


if __name__ == "__main__":
    main()
