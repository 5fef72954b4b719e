"""The named quantities the chapters state: each equals its formula worked out by hand here."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from calculators import architectures, nf4, quantities
from calculators.quantities import REGISTRY, UNITS, evaluate

CONTENT = Path(__file__).resolve().parents[2] / "content"


def value(name: str, **args: object) -> float:
    return evaluate(name, {k: str(v) for k, v in args.items()}).value


def chapter_uses() -> list[tuple[str, dict[str, str]]]:
    """Every {num}`name key=value ...` in content/, as (name, arguments without fmt)."""
    uses = []
    for chapter in sorted(CONTENT.glob("*.md")):
        for text in re.findall(r"\{num\}`([^`]+)`", chapter.read_text()):
            name, *words = shlex.split(text)
            args = dict(word.split("=", 1) for word in words)
            args.pop("fmt", None)
            uses.append((name, args))
    return uses


# What each unit promises of a value, and so what the renderer may print.
UNIT_HOLDS = {
    "count": lambda v: v >= 0 and float(v).is_integer(),  # printed as 16,777,216
    "bytes": lambda v: v >= 0 and float(v).is_integer(),
    "percent": lambda v: 0 <= v <= 100,  # already multiplied by 100
    "bits": lambda v: 0 <= v <= 64,
    "ratio": lambda v: v > 0,
    "float": lambda v: math.isfinite(v),
}


def test_every_quantity_declares_a_unit_and_a_docstring():
    assert set(UNIT_HOLDS) == set(UNITS)
    for definition in REGISTRY.values():
        assert definition.unit in UNITS, definition.name
        assert definition.doc, definition.name


def test_every_value_the_chapters_state_is_in_its_quantitys_unit():
    """A percent the chapters print is 0..100, a count or a byte size a whole number, and so on."""
    uses = chapter_uses()
    assert len(uses) > 50
    for name, args in uses:
        result = evaluate(name, args)
        assert result.unit == REGISTRY[name].unit
        assert UNIT_HOLDS[result.unit](result.value), f"{name} {args} = {result.value!r} is not a valid {result.unit}"


def test_evaluate_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown quantity 'nope'"):
        evaluate("nope", {})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['colour'\]"):
        evaluate("model_params", {"model": "gpt2", "colour": "red"})
    with pytest.raises(ValueError, match="^r:"):
        evaluate("lora_trainable", {"model": "gpt2", "r": "eight", "targets": "q,v"})


def test_the_classic_counts():
    assert value("lora_trainable", model="llama-2-7b", r=8, targets="all-linear") == 19_988_480
    assert value("lora_trainable", model="llama-2-7b", r=8, targets="q,v") == 4_194_304
    assert value("lora_trainable", model="llama-3-8b", r=8, targets="q_proj,v_proj") == 3_407_872
    assert value("lora_trainable", model="llama-2-7b", r=16, targets="q_proj,k_proj,v_proj,o_proj") == 16_777_216


def test_activation_terms_by_hand():
    """Llama-2-7B: L=32, h=4096, a=32, V=32000; one sequence of 2,048 tokens in bf16."""
    L, h, a, s, V = 32, 4096, 32, 2048, 32000
    assert value("checkpoint_bytes", model="llama-2-7b", batch=1, seq=s) == L * 2 * s * h
    assert value("logits_bytes", model="llama-2-7b", batch=1, seq=s) == 12 * s * V
    assert value("eager_attention_bytes", model="llama-2-7b", batch=1, seq=s) == L * (4 + 2) * a * s * s
    assert value("korthikanti_activation_bytes", model="llama-2-7b", batch=1, seq=s, attn="sdpa") == L * 34 * s * h
    assert value("korthikanti_activation_bytes", model="llama-2-7b", batch=1, seq=s, attn="eager") == \
        L * (34 * s * h + 5 * a * s * s)
    assert value("vocab_size", model="llama-3-8b") == 128_256
    assert value("module_bytes", model="llama-2-7b", module="down_proj", dtype="bf16") == 2 * 11008 * 4096


def test_adapter_inputs_are_fp32_copies_per_adapted_module():
    """All seven kinds at r=16: Σ 4·T·(d_in + r) per block, over 32 blocks."""
    T, r = 2048, 16
    inputs = 4 * 4096 + 2 * 4096 + 11008  # q,k,v,o, gate,up read h; down reads i
    per_block = 4 * T * (inputs + 7 * r)
    assert value("adapter_activation_bytes", model="llama-2-7b", r=r, targets="all-linear", batch=1, seq=T) == \
        32 * per_block


def test_lora_saves_more_activations_than_full_ft_on_all_linear_layers():
    args = dict(model="llama-2-7b", r=16, targets="all-linear", batch=1, seq=2048, ckpt=False)
    assert value("saved_activation_bytes", method="lora", **args) > value("saved_activation_bytes", method="full", **args)
    assert value("saved_activation_bytes", method="lora", **{**args, "ckpt": True}) < \
        value("saved_activation_bytes", method="lora", **args) / 10


def test_optimizer_state_per_parameter():
    assert value("optimizer_bytes_per_param", optimizer="adamw") == 8
    assert value("optimizer_bytes_per_param", optimizer="adamw8bit") == pytest.approx(2 * (1 + 4 / 256))
    assert value("optimizer_bytes_per_param", optimizer="sgd") == 0
    with pytest.raises(ValueError, match="^optimizer:"):
        value("optimizer_bytes_per_param", optimizer="adam9000")


def test_train_memory_parts_sum_to_the_total():
    args = dict(model="llama-2-7b", method="qlora", r=16, targets="all-linear", batch=1, seq=2048, ckpt=True)
    parts = ["weights", "quant_constants", "adapter_weights", "gradients", "optimizer_states", "master_weights",
             "activations", "logits_and_loss", "temporary"]
    assert sum(value("train_memory_part", part=p, **args) for p in parts) == value("train_memory", **args)
    with pytest.raises(ValueError, match="^part:"):
        value("train_memory_part", part="everything", **args)


def test_nf4_grid_quantities():
    levels = nf4.nf4_levels()
    assert value("nf4_offset") == pytest.approx((1 - 1 / 30 + 1 - 1 / 32) / 2, abs=1e-7)
    assert value("nf4_step", index=7) == pytest.approx(levels[8] - levels[7])
    assert value("nf4_step", index=7) == min(b - a for a, b in zip(levels, levels[1:]))
    with pytest.raises(ValueError, match="^index:"):
        value("nf4_step", index=15)


def test_expected_block_absmax_matches_a_simulation():
    rng = np.random.default_rng(0)
    simulated = np.abs(rng.standard_normal((200_000, 64))).max(axis=1).mean()
    assert value("expected_block_absmax", blocksize=64) == pytest.approx(simulated, abs=0.005)
    assert value("expected_block_absmax", blocksize=1) == pytest.approx(np.sqrt(2 / np.pi), abs=1e-6)
    assert value("nf4_step_sigma", index=7, blocksize=64) == pytest.approx(
        value("nf4_step", index=7) * value("expected_block_absmax", blocksize=64))


def test_double_quantization_saving_is_the_constants_difference():
    """fp32 absmax per 64 weights (0.5 bit) against 8-bit absmax + fp32 per 256 blocks (≈0.127 bit)."""
    arch = architectures.get_architecture("llama-2-70b")
    saving = value("nf4_double_quant_saving", model="llama-2-70b")
    expected = arch.n_params_linear * (0.5 - (8 / 64 + 32 / (64 * 256))) / 8
    assert saving == pytest.approx(expected, rel=1e-3)


def test_value_takes_python_arguments_and_keeps_counts_whole():
    """`quantities.value` is how a cell reads the number the text shows."""
    count = quantities.value("module_lora_params", model="llama-2-7b", module="q_proj", r=8)
    assert count == 8 * (4096 + 4096) and isinstance(count, int)
    assert quantities.value("lora_scaling", alpha=16, r=64, rslora=True) == 2.0
    assert quantities.value("svd_rel_error", rank=8, intrinsic=8, noise=0.05) == \
        evaluate("svd_rel_error", {"rank": "8", "intrinsic": "8", "noise": "0.05"}).value
    with pytest.raises(ValueError, match="^r:"):
        quantities.value("lora_scaling", alpha=16, r=0)
