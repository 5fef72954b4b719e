"""The training job runner: bounded, one training process, cancellable, time-limited.

Jobs run in a separate long-lived process (`training.worker.serve`) that loads the base
model once and reuses it, so training never holds the web server's GIL. Two kinds share the
queue: "train" (a fine-tuning run) and "try" (a reader's prompt answered by the base and a
finished run's adapter), so both are bounded and rate-limited the same way. One job runs at a
time; at most `max_queued` wait; more are refused (the API answers 429 with Retry-After).
A watchdog enforces the wall-clock limit: it first asks the job to stop between steps, then
kills the process if it has not stopped `stop_grace_s` later (a cancel likewise). A crashed
training process fails its job and is restarted for the next one.

Every job's record and events go to the run store (app/lab_store.py) as they happen, so a
client can (re)connect to the stream at any time, and a finished run outlives the server.
Without a queue URL, the web process owns a JobManager (this module); with one, each
`loralab worker` owns one and takes its jobs from Redis (app/lab_queue.py).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import os
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from app.lab_store import RunStore

log = logging.getLogger("loralab.jobs")

STOP_GRACE_S = 20.0  # after a stop request, how long a step may take before the process is killed
INTERRUPTED = "The server stopped before this run finished; start it again."


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    cancelled = "cancelled"
    timed_out = "timed_out"
    failed = "failed"  # error.kind says why: invalid, out_of_memory, crashed, interrupted, worker_lost, ...

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
    plus the held-out evaluation after training, estimated by the one before it (or, where the
    run reused a kept base-model evaluation, by what computing that took). None before the
    first step (nothing measured yet)."""
    starts = [i for i, e in enumerate(events) if e["type"] == "phase" and e["phase"] == "load" and e["done"] == 0]
    events = events[starts[-1]:] if starts else events  # a retried run: only its last attempt counts
    steps = [e for e in events if e["type"] == "step"]
    if not steps:
        return None
    remaining = max(0, total_steps - steps[-1]["step"])
    mean_step_s = sum(e["step_s"] for e in steps) / len(steps)
    before = [e for e in events if e["type"] == "phase" and e["phase"] == "before"]
    reused = [e["evaluation_s"] for e in before if e.get("evaluation_s") is not None]
    if reused:
        evaluation_s = reused[-1]
    else:
        evaluation_s = before[-1]["elapsed_s"] - before[0]["elapsed_s"] if len(before) > 1 else 0.0
    return round(mean_step_s * remaining + evaluation_s, 1)


@dataclass
class Job:
    id: str
    config: dict[str, Any]
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
    stop_requested_at: float | None = None
    attempts: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any], events: list[dict[str, Any]]) -> Job:
        """A job from its store record (app/lab_store.py) and its events."""
        return cls(record["id"], record["config"], record["kind"], record["adapter_of"], record["created_at"],
                   JobStatus(record["status"]), record["started_at"], record["finished_at"], events,
                   record["summary"], record["error"], record["stop_reason"], record["stop_requested_at"],
                   record["attempts"])

    def record(self) -> dict[str, Any]:
        """The store's columns for this job."""
        return {"id": self.id, "kind": self.kind, "adapter_of": self.adapter_of, "config": self.config,
                "status": self.status.value, "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "summary": self.summary, "error": self.error,
                "stop_reason": self.stop_reason, "stop_requested_at": self.stop_requested_at,
                "attempts": self.attempts}

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
            "attempts": self.attempts,
            "last_step": last,
            "summary": self.summary,
            "error": self.error,
        }


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def has_adapter(store: RunStore, job: Job | None) -> bool:
    """A finished training run whose adapter is on disk (what "try" and the download need)."""
    return (job is not None and job.kind == "train" and job.summary is not None
            and (store.adapter_dir(job.id) / "adapter_config.json").is_file())


def adapter_zip(store: RunStore, job: Job | None) -> Path | None:
    """A zip of the run's adapter (peft format), made on the first request; None without one.
    Written to a temporary name and renamed, so two web replicas never serve half a file."""
    if job is None or not has_adapter(store, job):
        return None
    archive = store.run_dir(job.id) / f"loralab-adapter-{job.id}.zip"
    if not archive.exists():
        partial = archive.with_name(f".{archive.name}.{os.getpid()}.{threading.get_ident()}")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(store.adapter_dir(job.id).iterdir()):
                zf.write(path, arcname=f"adapter/{path.name}")
        os.replace(partial, archive)
        store.record_size(job.id)
    return archive


