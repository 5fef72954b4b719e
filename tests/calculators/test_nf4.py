"""calculators.nf4: the NF4 code book, blockwise 4-bit quantization and double quantization (QLoRA §3)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calculators import nf4

# bitsandbytes' hard-coded table (functional.get_4bit_type("nf4")), generated there by create_normal_map.
BNB_NF4 = (
    -1.0, -0.6961928, -0.52507305, -0.39491749, -0.28444138, -0.18477343, -0.09105004, 0.0,
    0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0,
)  # fmt: skip

HALF_WIDEST_GAP = max(b - a for a, b in zip(nf4.NF4_LEVELS[:-1], nf4.NF4_LEVELS[1:])) / 2


def test_codebook_is_built_from_normal_quantiles_and_equals_bitsandbytes():
    levels = nf4.nf4_levels()
    assert len(levels) == 16 and levels == nf4.NF4_LEVELS
    np.testing.assert_allclose(levels, BNB_NF4, rtol=0, atol=1e-7)
    assert levels[0] == -1.0 and levels[7] == 0.0 and levels[-1] == 1.0
    assert list(levels) == sorted(levels)
    assert all(np.float32(v) == v for v in levels)  # float32 values, as stored by bnb


@pytest.mark.parametrize(
    ("p", "z"),
    [(0.5, 0.0), (0.975, 1.959963984540054), (0.9677083, 1.8481309597573734), (1e-10, -6.361340902404056), (0.1, -1.2815515655446004)],
)
def test_normal_ppf_known_values(p, z):
    assert nf4.normal_ppf(p) == pytest.approx(z, rel=1e-14, abs=1e-15)


@given(st.floats(min_value=1e-300, max_value=1 - 1e-16))
@settings(max_examples=200, deadline=None)
def test_normal_ppf_inverts_cdf(p):
    z = nf4.normal_ppf(p)
    tail = min(p, 1 - p)
    assert nf4.normal_cdf(-abs(z)) == pytest.approx(tail, rel=1e-12)


def test_normal_ppf_rejects_probabilities_outside_0_1():
    for p in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="p"):
            nf4.normal_ppf(p)


def test_bins_are_equal_probability_and_json_ready():
    bins = nf4.nf4_bins()
    assert len(bins.bin_edges) == 17 and bins.bin_edges[0] == -1.0 and bins.bin_edges[-1] == 1.0
    assert all(a <= level <= b for a, level, b in zip(bins.bin_edges[:-1], bins.levels, bins.bin_edges[1:]))
    assert all(a < level < b for a, level, b in zip(bins.bin_edges[1:-2], bins.levels[1:-1], bins.bin_edges[2:-1]))
    assert sum(bins.bin_probabilities) == pytest.approx(1.0, abs=1e-12)
    inner = bins.bin_probabilities[1:7] + bins.bin_probabilities[9:15]
    assert max(inner) / min(inner) == pytest.approx(8 / 7, rel=1e-6)  # the two sides' grids differ: 7 vs 8 steps
    thresholds = bins.decision_thresholds
    assert len(thresholds) == 15 and all(a < t < b for a, t, b in zip(bins.levels[:-1], thresholds, bins.levels[1:]))
    for level, p in zip(bins.levels, bins.level_probabilities):
        assert level == pytest.approx(nf4.normal_ppf(p) / bins.z_max, abs=1e-7)
    json.dumps(bins.to_dict())
    pdf = nf4.normal_pdf_series(4.0, 101)
    assert len(pdf.z) == 101 and max(pdf.pdf) == pytest.approx(1 / math.sqrt(2 * math.pi))
    json.dumps(pdf.to_dict())


@given(
    hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)),
    st.sampled_from([16, 32, 64, 128]),
)
@settings(max_examples=80, deadline=None)
def test_round_trip_error_is_at_most_half_the_widest_gap_times_block_absmax(x, blocksize):
    q = nf4.quantize_nf4(x, blocksize=blocksize)
    error = np.abs(nf4.dequantize_nf4(q).astype(np.float64) - x.astype(np.float64))
    block_absmax = np.repeat(q.absmax.astype(np.float64), blocksize)[: x.size]
    assert np.all(error <= (HALF_WIDEST_GAP + 1e-6) * block_absmax)
    assert np.all(q.codes <= 15) and q.absmax.size == -(-x.size // blocksize)
    assert np.array_equal(nf4.unpack_codes(q.packed(), x.size), q.codes)


@given(st.lists(st.integers(0, 15), min_size=64, max_size=64), st.floats(1e-3, 1e3))
@settings(max_examples=50, deadline=None)
def test_level_times_absmax_is_quantized_exactly(codes, absmax):
    codes = np.asarray(codes, dtype=np.uint8)
    codes[0] = 15  # one element at +absmax pins the block's absmax
    levels = np.asarray(nf4.NF4_LEVELS, dtype=np.float32)
    x = levels[codes] * np.float32(absmax)
    q = nf4.quantize_nf4(x)
    assert np.array_equal(q.codes, codes)
    assert np.array_equal(nf4.dequantize_nf4(q), x)


def test_zero_maps_to_zero_exactly_including_all_zero_and_partial_blocks():
    x = np.random.default_rng(0).standard_normal(64 * 3 + 10).astype(np.float32)
    x[::5] = 0.0
    x[64:128] = 0.0  # an all-zero block
    x[192:] = 0.0  # an all-zero partial block
    q = nf4.quantize_nf4(x)
    out = nf4.dequantize_nf4(q)
    assert np.all(out[x == 0] == 0.0)
    assert q.absmax[1] == 0.0 and q.absmax[3] == np.float32(1e-38)  # bnb stores the clamp for a partial block
    assert np.all(q.codes[x == 0] == 7)
    # like bnb, a block whose absmax is below 1e-38 is scaled by 1/1e-38, so subnormal weights flush to zero
    assert np.all(nf4.dequantize_nf4(nf4.quantize_nf4(np.full(64, 1e-41, dtype=np.float32))) == 0.0)


def test_shape_preserved_and_packing_puts_the_earlier_element_high():
    x = np.linspace(-1, 1, 6 * 11, dtype=np.float32).reshape(6, 11)
    q = nf4.quantize_nf4(x, blocksize=32)
    assert nf4.dequantize_nf4(q).shape == (6, 11) and q.shape == (6, 11)
    assert nf4.pack_codes(np.asarray([1, 2, 3], dtype=np.uint8)).tolist() == [0x12, 0x37]
    assert nf4.quantize_nf4(np.asarray([-1.0, 1.0, 0.0], dtype=np.float32)).packed().tolist() == [0x0F, 0x77]
    json.dumps(q.to_dict())


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (dict(x=np.zeros(0, np.float32)), "x"),
        (dict(x=np.asarray([1.0, np.nan])), "x"),
        (dict(x=np.ones(4), blocksize=0), "blocksize"),
        (dict(x=np.ones(4), method="int8"), "method"),
    ],
)
def test_quantize_rejects_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        nf4.quantize(**bad)


def test_bits_per_param_and_model_bytes():
    assert nf4.bits_per_param(64, double_quant=False) == 0.5
    assert nf4.bits_per_param(64, double_quant=True, dq_blocksize=256) == 0.126953125 == 8 / 64 + 32 / (64 * 256)
    footprint = nf4.nf4_model_bytes(64 * 256 * 10, blocksize=64, double_quant=True)
    assert footprint.code_bytes == 64 * 256 * 5
    assert footprint.constant_bytes == 256 * 10 + 4 * 10 + 4
    assert footprint.n_bytes == footprint.code_bytes + footprint.constant_bytes
    single = nf4.nf4_model_bytes(7_000_000_000, double_quant=False)
    assert single.bits_per_param == pytest.approx(4.5)
    assert nf4.nf4_model_bytes(7_000_000_000).bits_per_param == pytest.approx(4 + 0.126953125, abs=1e-6)
    with pytest.raises(ValueError, match="n_params"):
        nf4.nf4_model_bytes(0)
    with pytest.raises(ValueError, match="dq_blocksize"):
        nf4.bits_per_param(64, True, dq_blocksize=0)


def test_dynamic_map_shape_and_range():
    code = nf4.dynamic_map()
    assert code.shape == (256,) and code.dtype == np.float32
    assert np.all(np.diff(code) >= 0) and code[-1] == 1.0 and -1 < code[0] < -0.99 and 0.0 in code


@pytest.mark.parametrize("rounding", ["nearest", "bnb-cpu"])
def test_double_quantization_round_trip(rounding):
    absmax = nf4.quantize_nf4(nf4.sample_weights("normal", 64 * 700, seed=1, std=0.02)).absmax
    dq = nf4.double_quantize(absmax, rounding=rounding)
    assert dq.codes.dtype == np.uint8 and dq.codes.size == absmax.size and dq.scales.size == 3
    assert dq.offset == pytest.approx(float(absmax.mean()), rel=1e-6)
    restored = nf4.double_dequantize(dq)
    # the dynamic map's relative step near ±1 is ~1.4%, so each constant comes back within ~1% of the block scale
    assert np.max(np.abs(restored - absmax) / np.repeat(dq.scales, 256)[: absmax.size]) < 0.01
    json.dumps(dq.to_dict())


def test_double_quantization_of_equal_constants_is_exact():
    dq = nf4.double_quantize(np.full(10, 0.5, dtype=np.float32))
    assert np.array_equal(nf4.double_dequantize(dq), np.full(10, 0.5, dtype=np.float32))


def test_fp4_and_int4_codebooks():
    assert sorted(set(abs(v) for v in nf4.FP4_LEVELS)) == pytest.approx([0, 0.0625 / 12, 1 / 6, 0.25, 1 / 3, 0.5, 2 / 3, 1.0])
    assert nf4.FP4_LEVELS[3] == 1.0 and nf4.FP4_LEVELS[11] == -1.0  # bit-pattern order, sign in the top bit
    assert len(nf4.INT4_LEVELS) == 15 and nf4.INT4_LEVELS[7] == 0.0
    assert np.allclose(np.diff(nf4.INT4_LEVELS), 1 / 7)
    x = nf4.sample_weights("normal", 640, seed=3)
    for method in nf4.METHODS:
        q = nf4.quantize(x, method)
        levels = np.asarray(nf4.codebook(method), dtype=np.float32)
        # nearest level: no other level is strictly closer to x/absmax
        normalized = x / np.repeat(q.absmax, 64)
        chosen = np.abs(normalized - levels[q.codes])
        best = np.min(np.abs(normalized[:, None] - levels[None, :]), axis=1)
        assert np.all(chosen <= best + 1e-6)


def test_nf4_beats_int4_and_fp4_on_normal_weights():
    x = nf4.sample_weights("normal", 64 * 64, seed=0, std=0.02)
    errors = {m: nf4.quantization_error(x, m).mse for m in nf4.METHODS}
    assert errors["nf4"] < errors["fp4"] and errors["nf4"] < errors["int4"]
    stats = nf4.quantization_error(x, "nf4", n_bins=20)
    assert sum(stats.counts) == x.size and len(stats.bin_edges) == 21
    assert stats.mean_abs_error <= stats.max_abs_error and stats.mse <= stats.max_abs_error**2
    json.dumps(stats.to_dict())


def test_samples_are_seeded_and_shaped():
    for distribution in nf4.DISTRIBUTIONS:
        a = nf4.sample_weights(distribution, 5000, seed=7)
        assert a.dtype == np.float32 and a.shape == (5000,)
        assert np.array_equal(a, nf4.sample_weights(distribution, 5000, seed=7))
        assert np.std(a) == pytest.approx(1.0, rel=0.35 if distribution != "outliers" else 1.0)
    outliers = nf4.sample_weights("outliers", 5000, seed=7, outlier_fraction=0.001)
    assert np.sum(np.abs(outliers) == 20.0) == 5
    heavy = nf4.sample_weights("heavy-tailed", 20000, seed=1, df=3.0)
    normal = nf4.sample_weights("normal", 20000, seed=1)
    assert np.max(np.abs(heavy)) > np.max(np.abs(normal))
    with pytest.raises(ValueError, match="distribution"):
        nf4.sample_weights("uniform")
    with pytest.raises(ValueError, match="df"):
        nf4.sample_weights("heavy-tailed", df=2.0)
