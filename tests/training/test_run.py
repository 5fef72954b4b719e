"""The training run: config validation, metrics, cancellation, determinism, LORALAB_MODEL_PATH."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.data import load_reviews  # noqa: E402
from training.run import RunSummary, StepMetrics, TrainConfig, train  # noqa: E402


@pytest.mark.parametrize(
    ("field", "value"),
    [("method", "ia3"), ("r", 0), ("steps", 0), ("batch_size", -1), ("seq_len", 2), ("lr", 0.0),
     ("lora_alpha", -1.0), ("lora_dropout", 1.0), ("seed", -1), ("target_modules", ["query"]), ("r", 2.5)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_data_is_deterministic_and_balanced():
    data = load_reviews()
    assert data.label_names == ("negative", "neutral", "positive")
    assert len(data.train_texts) == 384 and len(data.test_texts) == 96
    assert not set(data.train_texts) & set(data.test_texts)
    counts = [data.train_labels.count(i) for i in range(3)]
    assert min(counts) > 100


def _run(data, **overrides):
    config = TrainConfig(**({"r": 2, "lora_alpha": 4, "steps": 4, "batch_size": 4, "seq_len": 16, "seed": 5} | overrides))
    events = list(train(config, data=data, device="cpu"))
    return events[:-1], events[-1]


def test_yields_step_metrics_then_a_summary_and_is_deterministic(small_data):
    steps, summary = _run(small_data)
    assert [s.step for s in steps] == [1, 2, 3, 4] and all(isinstance(s, StepMetrics) for s in steps)
    assert all(s.tokens_per_s > 0 and s.peak_memory_bytes > 0 and s.loss > 0 for s in steps)
    assert isinstance(summary, RunSummary) and not summary.cancelled and summary.steps_completed == 4
    assert summary.peak_memory_kind == "cpu_tensor_accounting"
    assert 0 < summary.trainable_params < summary.total_params
    again, summary2 = _run(small_data)
    assert [s.loss for s in again] == [s.loss for s in steps]
    assert summary2.accuracy_after == summary.accuracy_after


def test_should_stop_cancels_between_steps(small_data):
    calls = []
    config = TrainConfig(r=2, lora_alpha=4, steps=50, batch_size=4, seq_len=16)
    events = list(train(config, should_stop=lambda: calls.append(1) or len(calls) > 2, data=small_data, device="cpu"))
    assert [e.step for e in events[:-1]] == [1, 2]
    assert events[-1].cancelled and events[-1].steps_completed == 2


def test_dora_run(small_data):
    steps, summary = _run(small_data, method="dora", steps=2)
    assert summary.method == "dora" and len(steps) == 2


def test_tiny_llama_from_loralab_model_path(tiny_llama_path, monkeypatch):
    monkeypatch.setenv("LORALAB_MODEL_PATH", str(tiny_llama_path))
    config = TrainConfig(r=4, lora_alpha=8, steps=30, batch_size=16, seq_len=32, lr=1e-2, seed=0)
    events = list(train(config, device="cpu"))  # the full task: a tiny model is cheap
    summary = events[-1]
    assert summary.base_model == str(tiny_llama_path)
    assert summary.target_modules == ("q_proj", "v_proj")
    assert events[-2].loss < events[0].loss  # a random tiny Llama still fits the training batches a bit
    assert (summary.adapter_dir / "adapter_model.safetensors").exists()
    # the lab's prediction for a self-hoster's checkpoint: read from its config.json, exact
    from dataclasses import replace

    from app.lab import TrainRequest, lab_model, predict_run
    from app.settings import Settings

    model = lab_model(replace(Settings(), model_path=tiny_llama_path))
    request = TrainRequest(rank=4, alpha=8, steps=30, batch_size=16, seq_len=32)
    assert predict_run(request, model, on_gpu=False)["trainable_params"] == summary.trainable_params


def test_qlora_run_quantizes_every_block_linear(small_data):
    pytest.importorskip("calculators.nf4")
    from training.inject import inject_adapters
    from training.layers import LoRALinear, NF4Linear
    from training.model import load_model

    loaded = load_model(3, seed=0)
    injection = inject_adapters(loaded.model, "qlora", ("query", "value"), r=2, lora_alpha=4, modules_to_save=("classifier",))
    # 6 layers x (q, k, v, attn out, intermediate, output) + the pooler; never the head
    assert len(injection.quantized_modules) == 6 * 6 + 1 and "classifier" not in injection.quantized_modules
    assert isinstance(loaded.model.bert.encoder.layer[0].attention.self.query.base_layer, NF4Linear)
    assert isinstance(loaded.model.bert.encoder.layer[0].attention.self.query, LoRALinear)
    assert isinstance(loaded.model.bert.encoder.layer[0].attention.self.key, NF4Linear)
    steps, summary = _run(small_data, method="qlora", steps=2)
    assert summary.method == "qlora" and all(s.loss > 0 for s in steps)
