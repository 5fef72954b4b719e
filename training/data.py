"""The lab's task: 3-way sentiment of short product reviews, shipped as JSONL in data/reviews/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "reviews"


@dataclass(frozen=True)
class TextClassificationData:
    """Train and held-out examples of one task; labels are indexes into `label_names`."""

    label_names: tuple[str, ...]
    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[int, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_reviews(data_dir: Path = DATA_DIR) -> TextClassificationData:
    """Read train.jsonl / test.jsonl ({"text", "label"} rows); label order is sorted, so stable."""
    train, test = _read_jsonl(data_dir / "train.jsonl"), _read_jsonl(data_dir / "test.jsonl")
    label_names = tuple(sorted({row["label"] for row in train}))
    index = {name: i for i, name in enumerate(label_names)}
    unknown = {row["label"] for row in test} - set(index)
    if unknown:
        raise ValueError(f"test.jsonl: labels {sorted(unknown)} never occur in train.jsonl")
    return TextClassificationData(
        label_names=label_names,
        train_texts=tuple(row["text"] for row in train),
        train_labels=tuple(index[row["label"]] for row in train),
        test_texts=tuple(row["text"] for row in test),
        test_labels=tuple(index[row["label"]] for row in test),
    )


def encode(tokenizer, texts: tuple[str, ...] | list[str], labels, seq_len: int) -> dict[str, torch.Tensor]:
    """Tokenize to fixed length `seq_len` (pad/truncate) so every step sees the same shapes."""
    batch = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
    )
    batch = {key: batch[key] for key in ("input_ids", "attention_mask")}
    batch["labels"] = torch.tensor(list(labels), dtype=torch.long)  # (n,)
    return batch


def train_batches(
    encoded: dict[str, torch.Tensor], batch_size: int, steps: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches drawn epoch by epoch from a seeded permutation (deterministic for a seed)."""
    n = encoded["labels"].shape[0]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        yield {key: value[idx] for key, value in encoded.items()}


def eval_batches(encoded: dict[str, torch.Tensor], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The held-out set in order, in batches."""
    n = encoded["labels"].shape[0]
    for start in range(0, n, batch_size):
        yield {key: value[start : start + batch_size] for key, value in encoded.items()}
