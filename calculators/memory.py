"""Peak GPU memory of one training step: weights, gradients, optimizer, activations, logits.

The estimate is what `torch.cuda.max_memory_allocated()` reports over a steady-state step
(step ≥ 2: optimizer states exist, gradients were freed by `zero_grad(set_to_none=True)`) of a
Hugging Face transformers model with peft adapters (default `autocast_adapter_dtype=True`: fp32
adapters) and bitsandbytes quantization, following the recipe a reader runs:

* LoRA / DoRA on a 16-bit base, no autocast (the model loaded in `base_dtype`);
* QLoRA: `BitsAndBytesConfig(load_in_4bit, nf4, double quant, bf16 compute)`, then
  `prepare_model_for_kbit_training` (`prepare_kbit=True`, peft's and TRL's recipe: embeddings,
  norms and lm_head cast to fp32), then `get_peft_model`;
* full fine-tuning: fp32 weights under bf16 autocast (torch AMP, Trainer `bf16=True`) by
  default, or pure 16-bit weights (`base_dtype="bf16"`), optionally with an fp32 master copy
  (`master_weights=True`, the ZeRO accounting);
* gradient checkpointing as transformers 5 enables it (`torch.utils.checkpoint` around each
  decoder layer);
* the optimizer by its `TrainingArguments.optim` name (`calculators.optimizers`).

Paged optimizers' large states live in CUDA unified memory, outside PyTorch's allocator: they are
counted here (they sit on the device during the step) and reported as `paged_optimizer_bytes`,
which `max_memory_allocated` does not see. The CUDA context is reported separately
(`cuda_context_bytes`).

Peak = persistent state + the largest of a few moments of the step (`phases`):
  * loss forward — every saved activation, the logits, their fp32 copy and the log-probs;
  * loss backward — every saved activation plus the cross-entropy's fp32 buffers (12·T·V);
  * backward, last layer — every saved activation (checkpointing: the stored block inputs and
    one recomputed block) plus one block's backward temporaries;
  * backward, first layer — the gradients made so far plus the first block's activations and temporaries;
  * optimizer step — all gradients plus the optimizer's temporaries;
  * forward, last layer — when the forward makes big transients (attention scores of the math
    and eager kernels, dequantized weights, DoRA's weight norm, autocast's weight cache).
What each block keeps is walked op by op in `calculators.activations`. Pure Python: runs under
Pyodide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from calculators import nf4, optimizers, params
from calculators.activations import (
    ATTENTION_KERNELS,
    ATTN_IMPLS,
    ENCODER_FAMILIES,
    RMSNORM_FAMILIES,
    HeadActivations,
    LayerActivations,
    Recipe,
    attention_kernel,
    checkpointed_inputs_bytes,
    eager_scores_bytes,
    head_activation_bytes,
    korthikanti_activation_bytes,
    layer_activation_bytes,
    logits_forward_bytes,
    logits_peak_bytes,
)
from calculators.architectures import ARCHITECTURES, Architecture, LinearModule, get_architecture
from calculators.gpus import GPUS, Gpu
from calculators.optimizers import OPTIMIZER_ALIASES, OPTIMIZERS, ParamTensor, canonical_optimizer

__all__ = [
    "METHODS",
    "BASE_DTYPES",
    "OPTIMIZERS",
    "OPTIMIZER_ALIASES",
    "ATTN_IMPLS",
    "DTYPE_BYTES",
    "DEFAULT_CUDA_CONTEXT_BYTES",
    "COMPONENTS",
    "BytesPerParam",
    "full_ft_bytes_per_param",
    "weight_bytes",
    "qlora_base_bytes",
    "BaseWeights",
    "base_weights",
    "Recipe",
    "LayerActivations",
    "HeadActivations",
    "layer_activation_bytes",
    "logits_peak_bytes",
    "adapted_modules",
    "attention_kernel",
    "checkpointed_inputs_bytes",
    "eager_scores_bytes",
    "korthikanti_activation_bytes",
    "optimizer_state_bytes_per_param",
    "trainable_tensors",
    "GpuVerdict",
    "gpu_verdicts",
    "PhaseMemory",
    "MemoryEstimate",
    "estimate_memory",
    "MethodPoint",
    "ModelSizePoint",
    "ModelSizeCurves",
    "memory_vs_model_size",
    "autocast_weight_copies_bytes",
    "longest_fitting_seq_len",
]

MIB = 2**20
GIB = 2**30

METHODS = ("full", "lora", "rslora", "qlora", "dora", "ia3", "prefix", "prompt", "bitfit")
ADAPTER_METHODS = ("lora", "rslora", "qlora", "dora")
BASE_DTYPES = ("fp32", "bf16", "fp16", "int8", "nf4")
DENSE_DTYPES = ("fp32", "bf16", "fp16")
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

# torch + CUDA 12 with lazy module loading: ~300-500 MiB for the context, cuBLAS and cuDNN
# handles; it shows in nvidia-smi but never in max_memory_allocated.
DEFAULT_CUDA_CONTEXT_BYTES = 500 * MIB
# Families whose configs enable dropout by default (GPT-2's *_pdrop, BERT's *_dropout_prob).
_FAMILY_DROPOUT = {"gpt2": 0.1, "bert": 0.1}


# ---------------------------------------------------------------------------- per-parameter costs


@dataclass(frozen=True)
class BytesPerParam:
    """Bytes per trainable parameter of a training setup; indexable by part name for the book."""

    weights: float
    grads: float
    master: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.master + self.optimizer

    def keys(self) -> tuple[str, ...]:
        return ("weights", "grads", "master", "optimizer", "total")

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, part: object) -> bool:
        return part in self.keys()

    def __getitem__(self, part: str) -> float:
        if part not in self.keys():
            raise KeyError(part)
        return getattr(self, part)

    def to_dict(self) -> dict[str, float]:
        return {k: self[k] for k in self.keys()}


def optimizer_state_bytes_per_param(optimizer: str, state_dtype: str, momentum: float = 0.0, numel: int | None = None) -> float:
    """Optimizer state per parameter (`calculators.optimizers`): AdamW 2 states in the optimized
    params' dtype (PyTorch's `zeros_like(p)`); 8-bit AdamW 2 × (1 + 4/256) (Dettmers et al. 2022),
    fp32 for tensors under 4096 elements; Adafactor ≈ 0 for a large matrix; SGD 0, or 1 with momentum."""
    bytes_per = DTYPE_BYTES[state_dtype]
    if numel is None:
        return optimizers.state_bytes_per_param(optimizer, bytes_per, momentum)
    return optimizers.state_bytes(optimizer, [ParamTensor(numel, 0, 1)], bytes_per, momentum) / numel


def full_ft_bytes_per_param(weights_dtype: str = "bf16", optimizer: str = "adamw_torch_fused", master_weights: bool = True) -> BytesPerParam:
    """Full fine-tuning per parameter; the default is mixed-precision AdamW (Micikevicius et al.
    2018; ZeRO, Rajbhandari et al. 2020, §3.1): 2 (bf16 weights) + 2 (bf16 grads) + 4 (fp32
    master) + 8 (Adam m, v in fp32) = 16 bytes."""
    _check_choice("weights_dtype", weights_dtype, DENSE_DTYPES)
    optimizer = canonical_optimizer(optimizer)
    w = DTYPE_BYTES[weights_dtype]
    master = 4 if master_weights and w < 4 else 0
    state_dtype = "fp32" if master else weights_dtype
    return BytesPerParam(float(w), float(w), float(master), optimizer_state_bytes_per_param(optimizer, state_dtype, momentum=0.9))


# ---------------------------------------------------------------------------- weights


def weight_bytes(n_params: int, dtype: str) -> int:
    """Storage of n parameters in dtype, codes only: fp32 4, bf16/fp16 2, int8 1, nf4 ½ byte."""
    _check_int("n_params", n_params, 0)
    _check_choice("dtype", dtype, BASE_DTYPES)
    if dtype == "nf4":
        return -(-n_params // 2)
    if dtype == "int8":
        return n_params
    return n_params * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class BaseWeights:
    """The frozen (or, full FT, trained) base model as stored on the device."""

    quantized_params: int  # block linear weights stored in int8 / nf4 (0 for dense bases)
    dense_params: int  # everything kept in the dense dtype (embeddings, norms, biases, lm_head)
    weights_bytes: int  # codes of quantized weights + dense weights
    quant_constants_bytes: int  # absmax / scales / double-quant constants

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.quant_constants_bytes


def _quantized_tensors(arch: Architecture) -> list[tuple[int, int, int]]:
    """(in_features, out_features, count) of every tensor bitsandbytes quantizes: the blocks'
    linear layers (transformers skips lm_head and keeps embeddings and norms dense), plus
    Mixtral's expert matrices."""
    tensors = [(m.in_features, m.out_features, m.count) for m in arch.linear_modules() if m.group in ("attention", "mlp")]
    if arch.num_local_experts > 1:
        h, i, e, n = arch.hidden_size, arch.intermediate_size, arch.num_local_experts, arch.num_hidden_layers
        tensors += [(h, i, 2 * e * n), (i, h, e * n)]
    return tensors


