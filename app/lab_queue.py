"""Scale-out: a shared Redis queue drained by `loralab worker` processes.

With LORALAB_QUEUE_URL set, a web replica does not train: it validates a run, writes its record
to the run store (app/lab_store.py, the shared data directory) and pushes its id onto a Redis
list. Each worker takes one id at a time and runs it with its own JobManager (app/jobs.py: the
training process, the time limit, the forced kill), writing events and the adapter to the same
store, from which any web replica answers status, events and adapters. Redis carries only ids
and liveness; the store carries everything a reader sees.

Keys (all under `loralab:`):

    queue               list of waiting run ids: LPUSH to add, the head is the right end
    claimed:<worker>    the id a worker has just taken (BLMOVE from the queue), until its
                        record says "running" with the worker's name: nothing is lost between
    worker:<worker>     the worker's heartbeat (JSON: cuda, running id), expiring after
                        HEARTBEAT_TTL_S unless renewed every HEARTBEAT_EVERY_S

A reaper runs in every web replica and every worker: a run "running" on a worker whose heartbeat
has expired (killed, its machine gone) is queued again at the head of the queue, once; the
second time it fails with kind "worker_lost". A run queued in the store but in no Redis list
(Redis restarted empty) is queued again. Nothing is left "running" or "queued" forever.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from app.jobs import Job, JobManager, QueueFull, adapter_zip, has_adapter, new_job_id, retention_report
from app.jobs import retry_after_s as estimate_retry_after_s
from app.lab import TrainRequest, run_config
from app.lab_store import RunStore

log = logging.getLogger("loralab.queue")

PREFIX = "loralab:"
QUEUE = PREFIX + "queue"
HEARTBEAT_TTL_S = 8
HEARTBEAT_EVERY_S = 1.0
REAP_EVERY_S = 2.0
MAX_ATTEMPTS = 2
ORPHAN_AFTER_S = 10.0  # a queued record this old and in no Redis list is queued again
RETRYING = "The worker running this run stopped; it runs again on another worker (attempt {n} of {max})."
LOST = "The worker running this run stopped, {max} times; start it again."


def _claimed(worker: str) -> str:
    return f"{PREFIX}claimed:{worker}"


def _heartbeat(worker: str) -> str:
    return f"{PREFIX}worker:{worker}"


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, health_check_interval=30)


def requeue(store: RunStore, r: redis.Redis, run_id: str, worker: str | None, message: str) -> bool:
    """Put a run that was running on `worker` back at the head of the queue (compare-and-set
    on its record, so two reapers never queue it twice)."""
    record = store.get(run_id)
    if record is None or record["status"] != "running" or record["worker"] != worker:
        return False
    if not store.update(run_id, when_status=("running",), status="queued", worker=None, started_at=None,
                        stop_reason=None, stop_requested_at=None):
        return False
    store.append_events(run_id, store.event_count(run_id), [{"type": "notice", "message": message}])
    r.rpush(QUEUE, run_id)
    return True


def reap(store: RunStore, r: redis.Redis) -> list[str]:
    """Requeue or fail the runs of workers whose heartbeat expired; give back what a dead worker
    had claimed but not started. Returns the ids acted on."""
    acted: list[str] = []
    for record in store.records_with_status("running"):
        worker = record["worker"]
        if worker is None or r.exists(_heartbeat(worker)):
            continue
        run_id = record["id"]
        if record["attempts"] < MAX_ATTEMPTS:
            if requeue(store, r, run_id, worker, RETRYING.format(n=record["attempts"] + 1, max=MAX_ATTEMPTS)):
                log.warning("run %s: its worker stopped; queued again (attempt %d of %d)", run_id,
                            record["attempts"] + 1, MAX_ATTEMPTS)
                acted.append(run_id)
        else:
            message = LOST.format(max=MAX_ATTEMPTS)
            error = {"kind": "worker_lost", "message": message}
            if store.finish(run_id, "failed", [{"type": "error", **error}, {"type": "end", "status": "failed"}],
                            store.event_count(run_id), when_status=("running",), error=error):
                log.warning("run %s: its worker stopped %d times; failed", run_id, MAX_ATTEMPTS)
                acted.append(run_id)
    claimed_keys = list(r.scan_iter(match=_claimed("*"), count=100))
    # queued in the store but in no Redis list (Redis restarted empty): queue it again
    waiting = set(r.lrange(QUEUE, 0, -1)).union(*(r.lrange(k, 0, -1) for k in claimed_keys))
    for record in store.records_with_status("queued"):
        if record["id"] not in waiting and time.time() - record["created_at"] > ORPHAN_AFTER_S:
            r.rpush(QUEUE, record["id"])  # at the head: it has waited longest
            log.warning("run %s was queued but not in the Redis queue; queued again", record["id"])
            acted.append(record["id"])
    for key in claimed_keys:
        worker = key[len(_claimed("")):]
        if r.exists(_heartbeat(worker)):
            continue
        for run_id in r.lrange(key, 0, -1):
            if r.lrem(key, 0, run_id):  # only one reaper wins each id
                record = store.get(run_id)
                if record is not None and record["status"] == "queued":
                    r.rpush(QUEUE, run_id)
                    acted.append(run_id)
    return acted


class _Reaper:
    """Runs `reap` every REAP_EVERY_S in a daemon thread (web replicas and workers alike), and a
    worker's heartbeat `beat` every HEARTBEAT_EVERY_S in another, so a slow pass never lets the
    heartbeat lapse."""

    def __init__(self, store: RunStore, r: redis.Redis, beat: Any = None) -> None:
        self.store, self.r = store, r
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._every, args=(REAP_EVERY_S, lambda: reap(store, r)),
                                         name="loralab-reaper", daemon=True)]
        if beat is not None:
            self.threads.append(threading.Thread(target=self._every, args=(HEARTBEAT_EVERY_S, beat),
                                                 name="loralab-heartbeat", daemon=True))
        for thread in self.threads:
            thread.start()

    def _every(self, seconds: float, action: Any) -> None:
        while not self.stopped.wait(seconds):
            try:
                action()
            except redis.RedisError as exc:
                log.warning("the queue's Redis is unreachable (%s); retrying", type(exc).__name__)
            except Exception:  # noqa: BLE001 - keep going; the log has the details
                log.exception("%s failed", threading.current_thread().name)

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(5)


class QueueClient:
    """What a web replica uses instead of a JobManager when LORALAB_QUEUE_URL is set: the same
    methods, answered from the run store, with runs queued on Redis for the workers."""

    def __init__(self, store: RunStore, url: str, max_queued: int) -> None:
        self.store = store
        self.max_queued = max_queued
        self.r = connect(url)
        self._facts: tuple[float, bool, bool] = (0.0, Path("/dev/nvidiactl").exists(), True)
        self._reaper = _Reaper(store, self.r)

    def _worker_facts(self) -> tuple[bool, bool]:
        """(cuda, autocast): whether a live worker trains on CUDA, whether under bf16 autocast
        (from their heartbeats, read at most every 5 s)."""
        checked, cuda, autocast = self._facts
        if time.monotonic() - checked > 5:
            try:
                beats = [json.loads(b) for b in (self.r.get(k) for k in self.r.scan_iter(match=_heartbeat("*"), count=100)) if b]
                cuda = any(b.get("cuda") for b in beats)
                autocast = any(b.get("autocast", True) for b in beats) if beats else autocast
            except redis.RedisError:
                pass
            self._facts = (time.monotonic(), cuda, autocast)
        return cuda, autocast

    @property
    def worker_cuda(self) -> bool:
        return self._worker_facts()[0]

    @property
    def worker_autocast(self) -> bool:
        return self._worker_facts()[1]

    def warm(self) -> None:
        """Nothing to do here: each `loralab worker` warms itself up when it starts."""

    def submit(self, config: dict[str, Any]) -> Job:
        return self._enqueue(config, "train")

    def submit_try(self, run_id: str, prompt: str) -> Job:
        if not has_adapter(self.store, self.get(run_id)):
            raise KeyError(run_id)
        return self._enqueue({"prompt": prompt}, "try", adapter_of=run_id)

    def _enqueue(self, config: dict[str, Any], kind: str, adapter_of: str | None = None) -> Job:
        if len(self.store.ids_with_status("queued")) >= self.max_queued:
            raise QueueFull(self.retry_after_s())
        job = Job(new_job_id(), dict(config), kind=kind, adapter_of=adapter_of)
        self.store.create(job.record())
        self.r.lpush(QUEUE, job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        record = self.store.get(job_id)
        return None if record is None else Job.from_record(record, self.store.events(job_id))

    def events(self, job_id: str, since: int) -> list[dict[str, Any]]:
        return self.store.events(job_id, since)

    def cancel(self, job_id: str) -> Job | None:
        """A queued run is cancelled here; a running one is asked to stop through its record
        (its worker reads it within a quarter of a second)."""
        record = self.store.get(job_id)
        if record is not None and record["status"] == "queued":
            if self.store.finish(job_id, "cancelled", [{"type": "end", "status": "cancelled"}],
                                 self.store.event_count(job_id), when_status=("queued",)):
                self.r.lrem(QUEUE, 0, job_id)
        elif record is not None and record["status"] == "running" and not record["stop_reason"]:
            self.store.update(job_id, when_status=("running",), stop_reason="cancel", stop_requested_at=time.time())
        return self.get(job_id)

    def adapter_zip(self, job_id: str) -> Path | None:
        return adapter_zip(self.store, self.get(job_id))

    def _running(self) -> list[Job]:
        return [Job.from_record(r, self.store.events(r["id"])) for r in self.store.records_with_status("running")]

    def retry_after_s(self) -> int:
        return estimate_retry_after_s(self._running(), self.store)

    def running_id(self) -> str | None:
        running = self.store.ids_with_status("running")
        return running[0] if running else None

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next run a worker takes (the list's right end)."""
        with self.r.pipeline() as pipe:
            pipe.lpos(QUEUE, job_id)
            pipe.llen(QUEUE)
            index, length = pipe.execute()
        return None if index is None else length - index

    def queue_state(self) -> dict[str, Any]:
        queued = list(reversed(self.r.lrange(QUEUE, 0, -1)))
        workers = sorted(k[len(_heartbeat("")):] for k in self.r.scan_iter(match=_heartbeat("*"), count=100))
        return {"backend": "redis", "queued": queued, "running": self.store.ids_with_status("running"),
                "max_queued": self.max_queued, "workers": len(workers)}

    def retention(self) -> dict[str, Any]:
        return retention_report(self.store)

    def close(self) -> None:
        self._reaper.stop()
        self.r.close()


