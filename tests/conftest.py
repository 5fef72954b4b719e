"""Shared fixtures: the app in-process, and the real server on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import PROJECT_ROOT, Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A server starts its training process when the lab's form opens (LORALAB_WARM_TRAINER): the
# many servers the page tests start would each import torch for nothing. The lab's tests turn it on.
os.environ.setdefault("LORALAB_WARM_TRAINER", "0")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_app(settings: Settings):
    """Build an app with some settings overridden (e.g. another content folder)."""

    def build(**overrides):
        return create_app(replace(settings, **overrides))

    return build


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerURL(str):
    """The base URL of a server started by `serving`, with its process and log file."""

    process: subprocess.Popen
    log_path: Path


@contextmanager
def serving(env: dict[str, str] | None = None) -> Iterator[ServerURL]:
    """`loralab serve` in a subprocess on a free loopback port (extra environment: `env`)."""
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"loralab-server-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = ServerURL(f"http://127.0.0.1:{port}")
    base.process, base.log_path = process, Path(log.name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"server exited early, see {log.name}")
    else:
        process.kill()
        raise RuntimeError(f"server did not become healthy, see {log.name}")
    try:
        yield base
    finally:
        if process.poll() is None:  # else a test ended it already
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """The real server (`loralab serve`) in a subprocess, as a reader would reach it."""
    with serving() as base:
        yield base


# --- the training lab: its real model and a small slice of its task -------------------------------


@pytest.fixture(scope="session")
def lab_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct cache (built here if the set-up step has not run yet).
    In-process tests load it through training.model.load_base, which reads it once per process."""
    pytest.importorskip("torch")
    from training.model_cache import build_cache

    return build_cache(Settings().lab_model_dir)


@pytest.fixture(scope="session")
def small_task():
    """Eight training requests and two held-out ones of the real task (short runs stay fast)."""
    pytest.importorskip("torch")
    from training.task import ChatTask, load_task

    task = load_task()
    return ChatTask("small", task.system_prompt, task.train[:8], task.test[:2])


@pytest.fixture(scope="session")
def small_task_dir(tmp_path_factory, small_task) -> Path:
    """`small_task` as JSONL files, for a server configured with LORALAB_LAB_TASK_DIR."""
    import json

    folder = tmp_path_factory.mktemp("small-task")
    for name, examples in (("train", small_task.train), ("test", small_task.test)):
        rows = [json.dumps({"prompt": e.prompt, "answer": e.answer}) for e in examples]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def wait_for_run(base: str, job_id: str, done, timeout_s: float = 300) -> dict:
    """Poll a live server's run until `done(job)` holds; fail with the run's last state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/api/v1/train/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck: {job}")


def run_finished(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def process_running(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has stopped training)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
