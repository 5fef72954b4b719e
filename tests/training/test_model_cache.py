"""The set-up step's model cache: the real SmolLM2-135M-Instruct, with the calculators' shape."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from calculators.architectures import ARCHITECTURES  # noqa: E402
from training.model import load_base, load_model  # noqa: E402
from training.model_cache import BASE_MODEL_ID, MARKER, build_cache, packaged_gguf  # noqa: E402


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
    stamp = (lab_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_cache(lab_model_dir) == lab_model_dir
    assert (lab_model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert packaged_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_folder_without_a_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/setup") as info:
        load_base(str(tmp_path))
    assert str(tmp_path.parent) not in str(info.value)  # names the folder, not the server's path to it
