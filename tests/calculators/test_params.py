"""Trainable-parameter counts: the known figures, validation and invariants (no torch needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calculators.architectures import ARCHITECTURES, TARGET_PRESETS, target_module_names
from calculators.params import (
    DTYPE_BYTES,
    METHODS,
    bottleneck_adapter_params,
    classification_head_params,
    count_trainable,
    lora_module_params,
)

LORA_METHODS = ("lora", "rslora", "dora", "adalora")


def test_the_must_hit_figures():
    assert count_trainable("llama-2-7b", "lora", r=8, target_modules="q,v").trainable == 4_194_304
    assert count_trainable("llama-2-7b", "lora", r=8, target_modules=["q_proj", "v_proj"]).trainable == 4_194_304
    assert count_trainable("llama-3-8b", "lora", r=8, target_modules="q,v").trainable == 3_407_872
    assert count_trainable("llama-2-7b", "lora", r=16, target_modules="attention").trainable == 16_777_216
    every = count_trainable("llama-2-7b", "lora", r=8, target_modules="all-linear")
    assert every.trainable == 19_988_480
    assert every.total == 6_738_415_616 + 19_988_480
    assert f"{every.percent:.4f}" == "0.2958"  # peft's print: of base + adapter
    assert f"{100 * every.trainable / every.base_total:.4f}" == "0.2966"  # of the base model alone


def test_llama_3_8b_v_proj_is_narrow_under_gqa():
    qv = count_trainable("llama-3-8b", "lora", r=8, target_modules="q,v")
    by_name = {m.name: m for m in qv.per_module}
    assert (by_name["v_proj"].in_features, by_name["v_proj"].out_features) == (4096, 1024)
    assert by_name["v_proj"].n_params == 32 * 8 * (4096 + 1024)
    assert by_name["q_proj"].n_params == 32 * 8 * (4096 + 4096)


def test_full_fine_tuning_trains_everything():
    full = count_trainable("gpt2", "full")
    assert full.trainable == full.total == 124_439_808
    assert full.percent == 100.0


def test_other_methods_known_values():
    # DoRA: + out_features per module; Llama-2-7B q,v: 2 · 32 · 4096
    assert count_trainable("llama-2-7b", "dora", r=8).trainable == 4_194_304 + 2 * 32 * 4096
    assert count_trainable("llama-2-7b", "rslora", r=8).trainable == 4_194_304
    # (IA)³ on Llama: k (out 4096), v (out 4096), down_proj (feed-forward: in 11008), 32 layers
    assert count_trainable("llama-2-7b", "ia3").trainable == 32 * (4096 + 4096 + 11008)
    # GQA: k and v out 1024
    assert count_trainable("llama-3-8b", "ia3").trainable == 32 * (1024 + 1024 + 14336)
    # prefix: tokens · layers · 2 · kv_heads · head_dim
    assert count_trainable("llama-2-7b", "prefix", num_virtual_tokens=20).trainable == 20 * 32 * 2 * 4096
    assert count_trainable("llama-3-8b", "prefix", num_virtual_tokens=20).trainable == 20 * 32 * 2 * 1024
    assert count_trainable("gemma-2-9b", "prefix", num_virtual_tokens=10).trainable == 10 * 42 * 2 * 8 * 256
    assert count_trainable("llama-2-7b", "prompt", num_virtual_tokens=20).trainable == 20 * 4096
    assert count_trainable("llama-2-7b", "bitfit").trainable == 0  # Llama has no biases
    assert count_trainable("qwen2.5-0.5b", "bitfit").trainable == 24 * (896 + 2 * 128)  # q, k, v biases
    assert count_trainable("gpt2", "bitfit").trainable == 102_144


def test_rank_pattern_overrides_per_module():
    counted = count_trainable("llama-3-8b", r=8, target_modules="all-linear", rank_pattern={"down_proj": 32})
    down = next(m for m in counted.per_module if m.name == "down_proj")
    assert down.r == 32 and down.n_params == 32 * 32 * (14336 + 4096)
    assert all(m.r == 8 for m in counted.per_module if m.name != "down_proj")
    plain = count_trainable("llama-3-8b", r=8, target_modules="all-linear")
    assert counted.trainable - plain.trainable == 32 * (32 - 8) * (14336 + 4096)


def test_adapter_bytes_follow_dtype():
    assert count_trainable("llama-2-7b", r=8).adapter_bytes == 4_194_304 * 4  # peft keeps adapters in fp32
    assert count_trainable("llama-2-7b", r=8, dtype="bf16").adapter_bytes == 4_194_304 * 2


def test_gpt2_c_proj_matches_both_and_mlp_c_proj_only_one():
    both = count_trainable("gpt2", r=4, target_modules="c_proj")
    assert [m.path for m in both.per_module] == ["attn.c_proj", "mlp.c_proj"]
    mlp = count_trainable("gpt2", r=4, target_modules="mlp.c_proj")
    assert [m.path for m in mlp.per_module] == ["mlp.c_proj"]


def test_bert_dense_includes_the_pooler():
    counted = count_trainable("bert-base", r=4, target_modules="dense")
    assert [m.path for m in counted.per_module] == [
        "attention.output.dense", "intermediate.dense", "output.dense", "pooler.dense"]
    assert counted.per_module[-1].count == 1


def test_mixtral_router_and_experts():
    """peft 0.21 on transformers 5: one stacked adapter per 3-D expert tensor, w1 + w3 fused at rank 2r."""
    h, i, e, n, r = 4096, 14336, 8, 32, 4
    counted = count_trainable("mixtral-8x7b", r=r, target_modules=["w1", "w3", "w2", "gate"])
    by_name = {m.name: m for m in counted.per_module}
    assert by_name["w1,w3"].n_params == n * 2 * r * e * (h + 2 * i)
    assert by_name["w2"].n_params == n * r * e * (i + h)
    assert by_name["gate"].n_params == n * r * (h + e)
    assert count_trainable("mixtral-8x7b", r=64, target_modules="gate").per_module[0].r == 64  # r > E is allowed
    attention = count_trainable("mixtral-8x7b", r=r, target_modules="attention").trainable
    every = count_trainable("mixtral-8x7b", r=r, target_modules="all-linear").trainable
    assert every == attention + counted.trainable


def test_helpers():
    assert lora_module_params(4096, 1024, 8) == 8 * 5120
    assert classification_head_params("all-minilm-l6-v2", 3) == 384 * 3 + 3
    assert classification_head_params("llama-2-7b", 2) == 4096 * 2
    assert bottleneck_adapter_params("bert-base", 64) == 12 * 2 * (2 * 768 * 64 + 64 + 768)
    assert count_trainable("gpt2").to_dict()["trainable"] == count_trainable("gpt2").trainable


@pytest.mark.parametrize(("kwargs", "field", "fragment"), [
    ({"model": "llama-9"}, "model", "choose from llama-2-7b"),
    ({"method": "loha"}, "method", "must be one of full, lora"),
    ({"r": 0}, "r", "positive integer"),
    ({"r": 2.5}, "r", "positive integer"),
    ({"r": True}, "r", "positive integer"),
    ({"r": 4097}, "r", "between 1 and 4096 for llama-2-7b"),
    ({"model": "llama-3-8b", "r": 2000}, "r", "between 1 and 1024 for llama-3-8b"),
    ({"target_modules": "c_attn"}, "target_modules",
     "'c_attn' is not a module of the llama family; choose from q_proj"),
    ({"target_modules": []}, "target_modules", "name at least one module"),
    ({"rank_pattern": {"c_fc": 4}}, "rank_pattern", "'c_fc' is not a linear module"),
    ({"rank_pattern": {"v_proj": 0}}, "rank_pattern", "positive integer"),
    ({"rank_pattern": {"v_proj": 5000}}, "rank_pattern", "between 1 and 4096"),
    ({"dtype": "int8"}, "dtype", "must be one of"),
    ({"method": "prompt", "num_virtual_tokens": 0}, "num_virtual_tokens", "positive integer"),
    ({"method": "prefix", "prefix_projection": True, "encoder_hidden_size": -1}, "encoder_hidden_size", "positive"),
    ({"model": "phi-3-mini", "method": "ia3"}, "method", "no default (IA)³ targets for the phi3 family"),
    ({"model": "mixtral-8x7b", "target_modules": "w1"}, "target_modules", "w1 and w3 are fused"),
    ({"model": "mixtral-8x7b", "target_modules": "all-linear", "r": 2000}, "r", "between 1 and 1024 for mixtral-8x7b"),
    ({"model": "mixtral-8x7b", "method": "dora", "target_modules": "w2"}, "method", "no dora"),
    ({"model": "mixtral-8x7b", "method": "adalora", "target_modules": "gate"}, "method", "no adalora"),
])
def test_errors_name_the_argument(kwargs, field, fragment):
    kwargs = {"model": "llama-2-7b", **kwargs}
    with pytest.raises(ValueError, match=f"^{field}:") as error:
        count_trainable(**kwargs)
    assert fragment in str(error.value)


# --- properties -------------------------------------------------------------------------

slugs = st.sampled_from(sorted(ARCHITECTURES))


def _with_fused_partner(targets):
    """Mixtral's w1 and w3 are one tensor: peft (and we) take both or neither."""
    if ("w1" in targets) != ("w3" in targets):
        targets = [*targets, "w3" if "w1" in targets else "w1"]
    return targets


