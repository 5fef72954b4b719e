"""Exact identities of the adapter layers at toy sizes (DESIGN.md: nanoGPT / litgpt / peft style)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from training.layers import DoRALinear, LoRALinear, lora_scaling  # noqa: E402


def _base(in_features: int = 6, out_features: int = 5, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


def _randomise_b(layer: LoRALinear, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=generator))


def test_scaling_is_alpha_over_r_or_sqrt_r():
    assert lora_scaling(8, 16) == 2.0
    assert lora_scaling(16, 16, use_rslora=True) == 4.0
    assert LoRALinear(_base(), r=4, lora_alpha=8, use_rslora=True).scaling == 8 / math.sqrt(4)
    with pytest.raises(ValueError, match="r"):
        lora_scaling(0, 16)


def test_init_b_zero_leaves_output_unchanged():
    base = _base()
    layer = LoRALinear(base, r=2, lora_alpha=4)
    x = torch.randn(3, 4, 6)  # (batch, seq, in)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert torch.count_nonzero(layer.lora_A.weight) > 0
    torch.testing.assert_close(layer(x), base(x), rtol=0, atol=0)


def test_lora_a_is_kaiming_uniform_like_peft():
    torch.manual_seed(0)
    layer = LoRALinear(_base(in_features=64, out_features=8), r=4, lora_alpha=8)
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=√5) on fan_in = 64
    assert layer.lora_A.weight.abs().max() <= bound


def test_forward_is_base_plus_scaled_bypass():
    layer = LoRALinear(_base(), r=3, lora_alpha=6)
    _randomise_b(layer)
    x = torch.randn(2, 6)
    expected = layer.base_layer(x) + x @ layer.lora_A.weight.T @ layer.lora_B.weight.T * 2.0
    torch.testing.assert_close(layer(x), expected)


def test_merged_weight_is_w_plus_scaling_b_a_and_merge_is_idempotent():
    layer = LoRALinear(_base(), r=3, lora_alpha=6)
    _randomise_b(layer)
    w0 = layer.base_layer.weight.detach().clone()
    expected = w0 + layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
    x = torch.randn(4, 6)
    unmerged_out = layer(x)
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight, expected, rtol=0, atol=0)
    layer.merge()  # twice == once
    torch.testing.assert_close(layer.base_layer.weight, expected, rtol=0, atol=0)
    torch.testing.assert_close(layer(x), unmerged_out, rtol=1e-6, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    layer.unmerge()  # a no-op when not merged
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)


def test_base_frozen_after_an_optimizer_step():
    layer = LoRALinear(_base(), r=2, lora_alpha=2)
    w0, b0 = layer.base_layer.weight.detach().clone(), layer.base_layer.bias.detach().clone()
    assert not layer.base_layer.weight.requires_grad and not layer.base_layer.bias.requires_grad
    optimizer = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    layer(torch.randn(5, 6)).pow(2).sum().backward()
    optimizer.step()
    assert torch.equal(layer.base_layer.weight, w0) and torch.equal(layer.base_layer.bias, b0)
    assert layer.base_layer.weight.grad is None
    assert torch.count_nonzero(layer.lora_B.weight) > 0  # the adapter did move
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"lora_A.weight", "lora_B.weight"}


def test_dropout_only_on_the_bypass():
    layer = LoRALinear(_base(), r=2, lora_alpha=2, lora_dropout=0.5)
    layer.train()
    x = torch.randn(8, 6)
    # B = 0: whatever dropout does to x on the bypass, the output is exactly the base's
    torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=0, atol=0)


def test_dora_equals_base_at_init_and_magnitude_is_row_norm():
    base = _base()
    layer = DoRALinear(base, r=2, lora_alpha=4)
    torch.testing.assert_close(layer.lora_magnitude_vector, torch.linalg.norm(base.weight, dim=1))
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(layer(x), base(x), rtol=1e-6, atol=1e-6)


def test_dora_forward_merge_and_unmerge():
    layer = DoRALinear(_base(), r=2, lora_alpha=4)
    _randomise_b(layer)
    with torch.no_grad():
        layer.lora_magnitude_vector.mul_(torch.linspace(0.5, 1.5, 5))
    w0 = layer.base_layer.weight.detach().clone()
    direction = w0 + layer.delta_weight().detach()
    expected_w = layer.lora_magnitude_vector[:, None] * direction / torch.linalg.norm(direction, dim=1, keepdim=True)
    x = torch.randn(4, 6)
    out = layer(x)
    torch.testing.assert_close(out, x @ expected_w.T + layer.base_layer.bias, rtol=1e-5, atol=1e-5)
    layer.merge()
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight, expected_w.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer(x), out, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=0)


def test_dora_norm_is_detached():
    layer = DoRALinear(_base(), r=2, lora_alpha=4)
    _randomise_b(layer)
    scale = layer.magnitude_scale(layer.base_layer.weight)
    scale.sum().backward()
    # only m receives gradient through the scale; the norm (which depends on A, B) is a constant
    assert layer.lora_magnitude_vector.grad is not None
    assert layer.lora_A.weight.grad is None and layer.lora_B.weight.grad is None


def test_dora_matches_peft_layer():
    peft = pytest.importorskip("peft")
    base = _base(in_features=16, out_features=8)
    ours = DoRALinear(nn.Linear(16, 8), r=4, lora_alpha=8)
    ours.base_layer.load_state_dict(base.state_dict())
    _randomise_b(ours)
    model = nn.Sequential()
    model.add_module("proj", base)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["proj"], use_dora=True))
    layer = peft_model.base_model.model.proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.lora_A.weight)
        layer.lora_B["default"].weight.copy_(ours.lora_B.weight)
        # peft initialised m from W0 + ΔW(init); set it to ours (||W0||) for the comparison
        layer.lora_magnitude_vector["default"].weight.copy_(ours.lora_magnitude_vector)
    x = torch.randn(3, 16)
    torch.testing.assert_close(ours(x), layer(x), rtol=1e-5, atol=1e-6)
