"""The training job queue: bounded, one worker process, cancellable, time-limited.

Jobs run in a separate long-lived process (`training.worker.serve`) that loads the base
model once and reuses it, so training never holds the web server's GIL. Two kinds share the
queue: "train" (a fine-tuning run) and "try" (a reader's prompt answered by the base and a
finished run's adapter), so both are bounded and rate-limited the same way. One job runs at a
time; at most `max_queued` wait; more are refused (the API answers 429 with Retry-After).
A watchdog enforces the wall-clock limit: it first asks the job to stop between steps, then
terminates the process if it does not. A crashed worker fails its job and is restarted for
the next one. Events are kept per job so a client can (re)connect to the stream at any time.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

log = logging.getLogger("loralab.jobs")

TERMINAL_GRACE_S = 20.0  # after a stop request, how long a step may take before we kill
KEEP_FINISHED = 20  # finished jobs (and their adapters) kept for download


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    cancelled = "cancelled"
    timed_out = "timed_out"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.queued, JobStatus.running)


class QueueFull(Exception):
    """Raised by submit() when the queue is full; carries a retry estimate in seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the training queue is full; retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


def estimate_eta_s(events: list[dict[str, Any]], total_steps: int) -> float | None:
    """Seconds left, from what the run measured: the mean step time times the steps to go,
    plus the held-out evaluation after training, estimated by the one before it. None before
    the first step (nothing measured yet)."""
    steps = [e for e in events if e["type"] == "step"]
    if not steps:
        return None
    remaining = max(0, total_steps - steps[-1]["step"])
    mean_step_s = sum(e["step_s"] for e in steps) / len(steps)
    before = [e["elapsed_s"] for e in events if e["type"] == "phase" and e["phase"] == "before"]
    evaluation_s = before[-1] - before[0] if len(before) > 1 else 0.0
    return round(mean_step_s * remaining + evaluation_s, 1)


@dataclass
class Job:
    id: str
    config: dict[str, Any]
    output_dir: Path
    kind: str = "train"  # "train" | "try"
    adapter_of: str | None = None  # a "try" job: the run whose adapter answers
    created_at: float = field(default_factory=time.time)
    status: JobStatus = JobStatus.queued
    started_at: float | None = None
    finished_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    stop_reason: str | None = None  # "cancel" or "time_limit" once a stop was asked for

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"

    def last_step(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e["type"] == "step"), None)

    def eta_s(self) -> float | None:
        """Seconds left for a running training job (see `estimate_eta_s`)."""
        if self.status is not JobStatus.running or self.kind != "train":
            return None
        return estimate_eta_s(self.events, int(self.config.get("steps", 0)))

    def public(self) -> dict[str, Any]:
        """The job as the API reports it (no server paths)."""
        last = self.last_step()
        phase = next((e for e in reversed(self.events) if e["type"] == "phase"), None)
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "config": self.config,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "phase": phase,
            "steps_done": last["step"] if last else 0,
            "steps_total": int(self.config.get("steps", 0)) if self.kind == "train" else 0,
            "eta_s": self.eta_s(),
            "last_step": last,
            "summary": self.summary,
            "error": self.error,
        }


