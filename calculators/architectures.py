"""Real model shapes, derived from each model's published Hugging Face config.json.

The configs ship as package data (calculators/data/hf_configs/<slug>.json, the published
values; `auto_map` and similar loader hints left out). An `Architecture` knows its linear
modules (what peft can target, by peft's names) and its total parameter count, equal to
`sum(p.numel() for p in model.parameters())` of the transformers class named in `hf_class`
(tests/calculators/test_peft_parity.py builds each from the same JSON on the meta device).
Pure Python: this also runs in the browser under Pyodide.

Counted classes: decoders are `*ForCausalLM` with their lm_head (a tied head counted once);
BERT models are `BertModel` with its pooler (the shape sentence encoders ship; a
sequence-classification head adds `params.classification_head_params`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3", "gpt2", "bert")
GROUPS = ("attention", "mlp", "pooler", "head")


@dataclass(frozen=True)
class LinearModule:
    """One kind of linear layer: `count` copies of an in_features -> out_features map.

    `name` is the suffix peft matches in `target_modules` ("q_proj", "dense"); `path` is the
    module path below the layer (or model) and tells apart kinds that share a name (BERT's
    four "dense", GPT-2's two "c_proj").
    """

    name: str
    in_features: int
    out_features: int
    count: int
    bias: bool
    group: str  # "attention" | "mlp" | "pooler" | "head"
    path: str = ""

    @property
    def n_params(self) -> int:
        """Weights and biases of all copies: count · (in·out + out if bias)."""
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))


@dataclass(frozen=True)
class Architecture:
    """Published hyper-parameters of one model, and the shapes they imply."""

    slug: str
    display_name: str
    family: str  # llama | mistral | mixtral | qwen2 | gemma2 | phi3 | gpt2 | bert
    hf_model_type: str  # transformers' model_type
    hf_class: str  # the transformers class whose parameter count `n_params` equals
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool  # the LM head shares the embedding matrix (False where the class has no head)
    head_dim: int = 0  # 0 in a hand-built Architecture: hidden_size // num_attention_heads
    num_local_experts: int = 1
    num_experts_per_tok: int = 1
    mlp_kind: str = "swiglu"  # swiglu | gelu | geglu
    attention_bias: bool = False  # q, k, v (and o, except Qwen2) carry biases
    mlp_bias: bool = False
    type_vocab_size: int = 0  # BERT's token-type embeddings
    hf_repo: str = ""  # where the published config.json lives on the Hub

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family: must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "num_local_experts", "num_experts_per_tok"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not self.head_dim:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError("head_dim: hidden_size is not divisible by num_attention_heads; give head_dim")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_key_value_heads: must divide num_attention_heads")

    @property
    def resolved_head_dim(self) -> int:
        """Width of one attention head (kept for callers written before head_dim was always set)."""
        return self.head_dim

    @property
    def q_dim(self) -> int:
        """Width of the query projection: heads × head_dim (Gemma-2: 16 × 256 = 4096 ≠ hidden 3584)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection: kv heads × head_dim (smaller under GQA)."""
        return self.num_key_value_heads * self.head_dim

    def linear_modules(self) -> tuple[LinearModule, ...]:
        """Every nn.Linear (GPT-2: Conv1D) peft could adapt, by kind, with counts; lm_head if untied."""
        return _linear_modules(self)

    def expert_modules(self) -> tuple[LinearModule, ...]:
        """Mixtral's router and per-expert matrices, by the names peft targets them with (v4's gate, w1, w2, w3).

        transformers 5 stores them as a bare router weight and two fused 3-D tensors per layer
        (gate_up_proj = w1 and w3 stacked, down_proj = w2), none an nn.Linear; peft maps the
        v4 names onto `target_parameters`. Empty for dense models; not part of linear_modules().
        """
        return _expert_modules(self)

    def target_module_names(self) -> tuple[str, ...]:
        """peft names of the blocks' linear kinds (and MoE weights), in canonical order (no head, no pooler)."""
        return target_module_names(self)

    @property
    def n_params_linear(self) -> int:
        """Parameters inside the blocks' linear layers (what QLoRA quantizes); MoE experts excluded."""
        return sum(m.n_params for m in self.linear_modules() if m.group in ("attention", "mlp"))

    @property
    def n_params_embedding(self) -> int:
        """Token embeddings, plus learned position (GPT-2, BERT) and token-type (BERT) embeddings."""
        n = self.vocab_size * self.hidden_size
        if self.family == "gpt2":
            n += self.max_position_embeddings * self.hidden_size
        if self.family == "bert":
            n += (self.max_position_embeddings + self.type_vocab_size) * self.hidden_size
        return n

    @property
    def n_params_expert_mlp(self) -> int:
        """Mixture-of-experts weights plus routers: layers · (E · 3 · h · i + E · h).

        transformers 5 stores a layer's experts as two fused 3-D tensors (gate_up_proj,
        down_proj) and the router `gate` as a bare weight, none of them nn.Linear.
        """
        if self.num_local_experts <= 1:
            return 0
        experts = self.num_local_experts * 3 * self.hidden_size * self.intermediate_size
        router = self.num_local_experts * self.hidden_size
        return self.num_hidden_layers * (experts + router)

    @property
    def n_params_norms(self) -> int:
        """Normalization weights: RMSNorm a weight, LayerNorm a weight and a bias; per layer plus final."""
        h, layers = self.hidden_size, self.num_hidden_layers
        if self.family == "gemma2":  # four norms per layer (pre/post attention, pre/post MLP)
            return (4 * layers + 1) * h
        if self.family in ("gpt2", "bert"):  # LayerNorm; BERT's "+1" is the embeddings' LayerNorm
            return (2 * layers + 1) * 2 * h
        return (2 * layers + 1) * h

    @property
    def n_params(self) -> int:
        """Total parameters of `hf_class`: linears + embeddings + experts + norms (tied head once)."""
        return _total_params(self)

    @property
    def n_params_per_token_active(self) -> int:
        """Parameters a token passes through (MoE: only its top-k experts)."""
        if self.num_local_experts <= 1:
            return self.n_params
        inactive = self.num_local_experts - self.num_experts_per_tok
        return self.n_params - self.num_hidden_layers * inactive * 3 * self.hidden_size * self.intermediate_size

    def hf_config(self) -> dict[str, Any]:
        """The published config.json this architecture was derived from (a fresh copy)."""
        return load_hf_config(self.slug)


