"""The training lab: the /lab page and the /api/v1/train job API (server-sent events)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from app.errors import calculator_input
from app.formatting import format_gpu_bytes, format_int
from app.jobs import Job, JobManager, QueueFull, estimate_eta_s
from app.lab import LabModel, TrainRequest, TryRequest, check_targets, lab_context, lab_model, predict_run, run_config
from app.rendering import page

router = APIRouter(tags=["lab"])

KEEPALIVE_S = 15.0
CPU_MEMORY_NOTE = (
    "On the CPU, “measured” memory is an accounting, not an allocator statistic: the bytes of the "
    "parameters, gradients and optimizer state plus the activations autograd saved for backward, counted "
    "tensor by tensor at the peak step, beside the estimator's same terms. The estimator's full peak "
    "(temporaries and logits included) is what a GPU's torch.cuda.max_memory_allocated would show."
)
GPU_MEMORY_NOTE = "Measured with torch.cuda.max_memory_allocated, beside the estimator's peak."


def _fraction(value: float, count: int) -> str:
    return f"{round(value * count)}/{count}"


def with_display(event: dict, job: Job, model: LabModel, history: list[dict] | None = None) -> dict:
    """Add reader-facing strings to an event (formatting lives in one place). `history`: the
    job's events up to and including this one, so a replayed step shows the ETA it had then."""
    kind = event["type"]
    if kind == "step":
        total = int(job.config.get("steps", 0))
        history = job.events if history is None else history
        eta_s = estimate_eta_s(history, total)
        display = {
            "loss": f"{event['loss']:.3f}",
            "tokens_per_s": format_int(event["tokens_per_s"]),
            "peak_memory": format_gpu_bytes(event["peak_memory_bytes"]),
            "eta": f"{eta_s:.0f} s" if eta_s is not None else None,
        }
        return {**event, "eta_s": eta_s, "display": display}
    if kind == "summary":
        n = event["held_out"]
        on_cpu = event.get("peak_memory_kind") == "cpu_tensor_accounting"
        predicted = predicted_for(job, event, model)
        display = {
            "trainable_params": format_int(event["trainable_params"]),
            "total_params": format_int(event["total_params"]),
            "exact_match": f"{_fraction(event['exact_match_before'], n)} → {_fraction(event['exact_match_after'], n)}",
            "answer_loss": f"{event['answer_loss_before']:.2f} → {event['answer_loss_after']:.2f}",
            "wall": f"{event['wall_s']:.0f} s",
            "tokens_per_s": format_int(event["tokens_per_s"]),
            "precision": "steps in bf16 autocast" if event.get("autocast") == "bf16" else "fp32",
            "peak_memory": format_gpu_bytes(event["peak_memory_bytes"]),
            "memory_note": CPU_MEMORY_NOTE if on_cpu else GPU_MEMORY_NOTE,
            "predicted": predicted.get("display", {}),
        }
        if predicted:
            display["predicted"]["memory"] = format_gpu_bytes(
                predicted["accounted_bytes"] if on_cpu else predicted["peak_memory_bytes"])
        return {**event, "predicted": {k: v for k, v in predicted.items() if k != "display"}, "display": display}
    return event


def predicted_for(job: Job, summary: dict[str, Any], model: LabModel) -> dict[str, Any]:
    """The calculators' prediction at the shapes the run really had (its widest batch)."""
    request = job.config.get("request")
    if request is None:
        return {}
    return predict_run(TrainRequest(**request), model, on_gpu=str(summary.get("device", "cpu")).startswith("cuda"),
                       seq_len=summary.get("max_batch_tokens") or None, autocast=summary.get("autocast") == "bf16")


def jobs(request: Request) -> JobManager:
    return request.app.state.jobs()


def _job_or_404(request: Request, job_id: str) -> Job:
    job = jobs(request).get(job_id)
    if job is None:
        raise HTTPException(404, f"no training job {job_id!r}")
    return job


def _links(job: Job) -> dict[str, str]:
    base = f"/api/v1/train/{job.id}"
    links = {"self": base, "events": f"{base}/events"}
    if job.kind == "train":
        links |= {"adapter": f"{base}/adapter", "try": f"{base}/try"}
    return links


def _public(request: Request, job: Job) -> dict[str, Any]:
    return {**job.public(), "queue_position": jobs(request).queue_position(job.id), "links": _links(job)}


@router.get("/lab", response_class=HTMLResponse, summary="The training lab page")
def lab_page(request: Request):
    return page(request, "lab.html", **lab_context(request.app.state.settings))


