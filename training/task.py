"""The lab's task: write the peft `LoraConfig` that a plain-English request describes.

The data is built by `data/lora_config/build.py` (see its docstring: the held-out requests use
sentence frames and setting combinations that never occur in training). Exact match of the
generated line against the one right answer is the held-out metric; the mean loss over the
held-out answers' tokens is the smooth one beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.data import ChatExample, read_examples

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "lora_config"
SYSTEM_PROMPT = "Reply with the peft LoraConfig the user asks for."
# The streamed sample during training is the first held-out request.
SAMPLE_INDEX = 0


@dataclass(frozen=True)
class ChatTask:
    """A supervised fine-tuning task: a system prompt, training and held-out examples."""

    name: str
    system_prompt: str
    train: tuple[ChatExample, ...]
    test: tuple[ChatExample, ...]

    def __post_init__(self) -> None:
        overlap = {e.prompt for e in self.train} & {e.prompt for e in self.test}
        if overlap:
            raise ValueError(f"{self.name}: held-out prompts occur in training: {sorted(overlap)[:3]}")


def load_task(data_dir: Path = DATA_DIR) -> ChatTask:
    """The lab's task from its JSONL files (train.jsonl, test.jsonl)."""
    return ChatTask("lora_config", SYSTEM_PROMPT, read_examples(data_dir / "train.jsonl"), read_examples(data_dir / "test.jsonl"))


def exact_match(answer: str, expected: str) -> bool:
    """The whole generated answer, stripped of surrounding white space, equals the expected one."""
    return answer.strip() == expected.strip()
