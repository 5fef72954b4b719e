"""Any model, and what fits a GPU, as JSON: `/api/v1/plan` and `/api/v1/architectures` (POST).

`GET /api/v1/plan` plans for a listed model; `POST /api/v1/plan` takes the same settings in a
JSON body, where `config` may carry a model's config.json instead of a slug. `POST
/api/v1/architectures` turns a config.json (the body itself) into the shapes and counts the
calculators use. A bad config is a 422 naming the field (`config.hidden_size`).
"""

# No `from __future__ import annotations`: FastAPI reads the query models from the annotations.
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field, field_validator

from app.errors import calculator_input
from app.queries import StrictQuery, split_modules
from app.routers.api import ArchitectureOut, _architecture_out
from calculators import architectures, planner
from calculators.config_json import MAX_CONFIG_CHARS, parse_config_json
from calculators.gpus import GIB

router = APIRouter(prefix="/api/v1", tags=["calculators"])


class PlanSettings(StrictQuery):
    gpu: str = Field("rtx-4090", max_length=32, description="GPU slug (see calculators.gpus); ignored when memory_gib is given")
    memory_gib: float | None = Field(None, gt=0, le=4096, description="Memory the step may use, in GiB, instead of a listed GPU")
    model: str = Field("llama-3.1-8b", max_length=64, description="Architecture slug")
    seq_len: int = Field(2048, ge=1, le=1_048_576, description="Sequence length of interest")
    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"],
                                      description="peft module names or a preset: q,v / attention / all-linear")

    _split = field_validator("target_modules", mode="before")(split_modules)


class PlanBody(PlanSettings):
    config: dict[str, Any] | None = Field(None, description="A Hugging Face config.json; replaces `model` when given")


class MethodPlanOut(BaseModel):
    method: Literal["full", "lora", "qlora"]
    gradient_checkpointing: bool
    fits: bool = Field(description="At least one sequence of seq_len fits")
    max_batch_size: int = Field(description="Largest micro-batch at seq_len (0: none)")
    max_seq_len: int = Field(description="Longest sequence that fits at batch size 1 (0: none)")
    trainable_params: int
    trainable_percent: float
    adapter_bytes: int = Field(description="The saved adapter (0 for full fine-tuning)")
    ladder: list[planner.FitPoint] = Field(description="Largest micro-batch at each standard sequence length")
    total_with_context_bytes: int = Field(description="Peak with CUDA context at (max(1, max_batch_size), seq_len)")
    breakdown: dict[str, int] = Field(description="Component → bytes at that peak")


class PlanOut(BaseModel):
    model: str
    display_name: str
    n_params: int
    budget_bytes: int = Field(description="What the step may use: the GPU's usable memory, or memory_gib")
    seq_len: int
    rank: int
    plans: list[MethodPlanOut]


def _plan(settings: PlanSettings, arch: architectures.Architecture, location: str = "query") -> PlanOut:
    with calculator_input({"budget_bytes": "memory_gib"}, location):
        budget = int(settings.memory_gib * GIB) if settings.memory_gib else planner.gpu_budget_bytes(settings.gpu)
        targets = settings.target_modules
        plan = planner.plan_training(arch, budget, seq_len=settings.seq_len, r=settings.rank,
                                     target_modules=targets[0] if len(targets) == 1 else targets)
    return PlanOut(
        model=plan.model, display_name=plan.display_name, n_params=plan.n_params, budget_bytes=budget,
        seq_len=plan.seq_len, rank=plan.r,
        plans=[MethodPlanOut(
            method=p.method, gradient_checkpointing=p.gradient_checkpointing, fits=p.fits,
            max_batch_size=p.at_seq.max_batch_size, max_seq_len=p.max_seq_len, trainable_params=p.trainable_params,
            trainable_percent=p.trainable_percent, adapter_bytes=p.adapter_bytes, ladder=list(p.ladder),
            total_with_context_bytes=p.estimate.total_with_context_bytes, breakdown=p.estimate.breakdown(),
        ) for p in plan.plans],
    )


def _pasted(config: dict[str, Any]) -> architectures.Architecture:
    with calculator_input(location="body"):
        return parse_config_json(json.dumps(config), max_chars=MAX_CONFIG_CHARS)


@router.get("/plan", summary="What fits a GPU: the largest batch and sequence for full fine-tuning, LoRA and QLoRA")
def plan_for_model(query: Annotated[PlanSettings, Query()]) -> PlanOut:
    with calculator_input():
        arch = architectures.get_architecture(query.model)
    return _plan(query, arch)


@router.post("/plan", summary="What fits a GPU, for a listed model or a pasted config.json")
def plan_for_config(body: PlanBody) -> PlanOut:
    if body.config is not None:
        arch = _pasted(body.config)
    else:
        with calculator_input(location="body"):
            arch = architectures.get_architecture(body.model)
    return _plan(body, arch, "body")


@router.post("/architectures", summary="Shapes and parameter counts of any model, from its config.json")
def architecture_from_config(config: Annotated[dict[str, Any], Body(description="The model's config.json")]) -> ArchitectureOut:
    return _architecture_out(_pasted(config))