@st.composite
def model_and_targets(draw, linear_only=False):
    arch = ARCHITECTURES[draw(slugs)]
    names = [n for n in target_module_names(arch)
             if not (linear_only and n in {m.name for m in arch.expert_modules()})]
    targets = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    return arch, _with_fused_partner(targets)


def _max_rank(arch, targets):
    counted = count_trainable(arch, r=1, target_modules=targets)
    return min(min(m.in_features, m.out_features) for m in counted.per_module)


@settings(max_examples=60, deadline=None)
@given(model_and_targets(), st.integers(1, 256))
def test_lora_is_linear_in_r(case, r):
    arch, targets = case
    r = min(r, _max_rank(arch, targets))
    one = count_trainable(arch, r=1, target_modules=targets)
    assert count_trainable(arch, r=r, target_modules=targets).trainable == r * one.trainable
    assert count_trainable(arch, "rslora", r=r, target_modules=targets).trainable == r * one.trainable


@settings(max_examples=60, deadline=None)
@given(model_and_targets(linear_only=True), st.integers(1, 64))
def test_dora_is_lora_plus_magnitudes(case, r):
    arch, targets = case
    r = min(r, _max_rank(arch, targets))
    lora = count_trainable(arch, "lora", r=r, target_modules=targets)
    dora = count_trainable(arch, "dora", r=r, target_modules=targets)
    assert dora.trainable == lora.trainable + sum(m.out_features * m.count for m in lora.per_module)
    assert dora.total == lora.base_total + dora.trainable