def base_weights(arch: Architecture, base_dtype: str, compute_dtype: str = "bf16", double_quant: bool = True,
                 blocksize: int = 64) -> BaseWeights:
    """Bytes of the base model in base_dtype.

    nf4 (QLoRA, Dettmers et al. 2023 §3): ⌈n/2⌉ code bytes per tensor + one fp32 absmax per 64
    weights, or with double quantization one byte per block + fp32 per 256 blocks + an fp32
    offset (`nf4.nf4_model_bytes`), plus the 16-entry fp32 code book each QuantState holds and,
    doubly quantized, the 256-entry fp32 code of its nested 8-bit state (bitsandbytes 0.50: one
    per tensor, counted from the real QuantState objects in tests/training/test_memory_measured.py).
    int8 (LLM.int8(), Dettmers et al. 2022): one byte per weight + one fp32 scale per output row.
    Unquantized parts stay in `compute_dtype` (transformers' `torch_dtype`).
    """
    if base_dtype in DENSE_DTYPES:
        return BaseWeights(0, arch.n_params, arch.n_params * DTYPE_BYTES[base_dtype], 0)
    tensors = _quantized_tensors(arch)
    quantized = sum(i * o * c for i, o, c in tensors)
    dense = arch.n_params - quantized
    dense_bytes = dense * DTYPE_BYTES[compute_dtype]
    if base_dtype == "int8":
        return BaseWeights(quantized, dense, quantized + dense_bytes, sum(4 * o * c for _, o, c in tensors))
    codes = constants = 0
    for i, o, c in tensors:
        footprint = nf4.nf4_model_bytes(i * o, blocksize=blocksize, double_quant=double_quant)
        codes += c * footprint.code_bytes
        constants += c * (footprint.constant_bytes + 16 * 4 + (256 * 4 if double_quant else 0))
    return BaseWeights(quantized, dense, codes + dense_bytes, constants)


