"""Any model: a pasted config.json gives the same Architecture as the shipped slug, and bad input names its field."""

from __future__ import annotations

import json

import pytest

from calculators import memory, params
from calculators.architectures import ARCHITECTURES, load_hf_config
from calculators.config_json import MAX_CONFIG_CHARS, parse_config_json


@pytest.mark.parametrize("slug", sorted(ARCHITECTURES))
def test_a_shipped_config_pasted_counts_the_same(slug):
    pasted = parse_config_json(json.dumps({**load_hf_config(slug), "_name_or_path": "org/Some-Model_1.5B"}, indent=2))
    shipped = ARCHITECTURES[slug]
    assert pasted.n_params == shipped.n_params
    assert pasted.linear_modules() == shipped.linear_modules()
    assert pasted.display_name == "Some-Model_1.5B"


def test_counts_and_memory_of_a_pasted_model():
    arch = parse_config_json(json.dumps(load_hf_config("llama-3.2-1b")))
    assert arch.n_params == 1_235_814_400 and arch.display_name == "Pasted llama config"
    lora = params.count_trainable(arch, "lora", r=8, target_modules="q,v")
    assert lora.trainable == 16 * 8 * ((2048 + 2048) + (2048 + 512))
    estimate = memory.estimate_memory(arch, method="qlora", r=8, target_modules="q,v", seq_len=512)
    assert estimate.total_bytes == memory.estimate_memory("llama-3.2-1b", method="qlora", r=8, target_modules="q,v",
                                                          seq_len=512).total_bytes


def _config(**changes):
    config = load_hf_config("llama-3.2-1b")
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    return json.dumps(config)


@pytest.mark.parametrize(("text", "field", "words"), [
    ("", "config", "paste"),
    ("{\"hidden_size\": 12,", "config", "not valid JSON"),
    ("[1, 2]", "config", "JSON object"),
    ("x" * (MAX_CONFIG_CHARS + 1), "config", "at most 16,000 characters"),
    (_config(model_type=None), "config.model_type", "missing"),
    (json.dumps({"text_config": {"model_type": "llama"}}), "config.model_type", "text_config"),
    (_config(model_type="t5"), "config.model_type", "not supported"),
    (_config(hidden_size=None), "config.hidden_size", "missing"),
    (_config(hidden_size="2048"), "config.hidden_size", "integer"),
    (_config(hidden_size=2048.5), "config.hidden_size", "integer"),
    (_config(num_hidden_layers=0), "config.num_hidden_layers", "integer from 1"),
    (_config(vocab_size=10**12), "config.vocab_size", "integer from 1"),
    (_config(tie_word_embeddings="yes"), "config.tie_word_embeddings", "true or false"),
    (_config(num_key_value_heads=7), "config.num_key_value_heads", "divide"),
    (_config(head_dim=None, num_attention_heads=30), "config.head_dim", "divisible"),
    (_config(architectures="LlamaForCausalLM"), "config.architectures", "list"),
])
def test_bad_configs_name_the_field(text, field, words):
    with pytest.raises(ValueError) as caught:
        parse_config_json(text)
    message = str(caught.value)
    assert message.split(":")[0] == field
    assert words in message
