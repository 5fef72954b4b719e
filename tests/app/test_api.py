"""The JSON API: each endpoint returns what its calculator computes, and bad input is a 422
that names the field (never a 500)."""

from __future__ import annotations

import pytest

from calculators import architectures, memory, nf4, params

BNB_NF4 = [-1.0, -0.6961928, -0.52507305, -0.39491749, -0.28444138, -0.18477343, -0.09105004, 0.0,
           0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0]


def test_architectures_list_every_model_with_its_modules(client):
    body = client.get("/api/v1/architectures").json()
    assert [a["slug"] for a in body] == list(architectures.ARCHITECTURES)
    llama3 = next(a for a in body if a["slug"] == "llama-3-8b")
    assert (llama3["n_params"], llama3["num_key_value_heads"], llama3["vocab_size"]) == (8_030_261_248, 8, 128_256)
    k_proj = next(m for m in llama3["linear_modules"] if m["name"] == "k_proj")
    assert (k_proj["in_features"], k_proj["out_features"], k_proj["count"]) == (4096, 1024, 32)  # GQA
    assert client.get("/api/v1/architectures/mistral-7b").json()["n_params"] == 7_241_732_096
    missing = client.get("/api/v1/architectures/gpt-5")
    assert missing.status_code == 404 and "model" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("query", "trainable"),
    [
        ({"model": "llama-2-7b", "method": "lora", "rank": 8, "target_modules": "q_proj,v_proj"}, 4_194_304),
        ({"model": "llama-3-8b", "method": "lora", "rank": 8, "target_modules": ["q_proj", "v_proj"]}, 3_407_872),
        ({"model": "llama-2-7b", "method": "lora", "rank": 8, "target_modules": "all-linear"}, 19_988_480),
        ({"model": "llama-2-7b", "method": "lora", "rank": 16, "target_modules": "q_proj,k_proj,v_proj,o_proj"}, 16_777_216),
    ],
)
def test_params_gives_the_exact_counts(client, query, trainable):
    body = client.get("/api/v1/params", params=query).json()
    assert body["trainable"] == trainable
    assert body["total"] == body["base_total"] + trainable
    assert body["percent"] == pytest.approx(100 * trainable / body["total"])
    assert sum(m["n_params"] for m in body["per_module"]) == trainable
    assert body["adapter_bytes"] == 4 * trainable  # fp32, as peft saves by default


def test_memory_returns_the_estimators_breakdown_and_verdicts(client):
    query = {"model": "llama-2-7b", "method": "qlora", "rank": 16, "target_modules": "all-linear",
             "seq_len": 2048, "gradient_checkpointing": "true"}
    body = client.get("/api/v1/memory", params=query).json()
    estimate = memory.estimate_memory("llama-2-7b", method="qlora", r=16, target_modules="all-linear", seq_len=2048,
                                      gradient_checkpointing=True)
    assert body["base_dtype"] == "nf4"
    assert body["total_bytes"] == estimate.total_bytes == sum(body["breakdown"].values())
    assert {v["slug"]: v["fits"] for v in body["verdicts"]} == {v.slug: v.fits for v in estimate.verdicts}
    assert max(p["total_bytes"] for p in body["phases"]) == body["total_bytes"]


def test_memory_takes_the_recipe_by_transformers_names(client):
    """TrainingArguments.optim names, the old aliases, and the QLoRA kbit-preparation switch."""
    query = {"model": "tinyllama-1.1b", "method": "qlora", "rank": 16, "target_modules": "all-linear",
             "batch_size": 4, "seq_len": 2048, "optimizer": "paged_adamw_8bit"}
    prepared = client.get("/api/v1/memory", params=query).json()
    assert (prepared["optimizer"], prepared["prepare_kbit"], prepared["residual_dtype"]) == ("paged_adamw_8bit", True, "fp32")
    assert prepared["attention_kernel"] == "math"  # fp32 attention with TinyLlama's grouped-query heads
    plain = client.get("/api/v1/memory", params={**query, "prepare_kbit": "false"}).json()
    assert (plain["prepare_kbit"], plain["residual_dtype"], plain["attention_kernel"]) == (False, "bf16", "flash")
    assert prepared["total_bytes"] > 2 * plain["total_bytes"]
    alias = client.get("/api/v1/memory", params={**query, "optimizer": "paged_adamw8bit"}).json()
    assert alias["optimizer"] == "paged_adamw_8bit" and alias["total_bytes"] == prepared["total_bytes"]
    foreach = client.get("/api/v1/memory", params={"model": "tinyllama-1.1b", "method": "full", "optimizer": "adamw_torch",
                                                    "seq_len": 128}).json()
    step = next(p for p in foreach["phases"] if p["name"] == "optimizer step")
    assert step["breakdown"]["temporary"] == 4 * foreach["trainable_params"]  # sqrt(v) of every fp32 parameter


def test_nf4_levels_equal_bitsandbytes(client):
    levels = client.get("/api/v1/nf4/levels").json()["levels"]
    assert levels == pytest.approx(BNB_NF4, abs=1e-7)
    assert sorted(client.get("/api/v1/nf4/levels", params={"method": "int4"}).json()["levels"]) == \
        pytest.approx(sorted(nf4.int4_levels()))


