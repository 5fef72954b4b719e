"""The base model's held-out answers and loss ("before training"), computed once and reused.

At initialisation every adapter adds exactly nothing: B = 0, so LoRA's bypass is a sum of
zeros, and DoRA's magnitude starts at the norm of W0 + 0·A, so its scale is exactly 1. A run's
model before its first step therefore computes its base model's function, bit for bit, whatever
the rank, alpha, targets or seed: its held-out answers depend on the base weights and how the
method holds them (QLoRA's NF4 base answers differently), the held-out requests and the bounds
on answers and examples. Those make the key; the first run with a key evaluates and stores the
result, later runs read it and save the reader the ~15 s of generating 16 answers on a CPU.
`tests/training/test_baseline.py` checks the claim on the real model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import transformers

from training.task import ChatTask

FORMAT = 1  # bump when what a baseline holds or how it is computed changes


def model_identity(model_dir: str | Path) -> list[Any]:
    """What identifies the base weights without hashing them: each file's name, size and mtime."""
    path = Path(model_dir)
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in path.iterdir() if f.is_file())


def baseline_key(model_dir: str | Path, task: ChatTask, method: str, max_new_tokens: int, max_seq_len: int,
                 device: torch.device, weights_dtype: torch.dtype) -> str:
    """A digest of everything a run's before-training evaluation depends on."""
    facts = {
        "format": FORMAT,
        "model": model_identity(model_dir),
        "task": [task.name, task.system_prompt, [[e.prompt, e.answer] for e in task.test]],
        "method": method,  # QLoRA's NF4 base differs; DoRA and LoRA are keyed apart to stay exact
        "max_new_tokens": max_new_tokens,
        "max_seq_len": max_seq_len,
        "device": device.type,
        "weights_dtype": str(weights_dtype),
        "versions": [torch.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def read_baseline(folder: str | Path | None, key: str) -> dict[str, Any] | None:
    """{"answers", "exact_match", "loss", "evaluation_s"} stored under `key`, or None."""
    if folder is None:
        return None
    try:
        stored = json.loads((Path(folder) / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or not {"answers", "exact_match", "loss", "evaluation_s"} <= stored.keys():
        return None
    return stored


def write_baseline(folder: str | Path | None, key: str, result: dict[str, Any]) -> None:
    """Store a result under `key` (atomically, so two processes never read half a file);
    a folder that cannot be written just means the next run evaluates again."""
    if folder is None:
        return
    path = Path(folder) / f"{key}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({k: result[k] for k in ("answers", "exact_match", "loss", "evaluation_s")}), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass
