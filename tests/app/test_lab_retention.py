"""Retention wired into the lab: with real runs, the oldest finished ones are removed past the
count or the size bound, the API says what went (GET /api/v1/train) and the log says it without
paths. Bounds here: two runs and 0 MiB (every adapter is over the size bound, so only the run
that just finished keeps its files)."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch")

SHORT = {"steps": 2, "batch_size": 2, "rank": 4}
FAILING = {**SHORT, "batch_size": 16}  # more than the eight training requests: fails after loading


# the runs' own answers bounded (LORALAB_ANSWER_MAX_NEW_TOKENS): the base model rambles to the limit
ANSWER_TOKENS = 24

@pytest.fixture(scope="module")
def lab_client(tmp_path_factory, lab_model_dir, small_task_dir):
    from dataclasses import replace

    from app.main import create_app
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("data")
    app = create_app(replace(Settings(), answer_max_new_tokens=ANSWER_TOKENS, lab_task_dir=small_task_dir, data_dir=data_dir, model_cache_dir=lab_model_dir,
                             keep_runs=2, keep_runs_mib=0))
    with TestClient(app) as client:
        client.data_dir = data_dir
        yield client


def run(client, body: dict) -> dict:
    job = client.post("/api/v1/train", json=body).json()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        final = client.get(f"/api/v1/train/{job['id']}").json()
        if final["status"] not in ("queued", "running"):
            return final
        time.sleep(0.3)
    raise AssertionError(final)


def test_the_oldest_finished_runs_go_past_the_size_or_the_count_bound_and_the_server_says_so(lab_client, caplog):
    caplog.set_level(logging.INFO, logger="loralab.store")
    trained = run(lab_client, SHORT)
    assert trained["status"] == "succeeded"
    assert lab_client.get(f"/api/v1/train/{trained['id']}/adapter").status_code == 200  # the newest keeps its files
    state = lab_client.get("/api/v1/train").json()["retention"]
    assert state["last_removal"] is None and state["kept"]["runs"] == 1 and state["kept"]["bytes"] > 0

    first_failure = run(lab_client, FAILING)  # now the trained run's adapter is over the 0 MiB bound
    assert first_failure["status"] == "failed"
    assert lab_client.get(f"/api/v1/train/{trained['id']}").status_code == 404
    assert lab_client.get(f"/api/v1/train/{trained['id']}/adapter").status_code == 404
    state = lab_client.get("/api/v1/train").json()["retention"]
    removal = state["last_removal"]
    assert removal["runs"] == [trained["id"]] and removal["bytes"] > 0 and "over: size" in removal["reason"]
    assert state["kept"] == {"runs": 1, "bytes": 0} and state["removed_runs_total"] == 1
    assert not (lab_client.data_dir / "runs" / trained["id"]).exists()

    second_failure = run(lab_client, FAILING)
    assert lab_client.get("/api/v1/train").json()["retention"]["removed_runs_total"] == 1  # two kept: within bounds
    run(lab_client, FAILING)  # a third finished run: one over the count
    removal = lab_client.get("/api/v1/train").json()["retention"]["last_removal"]
    assert removal["runs"] == [first_failure["id"]] and "over: count" in removal["reason"]
    assert lab_client.get(f"/api/v1/train/{first_failure['id']}").status_code == 404
    assert lab_client.get(f"/api/v1/train/{second_failure['id']}").json()["status"] == "failed"

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]
    assert len(lines) == 2 and trained["id"] in lines[0] and first_failure["id"] in lines[1]
    assert all(str(lab_client.data_dir) not in line and "/tmp" not in line for line in lines)
