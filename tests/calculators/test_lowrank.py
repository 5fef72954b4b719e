"""calculators.lowrank: Eckart–Young truncation error, the noise floor, and merged vs unmerged precision."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calculators import lowrank


@pytest.mark.parametrize(("d_out", "d_in", "k"), [(48, 32, 4), (20, 60, 8)])
def test_error_reaches_the_noise_floor_at_the_intrinsic_rank(d_out, d_in, k):
    update = lowrank.make_low_rank_update(d_out, d_in, k, noise_std=0.002, seed=1)
    curve = lowrank.svd_error_curve(update.matrix)
    errors = curve.relative_errors
    assert curve.ranks == list(range(min(d_out, d_in) + 1)) and errors[0] == pytest.approx(1.0)
    assert errors[k] <= update.noise_floor + 1e-12  # Eckart–Young: no worse than dropping the noise
    # most of the noise lies outside the rank-k signal subspace, so the error is at the floor ...
    assert errors[k] >= update.noise_floor * math.sqrt((d_out - k) * (d_in - k) / (d_out * d_in)) * 0.9
    # ... and a rank below k leaves a chunk of signal out
    assert errors[k - 1] > 3 * update.noise_floor


def test_noise_free_update_is_exact_at_its_rank():
    update = lowrank.make_low_rank_update(30, 20, 3, noise_std=0.0, seed=0)
    assert update.noise_floor == 0.0
    curve = lowrank.svd_error_curve(update.matrix, ranks=[2, 3, 10])
    assert curve.relative_errors[0] > 0.01 and curve.relative_errors[1] < 1e-7 and curve.relative_errors[2] < 1e-7
    assert np.linalg.matrix_rank(update.matrix) == 3


@given(st.integers(2, 24), st.integers(2, 24), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_error_is_monotone_non_increasing_and_matches_explicit_truncation(d_out, d_in, seed):
    matrix = np.random.default_rng(seed).standard_normal((d_out, d_in))
    curve = lowrank.svd_error_curve(matrix)
    assert all(b <= a for a, b in zip(curve.relative_errors, curve.relative_errors[1:]))
    assert curve.relative_errors[-1] == 0.0
    r = min(d_out, d_in) // 2
    explicit = np.linalg.norm(matrix - lowrank.truncated_reconstruction(matrix, r)) / np.linalg.norm(matrix)
    assert curve.relative_errors[r] == pytest.approx(explicit, rel=1e-9, abs=1e-12)
    assert curve.energy_captured[r] == pytest.approx(1 - explicit**2, abs=1e-9)


def test_spectrum_and_json():
    update = lowrank.make_low_rank_update(16, 12, 2, noise_std=0.01, seed=3)
    sigma = lowrank.singular_values(update.matrix)
    assert len(sigma) == 12 and sigma == sorted(sigma, reverse=True)
    json.dumps(lowrank.svd_error_curve(update.matrix).to_dict())
    json.dumps(update.to_dict())


def test_bfloat16_rounding_is_round_to_nearest_even():
    one_ulp = 2.0**-7  # bf16 spacing just above 1
    values = np.asarray([1.0, 1 + one_ulp / 2, 1 + 3 * one_ulp / 2, 1 + one_ulp / 2 + 2**-20, -3.14159265, 0.0], np.float32)
    out = lowrank.to_bfloat16(values)
    assert out[0] == 1.0 and out[1] == 1.0  # tie to even (down)
    assert out[2] == 1 + 2 * one_ulp  # tie to even (up)
    assert out[3] == 1 + one_ulp  # above the tie rounds up
    assert out[4] == -3.140625 and out[5] == 0.0
    assert np.all((out.view(np.uint32) & 0xFFFF) == 0)


def test_merged_and_unmerged_agree_to_working_precision():
    fp32 = lowrank.merge_error(64, 48, 8, "float32", seed=0)
    bf16 = lowrank.merge_error(64, 48, 8, "bfloat16", seed=0)
    assert 0 < fp32.relative_diff < 50 * fp32.unit_roundoff
    assert bf16.relative_diff < 8 * bf16.unit_roundoff
    assert bf16.max_abs_diff > 100 * fp32.max_abs_diff
    json.dumps(bf16.to_dict())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: lowrank.make_low_rank_update(0, 4, 1), "d_out"),
        (lambda: lowrank.make_low_rank_update(4, 4, 5), "intrinsic_rank"),
        (lambda: lowrank.make_low_rank_update(4, 4, 1, noise_std=-1), "noise_std"),
        (lambda: lowrank.svd_error_curve(np.ones((3, 3)), ranks=[4]), "ranks"),
        (lambda: lowrank.svd_error_curve(np.ones(3)), "matrix"),
        (lambda: lowrank.merge_error(4, 4, 2, "float16"), "dtype"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
