"""Instrument views: validate the reader's settings, call one calculator, shape the context.

Each view returns plain data for its template: headline numbers, table rows and Plotly
figure dicts (app.figures). The maths is all in `calculators`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app import figures
from app.errors import calculator_input
from app.queries import AttnImpl, BaseDtype, Optimizer, StrictQuery, split_modules
from pydantic import field_validator


class ConfiguratorQuery(StrictQuery):
    model: str = Field("llama-2-7b", max_length=64)
    method: Literal["full", "lora", "qlora", "dora", "ia3", "prefix", "prompt"] = "lora"
    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0, le=4096)
    rslora: bool = False
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    dropout: float = Field(0.05, ge=0, lt=1)
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)
    gradient_checkpointing: bool = True
    optimizer: Optimizer = "adamw"
    base_dtype: BaseDtype = "bf16"
    attn_impl: AttnImpl = "sdpa"
    num_virtual_tokens: int = Field(20, ge=1, le=512)

    _split = field_validator("target_modules", mode="before")(split_modules)


class WillItFitQuery(StrictQuery):
    model: str = Field("llama-3-8b", max_length=64)
    rank: int = Field(16, ge=1, le=1024)
    seq_len: int = Field(2048, ge=16, le=131072)
    batch_size: int = Field(1, ge=1, le=256)
    gradient_checkpointing: bool = True


class Nf4ViewerQuery(StrictQuery):
    distribution: Literal["normal", "heavy-tailed", "outliers"] = "normal"
    blocksize: int = Field(64, ge=16, le=1024)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: str = Field("llama-2-70b", max_length=64)


class SvdRankQuery(StrictQuery):
    intrinsic_rank: int = Field(8, ge=1, le=64)
    noise: float = Field(0.05, ge=0, le=1)
    size: int = Field(128, ge=16, le=512)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ScalingQuery(StrictQuery):
    alpha: float = Field(16.0, gt=0, le=1024)
    rank: int = Field(16, ge=1, le=1024)
    max_rank: int = Field(512, ge=8, le=4096)


def configurator(q: ConfiguratorQuery) -> dict[str, Any]:
    raise NotImplementedError


def will_it_fit(q: WillItFitQuery) -> dict[str, Any]:
    raise NotImplementedError


def nf4_viewer(q: Nf4ViewerQuery) -> dict[str, Any]:
    raise NotImplementedError


def svd_rank(q: SvdRankQuery) -> dict[str, Any]:
    raise NotImplementedError


def scaling(q: ScalingQuery) -> dict[str, Any]:
    raise NotImplementedError
