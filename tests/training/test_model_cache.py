"""The set-up step's model cache: the real SmolLM2-135M-Instruct, with the calculators' shape."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from calculators.architectures import ARCHITECTURES  # noqa: E402
from training.model import load_base, load_model  # noqa: E402
from training.model_cache import (  # noqa: E402
    BASE_MODEL_ID, MARKER, WEIGHTS_FILE, build_cache, pack, packaged_gguf, unpack)


def test_the_cache_holds_smollm2_with_the_calculators_shape(lab_model_dir):
    model, tokenizer = load_base(str(lab_model_dir))
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    arch = ARCHITECTURES["smollm2-135m"]
    assert arch.n_params == 134_515_008
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size, config.tie_word_embeddings) == (
        arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers, arch.num_attention_heads,
        arch.num_key_value_heads, arch.vocab_size, arch.tie_word_embeddings)
    # every linear kind: the calculators' (in, out) and count are the real model's
    real: dict[str, list[tuple[int, int]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            real.setdefault(name.rsplit(".", 1)[-1], []).append((module.in_features, module.out_features))
    predicted = {m.name: (m.in_features, m.out_features, m.count) for m in arch.linear_modules() if m.group != "head"}
    assert {name: (shapes[0][0], shapes[0][1], len(shapes)) for name, shapes in real.items()} == predicted
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, counted once
    assert "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_the_cache_names_the_hub_id_and_no_server_path(lab_model_dir):
    marker = json.loads((lab_model_dir / MARKER).read_text())
    assert marker["base_model"] == BASE_MODEL_ID and marker["parameters"] == 134_515_008
    assert load_model(lab_model_dir).base_model == BASE_MODEL_ID
    for path in lab_model_dir.glob("*.json"):
        assert str(lab_model_dir.parent) not in path.read_text(), path.name


def test_building_again_is_a_no_op(lab_model_dir):
    stamp = (lab_model_dir / WEIGHTS_FILE).stat().st_mtime_ns
    assert build_cache(lab_model_dir) == lab_model_dir
    assert (lab_model_dir / WEIGHTS_FILE).stat().st_mtime_ns == stamp
    assert packaged_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_folder_without_a_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/setup") as info:
        load_base(str(tmp_path))
    assert str(tmp_path.parent) not in str(info.value)  # names the folder, not the server's path to it


def test_the_packed_cache_is_the_dequantized_gguf_bit_for_bit(lab_model_dir):
    """The cache keeps 4-/8-bit codes and fp16 block scales; the model loaded from it equals, bit
    for bit, transformers' own float32 dequantization of the GGUF file (what the cache replaced)."""
    from transformers import AutoModelForCausalLM

    gguf = packaged_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model, _ = load_base(str(lab_model_dir))
    expected, loaded = reference.state_dict(), model.state_dict()
    assert expected.keys() == loaded.keys()
    assert not [name for name in expected if not torch.equal(expected[name], loaded[name])]
    packed_bytes = (lab_model_dir / WEIGHTS_FILE).stat().st_size
    assert packed_bytes < 100 * 2**20 < 500 * 2**20 < 134_515_008 * 4  # 92 MiB instead of 513 MiB


def test_packing_keeps_any_tensor_it_cannot_give_back_exactly():
    generator = torch.Generator().manual_seed(0)
    q4 = torch.tensor([0.5, 0.25], dtype=torch.float16).float()
    codes = torch.randint(0, 16, (4, 32), generator=generator).float()
    blocky = (q4[0] * codes + q4[1]).reshape(2, 64)  # Q4_1 blocks: d·q + m, fp16 d and m
    q8 = (torch.tensor(0.125, dtype=torch.float16).float() * torch.randint(-127, 128, (2, 32), generator=generator)).float()
    q8[:, 0] = 127 * 0.125  # the block's largest magnitude sets its scale
    free = torch.randn(3, 32, generator=generator)  # arbitrary float32: no block form is exact
    tied = torch.zeros(2, 32)
    packed = pack({"blocky": blocky, "q8": q8, "free": free, "tied": tied, "tied_again": tied, "bias": torch.ones(5)})
    assert {"blocky.q4", "blocky.d", "blocky.m", "q8.q8", "q8.d", "free", "bias"} <= set(packed)
    assert "tied_again" not in packed and "tied.q4" in packed  # a constant block packs too
    assert packed["blocky.q4"].dtype == torch.uint8 and packed["blocky.q4"].shape == (4, 16)
    state = unpack(packed)
    for name, original in (("blocky", blocky), ("q8", q8), ("free", free), ("tied", tied)):
        assert state[name].shape == original.shape and torch.equal(state[name], original), name