def _head(arch: Architecture) -> list[LinearModule]:
    if arch.tie_word_embeddings or arch.family == "bert":
        return []
    return [LinearModule("lm_head", arch.hidden_size, arch.vocab_size, 1, False, "head", "lm_head")]


def _decoder_linears(arch: Architecture) -> list[LinearModule]:
    """Llama, Mistral, Qwen2, Gemma-2 and Mixtral attention; a gated MLP unless MoE."""
    h, n, b = arch.hidden_size, arch.num_hidden_layers, arch.attention_bias
    o_bias = b and arch.family != "qwen2"  # Qwen2 biases q, k, v but not o
    modules = [
        LinearModule("q_proj", h, arch.q_dim, n, b, "attention", "self_attn.q_proj"),
        LinearModule("k_proj", h, arch.kv_dim, n, b, "attention", "self_attn.k_proj"),
        LinearModule("v_proj", h, arch.kv_dim, n, b, "attention", "self_attn.v_proj"),
        LinearModule("o_proj", arch.q_dim, h, n, o_bias, "attention", "self_attn.o_proj"),
    ]
    if arch.num_local_experts <= 1:
        i, mb = arch.intermediate_size, arch.mlp_bias
        modules += [
            LinearModule("gate_proj", h, i, n, mb, "mlp", "mlp.gate_proj"),
            LinearModule("up_proj", h, i, n, mb, "mlp", "mlp.up_proj"),
            LinearModule("down_proj", i, h, n, mb, "mlp", "mlp.down_proj"),
        ]
    return modules


def _phi3_linears(arch: Architecture) -> list[LinearModule]:
    """Phi-3 fuses q,k,v into qkv_proj and gate,up into gate_up_proj."""
    h, n, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    return [
        LinearModule("qkv_proj", h, arch.q_dim + 2 * arch.kv_dim, n, False, "attention", "self_attn.qkv_proj"),
        LinearModule("o_proj", arch.q_dim, h, n, False, "attention", "self_attn.o_proj"),
        LinearModule("gate_up_proj", h, 2 * i, n, False, "mlp", "mlp.gate_up_proj"),
        LinearModule("down_proj", i, h, n, False, "mlp", "mlp.down_proj"),
    ]


