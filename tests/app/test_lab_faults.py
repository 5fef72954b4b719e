"""Faults in the training lab, each ending with a clear job status while the site keeps
serving: a job past its time limit, a reader leaving the event stream, a worker that dies
mid-run (as under the kernel's out-of-memory killer)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch")

LONG = {"steps": 300, "batch_size": 2, "rank": 4}
SHORT = {"steps": 2, "batch_size": 2, "rank": 4}
TIME_LIMIT_S = 40  # loading the model and answering the two held-out requests fit well inside it


@pytest.fixture(scope="module")
def lab_client(tmp_path_factory, lab_model_dir, small_task_dir):
    from dataclasses import replace

    from app.main import create_app
    from app.settings import Settings

    app = create_app(replace(Settings(), max_queued_jobs=2, job_time_limit_s=TIME_LIMIT_S, lab_task_dir=small_task_dir,
                             data_dir=tmp_path_factory.mktemp("data"), model_cache_dir=lab_model_dir))
    with TestClient(app) as client:
        client.app_state = app.state
        yield client


def wait_for(client, job_id: str, statuses: tuple[str, ...], timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/train/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def still_serving(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/instruments/scaling", headers={"HX-Request": "true"}).status_code == 200


def test_a_job_past_its_time_limit_is_stopped_and_says_so(lab_client):
    job = lab_client.post("/api/v1/train", json=LONG).json()
    still_serving(lab_client)
    final = wait_for(lab_client, job["id"], ("timed_out", "failed", "succeeded", "cancelled"), timeout_s=TIME_LIMIT_S + 90)
    assert final["status"] == "timed_out"
    assert 0 < final["steps_done"] < LONG["steps"]
    still_serving(lab_client)


def test_a_reader_leaving_the_event_stream_does_not_stop_the_run(lab_client):
    job = lab_client.post("/api/v1/train", json=SHORT).json()
    with lab_client.stream("GET", job["links"]["events"]) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                break  # the reader closes the tab after the first event
    final = wait_for(lab_client, job["id"], ("succeeded", "failed", "cancelled", "timed_out"))
    assert final["status"] == "succeeded" and final["steps_done"] == SHORT["steps"]
    still_serving(lab_client)


def test_a_worker_killed_mid_run_fails_its_job_and_the_next_job_runs(lab_client):
    manager = lab_client.app_state.jobs()
    job = lab_client.post("/api/v1/train", json=LONG).json()
    wait_for(lab_client, job["id"], ("running",))
    deadline = time.monotonic() + 60
    while lab_client.get(f"/api/v1/train/{job['id']}").json()["steps_done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(manager._process.pid, signal.SIGKILL)  # what the out-of-memory killer does
    final = wait_for(lab_client, job["id"], ("failed", "succeeded", "cancelled", "timed_out"))
    assert final["status"] == "failed"
    assert final["error"]["kind"] == "crashed"
    still_serving(lab_client)
    after = lab_client.post("/api/v1/train", json=SHORT).json()
    assert wait_for(lab_client, after["id"], ("succeeded", "failed"))["status"] == "succeeded"
