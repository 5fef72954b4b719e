"""Trainable-parameter counts of every PEFT method the book covers, exact against peft.

`count_trainable` returns what `PeftModel.get_nb_trainable_parameters()` reports: the
trainable count and the all-parameter total (base + adapter), and the percentage peft
prints. tests/calculators/test_peft_parity.py checks each method against peft itself.

Methods: full fine-tuning; LoRA (Hu et al. 2021, §4.1: A is r×in, B is out×r); rsLoRA
(Kalajdzievski 2023: same tensors, scale α/√r); DoRA (Liu et al. 2024, §4.1: LoRA plus a
magnitude vector of out_features); AdaLoRA (Zhang et al. 2023: P·Λ·Q, r singular values
each); (IA)³ (Liu et al. 2022, §3.3: one vector per module); prefix tuning (Li & Liang
2021); prompt tuning (Lester et al. 2021); BitFit (Ben Zaken et al. 2022: the biases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from calculators.architectures import Architecture, LinearModule, get_architecture, matches, resolve_targets

METHODS = ("full", "lora", "rslora", "dora", "adalora", "ia3", "prefix", "prompt", "bitfit")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# peft's get_peft_model(autocast_adapter_dtype=True), the default, keeps adapter weights in
# fp32 even on a bf16/fp16 base, and save_pretrained writes them as they are: fp32 is
# what a default peft save weighs; "bf16" is the file after casting the adapter down.
DEFAULT_ADAPTER_DTYPE = "fp32"

# peft's default (IA)³ targets and which of them sit in the feed-forward path (peft's
# TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and ..._FEEDFORWARD_MODULES_MAPPING):
# a feed-forward vector scales the layer's input (in_features), the others its output.
# peft has no entry for phi3: (IA)³ there needs explicit targets, so we raise.
IA3_TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "mistral": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "qwen2": (("q_proj", "v_proj", "down_proj"), ("down_proj",)),
    "gemma2": (("q_proj", "v_proj", "down_proj"), ("down_proj",)),
    "gpt2": (("c_attn", "mlp.c_proj"), ("mlp.c_proj",)),
    "bert": (("key", "value", "output.dense"), ("output.dense",)),
    # peft's mixtral entry is k_proj, v_proj, w2; w2 is no module on transformers 5, and peft
    # adapts what it finds: k_proj and v_proj.
    "mixtral": (("k_proj", "v_proj"), ()),
}


@dataclass(frozen=True)
class ModuleCount:
    """Trainable parameters added to one kind of module (all `count` copies).

    `r` is the adapter's inner width: A is r × in_features, B out_features × r (Mixtral's
    stacked experts: r · num_experts, doubled for the fused w1,w3). (IA)³ has r = 0.
    """

    name: str
    path: str
    in_features: int
    out_features: int
    count: int
    r: int
    n_params_each: int
    n_params: int


@dataclass(frozen=True)
class TrainableParams:
    """What peft's print_trainable_parameters says, with the per-module breakdown."""

    method: str
    trainable: int
    total: int  # every parameter of the (peft-wrapped) model, as peft counts it
    base_total: int  # the base model alone
    percent: float  # 100 · trainable / total, as peft's print_trainable_parameters
    per_module: tuple[ModuleCount, ...]
    adapter_bytes: int  # the saved adapter's tensors: trainable · bytes per element of `dtype`

    def to_dict(self) -> dict:
        return {
            "method": self.method, "trainable": self.trainable, "total": self.total, "base_total": self.base_total,
            "percent": self.percent, "adapter_bytes": self.adapter_bytes,
            "per_module": [m.__dict__ for m in self.per_module],
        }


def lora_module_params(in_features: int, out_features: int, r: int) -> int:
    """A (r × in) plus B (out × r): r · (in + out), against in · out for the full matrix."""
    return r * (in_features + out_features)


def _targeted(arch: Architecture, targets: Sequence[str]) -> list[LinearModule]:
    """Every linear kind a peft target list matches (a name may match several kinds)."""
    return list(_targeted_cached(arch, tuple(targets)))


@lru_cache(maxsize=1024)
def _targeted_cached(arch: Architecture, targets: tuple[str, ...]) -> tuple[LinearModule, ...]:
    return tuple(m for m in arch.linear_modules() if any(matches(m, t) for t in targets))


def _check_rank(r: int, modules: Sequence[LinearModule], arch: Architecture, name: str = "r") -> None:
    """r must be in [1, min(in, out)] of every targeted layer: a larger rank adds parameters, not expressiveness."""
    narrowest = min(modules, key=lambda m: min(m.in_features, m.out_features))
    width = min(narrowest.in_features, narrowest.out_features)
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= width:
        raise ValueError(
            f"{name}: must be between 1 and {width} for {arch.slug} (min(in_features, out_features) of "
            f"{narrowest.path or narrowest.name}, {narrowest.in_features}->{narrowest.out_features}), got {r!r}"
        )