def run_worker(settings: Any, name: str | None = None, stop: threading.Event | None = None) -> None:
    """`loralab worker`: take runs from the shared queue one at a time until SIGTERM/SIGINT.
    On a graceful stop the run in progress goes back to the head of the queue."""
    from app.lab_store import Retention

    if not settings.queue_url:
        raise SystemExit("loralab worker: set LORALAB_QUEUE_URL (e.g. redis://redis:6379/0) to the queue to drain")
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    store = RunStore.open(settings.data_dir, Retention(settings.keep_runs, settings.keep_runs_mib * 2**20))
    r = connect(settings.queue_url)
    manager = JobManager(store, 1, settings.job_time_limit_s, settings.lab_model_dir, settings.lab_task_dir,
                         try_max_new_tokens=settings.try_max_new_tokens, stop_grace_s=settings.job_stop_grace_s,
                         remote=True, threads=settings.train_threads, baseline_dir=settings.baseline_dir,
                         warm_config=run_config(TrainRequest(), settings))
    if settings.warm_trainer:
        manager.warm()

    def beat() -> None:
        # no lock taken: the manager may hold its own for a few seconds while it kills a process
        r.set(_heartbeat(worker), json.dumps({"cuda": manager.worker_cuda, "autocast": manager.worker_autocast,
                                               "running": manager._running}),
              ex=HEARTBEAT_TTL_S)

    beat()
    reaper = _Reaper(store, r, beat)
    log.info("worker %s: waiting for runs", worker)
    try:
        while not stop.is_set():
            if not manager.idle():
                stop.wait(0.2)
                continue
            try:
                run_id = r.blmove(QUEUE, _claimed(worker), 1, "RIGHT", "LEFT")
            except redis.RedisError as exc:
                log.warning("the queue's Redis is unreachable (%s); retrying", type(exc).__name__)
                stop.wait(2)
                continue
            if run_id is None:
                continue
            job = manager.adopt(run_id, worker)
            r.lrem(_claimed(worker), 0, run_id)
            if job is not None:
                log.info("worker %s: run %s (attempt %d)", worker, run_id, job.attempts)
    finally:
        def give_back(job: Job) -> None:
            requeue(store, r, job.id, worker, "Its worker was stopped; it runs again on another worker.")

        manager.close(leftover=give_back)
        reaper.stop()
        r.delete(_heartbeat(worker))
        log.info("worker %s: stopped", worker)
