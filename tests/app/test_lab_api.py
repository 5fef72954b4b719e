"""The training API against a real worker process and real (short) training runs on CPU."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch")

SHORT = {"steps": 6, "batch_size": 8, "seq_len": 32, "rank": 4}


@pytest.fixture(scope="module")
def lab_client(tmp_path_factory):
    from dataclasses import replace

    from app.main import create_app
    from app.settings import Settings

    app = create_app(replace(Settings(), max_queued_jobs=1, job_time_limit_s=120))
    with TestClient(app) as client:
        yield client


def wait_until_finished(client, job_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/train/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": 65}, "rank"),
        ({"method": "full"}, "method"),
        ({"steps": 0}, "steps"),
        ({"steps": 100000}, "steps"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"alpha": -3}, "alpha"),
        ({"target_modules": ["query; rm -rf /"]}, "target_modules"),
        ({"target_modules": ["q_proj"]}, "target_modules"),  # not a module of the lab's BERT model
        ({"seq_len": 4}, "seq_len"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_fields_are_422_naming_the_field(lab_client, body, field):
    response = lab_client.post("/api/v1/train", json=body)
    assert response.status_code == 422
    messages = [d["msg"] for d in response.json()["detail"]]
    assert any(m.startswith(f"{field}:") for m in messages), messages


def test_unknown_job_is_404(lab_client):
    assert lab_client.get("/api/v1/train/nope").status_code == 404
    assert lab_client.delete("/api/v1/train/nope").status_code == 404
    assert lab_client.get("/api/v1/train/nope/adapter").status_code == 404


def test_a_run_streams_steps_and_exports_a_peft_adapter(lab_client):
    response = lab_client.post("/api/v1/train", json=SHORT)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running")

    # before it finishes there is no adapter to download
    early = lab_client.get(job["links"]["adapter"])
    assert early.status_code in (200, 409)

    events = []
    with lab_client.stream("GET", job["links"]["events"]) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    steps = [data for kind, data in events if kind == "step"]
    assert [s["step"] for s in steps] == list(range(1, SHORT["steps"] + 1))
    assert all(s["loss"] > 0 and s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0 for s in steps)
    summary = next(data for kind, data in events if kind == "summary")
    assert summary["steps_completed"] == SHORT["steps"]
    assert 0 <= summary["accuracy_after"] <= 1
    assert summary["display"]["trainable_params"].replace(",", "").isdigit()
    # the book's calculators predicted the trainable count exactly (LoRA on query,value + the head)
    assert job["predicted"]["trainable_params"] == summary["trainable_params"]
    assert job["predicted_display"]["trainable_params"] == summary["display"]["trainable_params"]
    assert job["predicted"]["peak_memory_bytes"] > 0
    assert events[-1] == ("end", {"type": "end", "status": "succeeded"})

    final = wait_until_finished(lab_client, job["id"])
    assert final["status"] == "succeeded" and final["steps_done"] == SHORT["steps"]

    archive = lab_client.get(job["links"]["adapter"])
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert sorted(names) == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    config = json.loads(zipfile.ZipFile(io.BytesIO(archive.content)).read("adapter/adapter_config.json"))
    assert config["peft_type"] == "LORA" and config["r"] == SHORT["rank"]


def test_queue_is_bounded_and_cancel_works(lab_client):
    first = lab_client.post("/api/v1/train", json={**SHORT, "steps": 400})
    assert first.status_code == 202
    second = lab_client.post("/api/v1/train", json=SHORT)  # waits in the one queue slot
    assert second.status_code == 202
    assert second.json()["queue_position"] == 1
    third = lab_client.post("/api/v1/train", json=SHORT)
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1

    # cancelling a queued job is immediate; the running one stops after its step
    assert lab_client.delete(f"/api/v1/train/{second.json()['id']}").json()["status"] == "cancelled"
    lab_client.delete(f"/api/v1/train/{first.json()['id']}")
    final = wait_until_finished(lab_client, first.json()["id"])
    assert final["status"] == "cancelled"
    assert final["steps_done"] < 400


def test_the_lab_page_offers_the_models_modules(lab_client):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(lab_client.get("/lab").text, "html.parser")
    boxes = {box["value"]: box.has_attr("checked") for box in soup.select("input[name=target_modules]")}
    assert boxes == {"query": True, "key": False, "value": True, "dense": False}


def test_predict_counts_the_adapter_and_the_head_without_training(lab_client):
    """MiniLM: 6 layers, hidden 384; LoRA on query and value adds r·(384 + 384) per module; the
    3-way head is 384·3 + 3."""
    head = 384 * 3 + 3
    counts = {}
    for rank in (4, 8):
        response = lab_client.post("/api/v1/train/predict", json={"rank": rank})
        assert response.status_code == 200
        counts[rank] = response.json()["predicted"]["trainable_params"]
    assert counts[8] - head == 6 * 2 * 8 * (384 + 384) == 2 * (counts[4] - head)
    assert lab_client.post("/api/v1/train/predict", json={"rank": 0}).status_code == 422
