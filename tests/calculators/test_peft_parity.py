"""Our counts equal peft's, on every architecture transformers builds, on the meta device.

Each real-size model is built once from the same published config.json that
calculators.architectures derives its shapes from (no weights, no memory, no network), then
wrapped by peft with LoRA, DoRA, rsLoRA, AdaLoRA, (IA)³, prefix and prompt tuning configs;
peft's `get_nb_trainable_parameters()` must equal `calculators.params.count_trainable`.
Adapters are created with `low_cpu_mem_usage=True` (on meta, like the base), which skips
their initialisation and halves the wrapping time; the shapes are the same.
"""

from __future__ import annotations

import copy
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from calculators.architectures import ARCHITECTURES, Architecture, resolve_targets  # noqa: E402
from calculators.params import IA3_TARGETS, count_trainable  # noqa: E402

SLUGS = list(ARCHITECTURES)
DECODERS = [s for s, a in ARCHITECTURES.items() if a.family != "bert"]


def hf_config(arch: Architecture):
    """The transformers config of the shipped config.json."""
    values = arch.hf_config()
    return transformers.AutoConfig.for_model(values.pop("model_type"), **values)


_BUILT: dict[str, object] = {}


def base_model(arch: Architecture, device: str = "meta"):
    """The real-size model (BERT: BertModel with its pooler), built once per architecture; a fresh copy."""
    key = f"{arch.slug}@{device}"
    if key not in _BUILT:
        auto = transformers.AutoModel if arch.family == "bert" else transformers.AutoModelForCausalLM
        with torch.device(device):
            _BUILT[key] = auto.from_config(hf_config(arch))
    return copy.deepcopy(_BUILT[key])


def peft_model(arch: Architecture, config, device: str = "meta"):
    low_cpu = device == "meta" and not isinstance(config, peft.PromptLearningConfig)
    return peft.get_peft_model(base_model(arch, device), config, low_cpu_mem_usage=low_cpu)


def peft_counts(arch: Architecture, config) -> tuple[int, int]:
    return peft_model(arch, config).get_nb_trainable_parameters()


def task_type(arch: Architecture) -> str:
    return "FEATURE_EXTRACTION" if arch.family == "bert" else "CAUSAL_LM"


@pytest.mark.parametrize("slug", SLUGS)
def test_total_parameters_equal_transformers(slug):
    arch = ARCHITECTURES[slug]
    model = base_model(arch)
    assert type(model).__name__ == arch.hf_class
    assert sum(p.numel() for p in model.parameters()) == arch.n_params


@pytest.mark.parametrize("slug", SLUGS)
def test_linear_modules_are_the_models_linears(slug):
    """Every nn.Linear / Conv1D of the real model is one of ours, with our shape and bias, and counts agree."""
    arch = ARCHITECTURES[slug]
    found: dict[str, list] = {}
    for name, module in base_model(arch).named_modules():
        if isinstance(module, torch.nn.Linear | transformers.pytorch_utils.Conv1D):
            if name == "lm_head" and arch.tie_word_embeddings:
                continue  # the embedding matrix, counted once there
            # the longest matching path: "attention.output.dense" also ends with "output.dense"
            ours = sorted((m for m in arch.linear_modules() if name == m.path or name.endswith("." + m.path)),
                          key=lambda m: -len(m.path))
            assert ours, name
            weight = module.weight.shape
            conv1d = isinstance(module, transformers.pytorch_utils.Conv1D)  # GPT-2 stores (in, out)
            in_out = (weight[0], weight[1]) if conv1d else (weight[1], weight[0])
            assert in_out == (ours[0].in_features, ours[0].out_features), name
            assert (module.bias is not None) == ours[0].bias, name
            found.setdefault(ours[0].path, []).append(name)
    assert {path: len(names) for path, names in found.items()} == {m.path: m.count for m in arch.linear_modules()}


@pytest.mark.parametrize("slug", SLUGS)
@pytest.mark.parametrize(("r", "preset"), [(8, "q,v"), (16, "all-linear")])
def test_lora_counts_equal_peft(slug, r, preset):
    arch = ARCHITECTURES[slug]
    # peft's own "all-linear" shorthand, so our preset is checked against peft's meaning of it
    targets = "all-linear" if preset == "all-linear" else list(resolve_targets(arch, preset))
    ours = count_trainable(arch, "lora", r=r, target_modules=preset)
    assert (ours.trainable, ours.total) == peft_counts(arch, peft.LoraConfig(r=r, target_modules=targets))
    assert ours.trainable == sum(m.n_params for m in ours.per_module)


@pytest.mark.parametrize("slug", ["llama-3-8b", "qwen2.5-0.5b", "phi-3-mini", "gpt2", "bert-base", "gemma-2-9b",
                                  "mixtral-8x7b"])
def test_dora_and_rslora_equal_peft(slug):
    arch = ARCHITECTURES[slug]
    targets = list(resolve_targets(arch, "attention"))
    dora = count_trainable(arch, "dora", r=4, target_modules="attention")
    assert (dora.trainable, dora.total) == peft_counts(
        arch, peft.LoraConfig(r=4, target_modules=targets, use_dora=True))
    rslora = count_trainable(arch, "rslora", r=32, target_modules="attention")
    assert (rslora.trainable, rslora.total) == peft_counts(
        arch, peft.LoraConfig(r=32, target_modules=targets, use_rslora=True))