class JobManager:
    """Owns the queue, the worker process and every job's event log."""

    def __init__(
        self, max_queued: int, time_limit_s: float, model_dir: str | Path, task_dir: str | Path,
        jobs_root: Path | None = None, try_max_new_tokens: int = 64,
    ) -> None:
        self.max_queued = max_queued
        self.time_limit_s = time_limit_s
        self.model_dir = str(model_dir)
        self.task_dir = str(task_dir)
        self.try_max_new_tokens = try_max_new_tokens
        # one private folder per manager (close() removes it, and nobody else's runs), under the
        # data directory; in the system's temporary folder if that is read-only (a baked image)
        try:
            if jobs_root is not None:
                jobs_root.mkdir(parents=True, exist_ok=True)
            self.jobs_dir = Path(tempfile.mkdtemp(prefix="jobs-", dir=jobs_root))
        except OSError:
            log.warning("the runs folder under the data directory is not writable; keeping runs in a temporary folder")
            self.jobs_dir = Path(tempfile.mkdtemp(prefix="loralab-jobs-"))
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[str] = deque()
        self._running: str | None = None
        # Whether the worker trains on CUDA, from its "ready" event; until then, guess from the
        # driver's device node (the app process never imports torch).
        self.worker_cuda: bool = Path("/dev/nvidiactl").exists()
        self._ctx = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._events: Any = None
        self._cancel: Any = None
        self._closed = False
        self._monitor = threading.Thread(target=self._watch, name="loralab-jobs", daemon=True)
        self._monitor.start()

    # --- public API -------------------------------------------------------------------
    def submit(self, config: dict[str, Any]) -> Job:
        """Queue a training run (TrainConfig fields); QueueFull when `max_queued` already wait."""
        return self._enqueue(config, "train")

    def submit_try(self, run_id: str, prompt: str) -> Job:
        """Queue a reader's prompt for the base model and run `run_id`'s adapter.
        KeyError when that run has no adapter (unknown, unfinished or failed)."""
        with self._lock:
            run = self._jobs.get(run_id)
            if run is None or run.kind != "train" or run.summary is None or not run.adapter_dir.is_dir():
                raise KeyError(run_id)
            return self._enqueue({"prompt": prompt}, "try", adapter_of=run_id)

    def _enqueue(self, config: dict[str, Any], kind: str, adapter_of: str | None = None) -> Job:
        with self._lock:
            if len(self._pending) >= self.max_queued:
                raise QueueFull(self.retry_after_s())
            job_id = uuid.uuid4().hex[:12]
            job = Job(job_id, dict(config), self.jobs_dir / job_id, kind=kind, adapter_of=adapter_of)
            self._jobs[job_id] = job
            self._pending.append(job_id)
            self._dispatch()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask the running one to stop after its step."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status.finished:
                return job
            if job.status is JobStatus.queued:
                self._pending.remove(job_id)
                self._finish(job, JobStatus.cancelled)
            else:
                job.stop_reason = job.stop_reason or "cancel"
                self._cancel.set()
            return job

    def adapter_zip(self, job_id: str) -> Path | None:
        """A zip of the job's adapter (peft format), made on first request."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.kind != "train" or job.summary is None or not job.adapter_dir.is_dir():
                return None
            archive = job.output_dir / f"loralab-adapter-{job.id}.zip"
            if not archive.exists():
                with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                    for path in sorted(job.adapter_dir.iterdir()):
                        zf.write(path, arcname=f"adapter/{path.name}")
            return archive

    def retry_after_s(self) -> int:
        """A rough wait until a queue slot frees: the running job's remaining time."""
        with self._lock:
            job = self._jobs.get(self._running) if self._running else None
            remaining = job.eta_s() if job is not None else None
            return max(1, math.ceil(remaining)) if remaining is not None else 10

    def running_id(self) -> str | None:
        with self._lock:
            return self._running

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            return self._pending.index(job_id) + 1 if job_id in self._pending else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job_id in list(self._pending):
                self._finish(self._jobs[job_id], JobStatus.cancelled)
            self._pending.clear()
            if self._running:
                self._cancel.set()
        self._stop_worker(timeout=5)
        shutil.rmtree(self.jobs_dir, ignore_errors=True)

    # --- the worker process -------------------------------------------------------------
    def _start_worker(self) -> None:
        from training.worker import serve  # torch loads only in the child

        self._requests = self._ctx.Queue()
        self._events = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        self._process = self._ctx.Process(
            target=serve, args=(self._requests, self._events, self._cancel, self.model_dir, self.task_dir),
            name="loralab-trainer", daemon=True,
        )
        self._process.start()

    def _stop_worker(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            self._requests.put(None)
        except (OSError, ValueError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(5)
        self._process = None

    def _dispatch(self) -> None:
        """Start the next queued job if none is running (called with the lock held)."""
        if self._running or not self._pending or self._closed:
            return
        fresh = self._process is None or not self._process.is_alive()
        if fresh:
            self._start_worker()
        job = self._jobs[self._pending.popleft()]
        if fresh:  # importing torch and transformers in the new process takes a few seconds
            job.events.append({"type": "phase", "phase": "start", "message": "Starting the training process",
                               "done": 0, "total": 1, "elapsed_s": 0.0})
        job.output_dir.mkdir(parents=True, exist_ok=True)
        job.status = JobStatus.running
        job.started_at = time.time()
        self._running = job.id
        if job.kind == "try":
            run = self._jobs.get(job.adapter_of or "")
            if run is None:  # pruned while this waited
                job.error = {"kind": "gone", "message": "That run's adapter is no longer kept; train again."}
                self._finish(job, JobStatus.failed)
                self._dispatch()
                return
            self._requests.put({"job": job.id, "kind": "try", "prompt": job.config["prompt"], "config": run.config,
                                "adapter_dir": str(run.adapter_dir), "max_new_tokens": self.try_max_new_tokens})
        else:
            self._requests.put({"job": job.id, "kind": "train", "config": job.config, "output_dir": str(job.adapter_dir)})

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished_at = time.time()
        job.events.append({"type": "end", "status": status.value})
        if self._running == job.id:
            self._running = None
        self._prune()

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.status.finished]
        for job in sorted(finished, key=lambda j: j.finished_at or 0)[:-KEEP_FINISHED]:
            shutil.rmtree(job.output_dir, ignore_errors=True)
            del self._jobs[job.id]

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ready":
            self.worker_cuda = bool(event.get("cuda"))
            return
        with self._lock:
            job = self._jobs.get(event.get("job") or "")
            if job is None or job.status.finished:
                return
            kind = event["type"]
            record = {k: v for k, v in event.items() if k != "job"}
            if kind == "answers":
                job.summary = record
                job.events.append(record)
                self._finish(job, JobStatus.succeeded)
                self._dispatch()
            elif kind == "summary":
                job.summary = record
                job.events.append(record)
                if job.stop_reason == "time_limit":
                    status = JobStatus.timed_out
                elif record.get("cancelled"):
                    status = JobStatus.cancelled
                else:
                    status = JobStatus.succeeded
                self._finish(job, status)
                self._dispatch()
            elif kind == "error":
                job.error = {k: v for k, v in record.items() if k != "type"}
                job.events.append(record)
                self._finish(job, JobStatus.failed)
                self._dispatch()
            else:
                job.events.append(record)

    def _watch(self) -> None:
        """Move worker events into jobs; enforce time limits; notice a dead worker."""
        last_check = 0.0
        while not self._closed:
            events = self._events
            if events is None:
                time.sleep(0.2)
                continue
            try:
                self._on_event(events.get(timeout=0.25))
            except queue.Empty:
                pass
            except (OSError, ValueError, EOFError):
                time.sleep(0.2)
            # Checked between events too: a run streams a step every few milliseconds.
            if time.monotonic() - last_check >= 0.25:
                last_check = time.monotonic()
                with self._lock:
                    self._check_running()

    def _check_running(self) -> None:
        job = self._jobs.get(self._running) if self._running else None
        if job is None:
            return
        elapsed = time.time() - (job.started_at or time.time())
        if elapsed > self.time_limit_s and job.stop_reason is None:
            job.stop_reason = "time_limit"
            job.events.append({"type": "notice", "message": f"time limit of {self.time_limit_s:.0f} s reached; stopping"})
            self._cancel.set()
        overdue = job.stop_reason is not None and elapsed > self.time_limit_s + TERMINAL_GRACE_S
        dead = self._process is None or not self._process.is_alive()
        if dead or overdue:
            code = None if self._process is None else self._process.exitcode
            self._stop_worker(timeout=1)
            if job.stop_reason == "time_limit" or overdue:
                job.error = {"kind": "time_limit", "message": f"stopped after the {self.time_limit_s:.0f} s limit"}
                self._finish(job, JobStatus.timed_out if job.stop_reason == "time_limit" else JobStatus.cancelled)
            else:
                job.error = {"kind": "crashed", "message": f"the training process exited unexpectedly (code {code})"}
                self._finish(job, JobStatus.failed)
            self._dispatch()
