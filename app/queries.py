"""Reader-facing query models shared by the JSON API and the instruments.

The public HTTP names are reader-friendly (`rank`, `alpha`); the calculators use peft's
(`r`, `lora_alpha`). Every field has hard bounds, documented in OpenAPI.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from calculators.architectures import TARGET_PRESETS

# Every method calculators.params counts, plus "qlora": LoRA's adapters on a 4-bit base train exactly
# LoRA's parameters (peft counts a Params4bit weight at its unpacked size), so it is counted as LoRA.
Method = Literal["full", "lora", "qlora", "rslora", "dora", "adalora", "ia3", "prefix", "prompt", "bitfit"]
# Preset names are the same in every family; "q,v" contains the comma that separates module names.
PRESET_NAMES = frozenset(name for presets in TARGET_PRESETS.values() for name in presets)
BaseDtype = Literal["fp32", "bf16", "fp16", "int8", "nf4"]
# transformers' TrainingArguments.optim names; the book's older names stay accepted (calculators.optimizers).
Optimizer = Literal["adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                    "adafactor", "sgd", "adamw", "adamw8bit", "adamw_8bit", "paged_adamw", "paged_adamw8bit"]
AttnImpl = Literal["eager", "sdpa", "flash"]


def split_modules(value: object) -> list[str]:
    """Accept target modules as repeated params, a comma list, or a preset name ("q,v" stays whole)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("target_modules: expected module names")
        if item.replace(" ", "") in PRESET_NAMES:
            names.append(item.replace(" ", ""))
        else:
            names.extend(part.strip() for part in item.split(",") if part.strip())
    if len(names) > 64:
        raise ValueError("target_modules: at most 64 names")
    return names


class StrictQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamsQuery(StrictQuery):
    model: str = Field("llama-2-7b", max_length=64, description="Architecture slug, e.g. llama-2-7b")
    method: Method = Field("lora", description="Fine-tuning method")
    rank: int = Field(8, ge=1, le=4096, description="LoRA rank r")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q,v"],
        description="peft module names (repeated or comma-separated) or a preset: q,v / attention / all-linear",
    )
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Prefix/prompt tuning: virtual tokens")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Adapter storage dtype (peft keeps and saves adapters in fp32 by default)"
    )

    _split = field_validator("target_modules", mode="before")(split_modules)


class MemoryQuery(ParamsQuery):
    method: Literal["full", "lora", "qlora", "dora"] = "lora"  # type: ignore[assignment]
    base_dtype: BaseDtype | None = Field(None, description="Storage dtype of the frozen base (default: nf4 for qlora, else bf16)")
    optimizer: Optimizer = Field("adamw_torch_fused", description="TrainingArguments.optim (old names accepted)")
    batch_size: int = Field(1, ge=1, le=1024, description="Micro-batch size")
    seq_len: int = Field(512, ge=1, le=131072, description="Sequence length in tokens")
    gradient_checkpointing: bool = False
    attn_impl: AttnImpl = "sdpa"
    double_quant: bool = Field(True, description="QLoRA: quantize the absmax constants too")
    prepare_kbit: bool = Field(True, description="QLoRA: peft's prepare_model_for_kbit_training (fp32 embeddings, "
                               "norms and lm_head, so fp32 hidden states)")
    autocast: bool | None = Field(None, description="Run the step under bf16 autocast (Trainer bf16=True); "
                                  "default: on for full fine-tuning of fp32 weights, off otherwise")


class LowRankQuery(StrictQuery):
    d_out: int = Field(256, ge=2, le=1024)
    d_in: int = Field(256, ge=2, le=1024)
    intrinsic_rank: int = Field(8, ge=1, le=256)
    noise: float = Field(0.05, ge=0.0, le=10.0, description="Noise standard deviation relative to the signal")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Nf4ErrorQuery(StrictQuery):
    distribution: Literal["normal", "heavy-tailed", "outliers"] = "normal"
    blocksize: int = Field(64, ge=16, le=4096)
    n_values: int = Field(4096, ge=64, le=65536)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ScalingQuery(StrictQuery):
    alpha: float = Field(16.0, gt=0, le=1024, description="lora_alpha")
    max_rank: int = Field(256, ge=2, le=4096, description="Largest rank of the series (powers of two up to it)")


class MergeQuery(StrictQuery):
    d_out: int = Field(512, ge=1, le=2048)
    d_in: int = Field(512, ge=1, le=2048)
    rank: int = Field(16, ge=1, le=512)
    alpha: float = Field(16.0, gt=0, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Nf4OverheadQuery(StrictQuery):
    model: str = Field("llama-2-70b", max_length=64, description="Architecture slug")
    blocksize: int = Field(64, ge=16, le=4096, description="Weights per absmax block")
