"""The training run on the real SmolLM2-135M-Instruct: records, learning, cancel, determinism, methods."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.inject import inject_adapters  # noqa: E402
from training.layers import LoRALinear, NF4Linear  # noqa: E402
from training.model import load_model  # noqa: E402
from training.run import Phase, RunSummary, Sample, StepMetrics, TrainConfig, train  # noqa: E402

SHORT = {"r": 4, "lora_alpha": 8, "steps": 3, "batch_size": 2, "max_new_tokens": 12, "sample_every": 2, "seed": 5}


@pytest.mark.parametrize(
    ("field", "value"),
    [("method", "ia3"), ("r", 0), ("steps", 0), ("batch_size", -1), ("max_seq_len", 2), ("lr", 0.0),
     ("lora_alpha", -1.0), ("lora_dropout", 1.0), ("seed", -1), ("target_modules", ["q_proj"]), ("r", 2.5),
     ("sample_every", -1), ("max_new_tokens", 0)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainConfig(**{field: value})


def _run(model_dir, task, **overrides):
    return list(train(TrainConfig(**(SHORT | overrides)), model_dir, task=task, device="cpu"))


@pytest.fixture(scope="module")
def lora_run(lab_model_dir, small_task):
    return _run(lab_model_dir, small_task, lr=1e-2)


def test_a_run_reports_phases_steps_samples_and_a_summary(lora_run, small_task):
    kinds = [type(r).__name__ for r in lora_run]
    assert kinds[0] == "Phase" and kinds[-1] == "RunSummary"
    phases = [(r.phase, r.done, r.total) for r in lora_run if isinstance(r, Phase)]
    # the held-out answers report progress in generated tokens (of at most max_new_tokens = 12)
    assert [p for p in phases if p[1] in (0, p[2])] == [("load", 0, 1), ("load", 1, 1), ("before", 0, 12), ("before", 12, 12),
                                                         ("after", 0, 12), ("after", 12, 12), ("save", 0, 1)]
    assert all(0 < done < total for name, done, total in phases if name in ("before", "after") and done not in (0, total))
    steps = [r for r in lora_run if isinstance(r, StepMetrics)]
    assert [s.step for s in steps] == [1, 2, 3]
    assert all(s.loss > 0 and s.tokens > 0 and s.tokens_per_s > 0 and s.step_s > 0 and s.peak_memory_bytes > 0 for s in steps)
    samples = [r for r in lora_run if isinstance(r, Sample)]
    assert [s.step for s in samples] == [0, 2]  # before training, then every `sample_every` steps (not the last)
    assert all(s.prompt == small_task.test[0].prompt and s.expected == small_task.test[0].answer for s in samples)

    summary = lora_run[-1]
    assert isinstance(summary, RunSummary) and not summary.cancelled and summary.steps_completed == 3
    assert summary.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert summary.target_modules == ("q_proj", "v_proj") and summary.peak_memory_kind == "cpu_tensor_accounting"
    # LoRA r=4 on q (576 -> 576) and v (576 -> 192) in 30 layers: r·(in + out) each
    assert summary.trainable_params == 30 * 4 * ((576 + 576) + (576 + 192))
    assert summary.total_params == 134_515_008 + summary.trainable_params
    assert summary.held_out == 2 and [s["prompt"] for s in summary.samples] == [e.prompt for e in small_task.test]
    assert summary.samples[0]["before"] == samples[0].answer
    assert 50 < summary.max_batch_tokens <= 135  # the widest batch of two real requests
    assert summary.peak_memory_bytes == max(s.peak_memory_bytes for s in steps)


def test_training_lowers_the_held_out_answer_loss(lora_run):
    summary = lora_run[-1]
    assert summary.answer_loss_after < summary.answer_loss_before
    assert [s["before"] != s["after"] for s in summary.samples] == [True, True]  # the answers changed


def test_the_same_seed_gives_the_same_run(lora_run, lab_model_dir, small_task):
    again = _run(lab_model_dir, small_task, lr=1e-2, sample_every=0)
    losses = [r.loss for r in lora_run if isinstance(r, StepMetrics)]
    assert [r.loss for r in again if isinstance(r, StepMetrics)] == losses
    assert again[-1].samples == lora_run[-1].samples


def test_should_stop_cancels_between_steps(lab_model_dir, small_task):
    calls = []
    config = TrainConfig(**(SHORT | {"steps": 50, "sample_every": 0}))
    records = list(train(config, lab_model_dir, should_stop=lambda: calls.append(1) or len(calls) > 2,
                         task=small_task, device="cpu"))
    assert [r.step for r in records if isinstance(r, StepMetrics)] == [1, 2]
    assert records[-1].cancelled and records[-1].steps_completed == 2


def test_a_batch_larger_than_the_training_set_names_the_field(lab_model_dir, small_task):
    with pytest.raises(ValueError, match="^batch_size:"):
        _run(lab_model_dir, small_task, batch_size=9)


def test_qlora_quantizes_every_block_linear_but_not_the_tied_head(lab_model_dir):
    loaded = load_model(lab_model_dir)
    injection = inject_adapters(loaded.model, "qlora", ("q_proj", "v_proj"), r=2, lora_alpha=4)
    assert len(injection.quantized_modules) == 30 * 7 and "lm_head" not in injection.quantized_modules
    layer = loaded.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, LoRALinear) and isinstance(layer.self_attn.q_proj.base_layer, NF4Linear)
    assert isinstance(layer.mlp.down_proj, NF4Linear)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # still tied, full precision


def test_all_linear_targets_every_block_linear_but_not_the_head(lab_model_dir):
    loaded = load_model(lab_model_dir)
    injection = inject_adapters(loaded.model, "lora", "all-linear", r=2, lora_alpha=4)
    assert len(injection.adapted_modules) == 30 * 7 and "lm_head" not in injection.adapted_modules
