"""The fast paths of training/layers.py (issue 16) against peft: the same gradients, and no more bytes
kept for the backward pass (counted with autograd's saved_tensors_hooks, parameters excluded).

Speed itself is measured in bench/train_speed.py --cpu, never asserted here."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

from training.inject import inject_adapters  # noqa: E402
from training.layers import DoRALinear, LoRALinear  # noqa: E402
from training.memory_recipes import saved_tensor_bytes  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_llama(seed: int = 0):
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, use_cache=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def _twins(method: str):
    """Ours and peft's on copies of one tiny Llama, with the same A, B (moved off zero) and magnitudes."""
    ours, theirs = _tiny_llama(), _tiny_llama()
    inject_adapters(ours, method, TARGETS, r=4, lora_alpha=8)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                         use_dora=method == "dora", task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoRALinear):
                module.lora_B.weight.copy_(0.05 * torch.randn(module.lora_B.weight.shape, generator=generator))
                twin = theirs.base_model.model.get_submodule(name)
                twin.lora_A["default"].weight.copy_(module.lora_A.weight)
                twin.lora_B["default"].weight.copy_(module.lora_B.weight)
                if isinstance(module, DoRALinear):
                    module.lora_magnitude_vector.mul_(1 + 0.1 * torch.rand(module.out_features, generator=generator))
                    twin.lora_magnitude_vector["default"].weight.copy_(module.lora_magnitude_vector)
    return ours.train(), theirs.base_model.model.train()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_ours_keeps_no_more_for_backward_than_peft(method):
    ours, theirs = _twins(method)
    ids = torch.randint(0, 96, (2, 48), generator=torch.Generator().manual_seed(2))
    kept_ours = saved_tensor_bytes(ours, ids, "lora").total_bytes
    kept_peft = saved_tensor_bytes(theirs, ids, "lora").total_bytes
    assert kept_ours > 0
    assert kept_ours <= kept_peft, (kept_ours, kept_peft)
    if method == "dora":
        # peft keeps both W0 x and B A x of each adapted layer for the magnitude's gradient; ours keeps
        # their sum only: at least one (tokens, out_features) fp32 tensor per layer less
        tokens = ids.numel()
        out_features = sum(m.out_features for m in ours.modules() if isinstance(m, DoRALinear))
        assert kept_peft - kept_ours >= tokens * out_features * 4


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_the_same_loss_and_gradients_as_peft(method):
    ours, theirs = _twins(method)
    ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(3))
    loss_ours = ours(input_ids=ids, labels=ids).loss
    loss_theirs = theirs(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(loss_ours, loss_theirs, rtol=1e-6, atol=0)
    loss_ours.backward()
    loss_theirs.backward()
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            twin = theirs.get_submodule(name)
            torch.testing.assert_close(module.lora_A.weight.grad, twin.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(module.lora_B.weight.grad, twin.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-7)
            if isinstance(module, DoRALinear):
                torch.testing.assert_close(module.lora_magnitude_vector.grad,
                                           twin.lora_magnitude_vector["default"].weight.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("cls", [LoRALinear, DoRALinear])
def test_any_leading_shape_and_a_bias_and_input_gradients(cls):
    """The layers flatten (batch, seq, in) to (tokens, in) and add into the base output in place:
    the output shape, the input's gradient and a base with a bias come out as the plain formula's."""
    torch.manual_seed(4)
    layer = cls(nn.Linear(12, 7), r=3, lora_alpha=6)
    with torch.no_grad():
        layer.lora_B.weight.normal_(std=0.3)
    for shape in [(12,), (5, 12), (2, 3, 12)]:
        x = torch.randn(*shape, requires_grad=True)
        out = layer(x)
        assert out.shape == (*shape[:-1], 7)
        w0, b0 = layer.base_layer.weight, layer.base_layer.bias
        delta = layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
        if cls is DoRALinear:
            norm = torch.linalg.norm(w0 + delta, dim=1).detach()
            expected = x @ ((layer.lora_magnitude_vector / norm)[:, None] * (w0 + delta)).T + b0
        else:
            expected = x @ (w0 + delta).T + b0
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
        torch.testing.assert_close(grad_x, expected_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [LoRALinear, DoRALinear])
def test_autocast_and_dropout_take_the_formula_as_written(cls):
    """Under bf16 autocast (what training/run.py uses on a GPU) and with dropout in training, the
    layers fall back to the plain formula: they run, and agree with the fp32 fast path."""
    torch.manual_seed(5)
    layer = cls(nn.Linear(16, 8), r=4, lora_alpha=8)
    with torch.no_grad():
        layer.lora_B.weight.normal_(std=0.3)
    x = torch.randn(2, 3, 16)
    exact = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    low.float().sum().backward()
    assert layer.lora_A.weight.grad is not None and layer.lora_B.weight.grad is not None
    torch.testing.assert_close(low.float(), exact, rtol=2e-2, atol=2e-2)
    dropped = cls(nn.Linear(16, 8), r=4, lora_alpha=8, lora_dropout=0.1)
    dropped.load_state_dict(layer.state_dict())
    torch.testing.assert_close(dropped.eval()(x), exact, rtol=1e-5, atol=1e-6)  # eval: dropout is the identity
    dropped.train()(x).sum().backward()
    assert dropped.lora_A.weight.grad is not None
