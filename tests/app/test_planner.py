""""What can I train on my GPU?" over HTTP: the page, its fragment and the JSON API show the
planner's own answers, a pasted config.json counts like the listed model, and bad input is a
422 naming the field."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup

from calculators import planner
from calculators.architectures import load_hf_config
from calculators.gpus import GIB

HTMX = {"HX-Request": "true"}
HTML = {"accept": "text/html"}


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def _cards(soup: BeautifulSoup) -> dict[str, str]:
    return {el["data-plan"]: el.select_one("[data-value=verdict]").get_text(strip=True) for el in soup.select(".plan-variant")}


def _expected_cards(model: str, budget: int, seq_len: int = 2048) -> dict[str, str]:
    plan = planner.plan_training(model, budget, seq_len=seq_len)
    return {f"{p.method}{'-ckpt' if p.gradient_checkpointing else ''}":
            (f"batch {p.at_seq.max_batch_size:,} × {seq_len:,} tokens" if p.fits else "does not fit") for p in plan.plans}


def test_home_page_links_the_planner(client):
    soup = _soup(client.get("/", headers=HTML))
    assert soup.select_one(".hero-actions a[href='/instruments/gpu-planner']") is not None
    assert soup.select_one("a.tool-card[href='/instruments/gpu-planner']") is not None
    assert soup.select_one(".site-nav a[href='/instruments/gpu-planner']") is not None


def test_page_answers_for_a_listed_gpu_and_model(client):
    response = client.get("/instruments/gpu-planner", params={"gpu": "rtx-4090", "model": "llama-3.1-8b"}, headers=HTML)
    assert response.status_code == 200
    soup = _soup(response)
    assert _cards(soup) == _expected_cards("llama-3.1-8b", planner.gpu_budget_bytes("rtx-4090"))
    ladder = soup.select("[data-table=ladder] tbody tr")
    assert len(ladder) == 6
    qlora = planner.plan_training("llama-3.1-8b", planner.gpu_budget_bytes("rtx-4090")).plan("qlora", True)
    cells = [td.get_text(strip=True) for td in ladder[4].select("td")]
    assert cells == [f"{p.max_batch_size:,}" if p.max_batch_size else "—" for p in qlora.ladder]
    breakdown = soup.select_one("[data-plan=qlora-ckpt] details.plan-breakdown")
    assert breakdown is not None and "Base weights" in breakdown.get_text()  # one click away
    figure = json.loads(soup.select_one("[data-figure=ladder] script").string)
    assert [t["line"]["dash"] for t in figure["data"]] == ["solid", "dash"] * 3


def test_typed_memory_replaces_the_gpu(client):
    soup = _soup(client.get("/instruments/gpu-planner",
                            params={"gpu": "custom", "memory_gib": 12, "model": "llama-3.2-1b", "seq_len": 1024},
                            headers=HTMX))
    assert _cards(soup) == _expected_cards("llama-3.2-1b", 12 * GIB, 1024)
    assert "12 GiB GPU" in soup.select_one("[data-value=gpu]").get_text()


def test_a_pasted_config_counts_like_the_listed_model(client):
    pasted = json.dumps(load_hf_config("qwen2.5-1.5b"), indent=2)
    by_config = _soup(client.get("/instruments/gpu-planner", params={"config": pasted, "model": "gpt2"}, headers=HTMX))
    by_slug = _soup(client.get("/instruments/gpu-planner", params={"model": "qwen2.5-1.5b"}, headers=HTMX))
    assert _cards(by_config) == _cards(by_slug) == _expected_cards("qwen2.5-1.5b", planner.gpu_budget_bytes("rtx-4090"))
    trainable = [dd.get_text(strip=True) for dd in by_config.select("[data-value=trainable]")]
    assert trainable == [dd.get_text(strip=True) for dd in by_slug.select("[data-value=trainable]")]
    assert "1.54B" in by_config.select_one("[data-value=model]").get_text()


def test_a_longer_sequence_than_the_model_reads_is_capped_with_a_note(client):
    soup = _soup(client.get("/instruments/gpu-planner", params={"model": "gpt2", "seq_len": 4096}, headers=HTMX))
    assert "at most 1,024 tokens" in soup.select_one(".result-note").get_text()
    assert _cards(soup) == _expected_cards("gpt2", planner.gpu_budget_bytes("rtx-4090"), 1024)


@pytest.mark.parametrize(("query", "field"), [
    ({"gpu": "gtx-480"}, "gpu"),
    ({"gpu": "custom", "memory_gib": 0}, "memory_gib"),
    ({"model": "gpt-5"}, "model"),
    ({"config": "{\"model_type\": \"llama\"}"}, "config.hidden_size"),
    ({"config": "not json"}, "config"),
    ({"config": "x" * 9000}, "config"),
    ({"rank": 0}, "rank"),
    ({"target_modules": "everything"}, "target_modules"),
])
def test_bad_settings_get_a_422_naming_the_field(client, query, field):
    fragment = client.get("/instruments/gpu-planner", params=query, headers=HTMX)
    assert fragment.status_code == 422
    alert = _soup(fragment).select_one(".result-error[role=alert]")
    assert alert is not None and field in alert.get_text(" ", strip=True)


def test_api_plan_for_a_listed_model(client):
    body = client.get("/api/v1/plan", params={"model": "llama-3.1-70b", "gpu": "h100-80gb"}).json()
    plan = planner.plan_training("llama-3.1-70b", planner.gpu_budget_bytes("h100-80gb"))
    assert body["budget_bytes"] == planner.gpu_budget_bytes("h100-80gb")
    for out, p in zip(body["plans"], plan.plans):
        assert (out["method"], out["gradient_checkpointing"]) == (p.method, p.gradient_checkpointing)
        assert (out["max_batch_size"], out["max_seq_len"]) == (p.at_seq.max_batch_size, p.max_seq_len)
        assert out["ladder"] == [{"seq_len": pt.seq_len, "max_batch_size": pt.max_batch_size} for pt in p.ladder]
        assert sum(out["breakdown"].values()) + p.estimate.cuda_context_bytes == out["total_with_context_bytes"]
    qlora = next(out for out in body["plans"] if out["method"] == "qlora" and out["gradient_checkpointing"])
    assert qlora["fits"] and not any(out["fits"] for out in body["plans"] if out["method"] == "full")


def test_api_plan_and_architecture_for_a_pasted_config(client):
    config = load_hf_config("gemma-2-2b")
    shape = client.post("/api/v1/architectures", json=config)
    assert shape.status_code == 200
    assert shape.json()["n_params"] == 2_614_341_888 and shape.json()["head_dim"] == 256
    pasted = client.post("/api/v1/plan", json={"config": config, "memory_gib": 16, "seq_len": 1024}).json()
    listed = client.get("/api/v1/plan", params={"model": "gemma-2-2b", "memory_gib": 16, "seq_len": 1024}).json()
    assert pasted["plans"] == listed["plans"]
    assert pasted["budget_bytes"] == 16 * GIB


@pytest.mark.parametrize(("call", "field"), [
    (lambda c: c.post("/api/v1/architectures", json={**load_hf_config("llama-3.2-1b"), "num_hidden_layers": -2}),
     "config.num_hidden_layers"),
    (lambda c: c.post("/api/v1/architectures", json={"model_type": "t5"}), "config.model_type"),
    (lambda c: c.post("/api/v1/plan", json={"config": {"model_type": "llama"}}), "config.hidden_size"),
    (lambda c: c.post("/api/v1/plan", json={"model": "llama-3.2-1b", "gpu": "nope"}), "gpu"),
    (lambda c: c.post("/api/v1/plan", json={"model": "llama-3.2-1b", "extra": 1}), "extra"),
    (lambda c: c.get("/api/v1/plan", params={"seq_len": 0}), "seq_len"),
    (lambda c: c.get("/api/v1/plan", params={"model": "gpt2", "seq_len": 2048}), "seq_len"),
])
def test_api_bad_input_is_a_422_naming_the_field(client, call, field):
    response = call(client)
    assert response.status_code == 422
    assert any(field in error["msg"] or field in map(str, error["loc"]) for error in response.json()["detail"])


def test_api_refuses_an_oversized_config(client):
    huge = {**load_hf_config("llama-3.2-1b"), "padding": "x" * 20_000}
    response = client.post("/api/v1/architectures", json=huge)
    assert response.status_code == 422 and "at most 16,000 characters" in response.json()["detail"][0]["msg"]
    bigger = client.post("/api/v1/architectures", json={"padding": "x" * 100_000})
    assert bigger.status_code == 413
