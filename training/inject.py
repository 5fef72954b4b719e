"""Wrap the target modules of a real Hugging Face model with our adapter layers, peft-style.

Matching is peft's (`check_target_module_exists`): a list of names matches a module whose full
name equals an entry or ends with "." + entry (BERT "query", "value"; Llama "q_proj", ...); a
string is a regex that must match the whole name; "all-linear" means every linear layer but the
head. Everything is frozen except the adapters and the `modules_to_save` (the fresh head).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from training.layers import DoRALinear, LoRALinear, NF4Linear

METHODS = ("lora", "qlora", "dora")


@dataclass(frozen=True)
class Injection:
    """What `inject_adapters` did: the wrapped module names and the parameter counts."""

    method: str
    target_modules: tuple[str, ...]
    adapted_modules: tuple[str, ...]
    quantized_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]
    trainable_params: int
    total_params: int


def matches_target(name: str, target_modules: str | Sequence[str]) -> bool:
    """peft's rule: regex full match for a string, else exact name or ".name" suffix match."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return name in target_modules or any(name.endswith(f".{target}") for target in target_modules)


def _is_saved(name: str, modules_to_save: Sequence[str]) -> bool:
    return any(re.match(rf"(^|.*\.){m}($|\..*)", name) for m in modules_to_save)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total); a 4-bit base counts its weights as parameters (as peft reports them)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, NF4Linear):
            total += module.in_features * module.out_features + (0 if module.bias is None else module.bias.numel())
    return trainable, total


def inject_adapters(
    model: nn.Module,
    method: str,
    target_modules: str | Sequence[str],
    r: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    use_rslora: bool = False,
    modules_to_save: Sequence[str] = (),
    blocksize: int = 64,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.float32,
) -> Injection:
    """Freeze `model`, wrap its target linears in place, keep `modules_to_save` trainable.

    qlora follows Dettmers et al. 2023: every linear layer of the blocks becomes a frozen NF4
    base (the targets get LoRA on top); embeddings, norms and the head stay in higher precision.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    for param in model.parameters():
        param.requires_grad_(False)
    # A causal LM's output layer (often tied to the input embedding) is neither adapted nor
    # quantized, as in peft's "all-linear" and bitsandbytes' 4-bit loading.
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head and not _is_saved(name, modules_to_save)
    ]
    if target_modules == "all-linear":
        targets = {name for name, _ in linears}
    else:
        targets = {name for name, _ in linears if matches_target(name, target_modules)}
    if not targets:
        raise ValueError(f"target_modules: {target_modules!r} matches no linear layer of {type(model).__name__}")

    adapter_cls = DoRALinear if method == "dora" else LoRALinear
    quantized: list[str] = []
    for name, linear in linears:
        base: nn.Module = linear
        if method == "qlora":
            base = NF4Linear.from_linear(linear, blocksize=blocksize, double_quant=double_quant, compute_dtype=compute_dtype)
            quantized.append(name)
        if name in targets:
            base = adapter_cls(base, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, use_rslora=use_rslora)
        if base is not linear:
            _set_submodule(model, name, base)

    saved = [name for name, _ in model.named_modules() if name and name.split(".")[-1] in modules_to_save]
    for name in saved:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)
    trainable, total = count_params(model)
    return Injection(
        method=method,
        target_modules=("all-linear",) if target_modules == "all-linear" else tuple([target_modules] if isinstance(target_modules, str) else target_modules),
        adapted_modules=tuple(sorted(targets)),
        quantized_modules=tuple(quantized),
        modules_to_save=tuple(saved),
        trainable_params=trainable,
        total_params=total,
    )
