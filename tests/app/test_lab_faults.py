"""Faults in the training lab, each ending with a clear job status while the site keeps
serving: a job past its time limit, a reader leaving the event stream, a worker that dies
mid-run (as under the kernel's out-of-memory killer)."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import process_running

pytest.importorskip("torch")

LONG = {"steps": 300, "batch_size": 2, "rank": 4}
SHORT = {"steps": 2, "batch_size": 2, "rank": 4}
TIME_LIMIT_S = 40  # loading the model and answering the two held-out requests fit well inside it


# the runs' own answers bounded (LORALAB_ANSWER_MAX_NEW_TOKENS): the base model rambles to the limit
ANSWER_TOKENS = 24

@pytest.fixture(scope="module")
def lab_client(tmp_path_factory, lab_model_dir, small_task_dir):
    from dataclasses import replace

    from app.main import create_app
    from app.settings import Settings

    app = create_app(replace(Settings(), answer_max_new_tokens=ANSWER_TOKENS, max_queued_jobs=2, job_time_limit_s=TIME_LIMIT_S, lab_task_dir=small_task_dir,
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


def _pause(pid: int):
    """SIGSTOP a process (it can no longer react to anything, as if stuck inside one long step)."""
    os.kill(pid, signal.SIGSTOP)
    return lambda: _resume(pid)


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_a_cancelled_run_that_ignores_the_stop_request_is_killed_after_the_grace_period(lab_client):
    manager = lab_client.app_state.jobs()
    job = lab_client.post("/api/v1/train", json=LONG).json()
    wait_for(lab_client, job["id"], ("running",))
    while lab_client.get(f"/api/v1/train/{job['id']}").json()["steps_done"] < 1:
        time.sleep(0.2)
    pid = manager._process.pid
    resume = _pause(pid)  # the training process will never see the stop request
    grace = manager.stop_grace_s
    manager.stop_grace_s = 2
    try:
        assert lab_client.delete(f"/api/v1/train/{job['id']}").status_code == 202
        final = wait_for(lab_client, job["id"], ("cancelled", "failed", "succeeded", "timed_out"), timeout_s=30)
    finally:
        manager.stop_grace_s = grace
        resume()
    assert final["status"] == "cancelled" and final["summary"] is None  # ended by the kill, not by the run
    assert final["error"] == {"kind": "cancelled",
                              "message": "Cancelled; the run did not stop within 2 s, so its process was ended."}
    assert not process_running(pid)
    still_serving(lab_client)
    after = lab_client.post("/api/v1/train", json=SHORT).json()  # a fresh training process takes the next run
    final = wait_for(lab_client, after["id"], ("succeeded", "failed", "timed_out"))
    # all of it (on a loaded machine it may pass the module's 40 s limit while saving: still complete)
    assert final["steps_done"] == SHORT["steps"] and final["summary"]["steps_completed"] == SHORT["steps"]


def test_retry_after_is_the_running_runs_measured_time_left(lab_client):
    """A 429's Retry-After is when a queue slot frees: the running run's time left as it measured
    it (mean step time × steps to go + its held-out evaluation), read while the run is paused."""
    manager = lab_client.app_state.jobs()
    running = lab_client.post("/api/v1/train", json=LONG).json()
    waiting = [lab_client.post("/api/v1/train", json=SHORT).json() for _ in range(2)]
    while lab_client.get(f"/api/v1/train/{running['id']}").json()["steps_done"] < 3:
        time.sleep(0.2)
    resume = _pause(manager._process.pid)
    try:
        time.sleep(1)  # what the run sent before the pause reaches the server
        state = lab_client.get("/api/v1/train").json()["queue"]
        assert state["running"] == [running["id"]] and state["queued"] == [w["id"] for w in waiting]
        job = lab_client.get(f"/api/v1/train/{running['id']}").json()
        events = manager.get(running["id"]).events
        steps = [e for e in events if e["type"] == "step"]
        before = [e for e in events if e["type"] == "phase" and e["phase"] == "before"]
        # an earlier run of this module kept the base model's evaluation: the run reused it, and
        # the evaluation after training is estimated by what computing it took
        assert len(before) == 1 and before[0]["evaluation_s"] > 0
        by_hand = sum(s["step_s"] for s in steps) / len(steps) * (LONG["steps"] - steps[-1]["step"]) + before[0]["evaluation_s"]
        assert job["eta_s"] == round(by_hand, 1) and job["steps_done"] == steps[-1]["step"]
        refused = lab_client.post("/api/v1/train", json=SHORT)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) == math.ceil(job["eta_s"])
        assert refused.json()["detail"] == f"the training queue is full; retry in about {math.ceil(job['eta_s'])} s"
    finally:
        resume()
        for job in (*waiting, running):
            lab_client.delete(f"/api/v1/train/{job['id']}")
    assert wait_for(lab_client, running["id"], ("cancelled", "failed", "succeeded"))["status"] == "cancelled"


def test_an_error_event_says_what_went_wrong_in_words_and_the_traceback_goes_to_the_log(tmp_path, lab_model_dir,
                                                                                         small_task_dir):
    """The real server, with LORALAB_MODEL_PATH naming a model folder whose weights are missing."""
    import shutil

    import httpx

    from tests.conftest import serving

    broken = tmp_path / "models" / "half-copied-model"
    broken.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(lab_model_dir / name, broken / name)
    env = {"LORALAB_DATA_DIR": str(tmp_path / "data"), "LORALAB_MODEL_PATH": str(broken),
           "LORALAB_LAB_TASK_DIR": str(small_task_dir)}
    with serving(env) as base:
        job = httpx.post(f"{base}/api/v1/train", json=SHORT, timeout=30).json()
        text = ""
        with httpx.stream("GET", f"{base}/api/v1/train/{job['id']}/events", timeout=120) as stream:
            for line in stream.iter_lines():
                text += line + "\n"
                if line.startswith("event: end"):
                    break
        final = httpx.get(f"{base}/api/v1/train/{job['id']}", timeout=10).json()
        deadline = time.monotonic() + 10
        while "Traceback" not in base.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        server_log = base.log_path.read_text()
    error = final["error"]
    assert final["status"] == "failed" and error["kind"] == "missing_model"
    assert error["message"] == ("Error no file named model.safetensors, or pytorch_model.bin, found in directory "
                                "half-copied-model. Cache the model again (`loralab cache-model`).")
    assert 'data: {"type": "error", "kind": "missing_model"' in text
    for leak in (str(tmp_path), str(broken), "/tmp/", "Traceback", 'File "', ".py"):
        assert leak not in text and leak not in str(final), leak
    assert "Traceback (most recent call last)" in server_log and f"job {job['id']} failed (missing_model)" in server_log