def _pattern_rank(module: LinearModule, r: int, rank_pattern: Mapping[str, int]) -> int:
    """peft's rank_pattern: the first key (in order) that the module's path ends with, else r."""
    for key, rank in rank_pattern.items():
        if matches(module, key):
            return rank
    return r


def _lora_modules(arch: Architecture, r: int, targets: Sequence[str], rank_pattern: Mapping[str, int],
                  extra_per_module: int = 0) -> list[ModuleCount]:
    """r(in + out) per module (plus `extra_per_module` · r: AdaLoRA's singular values)."""
    modules = _targeted(arch, targets)
    ranks = [_pattern_rank(m, r, rank_pattern) for m in modules]
    at_r = [m for m, rank in zip(modules, ranks) if rank == r]
    if at_r:
        _check_rank(r, at_r, arch, "r")
    counts = []
    for m, rank in zip(modules, ranks):
        if rank != r:
            _check_rank(rank, [m], arch, "rank_pattern")
        each = lora_module_params(m.in_features, m.out_features, rank) + extra_per_module * rank
        counts.append(ModuleCount(m.name, m.path, m.in_features, m.out_features, m.count, rank, each, each * m.count))
    return counts


def _expert_lora_modules(arch: Architecture, r: int, targets: Sequence[str], method: str) -> list[ModuleCount]:
    """LoRA on Mixtral's router and fused experts, as peft 0.21 builds it on transformers 5 (ParamWrapper).

    A 3-D expert tensor gets one stacked adapter, A (r·E × in) and B (out × r·E): r per
    expert. w1 and w3 live in one gate_up_proj tensor, so peft targets them together at rank
    2r (alpha 2α, scale unchanged): 2r·E·(h + 2i) per layer. The router: r·(h + E); its
    rank may exceed its E outputs (peft allows it, and "all-linear" at r=16 is common), so
    the r <= min(in, out) rule skips it.
    """
    targeted = {m.name: m for m in arch.expert_modules() if any(matches(m, t) for t in targets)}
    if not targeted:
        return []
    if method in ("dora", "adalora"):
        raise ValueError(f"method: peft has no {method} for Mixtral's router and fused experts "
                         f"({', '.join(targeted)}); target attention only")
    if ("w1" in targeted) != ("w3" in targeted):
        raise ValueError("target_modules: w1 and w3 are fused into one gate_up_proj tensor in transformers 5; "
                         "target both or neither")
    if targeted.keys() - {"gate"}:
        _check_rank(r, [m for name, m in targeted.items() if name != "gate"], arch, "r")
    h, i, n, e = arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers, arch.num_local_experts
    counts = []
    if "w1" in targeted:
        each = lora_module_params(h, 2 * i, 2 * r * e)
        counts.append(ModuleCount("w1,w3", "mlp.experts.gate_up_proj", h, 2 * i, n, 2 * r * e, each, each * n))
    if "w2" in targeted:
        each = lora_module_params(i, h, r * e)
        counts.append(ModuleCount("w2", "mlp.experts.down_proj", i, h, n, r * e, each, each * n))
    if "gate" in targeted:
        each = lora_module_params(h, e, r)
        counts.append(ModuleCount("gate", "mlp.gate", h, e, n, r, each, each * n))
    return counts


def _check_rank_pattern(arch: Architecture, rank_pattern: Mapping[str, int] | None) -> dict[str, int]:
    if rank_pattern is None:
        return {}
    if not isinstance(rank_pattern, Mapping):
        raise ValueError(f"rank_pattern: must be a mapping of module name to rank, got {rank_pattern!r}")
    for key, rank in rank_pattern.items():
        if not any(matches(m, str(key)) for m in arch.linear_modules()):
            linear = dict.fromkeys(m.name for m in arch.linear_modules() if m.group != "head")
            raise ValueError(f"rank_pattern: {key!r} is not a linear module of the {arch.family} family; "
                             f"choose from {', '.join(linear)}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank_pattern: rank for {key!r} must be a positive integer, got {rank!r}")
    return dict(rank_pattern)


def _biases(arch: Architecture) -> int:
    """All bias vectors: linear layers' plus LayerNorm's (RMSNorm has none, so Llama-style models have 0)."""
    linear = sum(m.count * m.out_features for m in arch.linear_modules() if m.bias)
    layernorm = (2 * arch.num_hidden_layers + 1) * arch.hidden_size if arch.family in ("bert", "gpt2") else 0
    return linear + layernorm


def _prefix_token_dim(arch: Architecture) -> int:
    """peft sizes key/value prefixes at kv_heads · head_dim for configs with num_key_value_heads (peft #1901)."""
    return arch.hidden_size if arch.family in ("bert", "gpt2") else arch.kv_dim


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return value


