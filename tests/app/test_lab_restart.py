"""Runs outlive the server: the real `loralab serve` process, stopped and started again on the
same data directory, still answers for a finished run's status, events and adapter, and marks
the runs it was running or holding in its queue as interrupted, in words (a graceful stop, and
a SIGKILL that gives the server no chance to say anything)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import process_running, run_finished, serving, wait_for_run

pytest.importorskip("torch")

SHORT = {"steps": 2, "batch_size": 2, "rank": 4}
LONG = {"steps": 300, "batch_size": 2, "rank": 4}


@pytest.fixture(scope="module")
def server_env(tmp_path_factory, lab_model_dir, small_task_dir) -> dict[str, str]:
    return {"LORALAB_DATA_DIR": str(tmp_path_factory.mktemp("data")), "LORALAB_MODEL_CACHE": str(lab_model_dir),
            "LORALAB_LAB_TASK_DIR": str(small_task_dir), "LORALAB_MAX_QUEUED_JOBS": "2",
            "LORALAB_JOB_TIME_LIMIT_S": "3600", "LORALAB_ANSWER_MAX_NEW_TOKENS": "24"}


def training(job: dict) -> bool:
    return job["status"] == "running" and job["steps_done"] >= 1


def _follow(url: str) -> None:
    try:
        with httpx.stream("GET", url, timeout=None) as response:
            for _ in response.iter_lines():
                pass
    except httpx.HTTPError:
        pass  # the server went away: what the test is about


def event_log(base: str, job_id: str) -> list[dict]:
    """The whole event stream of a finished run (it ends with its `end` event)."""
    import json

    text = httpx.get(f"{base}/api/v1/train/{job_id}/events", timeout=30).text
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_finished_runs_survive_a_restart_and_unfinished_ones_come_back_interrupted(server_env, lab_model_dir):
    with serving(server_env) as base:
        done = httpx.post(f"{base}/api/v1/train", json=SHORT, timeout=30).json()
        before = wait_for_run(base, done["id"], run_finished)
        assert before["status"] == "succeeded"
        adapter = httpx.get(f"{base}/api/v1/train/{done['id']}/adapter", timeout=30)
        assert adapter.status_code == 200
        events_before = event_log(base, done["id"])
        running = httpx.post(f"{base}/api/v1/train", json=LONG, timeout=30).json()
        queued = httpx.post(f"{base}/api/v1/train", json=SHORT, timeout=30).json()
        wait_for_run(base, running["id"], training)
        assert httpx.get(f"{base}/api/v1/train/{queued['id']}", timeout=10).json()["queue_position"] == 1
        # a reader watches the run: an event stream stays open as long as the run lasts
        watching = threading.Thread(target=_follow, args=(f"{base}/api/v1/train/{running['id']}/events",), daemon=True)
        watching.start()
        time.sleep(1)
        stopped = time.monotonic()
        base.process.terminate()  # SIGTERM, as `docker stop` sends before its SIGKILL 10 s later
        base.process.wait(timeout=30)
        assert time.monotonic() - stopped < 10, "the open event stream held the server past docker stop's grace"
    # the server stopped with one run training and one waiting

    with serving(server_env) as base:
        after = httpx.get(f"{base}/api/v1/train/{done['id']}", timeout=10).json()
        assert after["status"] == "succeeded" and after["summary"] == before["summary"]
        assert after["predicted"] == before["predicted"] and after["config"] == before["config"]
        assert event_log(base, done["id"]) == events_before
        again = httpx.get(f"{base}/api/v1/train/{done['id']}/adapter", timeout=30)
        assert again.status_code == 200 and again.content == adapter.content
        for job in (running, queued):
            final = httpx.get(f"{base}/api/v1/train/{job['id']}", timeout=10).json()
            assert final["status"] == "failed" and final["error"]["kind"] == "interrupted", final
            assert final["error"]["message"] == "The server stopped before this run finished; start it again."
            assert event_log(base, job["id"])[-1] == {"type": "end", "status": "failed"}
        assert httpx.get(f"{base}/api/v1/train/{running['id']}", timeout=10).json()["steps_done"] >= 1

        # a server killed outright (SIGKILL, the out-of-memory killer): its training run is
        # marked when the next server opens the store
        killed = httpx.post(f"{base}/api/v1/train", json=LONG, timeout=30).json()
        wait_for_run(base, killed["id"], training)
        trainers = _trainers_of(base.process.pid)
        assert len(trainers) == 1
        os.kill(base.process.pid, signal.SIGKILL)
        base.process.wait(10)
        # its training process does not outlive it (it dies with its parent: no orphan keeps training)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{trainers[0]}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_running(trainers[0])

    with serving(server_env) as base:
        final = httpx.get(f"{base}/api/v1/train/{killed['id']}", timeout=10).json()
        assert final["status"] == "failed" and final["error"]["kind"] == "interrupted"
        assert event_log(base, killed["id"])[-2:] == [
            {"type": "error", "kind": "interrupted", "message": final["error"]["message"]},
            {"type": "end", "status": "failed"}]
        assert httpx.get(f"{base}/api/v1/train/{done['id']}", timeout=10).json()["status"] == "succeeded"


def _trainers_of(pid: int) -> list[int]:
    """The spawned training processes (multiprocessing's spawn_main) whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"spawn_main" in cmdline and ppid == pid:
            found.append(int(entry))
    return found