def test_nf4_error_and_overhead(client):
    body = client.get("/api/v1/nf4/error", params={"distribution": "normal", "blocksize": 64}).json()
    mse = {m["method"]: m["mse"] for m in body["methods"]}
    assert mse["nf4"] < mse["fp4"] and mse["nf4"] < mse["int4"]
    overhead = client.get("/api/v1/nf4/overhead", params={"model": "llama-2-70b"}).json()
    assert overhead["bits_per_param_single"] == 0.5
    assert overhead["bits_per_param_double"] == pytest.approx(8 / 64 + 32 / (64 * 256))
    assert overhead["bytes_single"] > overhead["bytes_double"]


def test_lowrank_error_reaches_the_noise_floor_at_the_intrinsic_rank(client):
    body = client.get("/api/v1/lowrank", params={"d_out": 96, "d_in": 64, "intrinsic_rank": 6, "noise": 0.05}).json()
    errors = dict(zip(body["ranks"], body["relative_errors"]))
    assert errors[0] == pytest.approx(1.0)
    assert errors[5] > 5 * body["noise_floor"]
    assert errors[6] == pytest.approx(body["noise_floor"], rel=0.1)
    assert len(body["singular_values"]) == 64


def test_merge_is_exact_to_roundoff_in_float32_not_in_bfloat16(client):
    fp32, bf16 = client.get("/api/v1/lowrank/merge").json()
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert fp32["relative_diff"] < 100 * fp32["unit_roundoff"]
    assert bf16["relative_diff"] > 100 * fp32["relative_diff"]


def test_scaling_series(client):
    body = client.get("/api/v1/scaling", params={"alpha": 16, "max_rank": 64}).json()
    assert body["ranks"] == [1, 2, 4, 8, 16, 32, 64]
    assert body["lora_scaling"][4] == 1.0 and body["rslora_scaling"][4] == 4.0
    assert body["loraplus_lr_ratio"] == 16


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("params", {"model": "gpt-5"}, "model"),
        ("params", {"rank": 0}, "rank"),
        ("params", {"model": "gpt2", "rank": 1000, "target_modules": "c_attn"}, "rank"),  # above the layer width
        ("params", {"model": "llama-2-7b", "target_modules": "c_attn"}, "target_modules"),  # not a Llama module
        ("params", {"method": "magic"}, "method"),
        ("params", {"rank": "eight"}, "rank"),
        ("params", {"colour": "red"}, "colour"),
        ("memory", {"batch_size": -1}, "batch_size"),
        ("memory", {"seq_len": 0}, "seq_len"),
        ("memory", {"method": "qlora", "base_dtype": "fp32"}, "base_dtype"),
        ("memory", {"optimizer": "adam-9000"}, "optimizer"),
        ("memory", {"method": "qlora", "prepare_kbit": "maybe"}, "prepare_kbit"),
        ("memory", {"method": "full", "autocast": "sometimes"}, "autocast"),
        ("nf4/levels", {"method": "nf5"}, "method"),
        ("nf4/error", {"blocksize": 1}, "blocksize"),
        ("nf4/overhead", {"model": "nope"}, "model"),
        ("lowrank", {"intrinsic_rank": 0}, "intrinsic_rank"),
        ("lowrank", {"d_out": 100000}, "d_out"),
        ("lowrank/merge", {"rank": -3}, "rank"),
        ("scaling", {"alpha": -1}, "alpha"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, path, query, field):
    response = client.get(f"/api/v1/{path}", params=query)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(error["loc"][-1] == field and error["msg"].startswith(f"{field}:") for error in detail), detail


def test_openapi_documents_every_calculator_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/architectures", "/api/v1/params", "/api/v1/memory", "/api/v1/nf4/levels",
                 "/api/v1/nf4/error", "/api/v1/lowrank", "/api/v1/scaling"):
        assert "200" in paths[path]["get"]["responses"], path
    params = {p["name"] for p in paths["/api/v1/params"]["get"]["parameters"]}
    assert {"model", "method", "rank", "target_modules"} <= params


def test_api_docs_are_served_from_our_own_copy_of_swagger_ui(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    for asset in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200


@pytest.mark.parametrize(
    ("query", "method", "expected"),
    [
        # QLoRA trains LoRA's adapters on a 4-bit base: the same count, reported as qlora.
        ({"method": "qlora", "rank": 16, "target_modules": "all-linear"}, "qlora",
         params.count_trainable("llama-2-7b", "lora", r=16, target_modules="all-linear").trainable),
        ({"method": "adalora", "rank": 12, "target_modules": "attention"}, "adalora",
         params.count_trainable("llama-2-7b", "adalora", r=12, target_modules="attention").trainable),
        ({"method": "rslora", "rank": 32, "target_modules": "q,v"}, "rslora", 16_777_216),
        # The documented preset "q,v" is one name, not two modules "q" and "v".
        ({"target_modules": "q,v"}, "lora", 4_194_304),
        ({"target_modules": "q, v"}, "lora", 4_194_304),
        ({"target_modules": ["q,v"]}, "lora", 4_194_304),
    ],
)
def test_params_accepts_every_documented_method_and_preset(client, query, method, expected):
    response = client.get("/api/v1/params", params={"model": "llama-2-7b", **query})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["method"], body["trainable"]) == (method, expected)
