"""The training lab: the /lab page and the /api/v1/train job API (server-sent events)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from app.formatting import format_bytes, format_int
from app.jobs import Job, JobManager, QueueFull
from app.errors import calculator_input
from app.lab import TrainRequest, check_targets, lab_context, lab_model, predict_run
from app.rendering import page

router = APIRouter(tags=["lab"])

KEEPALIVE_S = 15.0


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


@router.get("/lab", response_class=HTMLResponse, summary="The training lab page")
def lab_page(request: Request):
    return page(request, "lab.html", **lab_context(request.app.state.settings))


@router.post("/api/v1/train/predict", summary="What the calculators predict for a run, without running it")
def predict(request: Request, body: TrainRequest) -> dict:
    model = lab_model(request.app.state.settings)
    with calculator_input(location="body"):
        check_targets(body, model)
    predicted = predict_run(body, model, on_gpu=jobs(request).worker_cuda)
    return {"predicted": {k: v for k, v in predicted.items() if k != "display"},
            "predicted_display": predicted.get("display", {})}


@router.post(
    "/api/v1/train", status_code=202, summary="Queue a training run",
    responses={429: {"description": "Queue full; see Retry-After"}, 422: {"description": "Invalid field"}},
)
def submit(request: Request, body: TrainRequest) -> JSONResponse:
    model = lab_model(request.app.state.settings)
    with calculator_input(location="body"):
        check_targets(body, model)
    manager = jobs(request)
    try:
        job = manager.submit(body.training_config() | {"request": body.model_dump()})
    except QueueFull as exc:
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
        )
    predicted = predict_run(body, model, on_gpu=manager.worker_cuda)
    return JSONResponse(
        {**job.public(), "queue_position": manager.queue_position(job.id),
         "predicted": {k: v for k, v in predicted.items() if k != "display"},
         "predicted_display": predicted.get("display", {}),
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
