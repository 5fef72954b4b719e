"""calculators.nf4 against bitsandbytes' own CPU kernels: same bytes, same absmax, same dequantized values."""

from __future__ import annotations

import numpy as np
import pytest

from calculators import nf4

torch = pytest.importorskip("torch")
functional = pytest.importorskip("bitsandbytes.functional")


@pytest.fixture(scope="module")
def bnb():
    try:
        functional.quantize_4bit(torch.randn(64), blocksize=64, quant_type="nf4")
    except Exception as exc:  # noqa: BLE001 - any backend failure means "no CPU 4-bit path here"
        pytest.skip(f"bitsandbytes has no working CPU quantize_4bit here: {exc}")
    return functional


def _weights(shape: tuple[int, ...], seed: int, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(*shape, generator=generator) * std
    flat = weights.view(-1)
    if flat.numel() > 256:
        flat[64:128] = 0.0  # an all-zero block
        flat[200] = 0.0
    return weights


SHAPES = [(64,), (4096,), (33, 128), (7,), (3, 65), (5, 100, 3)]  # exact blocks, partial blocks, odd lengths


def test_codebooks_equal_bitsandbytes(bnb):
    assert np.array_equal(np.asarray(nf4.NF4_LEVELS, np.float32), bnb.get_4bit_type("nf4", device="cpu").numpy())
    assert np.array_equal(np.asarray(nf4.FP4_LEVELS, np.float32), bnb.get_4bit_type("fp4", device="cpu").numpy())
    assert np.array_equal(nf4.dynamic_map(), bnb.create_dynamic_map().numpy())


@pytest.mark.parametrize("method", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("std", [1.0, 0.02])
def test_packed_codes_absmax_and_dequantized_values_match(bnb, method, shape, std):
    weights = _weights(shape, seed=sum(shape), std=std)
    packed, state = bnb.quantize_4bit(weights, blocksize=64, quant_type=method)
    ours = nf4.quantize(weights.numpy(), method, blocksize=64)
    assert np.array_equal(ours.packed(), packed.numpy().reshape(-1))
    assert np.array_equal(ours.absmax, state.absmax.numpy())
    expected = bnb.dequantize_4bit(packed, state).numpy().reshape(-1)  # bnb returns (1, n) for 1-D input
    assert np.array_equal(nf4.dequantize(ours).reshape(-1), expected)


@pytest.mark.parametrize("blocksize", [32, 128])
def test_other_blocksizes_match(bnb, blocksize):
    weights = _weights((40, 96), seed=blocksize, std=0.05)
    packed, state = bnb.quantize_4bit(weights, blocksize=blocksize, quant_type="nf4")
    ours = nf4.quantize_nf4(weights.numpy(), blocksize=blocksize)
    assert np.array_equal(ours.packed(), packed.numpy().reshape(-1))
    assert np.array_equal(ours.absmax, state.absmax.numpy())


@pytest.mark.parametrize(("n_blocks", "seed"), [(300, 0), (1000, 1), (257, 2)])
def test_double_quantization_matches_compress_statistics(bnb, n_blocks, seed):
    weights = _weights((n_blocks * 64,), seed=seed, std=0.02)
    packed, state = bnb.quantize_4bit(weights, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert state.nested and state.state2.blocksize == 256
    single = nf4.quantize_nf4(weights.numpy())
    assert np.array_equal(single.packed(), packed.numpy().reshape(-1))
    # the mean: ours accumulates in float64; torch's float32 reduction may differ in the last bit
    assert nf4.double_quantize(single.absmax).offset == pytest.approx(state.offset.item(), rel=1e-6)
    # with bnb's offset, the 8-bit step is bit-exact when we emulate bnb's CPU lookup table
    dq = nf4.double_quantize(single.absmax, offset=state.offset.item(), rounding="bnb-cpu")
    assert np.array_equal(dq.codebook, state.state2.code.numpy())
    assert np.array_equal(dq.scales, state.state2.absmax.numpy())
    assert np.array_equal(dq.codes, state.absmax.numpy())
    levels = np.asarray(nf4.NF4_LEVELS, np.float32)
    ours = levels[single.codes] * np.repeat(nf4.double_dequantize(dq), 64)
    assert np.array_equal(ours, bnb.dequantize_4bit(packed, state).numpy().reshape(-1))
    # exact-nearest rounding differs from the CPU table only near midpoints, by one map step (≤ 0.0141 of the scale)
    nearest = nf4.double_quantize(single.absmax, offset=state.offset.item(), rounding="nearest")
    assert np.mean(nearest.codes == dq.codes) > 0.98
    assert np.all(np.abs(nearest.codes.astype(int) - dq.codes.astype(int)) <= 1)
    step = np.max(np.diff(nf4.dynamic_map()))
    np.testing.assert_allclose(nf4.double_dequantize(nearest), nf4.double_dequantize(dq), rtol=0, atol=step * dq.scales.max())
