"""Load the lab's base model once per process from a local folder, never from a hub.

The folder is the set-up step's cache of SmolLM2-135M-Instruct (training/model_cache.py) or a
self-hoster's own causal-LM checkpoint (LORALAB_MODEL_PATH). Each run gets a private copy of
the cached base, so runs never see each other's adapters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from training.model_cache import WEIGHTS_FILE, read_marker, unpack


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM and its tokenizer. `base_model` names it without any server path: the
    Hugging Face id for our cache, the folder's name for a self-hoster's checkpoint."""

    model: nn.Module
    tokenizer: object
    model_type: str
    base_model: str


def base_model_name(model_dir: str | Path) -> str:
    """The id exported adapters carry: the cache's recorded Hub id, else the folder's own name."""
    marker = read_marker(model_dir)
    return marker["base_model"] if marker else Path(model_dir).name


@lru_cache(maxsize=2)
def load_base(model_dir: str) -> tuple[nn.Module, object]:
    """The base model (float32, eval mode) and tokenizer, read once per folder per process."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a server log line per tensor helps nobody
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model in {path.name}/: run `scripts/setup python` (it caches the lab's model) "
            "or point LORALAB_MODEL_PATH at a local causal-LM checkpoint"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out everywhere; any id will do
    model = read_model(path)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, tokenizer


def read_model(model_dir: str | Path) -> nn.Module:
    """A fresh float32 causal LM from the folder: our cache (packed weights, unpacked here;
    training/model_cache.py) or an ordinary checkpoint. Not cached: load_base keeps one per process."""
    from transformers import AutoModelForCausalLM

    path = Path(model_dir)
    if not (path / WEIGHTS_FILE).is_file():  # a self-hoster's checkpoint (LORALAB_MODEL_PATH)
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    from safetensors.torch import load_file
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model_class = AutoModelForCausalLM._model_mapping[type(config)]
    model = model_class.from_pretrained(None, config=config, state_dict=unpack(load_file(path / WEIGHTS_FILE)),
                                        dtype=torch.float32)
    model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
    return model


def load_model(model_dir: str | Path) -> LoadedModel:
    """A private copy of the cached base (adapters are injected into the copy, never the cache)."""
    base, tokenizer = load_base(str(model_dir))
    return LoadedModel(copy.deepcopy(base), tokenizer, base.config.model_type, base_model_name(model_dir))
