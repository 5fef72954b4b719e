"""The training API against a real worker process and real (short) runs of SmolLM2-135M-Instruct
on CPU. The server is configured (as a self-hoster could, LORALAB_LAB_TASK_DIR) with an
eight-request slice of the task, so a default run stays short."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch")

SHORT = {"steps": 2, "batch_size": 2, "rank": 4}
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


# the runs' own answers bounded (LORALAB_ANSWER_MAX_NEW_TOKENS): the base model rambles to the limit
ANSWER_TOKENS = 24

@pytest.fixture(scope="module")
def lab_client(tmp_path_factory, lab_model_dir, small_task_dir):
    from dataclasses import replace

    from app.main import create_app
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("data")
    settings = replace(Settings(), answer_max_new_tokens=ANSWER_TOKENS, max_queued_jobs=2, job_time_limit_s=3600, lab_task_dir=small_task_dir,
                       data_dir=data_dir, model_cache_dir=lab_model_dir, try_max_new_tokens=24)
    app = create_app(settings)
    with TestClient(app) as client:
        client.forbidden = [str(data_dir), str(lab_model_dir), str(small_task_dir), "/tmp/", "/work/"]
        yield client


def assert_no_server_path(client, text: str) -> None:
    for path in client.forbidden:
        assert path not in text, f"{path} leaked into {text[:200]}"


def wait_until_finished(client, job_id: str, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/train/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def read_events(client, url: str, until=lambda kind, data: kind == "end") -> list[tuple[str, dict]]:
    events = []
    with client.stream("GET", url) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                assert_no_server_path(client, line)
                events.append((kind, json.loads(line[6:])))
                if until(kind, events[-1][1]):
                    break
    return events


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
        ({"target_modules": ["q_proj; rm -rf /"]}, "target_modules"),
        ({"target_modules": ["query"]}, "target_modules"),  # a BERT name: not a module of SmolLM2
        ({"seq_len": 64}, "seq_len"),  # sequence lengths come from the task's data
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
    assert lab_client.post("/api/v1/train/nope/try", json={"prompt": "hi"}).status_code == 404


@pytest.fixture(scope="module")
def default_run(lab_client):
    """POST {"method": "lora"} and nothing else: the default LLM task, followed to its end."""
    response = lab_client.post("/api/v1/train", json={"method": "lora"})
    assert response.status_code == 202, response.text
    job = response.json()
    early = lab_client.get(job["links"]["adapter"])  # loading the model alone takes seconds
    events = read_events(lab_client, job["links"]["events"])
    return {"job": job, "early": early, "events": events, "final": wait_until_finished(lab_client, job["id"])}


def test_the_default_run_fine_tunes_smollm2_and_ends_with_before_and_after(lab_client, default_run):
    job, final = default_run["job"], default_run["final"]
    assert job["config"]["method"] == "lora" and job["config"]["steps"] == 20 and job["config"]["batch_size"] == 8
    assert job["config"]["max_new_tokens"] == ANSWER_TOKENS  # the server's bound on the run's own answers
    assert final["status"] == "succeeded" and final["steps_done"] == 20 and final["eta_s"] is None
    summary = final["summary"]
    assert summary["base_model"] == BASE_ID
    assert [set(s) >= {"prompt", "before", "after"} for s in summary["samples"]] == [True, True]
    assert all(isinstance(s["before"], str) and isinstance(s["after"], str) for s in summary["samples"])
    assert summary["answer_loss_after"] < summary["answer_loss_before"]  # it learned the held-out answers' tokens
    # the calculators predicted the trainable and total counts exactly (LoRA r=8 on q_proj, v_proj)
    assert final["predicted"]["trainable_params"] == summary["trainable_params"] == 30 * 8 * (576 + 576 + 576 + 192)
    assert final["predicted"]["total_params"] == summary["total_params"]
    assert final["predicted"]["seq_len"] == summary["max_batch_tokens"]
    assert_no_server_path(lab_client, json.dumps(final))


def test_there_is_no_adapter_before_the_run_finishes(default_run):
    early = default_run["early"]
    assert early.status_code == 409
    assert "has no adapter yet" in early.json()["detail"]


def test_the_events_replay_every_step_with_its_measured_eta(lab_client, default_run):
    from app.jobs import estimate_eta_s

    events = default_run["events"]
    steps = [data for kind, data in events if kind == "step"]
    assert [s["step"] for s in steps] == list(range(1, 21))
    assert all(s["loss"] > 0 and s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0 for s in steps)
    phases = [(d["phase"], d["done"], d["total"]) for kind, d in events if kind == "phase"]
    assert phases[0] == ("start", 0, 1)  # the first run starts the worker process, and says so
    assert phases[1:3] == [("load", 0, 1), ("load", 1, 1)] and ("after", ANSWER_TOKENS, ANSWER_TOKENS) in phases
    log = [data for kind, data in events if kind != "queued"]
    for i, data in enumerate(log):
        if data["type"] == "step":
            # the ETA: this run's mean measured step time × steps left + its measured evaluation time
            assert data["eta_s"] == estimate_eta_s(log[: i + 1], 20)
    before = [d["elapsed_s"] for d in log if d["type"] == "phase" and d["phase"] == "before"]
    mean_step_s = sum(s["step_s"] for s in steps[:10]) / 10
    assert steps[9]["eta_s"] == round(mean_step_s * 10 + before[-1] - before[0], 1)
    # at the last step only the evaluation is left; the display shows the ETA the event carries, in whole seconds
    assert steps[-1]["eta_s"] == round(before[-1] - before[0], 1)
    assert steps[-1]["display"]["eta"] == f"{steps[-1]['eta_s']:.0f} s"
    samples = [data for kind, data in events if kind == "sample"]
    assert [s["step"] for s in samples] == [0, 5, 10, 15]
    summary = next(data for kind, data in events if kind == "summary")
    assert summary["display"]["exact_match"].count("/2") == 2 and summary["display"]["predicted"]["memory"]
    # the precision the steps ran in, as the training process chose it for this machine
    assert summary["display"]["precision"] == {"bf16": "steps in bf16 autocast", "off": "fp32"}[summary["autocast"]]
    assert events[-1] == ("end", {"type": "end", "status": "succeeded"})


def test_the_adapter_is_a_peft_causal_lm_zip_without_server_paths(lab_client, default_run):
    archive = lab_client.get(default_run["job"]["links"]["adapter"])
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(archive.content))
    assert sorted(files.namelist()) == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    config = json.loads(files.read("adapter/adapter_config.json"))
    assert config["base_model_name_or_path"] == BASE_ID and config["task_type"] == "CAUSAL_LM"
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["target_modules"] == ["q_proj", "v_proj"]
    assert_no_server_path(lab_client, files.read("adapter/adapter_config.json").decode())


def test_try_it_answers_with_the_base_and_the_adapted_model(lab_client, default_run):
    run = default_run["job"]
    prompt = "I'd like DoRA at rank 12 with alpha 24 on every linear layer."
    response = lab_client.post(run["links"]["try"], json={"prompt": prompt})
    assert response.status_code == 202, response.text
    attempt = response.json()
    assert attempt["kind"] == "try" and "adapter" not in attempt["links"]
    events = read_events(lab_client, attempt["links"]["events"])
    answers = next(data for kind, data in events if kind == "answers")
    assert answers["prompt"] == prompt and answers["base"] and answers["adapted"]
    assert answers["adapted"] != answers["base"]
    assert answers["adapted"].startswith("LoraConfig(")  # what thirty steps taught it
    assert events[-1] == ("end", {"type": "end", "status": "succeeded"})
    final = wait_until_finished(lab_client, attempt["id"])
    assert final["summary"]["adapted"] == answers["adapted"]
    # the prompt is bounded, and printable
    for body, field in (({"prompt": "x" * 401}, "prompt"), ({"prompt": "  "}, "prompt"), ({"prompt": "a\x00b"}, "prompt"),
                        ({"prompt": "hi", "max_new_tokens": 5000}, "max_new_tokens")):
        bad = lab_client.post(run["links"]["try"], json=body)
        assert bad.status_code == 422 and bad.json()["detail"][0]["msg"].startswith(f"{field}:"), bad.text


def test_a_failing_run_says_why_in_its_error_event(lab_client):
    job = lab_client.post("/api/v1/train", json={**SHORT, "batch_size": 16}).json()  # 16 > the 8 training requests
    events = read_events(lab_client, job["links"]["events"])
    error = next(data for kind, data in events if kind == "error")
    assert error == {"type": "error", "kind": "invalid", "message": "batch_size: 16 exceeds the 8 training examples"}
    assert events[-1] == ("end", {"type": "end", "status": "failed"})
    final = wait_until_finished(lab_client, job["id"])
    assert final["status"] == "failed" and final["error"]["kind"] == "invalid"
    assert lab_client.post(job["links"]["try"], json={"prompt": "hi"}).status_code == 409  # no adapter to try


def test_a_qlora_run_exports_its_adapter(lab_client):
    job = lab_client.post("/api/v1/train", json={**SHORT, "method": "qlora"}).json()
    final = wait_until_finished(lab_client, job["id"])
    assert final["status"] == "succeeded" and final["summary"]["method"] == "qlora"
    files = zipfile.ZipFile(io.BytesIO(lab_client.get(job["links"]["adapter"]).content))
    config = json.loads(files.read("adapter/adapter_config.json"))
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == BASE_ID and config["r"] == 4
    from safetensors.torch import load as load_safetensors

    tensors = load_safetensors(files.read("adapter/adapter_model.safetensors"))
    assert len(tensors) == 30 * 2 * 2  # lora_A and lora_B on q_proj and v_proj of 30 layers


def test_a_queued_run_sees_its_position_change_and_the_queue_is_bounded(lab_client):
    first = lab_client.post("/api/v1/train", json={**SHORT, "steps": 300}).json()
    second = lab_client.post("/api/v1/train", json=SHORT).json()
    third = lab_client.post("/api/v1/train", json=SHORT)
    assert third.status_code == 202 and third.json()["queue_position"] == 2
    fourth = lab_client.post("/api/v1/train", json=SHORT)
    assert fourth.status_code == 429 and int(fourth.headers["Retry-After"]) >= 1

    positions = []

    def until(kind, data):
        if kind == "queued":
            positions.append(data["position"])
            if data["position"] == 2:  # now let the one ahead of it go
                assert lab_client.delete(f"/api/v1/train/{second['id']}").json()["status"] == "cancelled"
        return positions == [2, 1]

    queued = read_events(lab_client, third.json()["links"]["events"], until)
    assert [d for kind, d in queued if kind == "queued"] == [
        {"type": "queued", "position": 2, "ahead": 2}, {"type": "queued", "position": 1, "ahead": 1}]
    assert lab_client.get(f"/api/v1/train/{third.json()['id']}").json()["queue_position"] == 1

    # cancelling the running run lets the queued one start by itself
    lab_client.delete(f"/api/v1/train/{first['id']}")
    assert wait_until_finished(lab_client, first["id"])["status"] == "cancelled"
    final = wait_until_finished(lab_client, third.json()["id"])
    assert final["status"] == "succeeded" and final["queue_position"] is None


def test_the_lab_page_offers_smollm2s_target_presets(lab_client):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(lab_client.get("/lab").text, "html.parser")
    options = {o["value"]: o.has_attr("selected") for o in soup.select("#lab-targets option")}
    assert options == {"q_proj,v_proj": True, "q_proj,k_proj,v_proj,o_proj": False,
                       "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj": False}
    assert "SmolLM2-135M-Instruct" in soup.select_one(".lede").text


def test_predict_counts_smollm2s_adapter_without_training(lab_client):
    """SmolLM2-135M: 30 layers, q_proj 576 -> 576, v_proj 576 -> 192 (grouped-query attention)."""
    counts = {}
    for rank in (4, 8):
        response = lab_client.post("/api/v1/train/predict", json={"rank": rank})
        assert response.status_code == 200
        counts[rank] = response.json()["predicted"]["trainable_params"]
    assert counts[8] == 30 * 8 * ((576 + 576) + (576 + 192)) == 2 * counts[4]
    everything = lab_client.post("/api/v1/train/predict", json={"rank": 8, "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}).json()["predicted"]
    assert everything["trainable_params"] == 30 * 8 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert lab_client.post("/api/v1/train/predict", json={"rank": 0}).status_code == 422


def test_opening_the_lab_warms_the_trainer_and_runs_reuse_the_base_models_answers(tmp_path, lab_model_dir, small_task_dir):
    """The lab's form asks for a prediction when it opens: the server starts its training process
    then, which evaluates the base model once; a run after that reuses the evaluation and its
    ETA still counts the evaluation after training."""
    from dataclasses import replace

    from app.jobs import estimate_eta_s
    from app.main import create_app
    from app.settings import Settings

    settings = replace(Settings(), answer_max_new_tokens=ANSWER_TOKENS, lab_task_dir=small_task_dir, data_dir=tmp_path,
                       model_cache_dir=lab_model_dir, warm_trainer=True)
    with TestClient(create_app(settings)) as client:
        client.forbidden = [str(tmp_path), str(lab_model_dir), str(small_task_dir)]
        assert client.post("/api/v1/train/predict", json={}).status_code == 200
        deadline = time.monotonic() + 300
        while not list(settings.baseline_dir.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.5)
        kept = json.loads(next(settings.baseline_dir.glob("*.json")).read_text())
        assert len(kept["answers"]) == 2 and kept["evaluation_s"] > 0
        job = client.post("/api/v1/train", json={"method": "lora", "steps": 2, "batch_size": 2}).json()
        events = [data for kind, data in read_events(client, job["links"]["events"]) if kind != "queued"]
    before = [e for e in events if e["type"] == "phase" and e["phase"] == "before"]
    assert len(before) == 1 and before[0]["evaluation_s"] == kept["evaluation_s"]
    assert "the same for every run" in before[0]["message"]
    assert not any(e["type"] == "phase" and e["phase"] == "start" for e in events)  # the process was up already
    summary = next(e for e in events if e["type"] == "summary")
    assert [s["before"] for s in summary["samples"]] == kept["answers"]
    steps = [e for e in events if e["type"] == "step"]
    assert steps[-1]["eta_s"] == round(kept["evaluation_s"], 1) == estimate_eta_s(events[: events.index(steps[-1]) + 1], 2)


def test_the_forms_initial_settings_are_the_apis_defaults(lab_client):
    """A reader who changes nothing runs what `POST /api/v1/train {"method": "lora"}` runs."""
    from bs4 import BeautifulSoup

    from app.lab import TrainRequest

    soup = BeautifulSoup(lab_client.get("/lab").text, "html.parser")

    def chosen(control: str) -> str:
        element = soup.select_one(f"#lab-{control}")
        if element.name == "select":
            selected = element.select("option[selected]")
            assert len(selected) == 1, f"{control}: {len(selected)} options selected"
            return selected[0]["value"]
        return element["value"]

    defaults = TrainRequest()
    assert chosen("method") == defaults.method
    assert float(chosen("lr")) == defaults.lr
    assert (int(chosen("rank")), float(chosen("alpha")), int(chosen("steps")), int(chosen("batch")), int(chosen("seed"))) == \
        (defaults.rank, defaults.alpha, defaults.steps, defaults.batch_size, defaults.seed)
