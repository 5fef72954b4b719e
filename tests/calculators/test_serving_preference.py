"""Serving many adapters, preference tuning and layer-selective training: the counts the new chapters state."""

from __future__ import annotations

import math

import pytest

from calculators import architectures, memory, params, preference, selective, serving, usual_figures
from calculators.nf4 import nf4_levels


def test_serving_memory_is_copies_against_one_base_plus_adapters():
    mem = serving.serving_memory("llama-3-8b", 100, 16, "all-linear")
    lora = params.count_trainable("llama-3-8b", "lora", r=16, target_modules="all-linear").trainable
    assert mem.base_bytes == 2 * 8_030_261_248
    assert mem.adapter_bytes == 2 * lora == 2 * 41_943_040
    assert mem.merged_bytes == 100 * mem.base_bytes
    assert mem.shared_base_bytes == mem.base_bytes + 100 * mem.adapter_bytes
    assert mem.adapters_per_base_copy == mem.base_bytes // mem.adapter_bytes == 191


def test_prefill_and_decode_overheads():
    arch = architectures.get_architecture("llama-2-7b")
    dense = sum(m.in_features * m.out_features * m.count for m in arch.linear_modules())
    lora = params.count_trainable(arch, "lora", r=16, target_modules="all-linear").trainable
    assert serving.prefill_flop_overhead(arch, 16) == pytest.approx(lora / dense)
    assert serving.decode_read_overhead(arch, 16, 8) == pytest.approx(8 * 2 * lora / (2 * arch.n_params))
    assert serving.PCIE4_X16_BYTES_PER_S == pytest.approx(31.51e9, rel=1e-3)
    assert serving.transfer_seconds(31.5e9) == pytest.approx(1.0, rel=1e-3)


def test_dpo_needs_no_reference_copy_with_an_adapter():
    lora = preference.preference_step("llama-3-8b", "dpo", "lora", seq_len=1024)
    full = preference.preference_step("llama-3-8b", "dpo", "full", seq_len=1024)
    assert lora.reference_weights_bytes == 0 and lora.sequences == 2
    assert full.reference_weights_bytes == 2 * 8_030_261_248
    two = memory.estimate_memory("llama-3-8b", method="lora", r=16, target_modules="all-linear", batch_size=2,
                                 seq_len=1024, gradient_checkpointing=True)
    assert lora.train_bytes == lora.total_bytes == two.total_bytes
    assert lora.forward_passes == 2 * (2 + 1) + 2  # policy fwd+bwd+recompute on 2 sequences, reference on 2
    assert full.forward_passes == 2 * (3 + 1) + 2


def test_grpo_kv_cache_and_group():
    step = preference.preference_step("llama-3-8b", "grpo", "lora", group_size=8, seq_len=1024)
    # 2 (K, V) × 32 layers × 8 KV heads × 128 × 2 bytes × 8 sequences × 1024 tokens
    assert step.kv_cache_bytes == 2 * 32 * 1024 * 2 * 8 * 1024 == 2**30
    assert step.sequences == 8 and step.total_bytes == max(step.train_bytes, step.generation_bytes)
    with pytest.raises(ValueError, match="algorithm"):
        preference.preference_step("llama-3-8b", "ppo")


def test_selective_training_counts_whole_modules():
    arch = architectures.get_architecture("llama-3-8b")
    per_layer = sum(m.in_features * m.out_features for m in arch.linear_modules() if m.group != "head")
    quarter = selective.selective_training(arch, 0.25)
    assert quarter.layers_per_kind == 8 and quarter.trainable == 8 * per_layer == 1_744_830_464
    assert quarter.state_bytes == 2 * arch.n_params + 14 * quarter.trainable
    with pytest.raises(ValueError, match="fraction"):
        selective.selective_training(arch, 0)


def test_usual_figures_arithmetic():
    assert usual_figures.nominal_bytes(7e9, 8) == 56e9
    assert usual_figures.kaiming_uniform_std(512) == pytest.approx(1 / math.sqrt(1536))
    assert usual_figures.normal_init_std(2, 32) == 0.25
    symmetric = usual_figures.symmetric_quantile_levels()
    assert len(symmetric) == 16 and 0.0 not in symmetric and max(symmetric) == pytest.approx(1.0)
    assert min(abs(v) for v in symmetric) == pytest.approx(0.0418, abs=1e-3)
    assert 0.0 in nf4_levels()
