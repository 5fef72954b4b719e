"""Model shapes: published totals, peft module names, presets and validation (no torch needed)."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import pytest

from calculators import architectures
from calculators.architectures import (
    ARCHITECTURES,
    MODELS,
    TARGET_PRESETS,
    Architecture,
    LinearModule,
    from_hf_config,
    get_architecture,
    load_hf_config,
    matches,
    resolve_targets,
    target_module_names,
)

REQUIRED_SLUGS = (
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3.1-8b", "llama-3-70b", "llama-3.1-70b",
    "mistral-7b", "mixtral-8x7b", "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-72b", "gemma-2-9b", "phi-3-mini", "gpt2",
    "bert-base", "smollm-135m", "tinyllama-1.1b", "all-minilm-l6-v2",
    # current models (issue 12)
    "llama-3.2-1b", "llama-3.2-3b", "qwen2.5-1.5b", "gemma-2-2b", "phi-3.5-mini", "mistral-7b-v0.3",
    "smollm2-135m", "smollm2-360m", "smollm2-1.7b",
)

# Parameter counts of the transformers class in `hf_class` (also checked against
# transformers itself in test_peft_parity.py).
PUBLISHED_TOTALS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-72b": 72_706_203_648,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini": 3_821_079_552,
    "gpt2": 124_439_808,
    "bert-base": 109_482_240,
    "smollm-135m": 134_515_008,
    "tinyllama-1.1b": 1_100_048_384,
    "all-minilm-l6-v2": 22_713_216,
    # The model cards' and safetensors index's totals: Llama-3.2 1.24B / 3.21B, Qwen2.5-1.5B 1.54B,
    # Gemma-2-2B 2.61B, Phi-3.5-mini 3.82B, Mistral-7B-v0.3 7.25B, SmolLM2 135M / 362M / 1.71B.
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "qwen2.5-1.5b": 1_543_714_304,
    "gemma-2-2b": 2_614_341_888,
    "phi-3.5-mini": 3_821_079_552,
    "mistral-7b-v0.3": 7_248_023_552,
    "smollm2-135m": 134_515_008,
    "smollm2-360m": 361_821_120,
    "smollm2-1.7b": 1_711_376_384,
}


def test_every_required_slug_is_there():
    assert set(REQUIRED_SLUGS) <= set(ARCHITECTURES)
    assert set(ARCHITECTURES) == set(MODELS) == set(PUBLISHED_TOTALS)


@pytest.mark.parametrize(("slug", "total"), PUBLISHED_TOTALS.items())
def test_total_parameters(slug, total):
    assert get_architecture(slug).n_params == total


def test_every_shipped_config_is_a_model_and_loads_through_importlib_resources():
    shipped = {p.name for p in resources.files("calculators").joinpath("data", "hf_configs").iterdir()}
    assert shipped == {f"{slug}.json" for slug in MODELS}
    for slug in MODELS:
        config = load_hf_config(slug)
        assert config["model_type"] == ARCHITECTURES[slug].hf_model_type
        assert "auto_map" not in config  # never ask transformers for remote code


def test_load_hf_config_returns_a_fresh_copy():
    first = load_hf_config("llama-2-7b")
    first["hidden_size"] = 1
    assert load_hf_config("llama-2-7b")["hidden_size"] == 4096
    assert ARCHITECTURES["llama-2-7b"].hf_config() == load_hf_config("llama-2-7b")


def test_published_shapes():
    gemma = ARCHITECTURES["gemma-2-9b"]
    assert (gemma.head_dim, gemma.q_dim, gemma.kv_dim, gemma.tie_word_embeddings) == (256, 4096, 2048, True)
    assert gemma.mlp_kind == "geglu"
    llama3 = ARCHITECTURES["llama-3-8b"]
    assert (llama3.num_key_value_heads, llama3.kv_dim, llama3.vocab_size) == (8, 1024, 128256)
    mixtral = ARCHITECTURES["mixtral-8x7b"]
    assert (mixtral.num_local_experts, mixtral.num_experts_per_tok) == (8, 2)
    assert mixtral.n_params_per_token_active == 12_879_925_248
    assert ARCHITECTURES["qwen2.5-0.5b"].attention_bias and ARCHITECTURES["qwen2.5-0.5b"].tie_word_embeddings
    assert ARCHITECTURES["gpt2"].hf_class == "GPT2LMHeadModel"
    assert ARCHITECTURES["bert-base"].hf_class == "BertModel"
    assert ARCHITECTURES["all-minilm-l6-v2"].type_vocab_size == 2


def test_llama_2_7b_linear_modules():
    modules = {m.name: m for m in ARCHITECTURES["llama-2-7b"].linear_modules()}
    assert list(modules) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    assert (modules["v_proj"].in_features, modules["v_proj"].out_features, modules["v_proj"].count) == (4096, 4096, 32)
    assert (modules["down_proj"].in_features, modules["down_proj"].out_features) == (11008, 4096)
    assert modules["lm_head"].group == "head"
    assert not any(m.bias for m in modules.values())


def test_fused_and_shared_names():
    phi3 = ARCHITECTURES["phi-3-mini"]
    assert target_module_names(phi3) == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    qkv = next(m for m in phi3.linear_modules() if m.name == "qkv_proj")
    assert qkv.out_features == 3 * 3072
    gpt2 = ARCHITECTURES["gpt2"]
    assert target_module_names(gpt2) == ("c_attn", "c_proj", "c_fc")
    assert [m.path for m in gpt2.linear_modules() if m.name == "c_proj"] == ["attn.c_proj", "mlp.c_proj"]
    bert = ARCHITECTURES["bert-base"]
    assert target_module_names(bert) == ("query", "key", "value", "dense")
    dense = [m.path for m in bert.linear_modules() if m.name == "dense"]
    assert dense == ["attention.output.dense", "intermediate.dense", "output.dense", "pooler.dense"]


def test_mixtral_experts_are_not_linear_modules():
    """transformers 5 fuses the experts into 3-D tensors; only attention and lm_head are nn.Linear.

    peft still targets the router and experts by their v4 names (gate, w1, w2, w3).
    """
    mixtral = ARCHITECTURES["mixtral-8x7b"]
    assert [m.name for m in mixtral.linear_modules()] == ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]
    assert target_module_names(mixtral) == ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3", "gate")
    experts = {m.name: (m.in_features, m.out_features, m.count) for m in mixtral.expert_modules()}
    assert experts == {"w1": (4096, 14336, 256), "w2": (14336, 4096, 256), "w3": (4096, 14336, 256),
                       "gate": (4096, 8, 32)}
    assert mixtral.n_params_expert_mlp == sum(m.n_params for m in mixtral.expert_modules())
    assert mixtral.n_params_expert_mlp == 32 * (8 * 3 * 4096 * 14336 + 8 * 4096)
    assert ARCHITECTURES["llama-2-7b"].expert_modules() == ()


def test_tied_models_have_no_lm_head_module():
    for arch in ARCHITECTURES.values():
        has_head = any(m.group == "head" for m in arch.linear_modules())
        assert has_head == (not arch.tie_word_embeddings and arch.family != "bert"), arch.slug


def test_n_params_linear_is_the_blocks_linears():
    arch = ARCHITECTURES["llama-2-7b"]
    assert arch.n_params_linear == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert arch.n_params == arch.n_params_linear + 2 * 32000 * 4096 + (2 * 32 + 1) * 4096


@pytest.mark.parametrize("family", sorted({a.family for a in ARCHITECTURES.values()}))
def test_presets_name_real_modules_and_grow(family):
    arch = next(a for a in ARCHITECTURES.values() if a.family == family)
    presets = TARGET_PRESETS[family]
    assert list(presets) == ["q,v", "attention", "all-linear"]
    matched = {}
    for name, targets in presets.items():
        assert resolve_targets(arch, name) == targets
        matched[name] = {m.path for m in arch.linear_modules() if any(matches(m, t) for t in targets)}
        assert matched[name]
    assert matched["q,v"] <= matched["attention"] <= matched["all-linear"]
    # "all-linear" means what peft's shorthand means: every linear but the LM head
    assert matched["all-linear"] == {m.path for m in arch.linear_modules() if m.group != "head"}
    experts = {m.path for m in arch.expert_modules() if any(matches(m, t) for t in presets["all-linear"])}
    assert experts == {m.path for m in arch.expert_modules()}


def test_matches_is_peft_suffix_rule():
    bert = {m.path: m for m in ARCHITECTURES["bert-base"].linear_modules()}
    assert matches(bert["attention.output.dense"], "output.dense")  # peft matches both, so do we
    assert matches(bert["output.dense"], "output.dense")
    assert not matches(bert["intermediate.dense"], "output.dense")
    assert matches(bert["pooler.dense"], "dense")
    gpt2 = {m.path: m for m in ARCHITECTURES["gpt2"].linear_modules()}
    assert matches(gpt2["attn.c_proj"], "c_proj") and not matches(gpt2["attn.c_proj"], "mlp.c_proj")
    assert not matches(gpt2["attn.c_attn"], "attn")  # whole dotted components only


def test_resolve_targets_accepts_lists_comma_strings_and_presets():
    assert resolve_targets("llama-2-7b", "q_proj, v_proj") == ("q_proj", "v_proj")
    assert resolve_targets("llama-2-7b", ["v_proj", "q_proj", "v_proj"]) == ("v_proj", "q_proj")
    assert resolve_targets("llama-2-7b", ["attention"]) == TARGET_PRESETS["llama"]["attention"]
    assert resolve_targets("gpt2", "mlp.c_proj") == ("mlp.c_proj",)


@pytest.mark.parametrize(("model", "targets", "fragment"), [
    ("llama-2-7b", "c_attn", "'c_attn' is not a module of the llama family"),
    ("gpt2", ["q_proj"], "choose from c_attn, c_proj, c_fc"),
    ("bert-base", "", "name at least one module"),
    ("llama-2-7b", "proj", "'proj' is not a module"),
])
def test_resolve_targets_errors_name_target_modules(model, targets, fragment):
    with pytest.raises(ValueError, match="^target_modules:") as error:
        resolve_targets(model, targets)
    assert fragment in str(error.value)


def test_unknown_model_names_model_and_lists_choices():
    with pytest.raises(ValueError, match=r"^model: unknown model 'llama-9'.*llama-2-7b, llama-2-13b"):
        get_architecture("llama-9")
    with pytest.raises(ValueError, match="^model:"):
        load_hf_config("nope")
    assert get_architecture(" Llama-2-7B ") is ARCHITECTURES["llama-2-7b"]
    assert get_architecture(ARCHITECTURES["gpt2"]) is ARCHITECTURES["gpt2"]


def test_from_hf_config_builds_a_custom_model():
    config = dict(load_hf_config("llama-2-7b"), num_hidden_layers=2, vocab_size=1000)
    tiny = from_hf_config("tiny", "Tiny", config)
    assert tiny.num_hidden_layers == 2
    assert tiny.n_params == 2 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 2 * 1000 * 4096 + 5 * 4096
    with pytest.raises(ValueError, match="^config: model_type 't5'"):
        from_hf_config("t5", "T5", {"model_type": "t5"})


@pytest.mark.parametrize(("field", "value"), [("hidden_size", 0), ("num_key_value_heads", 5), ("family", "rnn")])
def test_architecture_validates(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        dataclasses.replace(ARCHITECTURES["llama-2-7b"], **{field: value})


def test_dataclasses_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ARCHITECTURES["gpt2"].hidden_size = 1  # type: ignore[misc]
    module = LinearModule("q_proj", 8, 4, 2, True, "attention")
    assert module.n_params == 2 * (8 * 4 + 4)
    assert isinstance(ARCHITECTURES["gpt2"], Architecture)


def test_configs_are_plain_json():
    """Package data the browser (Pyodide) unpacks: plain UTF-8 JSON objects."""
    folder = resources.files(architectures.__package__).joinpath("data", "hf_configs")
    for entry in folder.iterdir():
        assert isinstance(json.loads(entry.read_text(encoding="utf-8")), dict)