@router.post("/api/v1/train/predict", summary="What the calculators predict for a run, without running it")
def predict(request: Request, body: TrainRequest) -> dict:
    model = lab_model(request.app.state.settings)
    with calculator_input(location="body"):
        check_targets(body, model)
    manager = jobs(request)
    if request.app.state.settings.warm_trainer:
        manager.warm()  # the lab's form asks for a prediction when it opens: a run may follow
    predicted = predict_run(body, model, on_gpu=manager.worker_cuda, autocast=manager.worker_autocast)
    return {"predicted": {k: v for k, v in predicted.items() if k != "display"},
            "predicted_display": predicted.get("display", {})}


def _queue_full(exc: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


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
        job = manager.submit(run_config(body, request.app.state.settings))
    except QueueFull as exc:
        return _queue_full(exc)
    predicted = predict_run(body, model, on_gpu=manager.worker_cuda, autocast=manager.worker_autocast)
    return JSONResponse(
        {**_public(request, job),
         "predicted": {k: v for k, v in predicted.items() if k != "display"},
         "predicted_display": predicted.get("display", {})},
        status_code=202, headers={"Location": f"/api/v1/train/{job.id}"},
    )


@router.post(
    "/api/v1/train/{job_id}/try", status_code=202, summary="Answer your own request with the base and the adapted model",
    responses={409: {"description": "The run has no adapter (yet)"}, 429: {"description": "Queue full; see Retry-After"}},
)
def try_adapter(request: Request, job_id: str, body: TryRequest) -> JSONResponse:
    run = _job_or_404(request, job_id)
    try:
        job = jobs(request).submit_try(job_id, body.prompt)
    except KeyError:
        raise HTTPException(409, f"job {job_id} has no adapter to try (status: {run.status.value})") from None
    except QueueFull as exc:
        return _queue_full(exc)
    return JSONResponse(_public(request, job), status_code=202, headers={"Location": f"/api/v1/train/{job.id}"})


@router.get("/api/v1/train", summary="The lab's queue and what its run store keeps (retention, last removal)")
def lab_state(request: Request) -> dict:
    manager = jobs(request)
    return {"queue": manager.queue_state(), "retention": manager.retention()}


@router.get("/api/v1/train/{job_id}", summary="A training run's (or a try's) status")
def status(request: Request, job_id: str) -> dict:
    job = _job_or_404(request, job_id)
    public = _public(request, job)
    if job.kind == "train" and job.summary is not None:
        predicted = predicted_for(job, job.summary, lab_model(request.app.state.settings))
        public["predicted"] = {k: v for k, v in predicted.items() if k != "display"}
    return public


@router.delete("/api/v1/train/{job_id}", status_code=202, summary="Cancel a training run")
def cancel(request: Request, job_id: str) -> dict:
    _job_or_404(request, job_id)
    job = jobs(request).cancel(job_id)
    return _public(request, job)


@router.get("/api/v1/train/{job_id}/adapter", summary="Download the adapter (peft format, zip)",
            response_class=FileResponse, responses={409: {"description": "The run has not finished"}})
def adapter(request: Request, job_id: str):
    job = _job_or_404(request, job_id)
    archive = jobs(request).adapter_zip(job_id)
    if archive is None:
        raise HTTPException(409, f"job {job_id} has no adapter yet (status: {job.status.value})")
    return FileResponse(archive, media_type="application/zip", filename=f"loralab-adapter-{job_id}.zip")


def _poll(manager: JobManager, job_id: str, since: int) -> tuple[int | None, str | None, list[dict]]:
    """A stream's look at its job: queue position, the running job's id, events from `since`."""
    position = manager.queue_position(job_id)
    return position, manager.running_id() if position is not None else None, manager.events(job_id, since)


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/api/v1/train/{job_id}/events", summary="Server-sent events: queue position, phases, steps, samples, summary",
            response_class=StreamingResponse)
async def events(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)
    manager = jobs(request)
    model = lab_model(request.app.state.settings)

    async def stream():
        sent = 0
        history: list[dict] = []
        idle = 0.0
        position: int | None = None
        yield "retry: 2000\n\n"
        while True:
            if await request.is_disconnected():
                return
            now, running, fresh = await asyncio.to_thread(_poll, manager, job_id, sent)  # Redis/SQLite off the loop
            if now is not None and now != position:
                ahead = now - 1 + (1 if running not in (None, job_id) else 0)
                yield _sse("queued", {"type": "queued", "position": now, "ahead": ahead})
                idle = 0.0
            position = now
            for event in fresh:
                history.append(event)
                yield _sse(event["type"], with_display(event, job, model, history))
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
