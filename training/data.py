"""Supervised fine-tuning data for a chat model: prompts in the model's chat template, loss on answers.

Each example becomes `prompt tokens + answer tokens + end-of-turn`; the labels are -100 (ignored
by the loss) on every prompt token, so the model is trained to produce the answer and to stop,
never to reproduce the request. The prompt is tokenized exactly as generation tokenizes it, so
what the model learns is what it is asked at inference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE_INDEX = -100  # torch's cross_entropy default: positions that carry no loss
# For a checkpoint without a chat template (a base model a self-hoster points us at).
PLAIN_TEMPLATE = "{system}\n\n### Request:\n{prompt}\n\n### Answer:\n"


@dataclass(frozen=True)
class ChatExample:
    """One request and the one answer we train (and score) the model on."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + answer + end-of-turn; labels are IGNORE_INDEX over the prompt."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def read_examples(path: str | Path) -> tuple[ChatExample, ...]:
    """{"prompt", "answer"} rows of a JSONL file."""
    with open(path, encoding="utf-8") as fh:
        return tuple(ChatExample(row["prompt"], row["answer"]) for row in map(json.loads, fh) if row)


def chat_prompt(tokenizer, system_prompt: str, prompt: str) -> str:
    """The text the model sees before it answers: its own chat template, generation prompt added."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return PLAIN_TEMPLATE.format(system=system_prompt, prompt=prompt)


def prompt_ids(tokenizer, system_prompt: str, prompt: str) -> list[int]:
    """Token ids of `chat_prompt` (the template already holds the special tokens it wants)."""
    return tokenizer(chat_prompt(tokenizer, system_prompt, prompt), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, system_prompt: str, example: ChatExample, max_len: int) -> EncodedExample:
    """Prompt + answer + EOS (the chat template's end-of-turn), labels on the answer part only.

    Too long an example loses answer tokens from its end (the prompt is kept whole); ValueError
    when not even the prompt fits, naming max_seq_len.
    """
    prompt = prompt_ids(tokenizer, system_prompt, example.prompt)
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt) >= max_len:
        raise ValueError(f"max_seq_len: {max_len} tokens cannot hold a {len(prompt)}-token prompt")
    answer = answer[: max_len - len(prompt)]
    return EncodedExample(tuple(prompt + answer), tuple([IGNORE_INDEX] * len(prompt) + answer))


def encode_examples(tokenizer, system_prompt: str, examples: Sequence[ChatExample], max_len: int) -> tuple[EncodedExample, ...]:
    return tuple(encode_example(tokenizer, system_prompt, example, max_len) for example in examples)


def collate(examples: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch: input_ids, attention_mask, labels (batch, seq)."""
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def train_batches(
    encoded: Sequence[EncodedExample], batch_size: int, steps: int, seed: int, pad_token_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches drawn epoch by epoch from a seeded permutation (deterministic for a seed)."""
    n = len(encoded)
    if batch_size > n:
        raise ValueError(f"batch_size: {batch_size} exceeds the {n} training examples")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator).tolist(), 0
        yield collate([encoded[i] for i in order[cursor : cursor + batch_size]], pad_token_id)
        cursor += batch_size


def eval_batches(encoded: Sequence[EncodedExample], batch_size: int, pad_token_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """The held-out set in order, in batches."""
    for start in range(0, len(encoded), batch_size):
        yield collate(encoded[start : start + batch_size], pad_token_id)