def _adalora_counts(arch: Architecture, device: str) -> tuple[int, int]:
    targets = list(resolve_targets(arch, "attention"))
    config = peft.AdaLoraConfig(init_r=12, target_r=8, target_modules=targets, total_step=100)
    model = peft_model(arch, config, device)
    trainable, total = model.get_nb_trainable_parameters()
    # On the meta device peft re-creates the frozen `ranknum` scalar as a trainable
    # Parameter when it moves the adapter to the base layer's device; on a real device it
    # stays frozen (test_adalora_on_a_real_model). Count it as frozen, as on real hardware.
    ranknums = [p for n, p in model.named_parameters() if "ranknum" in n and p.requires_grad]
    return trainable - sum(p.numel() for p in ranknums), total


def test_adalora_on_a_real_model():
    arch = ARCHITECTURES["all-minilm-l6-v2"]
    ours = count_trainable(arch, "adalora", r=12, target_modules="attention")
    assert (ours.trainable, ours.total) == _adalora_counts(arch, "cpu")


def test_mixtral_named_expert_targets_equal_peft():
    """peft maps v4 names onto transformers 5's fused tensors (w1 + w3 -> gate_up_proj at rank 2r)."""
    arch = ARCHITECTURES["mixtral-8x7b"]
    for targets in (["w2", "gate"], ["q_proj", "w1", "w3"]):
        ours = count_trainable(arch, "rslora", r=4, target_modules=targets)
        assert (ours.trainable, ours.total) == peft_counts(
            arch, peft.LoraConfig(r=4, target_modules=targets, use_rslora=True))


@pytest.mark.parametrize("slug", ["llama-2-7b", "qwen2.5-0.5b", "gpt2", "phi-3-mini"])
def test_adalora_equal_peft(slug):
    arch = ARCHITECTURES[slug]
    ours = count_trainable(arch, "adalora", r=12, target_modules="attention")
    assert (ours.trainable, ours.total) == _adalora_counts(arch, "meta")


@pytest.mark.parametrize("slug", [s for s, a in ARCHITECTURES.items() if a.family in IA3_TARGETS])
def test_ia3_equal_peft(slug):
    arch = ARCHITECTURES[slug]
    ours = count_trainable(arch, "ia3")
    assert (ours.trainable, ours.total) == peft_counts(arch, peft.IA3Config(task_type=task_type(arch)))


@pytest.mark.parametrize("slug", SLUGS)
def test_prefix_and_prompt_equal_peft(slug):
    arch = ARCHITECTURES[slug]
    for tokens in (10, 30):
        prefix = count_trainable(arch, "prefix", num_virtual_tokens=tokens)
        assert (prefix.trainable, prefix.total) == peft_counts(
            arch, peft.PrefixTuningConfig(task_type=task_type(arch), num_virtual_tokens=tokens))
        prompt = count_trainable(arch, "prompt", num_virtual_tokens=tokens)
        assert (prompt.trainable, prompt.total) == peft_counts(
            arch, peft.PromptTuningConfig(task_type=task_type(arch), num_virtual_tokens=tokens))


@pytest.mark.parametrize(("slug", "hidden"), [("llama-2-7b", 512), ("llama-3-8b", None), ("gpt2", 256)])
def test_prefix_projection_equals_peft(slug, hidden):
    arch = ARCHITECTURES[slug]
    ours = count_trainable(arch, "prefix", num_virtual_tokens=20, prefix_projection=True, encoder_hidden_size=hidden)
    config = peft.PrefixTuningConfig(task_type=task_type(arch), num_virtual_tokens=20, prefix_projection=True,
                                     encoder_hidden_size=hidden)
    assert (ours.trainable, ours.total) == peft_counts(arch, config)


@pytest.mark.parametrize(("slug", "pattern"), [
    ("llama-3-8b", {"down_proj": 32, "v_proj": 2}),
    ("gpt2", {"mlp.c_proj": 4, "c_attn": 16}),
    ("bert-base", {"output.dense": 2, "query": 24}),
])
def test_rank_pattern_equals_peft(slug, pattern):
    arch = ARCHITECTURES[slug]
    ours = count_trainable(arch, "lora", r=8, target_modules="all-linear", rank_pattern=pattern)
    assert (ours.trainable, ours.total) == peft_counts(
        arch, peft.LoraConfig(r=8, target_modules="all-linear", rank_pattern=pattern))


@pytest.mark.parametrize("slug", ["gpt2", "bert-base", "qwen2.5-0.5b", "llama-2-7b"])
def test_bitfit_counts_the_biases(slug):
    """BitFit trains every bias: count the model's bias parameters (LayerNorm's included)."""
    arch = ARCHITECTURES[slug]
    biases = sum(p.numel() for n, p in base_model(arch).named_parameters() if n.endswith(".bias"))
    assert count_trainable(arch, "bitfit").trainable == biases


def test_the_issue_figures():
    assert count_trainable("llama-2-7b", "lora", r=8, target_modules="q,v").trainable == 4_194_304
    assert count_trainable("llama-3-8b", "lora", r=8, target_modules="q,v").trainable == 3_407_872
    assert count_trainable("llama-2-7b", "lora", r=8, target_modules="all-linear").trainable == 19_988_480
