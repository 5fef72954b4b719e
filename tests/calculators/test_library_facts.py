"""What chapters 3 and 4 say about the pinned libraries, checked against the installed peft,
transformers and bitsandbytes (tiny models on the CPU, no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_DEFAULTS  # noqa: E402

from calculators import memory  # noqa: E402


def tiny_mixtral():
    config = transformers.MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                        vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return transformers.MixtralForCausalLM(config)


def test_peft_defaults_llama_to_q_v_and_has_no_phi3_default():
    assert set(LORA_DEFAULTS["llama"]) == {"q_proj", "v_proj"}
    assert "phi3" not in LORA_DEFAULTS
    config = transformers.Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                                     vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = transformers.Phi3ForCausalLM(config)
    with pytest.raises(ValueError, match="target_modules"):
        peft.get_peft_model(model, peft.LoraConfig(r=2))  # no default: Phi-3 needs explicit targets


def test_mixtral_experts_are_fused_3d_parameters_not_w1_w2_w3_linears():
    model = tiny_mixtral()
    mlp = model.model.layers[0].mlp
    names = {name for name, _ in mlp.named_modules()}
    assert not {"experts.0.w1", "experts.0.w2", "experts.0.w3"} & names
    assert tuple(mlp.experts.gate_up_proj.shape) == (4, 2 * 96, 64)  # w1 and w3 stacked, per expert
    assert tuple(mlp.experts.down_proj.shape) == (4, 64, 96)  # w2
    assert not isinstance(mlp.gate, torch.nn.Linear)  # the router holds a weight of (experts, hidden)
    assert tuple(mlp.gate.weight.shape) == (4, 64)


def test_peft_maps_the_old_expert_names_onto_the_fused_tensors():
    with pytest.raises(ValueError, match="w3"):
        peft.get_peft_model(tiny_mixtral(), peft.LoraConfig(r=2, target_modules=["w1"]))
    model = peft.get_peft_model(tiny_mixtral(), peft.LoraConfig(r=2, target_modules=["w1", "w3"]))
    trainable, _ = model.get_nb_trainable_parameters()
    # w1 + w3 become one adapter on gate_up_proj at rank 2r per expert: 2r·E·(h + 2i)
    assert trainable == 2 * 2 * 4 * (64 + 2 * 96)
    assert any("experts.lora_A" in name for name, _ in model.named_parameters())


def test_bitsandbytes_8bit_adamw_keeps_blocks_of_256():
    bnb = pytest.importorskip("bitsandbytes")
    weight = torch.nn.Parameter(torch.randn(64, 1000))
    optimizer = bnb.optim.AdamW8bit([weight], lr=1e-3)
    weight.grad = torch.randn_like(weight)
    optimizer.step()
    state = optimizer.state[weight]
    assert state["state1"].dtype == state["state2"].dtype == torch.uint8
    assert state["absmax1"].numel() == weight.numel() // 256
    per_param = sum(state[k].numel() * state[k].element_size() for k in ("state1", "state2", "absmax1", "absmax2"))
    assert per_param / weight.numel() == memory.optimizer_state_bytes_per_param("adamw8bit", "fp32") == 2 + 8 / 256