def qlora_base_bytes(model: str | Architecture, double_quant: bool = True) -> int:
    """A QLoRA base in memory: NF4 block linears with their constants, the rest in bf16."""
    return base_weights(get_architecture(model), "nf4", "bf16", double_quant).total_bytes


def adapted_modules(arch: Architecture, counted: params.TrainableParams) -> list[tuple[LinearModule, int]]:
    """The block linears an adapter wraps, with their rank: each keeps its own input for ∂L/∂A."""
    by_path = {m.path: m for m in arch.linear_modules()}
    adapted = []
    for module_count in counted.per_module:
        module = by_path.get(module_count.path)
        if module is not None and module.group in ("attention", "mlp"):
            adapted.append((module, module_count.r))
    return adapted


# ---------------------------------------------------------------------------- trainable tensors


def trainable_tensors(arch: Architecture, counted: params.TrainableParams, full: bool) -> list[ParamTensor]:
    """Every trainable tensor by shape (the optimizers' size rules and Adafactor's factoring need shapes).

    Full FT: every linear weight (out × in) and bias, the embeddings, norm vectors and MoE
    experts. Adapters: LoRA's A (r × in) and B (out × r), DoRA's magnitude, (IA)³'s vectors;
    prefix / prompt tuning one block of parameters.
    """
    if full:
        tensors: list[ParamTensor] = []
        counted_params = 0
        for m in arch.linear_modules():
            tensors.append(ParamTensor(m.out_features, m.in_features, m.count))
            if m.bias:
                tensors.append(ParamTensor(m.out_features, 0, m.count))
            counted_params += m.n_params
        tensors.append(ParamTensor(arch.vocab_size, arch.hidden_size, 1))
        counted_params += arch.vocab_size * arch.hidden_size
        if arch.num_local_experts > 1:
            h, i, e, n = arch.hidden_size, arch.intermediate_size, arch.num_local_experts, arch.num_hidden_layers
            tensors += [ParamTensor(2 * i, h, e * n), ParamTensor(h, i, e * n), ParamTensor(e, h, n)]
            counted_params += arch.n_params_expert_mlp
        rest = arch.n_params - counted_params  # norms, position and token-type embeddings: vectors and small tables
        if rest > 0:
            tensors.append(ParamTensor(arch.hidden_size, 0, rest // arch.hidden_size))
            if rest % arch.hidden_size:
                tensors.append(ParamTensor(rest % arch.hidden_size, 0, 1))
        return tensors
    if not counted.per_module:
        return [ParamTensor(counted.trainable, 0, 1)] if counted.trainable else []
    tensors = []
    for m in counted.per_module:
        if m.r == 0:  # (IA)³: one vector per module
            tensors.append(ParamTensor(m.n_params_each, 0, m.count))
            continue
        tensors += [ParamTensor(m.r, m.in_features, m.count), ParamTensor(m.out_features, m.r, m.count)]
        extra = m.n_params_each - m.r * (m.in_features + m.out_features)
        if extra > 0:  # DoRA's magnitude
            tensors.append(ParamTensor(extra, 0, m.count))
    return tensors


# ---------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class GpuVerdict:
    """Does the step fit on one GPU? fits ⇔ total_with_context ≤ the GPU's usable memory."""

    name: str
    slug: str
    memory_bytes: int  # nominal
    usable_bytes: int
    fits: bool
    headroom_bytes: int  # usable − total_with_context (negative when it does not fit)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def gpu_verdicts(total_with_context_bytes: int, gpus: Sequence[Gpu] = GPUS) -> tuple[GpuVerdict, ...]:
    """One verdict per GPU for a step needing total_with_context_bytes."""
    return tuple(
        GpuVerdict(g.name, g.slug, g.memory_bytes, g.usable_bytes, total_with_context_bytes <= g.usable_bytes,
                   g.usable_bytes - total_with_context_bytes)
        for g in gpus
    )


# ---------------------------------------------------------------------------- the estimate

COMPONENTS = ("weights", "quant_constants", "adapter_weights", "gradients", "optimizer_states", "master_weights",
              "weight_copies", "activations", "logits_and_loss", "temporary")


@dataclass(frozen=True)
class PhaseMemory:
    """Allocated bytes at one moment of the step, by component (same names as MemoryEstimate)."""

    name: str
    weights: int
    quant_constants: int
    adapter_weights: int
    gradients: int
    optimizer_states: int
    master_weights: int
    weight_copies: int
    activations: int
    logits_and_loss: int
    temporary: int

    @property
    def total_bytes(self) -> int:
        return sum(getattr(self, c) for c in COMPONENTS)

    def to_dict(self) -> dict:
        return {"name": self.name, **{c: getattr(self, c) for c in COMPONENTS}, "total_bytes": self.total_bytes}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak allocated memory of a training step, broken down at the peak moment."""

    model: str
    method: str
    base_dtype: str
    optimizer: str  # transformers' TrainingArguments.optim name
    batch_size: int
    seq_len: int
    r: int
    gradient_checkpointing: bool
    attn_impl: str
    prepare_kbit: bool  # QLoRA: prepare_model_for_kbit_training (fp32 non-quantized parameters)
    autocast: bool
    attention_kernel: str  # what CUDA runs: flash | efficient | math | eager
    residual_dtype: str  # the hidden states' dtype between blocks
    n_params: int  # base model
    trainable_params: int
    # the breakdown at the peak (sums to total_bytes)
    weights_bytes: int  # base weights (quantized codes + dense parts); full FT: the trained weights
    quant_constants_bytes: int
    adapter_weights_bytes: int  # trainable adapter tensors (0 for full FT)
    gradients_bytes: int
    optimizer_states_bytes: int
    master_weights_bytes: int
    weight_copies_bytes: int  # autocast's 16-bit copies of fp32 weights
    activations_bytes: int  # saved for backward at the peak (checkpointing: layer inputs + one layer)
    logits_and_loss_bytes: int
    temporary_bytes: int  # transients at the peak: backward buffers, optimizer temporaries, dequantized weights
    total_bytes: int  # on the device; ≈ torch.cuda.max_memory_allocated() + paged_optimizer_bytes
    paged_optimizer_bytes: int  # optimizer states in CUDA unified memory (not in max_memory_allocated)
    cuda_context_bytes: int
    total_with_context_bytes: int
    peak_phase: str
    saved_activations_bytes: int  # what the forward keeps for backward, log-probs excluded (checkpointing: + one recomputed block)
    kept_after_forward_bytes: int  # every tensor alive after the forward for the backward, log-probs and weight copies included
    layer: LayerActivations  # one middle block
    head: HeadActivations
    phases: tuple[PhaseMemory, ...]
    verdicts: tuple[GpuVerdict, ...]
    notes: tuple[str, ...]

    def breakdown(self) -> dict[str, int]:
        """Component → bytes at the peak, in plotting order."""
        return {c: getattr(self, c + "_bytes") for c in COMPONENTS}

    def phase(self, name: str) -> PhaseMemory:
        for p in self.phases:
            if p.name == name:
                return p
        raise ValueError(f"phase: no phase named {name!r}; phases are {', '.join(p.name for p in self.phases)}")

    def to_dict(self) -> dict:
        skip = ("phases", "verdicts", "notes", "layer", "head")
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        out["phases"] = [p.to_dict() for p in self.phases]
        out["verdicts"] = [v.to_dict() for v in self.verdicts]
        out["notes"] = list(self.notes)
        return out


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer ≥ {minimum}, got {value!r}")


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0 or math.isnan(value):
        raise ValueError(f"{name}: must be a number in [0, 1), got {value!r}")


def _check_flag(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be true or false, got {value!r}")


def _resolve_optimizer(optimizer: str, fused_optimizer: bool | None) -> str:
    """transformers' name; the older fused_optimizer flag picks between AdamW's fused and foreach forms."""
    name = canonical_optimizer(optimizer)
    if fused_optimizer is not None and name in ("adamw_torch", "adamw_torch_fused"):
        name = "adamw_torch_fused" if fused_optimizer else "adamw_torch"
    return name


def estimate_memory(
    model: str | Architecture,
    method: str = "lora",
    r: int = 16,
    target_modules: str | Sequence[str] = "all-linear",
    base_dtype: str | None = None,
    optimizer: str = "adamw_torch_fused",
    batch_size: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = False,
    attn_impl: str = "sdpa",
    double_quant: bool = True,
    master_weights: bool | None = None,
    adapter_dtype: str = "fp32",
    compute_dtype: str = "bf16",
    lora_dropout: float = 0.0,
    hidden_dropout: float | None = None,
    attention_dropout: float | None = None,
    momentum: float = 0.0,
    gradient_accumulation_steps: int = 1,
    num_virtual_tokens: int = 20,
    fused_optimizer: bool | None = None,
    prepare_kbit: bool = True,
    autocast: bool | None = None,
    attention_kernel: str | None = None,
    cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES,
    gpus: Sequence[Gpu] = GPUS,
) -> MemoryEstimate:
    """Peak allocated memory of one training step, its breakdown and a fit verdict per GPU.

    base_dtype None: nf4 for qlora, fp32 for full (with bf16 autocast), bf16 otherwise.
    autocast None: on for full fine-tuning of fp32 weights (mixed precision), off otherwise;
    `compute_dtype` is both bitsandbytes' compute dtype and the autocast dtype.
    prepare_kbit: a quantized base went through peft's `prepare_model_for_kbit_training`.
    master_weights: an fp32 copy of 16-bit trained weights (ZeRO-style; None = none).
    attention_kernel: None for what a CUDA device picks (`activations.attention_kernel`), or
    flash / efficient / math / eager to say which one runs (a CPU runs flash for every dtype).
    optimizer: a `TrainingArguments.optim` name (or an old alias, `calculators.optimizers`);
    fused_optimizer (older flag) picks AdamW's fused or foreach form. Dropouts None: the
    family's config default (GPT-2, BERT 0.1; Llama-style 0). Sources per term: `base_weights`,
    `calculators.activations`, `calculators.optimizers`.
    """
    arch = get_architecture(model)
    _check_choice("method", method, METHODS)
    if base_dtype is None:
        base_dtype = {"qlora": "nf4", "full": "fp32"}.get(method, "bf16")
    _check_choice("base_dtype", base_dtype, BASE_DTYPES)
    _check_flag("fused_optimizer", fused_optimizer, allow_none=True)
    optimizer = _resolve_optimizer(optimizer, fused_optimizer)
    _check_choice("attn_impl", attn_impl, ATTN_IMPLS)
    if attention_kernel is not None:
        _check_choice("attention_kernel", attention_kernel, ATTENTION_KERNELS)
    _check_choice("adapter_dtype", adapter_dtype, DENSE_DTYPES)
    _check_choice("compute_dtype", compute_dtype, DENSE_DTYPES)
    _check_int("batch_size", batch_size, 1)
    _check_int("seq_len", seq_len, 1)
    _check_int("r", r, 1)
    _check_int("gradient_accumulation_steps", gradient_accumulation_steps, 1)
    _check_int("num_virtual_tokens", num_virtual_tokens, 1)
    _check_int("cuda_context_bytes", cuda_context_bytes, 0)
    _check_fraction("lora_dropout", lora_dropout)
    _check_fraction("momentum", momentum)
    for flag_name, flag in (("gradient_checkpointing", gradient_checkpointing), ("double_quant", double_quant),
                            ("prepare_kbit", prepare_kbit)):
        _check_flag(flag_name, flag)
    _check_flag("master_weights", master_weights, allow_none=True)
    _check_flag("autocast", autocast, allow_none=True)
    if method == "qlora" and base_dtype != "nf4":
        raise ValueError(f"base_dtype: qlora quantizes the base to nf4, got {base_dtype!r} (use method='lora' for a {base_dtype} base)")
    if method == "full" and base_dtype not in DENSE_DTYPES:
        raise ValueError(f"base_dtype: full fine-tuning trains the base weights, which cannot be {base_dtype} (choose fp32, bf16 or fp16)")
    if momentum > 0 and optimizer != "sgd":
        raise ValueError(f"momentum: applies to optimizer='sgd' only, got optimizer={optimizer!r}")
    full = method == "full"
    quantized = base_dtype in ("int8", "nf4")
    if master_weights is None:
        master_weights = False
    if master_weights and not full:
        raise ValueError("master_weights: only full fine-tuning has 16-bit trained weights to shadow; adapters train in adapter_dtype")
    if master_weights and DTYPE_BYTES[base_dtype] == 4:
        raise ValueError("master_weights: the weights are already fp32")
    if autocast is None:
        autocast = full and base_dtype == "fp32" and not master_weights
    hidden_dropout = _FAMILY_DROPOUT.get(arch.family, 0.0) if hidden_dropout is None else hidden_dropout
    attention_dropout = _FAMILY_DROPOUT.get(arch.family, 0.0) if attention_dropout is None else attention_dropout
    _check_fraction("hidden_dropout", hidden_dropout)
    _check_fraction("attention_dropout", attention_dropout)

    notes: list[str] = []
    # The dense (non-quantized) weights set the residual stream's dtype: prepare_model_for_kbit_training
    # casts them to fp32; otherwise a quantized base keeps them in the compute dtype.
    dense_dtype = ("fp32" if prepare_kbit else compute_dtype) if quantized else base_dtype
    e_res = DTYPE_BYTES[dense_dtype]
    recipe = Recipe(
        residual_bytes=e_res, compute_bytes=DTYPE_BYTES[compute_dtype], adapter_bytes=DTYPE_BYTES[adapter_dtype],
        quantized=quantized, autocast=autocast, base_trainable=full,
        # prepare_model_for_kbit_training with (reentrant) checkpointing makes the embedding output require grad
        input_requires_grad=full or method in ("prefix", "prompt") or (quantized and prepare_kbit and gradient_checkpointing),
    )

    # Trainable parameters (peft's counts), their dtype and shapes.
    params_method = {"qlora": "lora"}.get(method, method)
    counted = params.count_trainable(arch, params_method, r=r, target_modules=target_modules,
                                     num_virtual_tokens=num_virtual_tokens)
    trainable = counted.trainable
    train_dtype = base_dtype if full else adapter_dtype
    tb = DTYPE_BYTES[train_dtype]
    state_param_bytes = 4 if master_weights else tb
    tensors = trainable_tensors(arch, counted, full)

    base = base_weights(arch, base_dtype, dense_dtype, double_quant)
    adapter_weights = 0 if full else trainable * tb
    gradients = trainable * tb
    master = trainable * 4 if master_weights else 0
    optimizer_states = optimizers.state_bytes(optimizer, tensors, state_param_bytes, momentum)
    optimizer_temp = optimizers.step_temporary_bytes(optimizer, tensors, state_param_bytes)
    paged = optimizers.paged_state_bytes(optimizer, tensors, state_param_bytes)
    if paged:
        notes.append("Paged optimizer: the states of large tensors live in CUDA unified memory, outside PyTorch's "
                     "allocator (torch.cuda.max_memory_allocated does not count them); they are on the device during "
                     "the step and can be evicted to CPU RAM under pressure. Counted here on the device.")
    if master_weights:
        notes.append("fp32 master weights and fp32 optimizer states beside 16-bit weights and gradients (ZeRO's accounting).")
    if full and autocast and e_res == 4:
        notes.append(f"Mixed precision: fp32 weights, gradients and optimizer states; autocast computes in {compute_dtype} "
                     f"and keeps {compute_dtype} copies of the weights for the backward pass.")

    # Activations.
    eff_seq = seq_len + (num_virtual_tokens if method == "prompt" else 0)
    adapted = adapted_modules(arch, counted) if method in ADAPTER_METHODS else []
    layer_kwargs = dict(
        arch=arch, batch_size=batch_size, seq_len=eff_seq, attn_impl=attn_impl, adapted=adapted,
        lora_dropout=lora_dropout, dora=method == "dora", hidden_dropout=hidden_dropout,
        attention_dropout=attention_dropout, recipe=recipe, attn_kernel=attention_kernel,
    )
    layer = layer_activation_bytes(**layer_kwargs, input_requires_grad=True)
    first = layer_activation_bytes(**layer_kwargs, input_requires_grad=recipe.input_requires_grad)
    head = head_activation_bytes(arch, batch_size, eff_seq, recipe, embedding_dropout=hidden_dropout)
    if layer.kernel == "math":
        notes.append("Attention in fp32 with grouped-query heads: PyTorch's flash kernel needs 16-bit inputs and its "
                     "memory-efficient kernel takes no grouped-query heads, so SDPA runs the math kernel, which keeps "
                     "the b·heads·s² attention probabilities (attn_impl='flash' or autocast avoid it).")
    if method == "prefix":
        notes.append("Prefix tuning: the virtual key/value tokens are not added to the activation estimate.")
    if method in ("ia3", "bitfit", "prefix", "prompt"):
        notes.append(f"{method}: activations modelled as for a frozen base; method-specific extras are small and not counted.")

    T = batch_size * eff_seq
    h = arch.hidden_size
    L = arch.num_hidden_layers
    encoder = arch.family in ENCODER_FAMILIES

    def acts_of(block: LayerActivations) -> int:
        return block.saved_bytes - block.weight_copies

    head_acts = head.saved_bytes - head.log_probs - head.weight_copies
    if gradient_checkpointing:
        # transformers wraps each decoder layer in torch.utils.checkpoint: the layer's inputs (the
        # hidden states; RoPE's tables are shared) are all that stays, and in backward each layer is
        # recomputed, one at a time, before its gradient (Chen et al. 2016; Korthikanti et al. 2022 §4.2).
        blocks = checkpointed_inputs_bytes(arch, batch_size, eff_seq, e_res)
        if layer.kernel == "eager":  # transformers' 4-D causal mask (b, 1, s, s) is every checkpointed layer's input
            blocks += e_res * batch_size * eff_seq**2
        block_copies = 0
        recomputed = acts_of(layer) - layer.shared_input
        recomputed_copies = layer.weight_copies
        # autocast caches every trained weight's 16-bit copy until the forward ends
        forward_cache = L * layer.weight_copies if full and autocast else 0
    else:
        blocks = acts_of(first) + (L - 1) * acts_of(layer)
        block_copies = first.weight_copies + (L - 1) * layer.weight_copies
        recomputed = recomputed_copies = forward_cache = 0
    stored = blocks + head_acts
    copies = block_copies + head.weight_copies
    logits_peak = 0 if encoder else logits_peak_bytes(batch_size, eff_seq, arch.vocab_size)
    logits_fwd = 0 if encoder else logits_forward_bytes(batch_size, eff_seq, arch.vocab_size, head.logits_bytes)
    if encoder:
        notes.append("Encoder: a small classification head on top is assumed, so logits are negligible.")

    # Gradients that exist before the blocks' backward: the lm_head's (full FT; tied → the embedding's grad).
    head_grads = arch.vocab_size * h * tb if full and not encoder else 0
    # When the first block's backward runs, its own gradients and (untied) the embedding's are still to come.
    embedding_grads = arch.vocab_size * h * tb if full and not arch.tie_word_embeddings else 0
    block_params = (arch.n_params_linear + arch.n_params_expert_mlp) if full else trainable
    grads_during = gradients if gradient_accumulation_steps > 1 else 0
    grads_before_first = max(gradients - block_params * tb // L - embedding_grads, grads_during)
    persistent = dict(weights=base.weights_bytes, quant_constants=base.quant_constants_bytes,
                      adapter_weights=adapter_weights, optimizer_states=optimizer_states, master_weights=master)
    # By the last block's backward the loss, lm_head and final norm have released what they kept.
    after_head = blocks + head.rope_tables + (8 * T if full else 0)

    def phase(name: str, grads: int, copies_: int, acts: int, logit: int, temp: int) -> PhaseMemory:
        return PhaseMemory(name, gradients=grads, weight_copies=copies_, activations=acts, logits_and_loss=logit,
                           temporary=temp, **persistent)

    first_input = e_res * T * h if gradient_checkpointing else 0
    grad_in = e_res * T * h  # the gradient arriving at a block while it is recomputed
    phases = [
        phase("loss forward", grads_during, copies + forward_cache, stored, logits_fwd, 0),
        phase("loss backward", grads_during, copies, stored, logits_peak, 0),
        # checkpointing: the block's recomputed forward (its temporaries on top of what it re-keeps), then its backward
        phase("backward, last layer", max(grads_during, head_grads), block_copies + recomputed_copies,
              after_head + recomputed, 0,
              max(layer.backward_workspace, layer.forward_workspace + grad_in) if gradient_checkpointing
              else layer.backward_workspace),
        phase("backward, first layer", grads_before_first, first.weight_copies, acts_of(first) + first_input, 0,
              max(first.backward_workspace, first.forward_workspace + grad_in) if gradient_checkpointing
              else first.backward_workspace),
        phase("optimizer step", gradients, 0, 0, 0, optimizer_temp),
    ]
    if layer.forward_workspace:
        phases.append(phase("forward, last layer", grads_during, block_copies + forward_cache,
                            blocks + head.rope_tables, 0, layer.forward_workspace))
    peak = max(phases, key=lambda p: p.total_bytes)
    total = peak.total_bytes
    if quantized:
        notes.append(f"Quantized base: embeddings, norms and lm_head stay dense, in {dense_dtype}"
                     + (" (prepare_model_for_kbit_training casts them to fp32, so the hidden states are fp32)."
                        if prepare_kbit else "."))
    notes.append("Excludes allocator fragmentation (reserved − allocated, often 5–15 %) and the CUDA context; "
                 "fit verdicts add the context.")
    return MemoryEstimate(
        model=arch.slug, method=method, base_dtype=base_dtype, optimizer=optimizer, batch_size=batch_size,
        seq_len=seq_len, r=r, gradient_checkpointing=gradient_checkpointing, attn_impl=attn_impl,
        prepare_kbit=prepare_kbit if quantized else False, autocast=autocast, attention_kernel=layer.kernel,
        residual_dtype=dense_dtype, n_params=arch.n_params, trainable_params=trainable,
        weights_bytes=peak.weights, quant_constants_bytes=peak.quant_constants,
        adapter_weights_bytes=peak.adapter_weights, gradients_bytes=peak.gradients,
        optimizer_states_bytes=peak.optimizer_states, master_weights_bytes=peak.master_weights,
        weight_copies_bytes=peak.weight_copies, activations_bytes=peak.activations,
        logits_and_loss_bytes=peak.logits_and_loss, temporary_bytes=peak.temporary,
        total_bytes=total, paged_optimizer_bytes=paged, cuda_context_bytes=cuda_context_bytes,
        total_with_context_bytes=total + cuda_context_bytes, peak_phase=peak.name,
        saved_activations_bytes=stored + recomputed,
        kept_after_forward_bytes=stored + copies + head.log_probs,
        layer=layer, head=head, phases=tuple(phases), verdicts=gpu_verdicts(total + cuda_context_bytes, gpus),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------- memory against model size


@dataclass(frozen=True)
class MethodPoint:
    method: str
    total_bytes: int
    total_with_context_bytes: int
    estimate: MemoryEstimate


@dataclass(frozen=True)
class ModelSizePoint:
    model: str
    display_name: str
    n_params: int
    points: tuple[MethodPoint, ...]

    def by_method(self, method: str) -> MethodPoint:
        for point in self.points:
            if point.method == method:
                return point
        raise ValueError(f"method: {method!r} not in this curve")


@dataclass(frozen=True)
class ModelSizeCurves:
    """Peak memory of full FT / LoRA / QLoRA for a list of real architectures, smallest first."""

    methods: tuple[str, ...]
    models: tuple[ModelSizePoint, ...]
    gpus: tuple[Gpu, ...]

    def series(self, method: str, with_context: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(n_params, bytes) of one method across models, for a plot."""
        xs = tuple(m.n_params for m in self.models)
        ys = tuple(
            (m.by_method(method).total_with_context_bytes if with_context else m.by_method(method).total_bytes)
            for m in self.models
        )
        return xs, ys


def default_curve_models() -> tuple[str, ...]:
    """Decoder LMs of calculators.architectures, one per distinct size, smallest first."""
    seen: set[int] = set()
    slugs = []
    for arch in sorted(ARCHITECTURES.values(), key=lambda a: a.n_params):
        if arch.family in ENCODER_FAMILIES or arch.n_params in seen:
            continue
        seen.add(arch.n_params)
        slugs.append(arch.slug)
    return tuple(slugs)


def memory_vs_model_size(
    models: Sequence[str] | None = None,
    methods: Sequence[str] = ("full", "lora", "qlora"),
    r: int = 16,
    target_modules: str = "all-linear",
    batch_size: int = 1,
    seq_len: int = 2048,
    gradient_checkpointing: bool = True,
    optimizer: str = "adamw_torch_fused",
    attn_impl: str = "sdpa",
    prepare_kbit: bool = True,
    gpus: Sequence[Gpu] = GPUS,
) -> ModelSizeCurves:
    """The "Will it fine-tune?" curves: estimate_memory for each method × model (0.1B…405B)."""
    slugs = tuple(models) if models is not None else default_curve_models()
    if not slugs:
        raise ValueError("models: name at least one model")
    for method in methods:
        _check_choice("methods", method, METHODS)
    points = []
    for slug in slugs:
        arch = get_architecture(slug)
        per_method = []
        for method in methods:
            est = estimate_memory(arch, method=method, r=r, target_modules=target_modules, batch_size=batch_size,
                                  seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, optimizer=optimizer,
                                  attn_impl=attn_impl, prepare_kbit=prepare_kbit, gpus=gpus)
            per_method.append(MethodPoint(method, est.total_bytes, est.total_with_context_bytes, est))
        points.append(ModelSizePoint(arch.slug, arch.display_name, arch.n_params, tuple(per_method)))
    points.sort(key=lambda p: p.n_params)
    return ModelSizeCurves(tuple(methods), tuple(points), tuple(gpus))


def autocast_weight_copies_bytes(model: str | Architecture, compute_dtype: str = "bf16") -> int:
    """The 16-bit copies of every fp32 linear weight (and bias) autocast makes and autograd keeps in
    mixed-precision full fine-tuning: lm_head (tied: the embedding) included."""
    arch = get_architecture(model)
    _check_choice("compute_dtype", compute_dtype, DENSE_DTYPES)
    linear = sum(m.n_params for m in arch.linear_modules() if m.group in ("attention", "mlp", "head"))
    if arch.tie_word_embeddings and arch.family not in ENCODER_FAMILIES:
        linear += arch.vocab_size * arch.hidden_size
    return DTYPE_BYTES[compute_dtype] * (linear + arch.n_params_expert_mlp)


def longest_fitting_seq_len(model: str | Architecture, gpu: str | Gpu, max_seq_len: int | None = None, **kwargs) -> int:
    """The longest sequence (tokens) whose training step fits the GPU, CUDA context included; 0 if none.

    `kwargs` go to `estimate_memory` (method, batch_size, gradient_checkpointing, ...). Binary
    search over 1 … max_seq_len (default: the model's max_position_embeddings): the peak grows
    with the sequence (tests/calculators/test_memory.py checks it).
    """
    from calculators.gpus import get_gpu

    arch = get_architecture(model)
    card = get_gpu(gpu)
    top = arch.max_position_embeddings if max_seq_len is None else max_seq_len
    _check_int("max_seq_len", top, 1)

    def fits(seq_len: int) -> bool:
        return estimate_memory(arch, seq_len=seq_len, gpus=(card,), **kwargs).verdicts[0].fits

    if not fits(1):
        return 0
    low, high = 1, top
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