def _gpt2_linears(arch: Architecture) -> list[LinearModule]:
    """GPT-2's Conv1D layers: fused c_attn, and two different c_proj (attention, MLP)."""
    h, n, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    return [
        LinearModule("c_attn", h, 3 * h, n, True, "attention", "attn.c_attn"),
        LinearModule("c_proj", h, h, n, True, "attention", "attn.c_proj"),
        LinearModule("c_fc", h, i, n, True, "mlp", "mlp.c_fc"),
        LinearModule("c_proj", i, h, n, True, "mlp", "mlp.c_proj"),
    ]


def _bert_linears(arch: Architecture) -> list[LinearModule]:
    """BERT: query/key/value, and four different "dense" layers (three per layer, the pooler's)."""
    h, n, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    return [
        LinearModule("query", h, h, n, True, "attention", "attention.self.query"),
        LinearModule("key", h, h, n, True, "attention", "attention.self.key"),
        LinearModule("value", h, h, n, True, "attention", "attention.self.value"),
        LinearModule("dense", h, h, n, True, "attention", "attention.output.dense"),
        LinearModule("dense", h, i, n, True, "mlp", "intermediate.dense"),
        LinearModule("dense", i, h, n, True, "mlp", "output.dense"),
        LinearModule("dense", h, h, 1, True, "pooler", "pooler.dense"),
    ]


_LINEARS = {
    "llama": _decoder_linears, "mistral": _decoder_linears, "mixtral": _decoder_linears, "qwen2": _decoder_linears,
    "gemma2": _decoder_linears, "phi3": _phi3_linears, "gpt2": _gpt2_linears, "bert": _bert_linears,
}


@lru_cache(maxsize=256)
def _total_params(arch: Architecture) -> int:
    linear = sum(m.n_params for m in arch.linear_modules())
    return linear + arch.n_params_embedding + arch.n_params_expert_mlp + arch.n_params_norms


@lru_cache(maxsize=256)  # an Architecture is frozen and hashable; its modules never change
def _linear_modules(arch: Architecture) -> tuple[LinearModule, ...]:
    return tuple(_LINEARS[arch.family](arch) + _head(arch))


@lru_cache(maxsize=256)
def _expert_modules(arch: Architecture) -> tuple[LinearModule, ...]:
    if arch.num_local_experts <= 1:
        return ()
    h, i, n, e = arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers, arch.num_local_experts
    return (
        LinearModule("w1", h, i, n * e, False, "experts", "mlp.experts.w1"),  # gate, fused into gate_up_proj
        LinearModule("w2", i, h, n * e, False, "experts", "mlp.experts.w2"),  # down_proj
        LinearModule("w3", h, i, n * e, False, "experts", "mlp.experts.w3"),  # up, fused into gate_up_proj
        LinearModule("gate", h, e, n, False, "router", "mlp.gate"),
    )


