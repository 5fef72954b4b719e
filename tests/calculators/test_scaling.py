"""calculators.scaling: α/r, rsLoRA's α/√r and LoRA+ learning rates."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calculators import scaling


def test_lora_scaling_values_match_peft():
    assert scaling.lora_scaling(16, 8) == 2.0
    assert scaling.lora_scaling(16, 16, use_rslora=True) == 4.0
    assert scaling.lora_scaling(8, 8) == 1.0
    assert scaling.lora_scaling(16, 4, use_rslora=True) == 8.0


@given(st.floats(0.5, 512), st.integers(1, 1024))
def test_rslora_scale_times_sqrt_r_is_alpha_and_lora_scale_times_r_is_alpha(alpha, r):
    assert scaling.lora_scaling(alpha, r, use_rslora=True) * math.sqrt(r) == pytest.approx(alpha, rel=1e-12)
    assert scaling.lora_scaling(alpha, r) * r == pytest.approx(alpha, rel=1e-12)
    assert scaling.lora_scaling(alpha, r, use_rslora=True) >= scaling.lora_scaling(alpha, r)


def test_scaling_series_shapes_and_rank_stability():
    series = scaling.scaling_series(16, [1, 4, 16, 64])
    assert series.ranks == [1, 4, 16, 64]
    assert series.lora_scaling == [16.0, 4.0, 1.0, 0.25]
    assert series.rslora_scaling == [16.0, 8.0, 4.0, 2.0]
    assert series.rslora_effective_scale == pytest.approx([16.0] * 4)
    assert series.lora_effective_scale == pytest.approx([16.0, 8.0, 4.0, 2.0])
    json.dumps(series.to_dict())


def test_loraplus_rates():
    rates = scaling.loraplus_learning_rates(2e-4)
    assert scaling.LORAPLUS_LR_RATIO == 16.0
    assert rates.lr_B == pytest.approx(16 * 2e-4) and rates.lr_A == 2e-4 and rates.loraplus_lr_ratio == 16.0
    assert scaling.loraplus_learning_rates(1e-3, 1.0).lr_B == 1e-3
    json.dumps(rates.to_dict())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: scaling.lora_scaling(0, 8), "lora_alpha"),
        (lambda: scaling.lora_scaling(16, 0), "r"),
        (lambda: scaling.lora_scaling(16, 2.5), "r"),
        (lambda: scaling.scaling_series(16, []), "ranks"),
        (lambda: scaling.loraplus_learning_rates(-1.0), "lr_A"),
        (lambda: scaling.loraplus_learning_rates(1e-4, 0.5), "loraplus_lr_ratio"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
