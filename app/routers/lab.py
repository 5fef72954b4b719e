"""The training lab: the /lab page and the /api/v1/train job API (server-sent events)."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs import JobManager, QueueFull
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


def jobs(request: Request) -> JobManager:
    return request.app.state.jobs()


def _job_or_404(request: Request, job_id: str):
    job = jobs(request).get(job_id)
    if job is None:
        raise HTTPException(404, f"no training job {job_id!r}")
    return job


@router.get("/lab", response_class=HTMLResponse, summary="The training lab page")
def lab_page(request: Request):
    return page(request, "lab.html", defaults=TrainRequest(), limits=TrainRequest.model_json_schema()["properties"])


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
                yield f"event: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n"
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
