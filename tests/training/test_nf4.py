"""NF4Linear: the frozen 4-bit base of QLoRA, against calculators.nf4 and bitsandbytes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from training.layers import LoRALinear, NF4Linear, NF4Weight  # noqa: E402


def _bnb_functional():
    functional = pytest.importorskip("bitsandbytes.functional")
    try:
        functional.quantize_4bit(torch.randn(64), blocksize=64, quant_type="nf4")
    except Exception as exc:  # noqa: BLE001 - any backend failure means "no CPU path here"
        pytest.skip(f"bitsandbytes has no working CPU 4-bit path here: {exc}")
    return functional


def nf4_weight_from_bnb(packed: torch.Tensor, state) -> NF4Weight:
    """Hold a bitsandbytes QuantState (nf4, optionally nested) in our NF4Weight layout."""
    if state.nested:
        return NF4Weight(
            codebook=state.code.float().cpu(), codes=packed.reshape(-1).cpu(), blocksize=state.blocksize,
            absmax_codes=state.absmax.cpu(), absmax_codebook=state.state2.code.float().cpu(),
            absmax_scale=state.state2.absmax.float().cpu(), absmax_blocksize=state.state2.blocksize,
            absmax_offset=float(state.offset),
        )
    return NF4Weight(codebook=state.code.float().cpu(), codes=packed.reshape(-1).cpu(), blocksize=state.blocksize, absmax=state.absmax.float().cpu())


@pytest.mark.parametrize("double_quant", [False, True])
def test_dequantize_matches_bitsandbytes_on_cpu(double_quant):
    functional = _bnb_functional()
    torch.manual_seed(0)
    weight = torch.randn(48, 128) * 0.02
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    layer = NF4Linear(128, 48, nf4_weight_from_bnb(packed, state))
    assert layer.double_quant == double_quant
    torch.testing.assert_close(layer.dequantize(), functional.dequantize_4bit(packed, state).float(), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes Linear4bit parity needs a CUDA device")
@pytest.mark.parametrize("double_quant", [False, True])
def test_same_dequantized_weights_as_bnb_linear4bit_on_cuda(double_quant):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    linear = nn.Linear(256, 64, bias=False)
    bnb_layer = bnb.nn.Linear4bit(256, 64, bias=False, quant_type="nf4", compress_statistics=double_quant)
    bnb_layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4", compress_statistics=double_quant, blocksize=64)
    bnb_layer = bnb_layer.cuda()
    state = bnb_layer.weight.quant_state
    ours = NF4Linear(256, 64, nf4_weight_from_bnb(bnb_layer.weight.data, state)).cuda()
    expected = bnb.functional.dequantize_4bit(bnb_layer.weight.data, state).float()
    torch.testing.assert_close(ours.dequantize(), expected, rtol=0, atol=0)
    # and our own quantizer (calculators.nf4) agrees with bnb's up to codes on rounding ties
    pytest.importorskip("calculators.nf4")
    mine = NF4Linear.from_linear(linear, blocksize=64, double_quant=double_quant).cuda()
    torch.testing.assert_close(mine.dequantize(), expected, rtol=0, atol=1e-3)


def test_dequantize_equals_calculators_exactly():
    nf4 = pytest.importorskip("calculators.nf4")
    import numpy as np

    torch.manual_seed(1)
    linear = nn.Linear(128, 32)
    layer = NF4Linear.from_linear(linear, blocksize=64, double_quant=False)
    q = nf4.quantize_nf4(linear.weight.detach().numpy().reshape(-1), blocksize=64)
    expected = np.asarray(nf4.dequantize_nf4(q), dtype=np.float32).reshape(32, 128)
    torch.testing.assert_close(layer.dequantize(), torch.from_numpy(expected), rtol=0, atol=0)
    assert layer.codes.numel() == 128 * 32 // 2 and layer.codes.dtype == torch.uint8


def test_double_quant_close_to_single_and_smaller():
    pytest.importorskip("calculators.nf4")
    torch.manual_seed(2)
    linear = nn.Linear(256, 64)
    single = NF4Linear.from_linear(linear, double_quant=False)
    double = NF4Linear.from_linear(linear, double_quant=True)
    torch.testing.assert_close(double.block_absmax(), single.absmax, rtol=2e-2, atol=1e-3)
    assert double.absmax_codes.element_size() == 1


def test_frozen_base_with_lora_on_top():
    functional = _bnb_functional()
    torch.manual_seed(3)
    weight, bias = torch.randn(16, 64), torch.randn(16)
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    base = NF4Linear(64, 16, nf4_weight_from_bnb(packed, state), bias=bias)
    assert list(base.parameters()) == []  # nothing to train, nothing to take a gradient of
    layer = LoRALinear(base, r=2, lora_alpha=4)
    x = torch.randn(3, 5, 64)  # (batch, seq, in)
    torch.testing.assert_close(layer(x), x @ base.dequantize().T + bias)  # B = 0
    layer(x).sum().backward()
    assert layer.lora_B.weight.grad is not None
    with pytest.raises(ValueError, match="merge"):
        layer.merge()
    bf16 = NF4Linear(64, 16, nf4_weight_from_bnb(packed, state), bias=bias, compute_dtype=torch.bfloat16)
    assert bf16(x).dtype == torch.bfloat16


def test_our_quantizer_agrees_with_bitsandbytes_on_cpu():
    """calculators.nf4 and bnb pick the same NF4 code for (almost) every weight: same dequantized weights."""
    functional = _bnb_functional()
    pytest.importorskip("calculators.nf4")
    torch.manual_seed(4)
    linear = nn.Linear(256, 64, bias=False)
    packed, state = functional.quantize_4bit(linear.weight.detach().clone(), blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = NF4Linear.from_linear(linear, blocksize=64, double_quant=False)
    theirs = NF4Linear(256, 64, nf4_weight_from_bnb(packed, state))
    torch.testing.assert_close(ours.absmax, theirs.absmax, rtol=0, atol=0)
    same_codes = (ours.codes == theirs.codes).float().mean().item()
    assert same_codes > 0.999, f"only {same_codes:.4%} of packed code bytes agree"
    torch.testing.assert_close(ours.dequantize(), functional.dequantize_4bit(packed, state).float(), rtol=0, atol=2e-3)


def test_backward_rebuilds_the_weight_instead_of_keeping_it():
    """The input gradient is grad_y·W, as for a dense layer with the dequantized weight, but
    autograd keeps no copy of W between forward and backward (bitsandbytes' MatMul4Bit does the same)."""
    pytest.importorskip("calculators.nf4")
    torch.manual_seed(5)
    linear = nn.Linear(256, 128)
    base = NF4Linear.from_linear(linear, blocksize=64, double_quant=True)
    x = torch.randn(4, 7, 256, requires_grad=True)  # (batch, seq, in)
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = base(x)
    assert 256 * 128 not in saved, f"a dequantized weight was kept for backward: {saved}"
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    reference = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(reference, base.dequantize(), base.bias).backward(grad_y)
    torch.testing.assert_close(y, torch.nn.functional.linear(x.detach(), base.dequantize(), base.bias))
    torch.testing.assert_close(x.grad, reference.grad)