def target_module_names(model: str | Architecture) -> tuple[str, ...]:
    """peft names of a model's block linears, then MoE weights, in canonical order (no lm_head, no pooler)."""
    arch = get_architecture(model)
    blocks = [m.name for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    return tuple(dict.fromkeys(blocks + [m.name for m in arch.expert_modules()]))


# --- the published configs ------------------------------------------------------------

# slug -> (display name, Hub repository of the config.json shipped as <slug>.json)
MODELS: dict[str, tuple[str, str]] = {
    "llama-2-7b": ("Llama-2 7B", "meta-llama/Llama-2-7b-hf"),
    "llama-2-13b": ("Llama-2 13B", "meta-llama/Llama-2-13b-hf"),
    "llama-2-70b": ("Llama-2 70B", "meta-llama/Llama-2-70b-hf"),
    "llama-3.2-1b": ("Llama-3.2 1B", "meta-llama/Llama-3.2-1B"),
    "llama-3.2-3b": ("Llama-3.2 3B", "meta-llama/Llama-3.2-3B"),
    "llama-3-8b": ("Llama-3 8B", "meta-llama/Meta-Llama-3-8B"),
    "llama-3.1-8b": ("Llama-3.1 8B", "meta-llama/Llama-3.1-8B"),
    "llama-3-70b": ("Llama-3 70B", "meta-llama/Meta-Llama-3-70B"),
    "llama-3.1-70b": ("Llama-3.1 70B", "meta-llama/Llama-3.1-70B"),
    "llama-3.1-405b": ("Llama-3.1 405B", "meta-llama/Llama-3.1-405B"),
    "mistral-7b": ("Mistral 7B (v0.1)", "mistralai/Mistral-7B-v0.1"),
    "mistral-7b-v0.3": ("Mistral 7B v0.3", "mistralai/Mistral-7B-v0.3"),
    "mixtral-8x7b": ("Mixtral 8x7B", "mistralai/Mixtral-8x7B-v0.1"),
    "qwen2.5-0.5b": ("Qwen2.5 0.5B", "Qwen/Qwen2.5-0.5B"),
    "qwen2.5-1.5b": ("Qwen2.5 1.5B", "Qwen/Qwen2.5-1.5B"),
    "qwen2.5-7b": ("Qwen2.5 7B", "Qwen/Qwen2.5-7B"),
    "qwen2.5-72b": ("Qwen2.5 72B", "Qwen/Qwen2.5-72B"),
    "gemma-2-2b": ("Gemma-2 2B", "google/gemma-2-2b"),
    "gemma-2-9b": ("Gemma-2 9B", "google/gemma-2-9b"),
    "phi-3-mini": ("Phi-3 mini (4k)", "microsoft/Phi-3-mini-4k-instruct"),
    "phi-3.5-mini": ("Phi-3.5 mini", "microsoft/Phi-3.5-mini-instruct"),
    "smollm-135m": ("SmolLM 135M", "HuggingFaceTB/SmolLM-135M"),
    "smollm2-135m": ("SmolLM2 135M", "HuggingFaceTB/SmolLM2-135M"),
    "smollm2-360m": ("SmolLM2 360M", "HuggingFaceTB/SmolLM2-360M"),
    "smollm2-1.7b": ("SmolLM2 1.7B", "HuggingFaceTB/SmolLM2-1.7B"),
    "tinyllama-1.1b": ("TinyLlama 1.1B", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
    "gpt2": ("GPT-2 (124M)", "openai-community/gpt2"),
    "bert-base": ("BERT base (uncased)", "google-bert/bert-base-uncased"),
    "all-minilm-l6-v2": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}

# transformers' defaults for keys a published config may leave out.
_TIED_BY_DEFAULT = {"gemma2", "gpt2"}
_FAMILY_OF_MODEL_TYPE = {f: f for f in FAMILIES}


@lru_cache(maxsize=None)
def _config_text(slug: str) -> str:
    return resources.files("calculators").joinpath("data", "hf_configs", f"{slug}.json").read_text(encoding="utf-8")


def load_hf_config(slug: str) -> dict[str, Any]:
    """The published config.json of a slug in MODELS, as a fresh dict (read once, cached)."""
    if slug not in MODELS:
        raise ValueError(f"model: unknown model {slug!r}; choose from {', '.join(MODELS)}")
    return json.loads(_config_text(slug))


def from_hf_config(slug: str, display_name: str, config: Mapping[str, Any], hf_repo: str = "") -> Architecture:
    """An Architecture from a transformers config.json dict (model_type one of FAMILIES)."""
    model_type = config.get("model_type")
    family = _FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        raise ValueError(f"config: model_type {model_type!r} is not supported; choose from {', '.join(FAMILIES)}")
    if family == "gpt2":
        h = config["n_embd"]
        return Architecture(
            slug, display_name, family, model_type, "GPT2LMHeadModel", hidden_size=h,
            intermediate_size=config.get("n_inner") or 4 * h, num_hidden_layers=config["n_layer"],
            num_attention_heads=config["n_head"], num_key_value_heads=config["n_head"],
            vocab_size=config["vocab_size"], max_position_embeddings=config["n_positions"],
            tie_word_embeddings=config.get("tie_word_embeddings", True), mlp_kind="gelu",
            attention_bias=True, mlp_bias=True, hf_repo=hf_repo)
    heads = config["num_attention_heads"]
    common = dict(
        hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=heads,
        vocab_size=config["vocab_size"], max_position_embeddings=config["max_position_embeddings"], hf_repo=hf_repo)
    if family == "bert":
        return Architecture(
            slug, display_name, family, model_type, "BertModel", num_key_value_heads=heads,
            tie_word_embeddings=False, mlp_kind="gelu", attention_bias=True, mlp_bias=True,
            type_vocab_size=config.get("type_vocab_size", 2), **common)
    hf_class = (config.get("architectures") or [None])[0] or {
        "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
        "qwen2": "Qwen2ForCausalLM", "gemma2": "Gemma2ForCausalLM", "phi3": "Phi3ForCausalLM"}[family]
    return Architecture(
        slug, display_name, family, model_type, hf_class,
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        tie_word_embeddings=config.get("tie_word_embeddings", family in _TIED_BY_DEFAULT),
        head_dim=config.get("head_dim") or 0,
        num_local_experts=config.get("num_local_experts", 1) if family == "mixtral" else 1,
        num_experts_per_tok=config.get("num_experts_per_tok", 1) if family == "mixtral" else 1,
        mlp_kind="geglu" if family == "gemma2" else "swiglu",
        attention_bias=True if family == "qwen2" else bool(config.get("attention_bias", False)),
        mlp_bias=bool(config.get("mlp_bias", False)) if family == "llama" else False,
        **common)


ARCHITECTURES: dict[str, Architecture] = {
    slug: from_hf_config(slug, name, load_hf_config(slug), repo) for slug, (name, repo) in MODELS.items()
}


# --- target presets -------------------------------------------------------------------

_LLAMA_PRESETS = {
    "q,v": ("q_proj", "v_proj"),
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
# peft-named presets per family: the reader's shorthand for common target sets. A name
# matches every module whose path ends with it, so GPT-2's "c_proj" is both the attention
# and the MLP output ("attn.c_proj" is the attention one), and BERT's "dense" is all four
# dense layers, the pooler's included ("attention.output.dense" is only the attention one).
# "all-linear" is what peft's own "all-linear" shorthand selects: every linear but the LM head
# (on Mixtral, also the router and experts, as peft 0.21 does on transformers 5).
TARGET_PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "llama": _LLAMA_PRESETS, "mistral": _LLAMA_PRESETS, "qwen2": _LLAMA_PRESETS, "gemma2": _LLAMA_PRESETS,
    # Mixtral: peft's "all-linear" also adapts the router and the experts (Architecture.expert_modules).
    "mixtral": {"q,v": ("q_proj", "v_proj"), "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
                "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3", "gate")},
    "phi3": {"q,v": ("qkv_proj",), "attention": ("qkv_proj", "o_proj"),
             "all-linear": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")},
    "gpt2": {"q,v": ("c_attn",), "attention": ("c_attn", "attn.c_proj"), "all-linear": ("c_attn", "c_proj", "c_fc")},
    "bert": {"q,v": ("query", "value"), "attention": ("query", "key", "value", "attention.output.dense"),
             "all-linear": ("query", "key", "value", "dense")},
}


def get_architecture(model: str | Architecture) -> Architecture:
    """Look a model up by slug (e.g. 'llama-2-7b'); ValueError names `model` and the choices."""
    if isinstance(model, Architecture):
        return model
    arch = ARCHITECTURES.get(str(model).strip().lower())
    if arch is None:
        raise ValueError(f"model: unknown model {model!r}; choose from {', '.join(ARCHITECTURES)}")
    return arch


def presets(model: str | Architecture) -> dict[str, tuple[str, ...]]:
    """The target-module presets for a model's family."""
    return TARGET_PRESETS[get_architecture(model).family]


def matches(module: LinearModule, target: str) -> bool:
    """peft's rule for a string in a target list: the module's dotted path is it or ends with '.' + it."""
    return module.name == target or module.path == target or module.path.endswith("." + target)


def resolve_targets(model: str | Architecture, target_modules: str | Sequence[str]) -> tuple[str, ...]:
    """Preset name or peft names (list or comma string) -> the peft names, validated for the family."""
    arch = get_architecture(model)
    family_presets = TARGET_PRESETS[arch.family]
    if isinstance(target_modules, str):
        if target_modules.strip() in family_presets:
            return family_presets[target_modules.strip()]
        names = [part.strip() for part in target_modules.split(",") if part.strip()]
    else:
        names = [str(n).strip() for n in target_modules]
        if len(names) == 1 and names[0] in family_presets:
            return family_presets[names[0]]
    if not names:
        raise ValueError("target_modules: name at least one module, or a preset "
                         f"({', '.join(family_presets)})")
    for name in names:
        if not any(matches(m, name) for m in arch.linear_modules() + arch.expert_modules()):
            raise ValueError(
                f"target_modules: {name!r} is not a module of the {arch.family} family; "
                f"choose from {', '.join(target_module_names(arch))} or a preset ({', '.join(family_presets)})"
            )
    return tuple(dict.fromkeys(names))