def retry_after_s(running: list[Job], store: RunStore) -> int:
    """Seconds until a queue slot frees: the soonest-finishing running job's measured time left
    (`estimate_eta_s`); before its first step, the mean wall time of the last finished runs less
    what it has run; 10 s when nothing has been measured yet."""
    etas = [eta for eta in (job.eta_s() for job in running) if eta is not None]
    if etas:
        return max(1, math.ceil(min(etas)))
    walls = [r["summary"]["wall_s"] for r in store.records_with_status("succeeded")[-5:]
             if r["kind"] == "train" and r["summary"] and "wall_s" in r["summary"]]
    if walls and running:
        elapsed = time.time() - min(job.started_at or time.time() for job in running)
        return max(1, math.ceil(sum(walls) / len(walls) - elapsed))
    return 10


class JobManager:
    """Owns the queue, the training process and the live jobs; writes everything to the store.

    `remote`: jobs arrive from a shared queue (`loralab worker`): cancel requests are read from
    the store (a web replica writes them), and leftover runs are not this process's to mark.
    `on_finished(job)` is called (lock held) after each job ends.
    """

    def __init__(
        self, store: RunStore, max_queued: int, time_limit_s: float, model_dir: str | Path, task_dir: str | Path,
        try_max_new_tokens: int = 64, stop_grace_s: float = STOP_GRACE_S, remote: bool = False,
        on_finished: Callable[[Job], None] | None = None, threads: int = 0,
        baseline_dir: str | Path | None = None, warm_config: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.max_queued = max_queued
        self.time_limit_s = time_limit_s
        self.stop_grace_s = stop_grace_s
        self.model_dir = str(model_dir)
        self.task_dir = str(task_dir)
        self.try_max_new_tokens = try_max_new_tokens
        self.threads = threads or None  # None: every core
        self.baseline_dir = str(baseline_dir) if baseline_dir is not None else None
        self.warm_config = warm_config  # what warm() evaluates ahead: the lab's default run
        self.warmed = False
        self._warming = False  # a warm-up request is in the training process's hands
        self.remote = remote
        self.on_finished = on_finished
        if not remote:  # runs left queued or running by a previous server process (killed, not stopped)
            store.interrupt_unfinished(INTERRUPTED)
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}  # the live ones: queued and running
        self._pending: deque[str] = deque()
        self._running: str | None = None
        # Whether the worker trains on CUDA, from its "ready" event; until then, guess from the
        # driver's device node (the app process never imports torch).
        self.worker_cuda: bool = Path("/dev/nvidiactl").exists()
        # Whether its steps run under bf16 autocast (training.run.autocast_dtype_for): on a GPU, and
        # on a CPU with bf16 units; until it says, guess yes (on a CPU without them, fp32).
        self.worker_autocast: bool = True
        self._ctx = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._events: Any = None
        self._cancel: Any = None
        self._closed = False
        self._monitor = threading.Thread(target=self._watch, name="loralab-jobs", daemon=True)
        self._monitor.start()

    # --- public API -------------------------------------------------------------------
    def warm(self) -> None:
        """Start the training process now, so the first run finds torch imported, the model
        loaded and the base model's held-out answers for the default run already kept. Once
        per manager; a run submitted meanwhile waits behind it in the same process."""
        with self._lock:
            if self.warmed or self.warm_config is None or self._closed:
                return
            self.warmed = self._warming = True
            if self._process is None or not self._process.is_alive():
                self._start_worker()
            self._requests.put({"job": None, "kind": "warm", "config": self.warm_config})

    def submit(self, config: dict[str, Any]) -> Job:
        """Queue a training run (TrainConfig fields); QueueFull when `max_queued` already wait."""
        return self._enqueue(config, "train")

    def submit_try(self, run_id: str, prompt: str) -> Job:
        """Queue a reader's prompt for the base model and run `run_id`'s adapter.
        KeyError when that run has no adapter (unknown, unfinished or failed)."""
        with self._lock:
            if not has_adapter(self.store, self.get(run_id)):
                raise KeyError(run_id)
            return self._enqueue({"prompt": prompt}, "try", adapter_of=run_id)

    def _enqueue(self, config: dict[str, Any], kind: str, adapter_of: str | None = None) -> Job:
        with self._lock:
            if len(self._pending) >= self.max_queued:
                raise QueueFull(self.retry_after_s())
            job = Job(new_job_id(), dict(config), kind=kind, adapter_of=adapter_of)
            self.store.create(job.record())
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._dispatch()
            return job

    def adopt(self, job_id: str, worker: str) -> Job | None:
        """Run a job another process queued in the store (a `loralab worker` took its id from
        the shared queue). None if it is no longer queued (cancelled meanwhile)."""
        with self._lock:
            record = self.store.get(job_id)
            if record is None or record["status"] != "queued":
                return None
            if not self.store.update(job_id, when_status=("queued",), status="running", worker=worker):
                return None  # another worker took it first
            job = Job.from_record(record, self.store.events(job_id))
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._dispatch()
            return job

    def get(self, job_id: str) -> Job | None:
        """A live job from memory, a finished one from the store."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        record = self.store.get(job_id)
        return None if record is None else Job.from_record(record, self.store.events(job_id))

    def events(self, job_id: str, since: int) -> list[dict[str, Any]]:
        """The job's events from number `since` on (memory while live, then the store)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return job.events[since:]
        return self.store.events(job_id, since)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask the running one to stop after its step."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return self.get(job_id)
            if job.status is JobStatus.queued:
                self._pending.remove(job_id)
                self._finish(job, JobStatus.cancelled)
            elif job.stop_reason is None:
                self._request_stop(job, "cancel")
            return job

    def adapter_zip(self, job_id: str) -> Path | None:
        return adapter_zip(self.store, self.get(job_id))

    def retry_after_s(self) -> int:
        with self._lock:
            running = [self._jobs[self._running]] if self._running in self._jobs else []
            return retry_after_s(running, self.store)

    def running_id(self) -> str | None:
        with self._lock:
            return self._running

    def idle(self) -> bool:
        with self._lock:
            return self._running is None and not self._pending

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            return self._pending.index(job_id) + 1 if job_id in self._pending else None

    def queue_state(self) -> dict[str, Any]:
        """What waits and what runs (ids only), and the queue's bound."""
        with self._lock:
            return {"backend": "in-process", "queued": list(self._pending),
                    "running": [self._running] if self._running else [], "max_queued": self.max_queued}

    def retention(self) -> dict[str, Any]:
        return retention_report(self.store)

    def close(self, leftover: Callable[[Job], None] | None = None) -> None:
        """Stop: each queued or running job is marked interrupted (or handed to `leftover`)."""
        with self._lock:
            self._closed = True
            live = [self._jobs[i] for i in [*self._pending, *([self._running] if self._running else [])]]
            self._pending.clear()
            if self._running:
                self._cancel.set()
        self._stop_worker(timeout=5)
        with self._lock:
            for job in live:
                if leftover is not None:
                    leftover(job)
                else:
                    job.error = {"kind": "interrupted", "message": INTERRUPTED}
                    self._add_events(job, [{"type": "error", "kind": "interrupted", "message": INTERRUPTED}])
                    self._finish(job, JobStatus.failed)
                self._jobs.pop(job.id, None)
            self._running = None

    # --- the worker process -------------------------------------------------------------
    def _start_worker(self) -> None:
        from training.worker import serve  # torch loads only in the child

        self._requests = self._ctx.Queue()
        self._events = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        self._process = self._ctx.Process(
            target=serve, args=(self._requests, self._events, self._cancel, self.model_dir, self.task_dir, self.threads,
                                self.baseline_dir),
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

    def _request_stop(self, job: Job, reason: str) -> None:
        job.stop_reason, job.stop_requested_at = reason, time.time()
        self.store.update(job.id, stop_reason=reason, stop_requested_at=job.stop_requested_at)
        self._cancel.set()

    def _add_events(self, job: Job, events: list[dict[str, Any]]) -> None:
        first = len(job.events)
        job.events.extend(events)
        self.store.append_events(job.id, first, events)

    def _dispatch(self) -> None:
        """Start the next queued job if none is running (called with the lock held)."""
        if self._running or not self._pending or self._closed:
            return
        fresh = self._process is None or not self._process.is_alive()
        if fresh:
            self._warming = False  # a new process has no warm-up queued
            self._start_worker()
        job = self._jobs[self._pending.popleft()]
        job.status = JobStatus.running
        job.started_at = time.time()
        job.attempts += 1
        self._running = job.id
        self.store.update(job.id, status="running", started_at=job.started_at, attempts=job.attempts)
        if fresh:  # importing torch and transformers in the new process takes a few seconds
            self._add_events(job, [{"type": "phase", "phase": "start", "message": "Starting the training process",
                                    "done": 0, "total": 1, "elapsed_s": 0.0}])
        elif self._warming:
            self._add_events(job, [{"type": "phase", "phase": "start", "done": 0, "total": 1, "elapsed_s": 0.0,
                                    "message": "Finishing the warm-up: loading the model, answering as the base model"}])
        self.store.run_dir(job.id).mkdir(parents=True, exist_ok=True)
        if job.kind == "try":
            run = self.get(job.adapter_of or "")
            if not has_adapter(self.store, run):  # removed by retention while this waited
                job.error = {"kind": "gone", "message": "That run's adapter is no longer kept; train again."}
                self._add_events(job, [{"type": "error", **job.error}])
                self._finish(job, JobStatus.failed)
                self._dispatch()
                return
            self._requests.put({"job": job.id, "kind": "try", "prompt": job.config["prompt"], "config": run.config,
                                "adapter_dir": str(self.store.adapter_dir(run.id)),
                                "max_new_tokens": self.try_max_new_tokens})
        else:
            self._requests.put({"job": job.id, "kind": "train", "config": job.config,
                                "output_dir": str(self.store.adapter_dir(job.id))})

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished_at = time.time()
        end = {"type": "end", "status": status.value}
        self.store.finish(job.id, status.value, [end], len(job.events), finished_at=job.finished_at,
                          summary=job.summary, error=job.error)
        job.events.append(end)
        self._jobs.pop(job.id, None)
        if self._running == job.id:
            self._running = None
        self.store.prune(keep=job.id)
        if self.on_finished is not None:
            self.on_finished(job)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "ready":
            self.worker_cuda = bool(event.get("cuda"))
            self.worker_autocast = bool(event.get("autocast"))
            return
        if event.get("type") == "error" and event.get("job") is None:  # the warm-up failed; a run will say why
            self._warming = False
            log.warning("training process warm-up failed: %s", event.get("message"))
            return
        if event.get("type") == "warm":
            self._warming = False
            log.info("training process warmed up in %.1f s (base model evaluated: %s)", event["s"], event["evaluated"])
            return
        with self._lock:
            job = self._jobs.get(event.get("job") or "")
            if job is None or job.status.finished:
                return
            kind = event["type"]
            record = {k: v for k, v in event.items() if k != "job"}
            if kind == "answers":
                job.summary = record
                self._add_events(job, [record])
                self._finish(job, JobStatus.succeeded)
                self._dispatch()
            elif kind == "summary":
                job.summary = record
                self._add_events(job, [record])
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
                self._add_events(job, [record])
                self._finish(job, JobStatus.failed)
                self._dispatch()
            else:
                self._add_events(job, [record])

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
                    if not self._closed:
                        self._check_running()

    def _check_running(self) -> None:
        job = self._jobs.get(self._running) if self._running else None
        if job is None:
            return
        now = time.time()
        if self.remote and job.stop_reason is None:  # a web replica asks through the store
            record = self.store.get(job.id)
            if record is not None and record["stop_reason"]:
                self._request_stop(job, record["stop_reason"])
        elapsed = now - (job.started_at or now)
        if elapsed > self.time_limit_s and job.stop_reason is None:
            self._add_events(job, [{"type": "notice",
                                    "message": f"time limit of {self.time_limit_s:.0f} s reached; stopping"}])
            self._request_stop(job, "time_limit")
        overdue = job.stop_requested_at is not None and now - job.stop_requested_at > self.stop_grace_s
        dead = self._process is None or not self._process.is_alive()
        if dead or overdue:
            code = None if self._process is None else self._process.exitcode
            self._stop_worker(timeout=1)
            if job.stop_reason == "time_limit":
                job.error = {"kind": "time_limit", "message": f"Stopped after the {self.time_limit_s:.0f} s limit."}
                self._finish(job, JobStatus.timed_out)
            elif job.stop_reason == "cancel":
                job.error = {"kind": "cancelled", "message": f"Cancelled; the run did not stop within "
                             f"{self.stop_grace_s:.0f} s, so its process was ended."}
                self._finish(job, JobStatus.cancelled)
            else:
                job.error = {"kind": "crashed", "message": f"The training process exited unexpectedly (code {code})."}
                self._add_events(job, [{"type": "error", **job.error}])
                self._finish(job, JobStatus.failed)
            self._dispatch()


def retention_report(store: RunStore) -> dict[str, Any]:
    """What the store keeps and what retention last removed (for the API; no paths)."""
    last = store.removals(1)
    return {"max_runs": store.retention.max_runs, "max_bytes": store.retention.max_bytes, "kept": store.usage(),
            "persistent": store.persistent, "removed_runs_total": store.removed_total(),
            "last_removal": last[0].public() if last else None}
