"""Write an adapter in peft's on-disk format, so `PeftModel.from_pretrained` can load it.

Two files: `adapter_config.json` (a LoraConfig) and `adapter_model.safetensors` with keys
`base_model.model.<module path>.lora_A.weight`, `.lora_B.weight`, `.lora_magnitude_vector` (DoRA)
and the head as `base_model.model.<head>.weight` / `.bias` (restored through `modules_to_save`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from training.layers import DoRALinear, LoRALinear

PREFIX = "base_model.model."


def adapter_state_dict(model: nn.Module, modules_to_save: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """peft-named tensors: every adapter's A, B (and DoRA magnitude), plus the saved modules."""
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            if module.merged:
                raise ValueError(f"model: {name} is merged; unmerge before exporting the adapter")
            state[f"{PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
            state[f"{PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
            if isinstance(module, DoRALinear):
                state[f"{PREFIX}{name}.lora_magnitude_vector"] = module.lora_magnitude_vector
    for name in modules_to_save:
        for key, tensor in model.get_submodule(name).state_dict().items():
            state[f"{PREFIX}{name}.{key}"] = tensor
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in state.items()}


def adapter_config(
    *,
    r: int,
    lora_alpha: float,
    target_modules: tuple[str, ...],
    lora_dropout: float,
    use_rslora: bool,
    use_dora: bool,
    modules_to_save: tuple[str, ...],
    base_model_name_or_path: str | None,
    task_type: str = "SEQ_CLS",
) -> dict:
    """The fields of peft's LoraConfig that describe our adapter (peft fills the rest with defaults)."""
    targets: str | list[str] = "all-linear" if target_modules == ("all-linear",) else list(target_modules)
    if len(target_modules) == 1 and target_modules[0] != "all-linear" and not target_modules[0].isidentifier():
        targets = target_modules[0]  # a regex, as peft stores it
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "r": r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": targets,
        "use_rslora": use_rslora,
        "use_dora": use_dora,
        "modules_to_save": [name.split(".")[-1] for name in modules_to_save] or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path,
    }


def save_adapter(model: nn.Module, directory: str | Path, config: dict, modules_to_save: tuple[str, ...] = ()) -> Path:
    """Write adapter_config.json + adapter_model.safetensors into `directory`; returns it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model, modules_to_save), str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def zip_adapter(directory: str | Path, zip_path: str | Path | None = None) -> Path:
    """Zip the adapter folder's files (flat) for download; defaults to `<directory>.zip`."""
    directory = Path(directory)
    zip_path = Path(zip_path) if zip_path is not None else directory.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                archive.write(path, arcname=path.name)
    return zip_path