def count_trainable(
    model: str | Architecture,
    method: str = "lora",
    r: int = 8,
    target_modules: str | Sequence[str] = "q,v",
    rank_pattern: Mapping[str, int] | None = None,
    num_virtual_tokens: int = 20,
    prefix_projection: bool = False,
    encoder_hidden_size: int | None = None,
    dtype: str = DEFAULT_ADAPTER_DTYPE,
) -> TrainableParams:
    """Trainable and total parameters for `method` on `model`, as peft's get_nb_trainable_parameters() counts them.

    LoRA: Σ count · r(in + out) over the targeted modules (rsLoRA: the same count, scale
    α/√r). DoRA adds out_features per module; AdaLoRA r singular values per module (and
    peft counts one frozen `ranknum` each in the total). (IA)³: one vector per module;
    prefix: tokens · layers · 2 · kv_heads · head_dim; prompt: tokens · hidden_size;
    BitFit: every bias (0 for bias-free models such as Llama: BitFit does not apply).
    `target_modules`: a preset of TARGET_PRESETS ("q,v", "attention", "all-linear") or
    peft names (list or comma string; Mixtral's router and experts too: gate, w1, w2, w3);
    `rank_pattern`: per-module ranks of linear modules, peft's first-matching-key rule
    (literal names, not regexes).
    """
    arch = get_architecture(model)
    if method not in METHODS:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    _positive_int("num_virtual_tokens", num_virtual_tokens)
    base = arch.n_params
    per_module: list[ModuleCount] = []
    frozen_extra = 0

    if method in ("lora", "rslora", "dora", "adalora"):
        targets = resolve_targets(arch, target_modules)
        _positive_int("r", r)
        per_module = _lora_modules(arch, r, targets, _check_rank_pattern(arch, rank_pattern),
                                   extra_per_module=1 if method == "adalora" else 0)
        experts = _expert_lora_modules(arch, r, targets, method)
        if method == "dora":  # the magnitude vector: one entry per output feature
            per_module = [
                ModuleCount(m.name, m.path, m.in_features, m.out_features, m.count, m.r,
                            m.n_params_each + m.out_features, (m.n_params_each + m.out_features) * m.count)
                for m in per_module
            ]
        if method == "adalora":
            frozen_extra = sum(m.count for m in per_module)  # peft's ranknum, one frozen scalar per module
        per_module += experts
        trainable = sum(m.n_params for m in per_module)
        total = base + trainable + frozen_extra
    elif method == "ia3":
        if arch.family not in IA3_TARGETS:
            raise ValueError(f"method: peft has no default (IA)³ targets for the {arch.family} family ({arch.slug}); "
                             f"families with defaults: {', '.join(IA3_TARGETS)}")
        targets, feedforward = IA3_TARGETS[arch.family]
        for m in _targeted(arch, targets):
            width = m.in_features if any(matches(m, f) for f in feedforward) else m.out_features
            per_module.append(
                ModuleCount(m.name, m.path, m.in_features, m.out_features, m.count, 0, width, width * m.count))
        trainable = sum(m.n_params for m in per_module)
        total = base + trainable
    elif method == "prefix":
        token_dim = _prefix_token_dim(arch)
        width = arch.num_hidden_layers * 2 * token_dim  # a key and a value prefix per layer
        if prefix_projection:  # embedding -> Linear(token_dim, hidden) -> tanh -> Linear(hidden, width)
            hidden = (token_dim if encoder_hidden_size is None
                      else _positive_int("encoder_hidden_size", encoder_hidden_size))
            trainable = num_virtual_tokens * token_dim + (token_dim * hidden + hidden) + (hidden * width + width)
        else:
            trainable = num_virtual_tokens * width
        total = base + trainable
    elif method == "prompt":
        trainable = num_virtual_tokens * arch.hidden_size
        total = base + trainable
    elif method == "bitfit":
        trainable = _biases(arch)
        total = base
    else:  # full
        trainable = base
        total = base
    return TrainableParams(
        method=method,
        trainable=trainable,
        total=total,
        base_total=base,
        percent=100.0 * trainable / total,
        per_module=tuple(per_module),
        adapter_bytes=trainable * DTYPE_BYTES[dtype],
    )


def classification_head_params(model: str | Architecture, num_labels: int) -> int:
    """A fresh sequence-classification head: BERT's classifier has a bias, Llama's score does not."""
    arch = get_architecture(model)
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels: must be a positive integer, got {num_labels!r}")
    return arch.hidden_size * num_labels + (num_labels if arch.family == "bert" else 0)


def bottleneck_adapter_params(model: str | Architecture, bottleneck: int, placement: str = "houlsby") -> int:
    """Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): down d→m and up m→d, with biases.

    Each adapter has 2·d·m + m + d parameters; Houlsby puts two per layer (after attention
    and after the MLP), Pfeiffer one (after the MLP).
    """
    arch = get_architecture(model)
    per_layer = {"houlsby": 2, "pfeiffer": 1}.get(placement)
    if per_layer is None:
        raise ValueError(f"placement: must be 'houlsby' or 'pfeiffer', got {placement!r}")
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise ValueError(f"bottleneck: must be a positive integer, got {bottleneck!r}")
    d = arch.hidden_size
    return arch.num_hidden_layers * per_layer * (2 * d * bottleneck + bottleneck + d)
