"""Scale-out with a real redis-server: two web replicas (`loralab serve`) queue runs on Redis,
two `loralab worker` processes drain the queue into the shared data directory, and either
replica answers for any run. A worker killed with SIGKILL mid-run loses nothing: its run is
queued again and finished by the other worker (or fails with a reason after two tries)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from app.settings import PROJECT_ROOT
from tests.conftest import run_finished, serving, wait_for_run

pytest.importorskip("torch")
pytest.importorskip("redis")

SHORT = {"steps": 2, "batch_size": 2, "rank": 4}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence (scripts/test installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: scripts/test installs Debian's redis-server")
        pytest.skip("redis-server is not installed (scripts/test installs Debian's redis-server)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def workers(env: dict[str, str], names: list[str], logs: Path) -> Iterator[dict[str, subprocess.Popen]]:
    """`loralab worker --name NAME` processes; stopped with SIGTERM (a graceful stop) at the end."""
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name in names:
            log = open(logs / f"worker-{name}.log", "w")
            processes[name] = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--name", name],
                                               cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log,
                                               stderr=subprocess.STDOUT)
            log.close()
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def get(base: str, path: str) -> dict:
    response = httpx.get(f"{base}{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def tiny_task_dir(tmp_path_factory, small_task) -> Path:
    """Four training requests and one held-out one: a run here is mostly loading and one answer."""
    folder = tmp_path_factory.mktemp("tiny-task")
    for name, examples in (("train", small_task.train[:4]), ("test", small_task.test[:1])):
        rows = [json.dumps({"prompt": e.prompt, "answer": e.answer}) for e in examples]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_two_workers_drain_one_queue_and_a_killed_workers_run_is_retried(
        tmp_path, redis_url, lab_model_dir, tiny_task_dir):
    from app.lab_store import Retention, RunStore

    data_dir = tmp_path / "data"
    env = {"LORALAB_DATA_DIR": str(data_dir), "LORALAB_MODEL_CACHE": str(lab_model_dir),
           "LORALAB_LAB_TASK_DIR": str(tiny_task_dir), "LORALAB_QUEUE_URL": redis_url,
           "LORALAB_MAX_QUEUED_JOBS": "8", "LORALAB_JOB_TIME_LIMIT_S": "600",
           "LORALAB_TRAIN_THREADS": "1",
           "LORALAB_ANSWER_MAX_NEW_TOKENS": "24"}  # the runs' own answers bounded: the base model rambles to the limit  # two workers on one machine: a core each
    with ExitStack() as stack:
        web_a = stack.enter_context(serving(env))
        web_b = stack.enter_context(serving(env))
        procs = stack.enter_context(workers(env, ["w1", "w2"], tmp_path))
        # the first run is longer, so it is still training when its worker is killed
        first = httpx.post(f"{web_a}/api/v1/train", json={**SHORT, "steps": 12}, timeout=30).json()
        others = [httpx.post(f"{(web_a, web_b)[i % 2]}/api/v1/train", json=SHORT, timeout=30).json()
                  for i in range(5)]
        assert all(job["status"] == "queued" for job in (first, *others))
        assert get(web_b, f"/api/v1/train/{others[-1]['id']}")["queue_position"] is not None

        wait_for_run(web_b, first["id"], lambda job: job["status"] == "running" and job["steps_done"] >= 1, timeout_s=240)
        store = RunStore(data_dir, Retention(100, 2**30))
        victim = store.get(first["id"])["worker"]
        os.kill(procs[victim].pid, signal.SIGKILL)
        survivor = next(name for name in procs if name != victim)

        finals = {job["id"]: wait_for_run(web_a, job["id"], run_finished, timeout_s=240) for job in (first, *others)}
        assert {job_id: f["status"] for job_id, f in finals.items()} == {job_id: "succeeded" for job_id in finals}, \
            {job_id: f["error"] for job_id, f in finals.items()}
        retried = finals[first["id"]]
        assert retried["attempts"] == 2 and retried["steps_done"] == 12
        assert store.get(first["id"])["worker"] == survivor
        events = [json.loads(line[6:]) for line in
                  httpx.get(f"{web_b}/api/v1/train/{first['id']}/events", timeout=30).text.splitlines()
                  if line.startswith("data: ")]
        assert {"type": "notice", "message": "The worker running this run stopped; it runs again on another worker "
                "(attempt 2 of 2)."} in events
        assert events[-1] == {"type": "end", "status": "succeeded"}
        # either replica serves any run's adapter, whichever took the request
        for base in (web_a, web_b):
            archive = httpx.get(f"{base}/api/v1/train/{others[0]['id']}/adapter", timeout=30)
            assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        state = get(web_b, "/api/v1/train")["queue"]
        assert state["backend"] == "redis" and state["queued"] == [] and state["running"] == []
        assert state["workers"] == 1  # the killed worker's heartbeat expired
        # a cancel on one replica reaches the worker through the store
        long = httpx.post(f"{web_b}/api/v1/train", json={**SHORT, "steps": 300}, timeout=30).json()
        wait_for_run(web_a, long["id"], lambda job: job["status"] == "running" and job["steps_done"] >= 1, timeout_s=240)
        assert httpx.delete(f"{web_a}/api/v1/train/{long['id']}", timeout=10).json()["id"] == long["id"]
        assert wait_for_run(web_b, long["id"], run_finished, timeout_s=240)["status"] == "cancelled"