@settings(max_examples=60, deadline=None)
@given(model_and_targets(), st.data())
def test_adding_a_target_never_lowers_the_count(case, data):
    arch, targets = case
    extra = data.draw(st.sampled_from(target_module_names(arch)))
    more = _with_fused_partner([*targets, extra])
    r = min(8, _max_rank(arch, more))
    before = count_trainable(arch, r=r, target_modules=targets).trainable
    after = count_trainable(arch, r=r, target_modules=more).trainable
    assert after >= before
    assert (after > before) == (extra not in targets)


@settings(max_examples=60, deadline=None)
@given(slugs, st.sampled_from(LORA_METHODS), st.sampled_from(["q,v", "attention", "all-linear"]), st.integers(1, 64))
def test_percent_and_totals(slug, method, preset, r):
    if ARCHITECTURES[slug].num_local_experts > 1 and preset == "all-linear" and method in ("dora", "adalora"):
        method = "lora"  # peft has neither for the router and fused experts
    counted = count_trainable(slug, method, r=r, target_modules=preset)
    assert 0 < counted.percent < 100
    assert counted.percent == 100 * counted.trainable / counted.total
    assert counted.total >= counted.base_total + counted.trainable
    assert counted.trainable == sum(m.n_params for m in counted.per_module)
    assert counted.adapter_bytes == counted.trainable * DTYPE_BYTES["fp32"]


@pytest.mark.parametrize("slug", sorted(ARCHITECTURES))
def test_every_method_runs_where_peft_has_defaults(slug):
    arch = ARCHITECTURES[slug]
    for method in METHODS:
        if method == "ia3" and arch.family == "phi3":
            continue
        targets = "attention" if method in ("dora", "adalora") else "all-linear"
        counted = count_trainable(arch, method, r=4, target_modules=targets)
        assert 0 <= counted.trainable <= counted.total
        assert counted.total >= arch.n_params


def test_presets_cover_every_family():
    assert {a.family for a in ARCHITECTURES.values()} <= set(TARGET_PRESETS)
