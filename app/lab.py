"""The lab's request models and what the lab page says about its base model.

No torch here: the page and the API validate and describe a run; the worker process
(training.worker) does the training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.formatting import format_gpu_bytes, format_int
from app.settings import Settings
from calculators import architectures, lab_task, params

DEFAULTS = lab_task.LAB_DEFAULTS
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")
PRESET_LABELS = {"q,v": "q_proj, v_proj", "attention": "attention (q, k, v, o)", "all-linear": "all linear layers (7 kinds)"}


class TrainRequest(BaseModel):
    """One training run. Every field is bounded so a run stays small enough to share a server."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "qlora", "dora"] = Field("lora", description="lora, qlora (NF4 4-bit base) or dora")
    rank: int = Field(int(DEFAULTS["rank"]), ge=1, le=64, description="LoRA rank r (1-64)")
    alpha: float = Field(DEFAULTS["alpha"], gt=0, le=512, description="lora_alpha; the update is scaled by alpha/rank")
    target_modules: list[str] = Field(
        default_factory=list, max_length=16,
        description="peft module names to adapt (empty: q_proj and v_proj, peft's default for Llama models)",
    )
    lr: float = Field(DEFAULTS["lr"], gt=0, le=0.1, description="peak learning rate (AdamW)")
    steps: int = Field(int(DEFAULTS["steps"]), ge=1, le=300, description="optimizer steps (1-300)")
    batch_size: int = Field(int(DEFAULTS["batch_size"]), ge=1, le=32, description="examples per step (1-32)")
    seed: int = Field(int(DEFAULTS["seed"]), ge=0, le=2**31 - 1)

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
            "lr": self.lr, "steps": self.steps, "batch_size": self.batch_size, "seed": self.seed,
            "warmup_steps": min(3, self.steps // 10),
        }


def run_config(request: TrainRequest, settings: Settings) -> dict[str, Any]:
    """What the training process is sent for a run: TrainConfig's fields, the server's bound on
    generated answers, and the request as the reader sent it (for the run's record)."""
    return request.training_config() | {"max_new_tokens": settings.answer_max_new_tokens,
                                        "request": request.model_dump()}


class TryRequest(BaseModel):
    """A reader's own request, answered by the base model and a finished run's adapter."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., min_length=1, max_length=400, description="your request (1-400 characters)")

    @field_validator("prompt")
    @classmethod
    def _printable(cls, prompt: str) -> str:
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("prompt: write a request (it is empty)")
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in prompt):
            raise ValueError("prompt: control characters are not allowed")
        return prompt


@dataclass(frozen=True)
class LabModel:
    """What the lab page says about the base model, read from its config.json (no torch)."""

    name: str
    description: str
    model_type: str
    target_modules: tuple[str, ...]
    default_targets: tuple[str, ...]
    presets: dict[str, tuple[str, ...]]
    config: dict[str, Any]
    cached: bool  # the folder holds a model (the set-up step ran)


@lru_cache(maxsize=4)
def _read_config(path: str, stamp: float) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def lab_model(settings: Settings) -> LabModel:
    path = settings.lab_model_dir / "config.json"
    config = _read_config(str(path), path.stat().st_mtime) if path.is_file() else {}
    model_type = str(config.get("model_type", "llama" if settings.model_path is None else "unknown"))
    family = architectures.TARGET_PRESETS.get(model_type, {})
    presets = {name: tuple(modules) for name, modules in family.items()}
    modules = presets.get("all-linear", ())
    defaults = presets.get("q,v", ())
    if settings.model_path is None:
        name = "SmolLM2-135M-Instruct"
        description = "a 135M-parameter Llama-architecture chat model, Apache-2.0"
    else:
        name = settings.model_path.name
        layers = config.get("num_hidden_layers", "?")
        description = f"{model_type} architecture, {layers} layers, from LORALAB_MODEL_PATH"
    return LabModel(name, description, model_type, modules, defaults, presets, config, bool(config))


def check_targets(request: TrainRequest, model: LabModel) -> None:
    """The requested modules must exist in the lab's model (ValueError naming target_modules)."""
    if not model.target_modules:
        return  # an architecture we do not list: the worker reports what peft finds
    unknown = [name for name in request.target_modules if name not in model.target_modules]
    if unknown:
        raise ValueError(f"target_modules: {', '.join(unknown)} not in {model.name}; "
                         f"choose from {', '.join(model.target_modules)}")


def predict_run(request: TrainRequest, model: LabModel, on_gpu: bool, seq_len: int | None = None,
                autocast: bool = False) -> dict[str, Any]:
    """What the book's calculators predict for this run, to show next to what it measures.

    Trainable and total parameters as peft counts them; memory from the estimator for the lab's
    precision (bf16 autocast on a GPU, counted as a bf16 base; on the CPU fp32 weights, with
    bf16 autocast when `autocast`, as on a CPU with bf16 units), without
    checkpointing, at `seq_len` tokens per example (default: the task's longest example, the
    worst batch). On the CPU the comparable measurement is the tensor accounting (parameters,
    gradients, optimizer state and saved activations), so `accounted_bytes` gives the
    estimator's same terms apart from its allocator-level peak. Empty where the calculators do
    not know the model's architecture.
    """
    try:
        arch = architectures.from_hf_config("lab-model", model.name, model.config)
    except (KeyError, ValueError):
        return {}
    targets = request.target_modules or list(model.default_targets)
    estimate = lab_task.lab_memory_estimate(arch, request.method, request.rank, targets, request.batch_size,
                                            seq_len or lab_task.LAB_TASK_MAX_TOKENS, on_gpu, autocast)
    trainable = estimate.trainable_params
    total = params.count_trainable(arch, "lora" if request.method == "qlora" else request.method,
                                   r=request.rank, target_modules=targets).total
    accounted = lab_task.accounted_bytes(arch, request.method, request.rank, targets, request.batch_size,
                                         estimate.seq_len, autocast=autocast)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "peak_memory_bytes": estimate.total_bytes,
        "saved_activations_bytes": estimate.saved_activations_bytes,
        "accounted_bytes": accounted,
        "seq_len": estimate.seq_len,
        "display": {
            "trainable_params": format_int(trainable),
            "total_params": format_int(total),
            "peak_memory": format_gpu_bytes(estimate.total_bytes),
            "accounted_memory": format_gpu_bytes(accounted),
        },
    }


def lab_context(settings: Settings) -> dict[str, Any]:
    """Template context for the lab widget (the /lab page and the lab chapter)."""
    model = lab_model(settings)
    return {
        "defaults": TrainRequest(), "limits": TrainRequest.model_json_schema()["properties"], "model": model,
        "preset_labels": PRESET_LABELS, "try_limits": TryRequest.model_json_schema()["properties"],
        "try_max_new_tokens": settings.try_max_new_tokens,
    }
