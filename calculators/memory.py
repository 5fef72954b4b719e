"""Peak GPU memory of one training step: weights, gradients, optimizer, activations, logits.

The estimate is what `torch.cuda.max_memory_allocated()` reports over a steady-state step
(step ≥ 2: optimizer states exist, gradients were freed by `zero_grad(set_to_none=True)`) of a
Hugging Face transformers model, peft adapters (default `autocast_adapter_dtype=True`: fp32
adapters) and bitsandbytes quantization, with no autocast: the model is loaded in `base_dtype`
(quantized bases compute in `compute_dtype`). The CUDA context is not in that number and is
reported separately (`cuda_context_bytes`).

Peak = persistent state + the largest of a few moments of the step (`phases`):
  * loss backward — every saved activation plus the cross-entropy's fp32 logits buffers;
  * backward, last layer — every saved activation plus one layer's backward temporaries;
  * backward end — all gradients plus one layer's activations and temporaries;
  * optimizer step — all gradients plus the optimizer's temporaries;
  * forward, last layer — for DoRA / QLoRA / eager attention, whose forward makes big transients.
Saved activations are counted tensor by tensor, following the method of Korthikanti et al.
2022, "Reducing Activation Recomputation in Large Transformer Models" (§4.1, per-layer bytes
34·s·b·h + 5·a·s²·b for GPT), re-derived for what PyTorch autograd keeps in transformers'
Llama-style layers (fp32 RMSNorm upcast, SwiGLU, RoPE, GQA, no dropout) and for frozen base
weights (a frozen linear keeps no input). Pure Python: runs under Pyodide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from calculators import nf4, params
from calculators.architectures import ARCHITECTURES, Architecture, LinearModule, get_architecture
from calculators.gpus import GPUS, Gpu

__all__ = [
    "METHODS",
    "BASE_DTYPES",
    "OPTIMIZERS",
    "ATTN_IMPLS",
    "DTYPE_BYTES",
    "DEFAULT_CUDA_CONTEXT_BYTES",
    "BytesPerParam",
    "full_ft_bytes_per_param",
    "weight_bytes",
    "qlora_base_bytes",
    "BaseWeights",
    "base_weights",
    "LayerActivations",
    "layer_activation_bytes",
    "logits_peak_bytes",
    "adapted_modules",
    "checkpointed_inputs_bytes",
    "eager_scores_bytes",
    "korthikanti_activation_bytes",
    "optimizer_state_bytes_per_param",
    "GpuVerdict",
    "gpu_verdicts",
    "PhaseMemory",
    "MemoryEstimate",
    "estimate_memory",
    "MethodPoint",
    "ModelSizePoint",
    "ModelSizeCurves",
    "memory_vs_model_size",
]

MIB = 2**20
GIB = 2**30

METHODS = ("full", "lora", "rslora", "qlora", "dora", "ia3", "prefix", "prompt", "bitfit")
ADAPTER_METHODS = ("lora", "rslora", "qlora", "dora")
BASE_DTYPES = ("fp32", "bf16", "fp16", "int8", "nf4")
DENSE_DTYPES = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit", "sgd")
ATTN_IMPLS = ("eager", "sdpa", "flash")
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

# torch + CUDA 12 with lazy module loading: ~300-500 MiB for the context, cuBLAS and cuDNN
# handles; it shows in nvidia-smi but never in max_memory_allocated.
DEFAULT_CUDA_CONTEXT_BYTES = 500 * MIB
# bitsandbytes 8-bit optimizers: blockwise quantized states, one fp32 absmax per 256 values;
# tensors under 4096 elements keep fp32 states (`min_8bit_size`).
BNB_OPTIM_BLOCKSIZE = 256
BNB_MIN_8BIT_SIZE = 4096
# Families whose configs enable dropout by default (GPT-2's *_pdrop, BERT's *_dropout_prob).
_FAMILY_DROPOUT = {"gpt2": 0.1, "bert": 0.1}
_RMSNORM_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3")
_ENCODER_FAMILIES = ("bert",)


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
    """Optimizer state per parameter: AdamW 2 states in the optimized params' dtype (PyTorch's
    `zeros_like(p)`); 8-bit AdamW 2 × (1 + 4/256) (Dettmers et al. 2022, "8-bit Optimizers via
    Block-wise Quantization"), fp32 for tensors under 4096 elements; SGD 0, or 1 with momentum."""
    if optimizer in ("adamw", "paged_adamw"):
        return 2 * DTYPE_BYTES[state_dtype]
    if optimizer in ("adamw8bit", "paged_adamw8bit"):
        if numel is not None and numel < BNB_MIN_8BIT_SIZE:
            return 8.0
        if numel is None:
            return 2 * (1 + 4 / BNB_OPTIM_BLOCKSIZE)
        blocks = -(-numel // BNB_OPTIM_BLOCKSIZE)
        return 2 * (numel + 4 * blocks) / numel
    return float(DTYPE_BYTES[state_dtype]) if momentum > 0 else 0.0


def full_ft_bytes_per_param(weights_dtype: str = "bf16", optimizer: str = "adamw", master_weights: bool = True) -> BytesPerParam:
    """Full fine-tuning per parameter; the default is mixed-precision AdamW (Micikevicius et al.
    2018; ZeRO, Rajbhandari et al. 2020, §3.1): 2 (bf16 weights) + 2 (bf16 grads) + 4 (fp32
    master) + 8 (Adam m, v in fp32) = 16 bytes."""
    _check_choice("weights_dtype", weights_dtype, DENSE_DTYPES)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
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
    offset (`nf4.nf4_model_bytes`), plus the 16-entry fp32 code book each QuantState holds.
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
        constants += c * (footprint.constant_bytes + 16 * 4)
    return BaseWeights(quantized, dense, codes + dense_bytes, constants)


def qlora_base_bytes(model: str | Architecture, double_quant: bool = True) -> int:
    """A QLoRA base in memory: NF4 block linears with their constants, the rest in bf16."""
    return base_weights(get_architecture(model), "nf4", "bf16", double_quant).total_bytes


# ---------------------------------------------------------------------------- activations


def _role(module: LinearModule) -> str:
    """Where a block linear sits: attn_in (reads the attention norm's output), attn_out (reads
    the attention output), mlp_in (reads the MLP norm's output), mlp_out (reads the MLP
    activation)."""
    path = module.path or module.name
    if module.group == "attention":
        return "attn_out" if path.endswith(("o_proj", "attn.c_proj", "attention.output.dense")) else "attn_in"
    return "mlp_out" if path.endswith(("down_proj", "mlp.c_proj", "output.dense")) else "mlp_in"


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one transformer block keeps for its backward pass, by part, and its backward
    temporaries. `tokens` = batch·seq."""

    norms: int  # norm inputs kept by the norm's backward (RMSNorm: the fp32 upcast)
    linear_inputs: int  # inputs kept by linears whose weight is trained (norm outputs, attention output, MLP product)
    attention: int  # q, k, v, output and logsumexp (sdpa/flash) or also the (b, a, s, s) probabilities (eager)
    mlp: int  # activation-function inputs/outputs (SwiGLU: gate, up, act(gate))
    dropout_masks: int  # one byte per element per active dropout
    adapters: int  # LoRA: the fp32 cast of x and the r-dim x·Aᵀ per adapted module; DoRA: more
    backward_workspace: int  # the largest transient of this block's backward (gradients in flight, dequantized weight)
    forward_workspace: int  # the largest transient of this block's forward beyond what it keeps

    @property
    def saved_bytes(self) -> int:
        return self.norms + self.linear_inputs + self.attention + self.mlp + self.dropout_masks + self.adapters


def layer_activation_bytes(
    arch: Architecture,
    batch_size: int,
    seq_len: int,
    act_bytes: int = 2,
    attn_impl: str = "sdpa",
    base_trainable: bool = False,
    adapted: Sequence[tuple[LinearModule, int]] = (),
    adapter_bytes: int = 4,
    lora_dropout: float = 0.0,
    dora: bool = False,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    input_requires_grad: bool = True,
    quantized: bool = False,
) -> LayerActivations:
    """Saved tensors of one block (Korthikanti et al. 2022 §4.1 method), tensor by tensor.

    Llama-style block, T = b·s tokens, e = act_bytes, q = heads·head_dim, kv = kv_heads·head_dim:
      RMSNorm ×2: x.to(fp32) kept by pow/mul → 4·T·h each (transformers' LlamaRMSNorm);
        full FT also keeps the normalized bf16 output (weight grad; the same tensor feeds q/k/v).
      sdpa/flash: q, k (after RoPE), v, output → e·T·(2q + 2kv), + fp32 logsumexp 4·b·a·s
        (GQA without repeat: transformers passes enable_gqa when there is no mask).
      eager: q, repeated k and v → 3·e·T·q, fp32 softmax 4·b·a·s² + its e-byte copy e·b·a·s².
      SwiGLU: gate (SiLU input), up and SiLU(gate) (the product's operands) → 3·e·T·i.
      Trained base weight: its input (o_proj: e·T·q; down_proj: e·T·i).
      LoRA (peft casts x to the adapter dtype): adapter_bytes·T·(in + r) per adapted module;
        lora_dropout > 0 adds a 1-byte mask. DoRA keeps the base result and the LoRA result
        of out_features each (their product with the magnitude needs both).
    """
    b, s, T = batch_size, seq_len, batch_size * seq_len
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv, a = arch.q_dim, arch.kv_dim, arch.num_attention_heads
    e = act_bytes
    rms = arch.family in _RMSNORM_FAMILIES
    mlp_factor = arch.num_experts_per_tok if arch.num_local_experts > 1 else 1

    # Norms: RMSNorm keeps the fp32 upcast; LayerNorm keeps its input (+ fp32 mean and rstd).
    n_norms = 4 if arch.family == "gemma2" else 2
    per_norm = 4 * T * h + 4 * T if rms else e * T * h + 8 * T  # RMSNorm: fp32 x and its fp32 rsqrt
    norms = n_norms * per_norm - (0 if input_requires_grad else per_norm)

    # Inputs kept for trained base weights (weight grad = grad_outᵀ · input); shared inputs once.
    linear_inputs = 0
    if base_trainable:
        # Each norm: its normalized input (for the norm weight's grad) and its output (for
        # q/k/v or gate/up): two e-byte tensors (LayerNorm computes both in one kernel: one).
        linear_inputs += (4 if rms else 2) * e * T * h
        if attn_impl == "eager":  # sdpa/flash's kept output already has o_proj's (b, s, a·d) layout
            linear_inputs += e * T * q
        linear_inputs += e * T * i * mlp_factor  # MLP product / activation, input of down_proj

    # Attention.
    if attn_impl == "eager":
        kv_kept = q  # repeat_kv materializes a heads' worth of k and v
        attention = e * T * (q + 2 * kv_kept) + _eager_probs_bytes(arch, b, s, e)
    else:
        attention = e * T * (2 * q + 2 * kv) + 4 * b * a * s

    # MLP.
    if arch.mlp_kind in ("swiglu", "geglu"):
        mlp = 3 * e * T * i
    elif arch.family == "gpt2":  # gelu_new in Python: x, tanh(·), 0.5·x, 1 + tanh(·)
        mlp = 4 * e * T * i
    else:  # exact GELU keeps its input
        mlp = e * T * i
    mlp *= mlp_factor
    if arch.num_local_experts > 1:
        mlp += 4 * T * arch.num_local_experts  # fp32 router softmax

    # Dropout masks (bool, 1 byte): after attention and after the MLP; eager attention probs.
    masks = 0
    if hidden_dropout > 0:
        masks += 2 * T * h
    if attention_dropout > 0 and attn_impl == "eager":
        masks += b * a * s * s  # sdpa/flash regenerate the mask from the Philox seed

    # Adapters.
    adapters = 0
    for module, rank in adapted:
        inp = module.in_features
        adapters += adapter_bytes * T * (inp + rank)
        if lora_dropout > 0:
            adapters += T * inp
        if dora:
            adapters += (e + adapter_bytes) * T * module.out_features

    # Backward temporaries of one block: the residual gradient, then the biggest of the
    # attention, MLP and adapter backward buffers (rough: gradients in flight, not kept).
    if attn_impl == "eager":
        attn_ws = (4 + e) * b * a * s * s + e * T * 3 * q
    else:
        attn_ws = e * T * (q + 2 * kv) + 4 * T * q  # dq, dk, dv + flash's fp32 dq accumulator
    mlp_ws = (3 if arch.mlp_kind in ("swiglu", "geglu") else 2) * e * T * i * mlp_factor
    adapter_ws = max((adapter_bytes * T * (2 * m.out_features + m.in_features) for m, _ in adapted), default=0)
    dequant_ws = 0
    if quantized:  # bitsandbytes dequantizes the whole weight for grad_input = grad_out · W
        biggest = max(m.in_features * m.out_features for m in arch.linear_modules() if m.group in ("attention", "mlp"))
        dequant_ws = e * biggest + 4 * biggest // 64
    backward_ws = 2 * e * T * h + max(attn_ws, mlp_ws, adapter_ws) + dequant_ws

    # Forward temporaries: eager scores before softmax, DoRA's weight norm, QLoRA's dequantized weight.
    forward_ws = dequant_ws
    if attn_impl == "eager":
        forward_ws = max(forward_ws, 2 * e * b * a * s * s)
    if dora and adapted:
        biggest = max(m.in_features * m.out_features for m, _ in adapted)
        forward_ws = max(forward_ws, 3 * adapter_bytes * biggest)  # W (cast), B·A, W + s·B·A for ‖·‖
    return LayerActivations(norms, linear_inputs, attention, mlp, masks, adapters, backward_ws, forward_ws)


def adapted_modules(arch: Architecture, counted: params.TrainableParams) -> list[tuple[LinearModule, int]]:
    """The block linears an adapter wraps, with their rank: each keeps its own input for ∂L/∂A."""
    by_path = {m.path: m for m in arch.linear_modules()}
    adapted = []
    for module_count in counted.per_module:
        module = by_path.get(module_count.path)
        if module is not None and module.group in ("attention", "mlp"):
            adapted.append((module, module_count.r))
    return adapted


def checkpointed_inputs_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int = 2) -> int:
    """Gradient checkpointing keeps one hidden state per block: L · e · T · h."""
    return arch.num_hidden_layers * act_bytes * batch_size * seq_len * arch.hidden_size


def _eager_probs_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int) -> int:
    """One layer's kept attention probabilities under eager attention, b · a · s² scores:
    Llama-style softmax in fp32 plus its e-byte copy (4 + e bytes each; fp32 runs keep one);
    GPT-2/BERT softmax in the activation dtype (e bytes)."""
    rms = arch.family in _RMSNORM_FAMILIES
    per_score = 4 + (act_bytes if act_bytes < 4 else 0) if rms else act_bytes
    return per_score * batch_size * arch.num_attention_heads * seq_len**2


def eager_scores_bytes(arch: Architecture, batch_size: int, seq_len: int, act_bytes: int = 2) -> int:
    """Eager attention's kept probabilities over the model: every layer's (see `_eager_probs_bytes`)."""
    return arch.num_hidden_layers * _eager_probs_bytes(arch, batch_size, seq_len, act_bytes)


def korthikanti_activation_bytes(arch: Architecture, batch_size: int, seq_len: int, with_scores: bool) -> int:
    """Korthikanti et al. 2022 §4.1 for a 16-bit GPT layer, s·b·h·(34 + 5·a·s/h), summed over the layers;
    without the score term (fused attention) only 34·s·b·h."""
    s, b, h, a = seq_len, batch_size, arch.hidden_size, arch.num_attention_heads
    per_layer = 34 * s * b * h + (5 * a * s * s * b if with_scores else 0)
    return arch.num_hidden_layers * per_layer


def logits_peak_bytes(batch_size: int, seq_len: int, vocab_size: int) -> int:
    """Peak of the causal-LM loss: 12·T·V bytes.

    transformers' ForCausalLMLoss upcasts the logits (`logits.float()`, 4·T·V) and calls
    cross_entropy = log_softmax (keeps its fp32 output, 4·T·V) + nll_loss. Forward: bf16
    logits + fp32 copy + log-probs = 10·T·V (fp32 base: 8). Backward (PyTorch autograd):
    nll_loss's dense fp32 gradient (4·T·V) and log_softmax's (4·T·V) next to the kept
    log-probs: 12·T·V. The training loop is assumed to drop the output (keep only `.loss`),
    as HF Trainer does; holding `outputs.logits` adds 2·T·V.
    """
    tv = batch_size * seq_len * vocab_size
    return 12 * tv


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
              "activations", "logits_and_loss", "temporary")


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
    optimizer: str
    batch_size: int
    seq_len: int
    r: int
    gradient_checkpointing: bool
    attn_impl: str
    n_params: int  # base model
    trainable_params: int
    # the breakdown at the peak (sums to total_bytes)
    weights_bytes: int  # base weights (quantized codes + dense parts); full FT: the trained weights
    quant_constants_bytes: int
    adapter_weights_bytes: int  # trainable adapter tensors (0 for full FT)
    gradients_bytes: int
    optimizer_states_bytes: int
    master_weights_bytes: int
    activations_bytes: int  # saved for backward at the peak (checkpointing: layer inputs + one layer)
    logits_and_loss_bytes: int
    temporary_bytes: int  # transients at the peak: backward buffers, optimizer temporaries, dequantized weights
    total_bytes: int  # ≈ torch.cuda.max_memory_allocated()
    cuda_context_bytes: int
    total_with_context_bytes: int
    peak_phase: str
    saved_activations_bytes: int  # everything the forward keeps for backward (whatever the peak phase)
    phases: tuple[PhaseMemory, ...]
    verdicts: tuple[GpuVerdict, ...]
    notes: tuple[str, ...]

    def breakdown(self) -> dict[str, int]:
        """Component → bytes at the peak, in plotting order."""
        return {c: getattr(self, c + "_bytes") for c in COMPONENTS}

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("phases", "verdicts", "notes")}
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


def estimate_memory(
    model: str | Architecture,
    method: str = "lora",
    r: int = 16,
    target_modules: str | Sequence[str] = "all-linear",
    base_dtype: str | None = None,
    optimizer: str = "adamw",
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
    fused_optimizer: bool = True,
    cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES,
    gpus: Sequence[Gpu] = GPUS,
) -> MemoryEstimate:
    """Peak allocated memory of one training step, its breakdown and a fit verdict per GPU.

    base_dtype None: nf4 for qlora, bf16 otherwise. master_weights None: an fp32 master copy
    for full FT with a 16-bit base (mixed-precision AdamW, 16 B/param), none otherwise (peft
    adapters already train in fp32). Dropouts None: the family's config default (GPT-2, BERT
    0.1; Llama-style 0). optimizer "adamw" is torch.optim.AdamW(fused=True), transformers
    Trainer's default ("adamw_torch_fused"); fused_optimizer=False adds foreach's sqrt(v)
    temporary. Sources per term: see `base_weights`, `layer_activation_bytes`,
    `logits_peak_bytes`, `optimizer_state_bytes_per_param`.
    """
    arch = get_architecture(model)
    _check_choice("method", method, METHODS)
    if base_dtype is None:
        base_dtype = "nf4" if method == "qlora" else "bf16"
    _check_choice("base_dtype", base_dtype, BASE_DTYPES)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("attn_impl", attn_impl, ATTN_IMPLS)
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
                            ("fused_optimizer", fused_optimizer)):
        if not isinstance(flag, bool):
            raise ValueError(f"{flag_name}: must be true or false, got {flag!r}")
    if master_weights is not None and not isinstance(master_weights, bool):
        raise ValueError(f"master_weights: must be true, false or None, got {master_weights!r}")
    if method == "qlora" and base_dtype != "nf4":
        raise ValueError(f"base_dtype: qlora quantizes the base to nf4, got {base_dtype!r} (use method='lora' for a {base_dtype} base)")
    if method == "full" and base_dtype not in DENSE_DTYPES:
        raise ValueError(f"base_dtype: full fine-tuning trains the base weights, which cannot be {base_dtype} (choose fp32, bf16 or fp16)")
    if momentum > 0 and optimizer != "sgd":
        raise ValueError(f"momentum: applies to optimizer='sgd' only, got optimizer={optimizer!r}")
    quantized = base_dtype in ("int8", "nf4")
    hidden_dropout = _FAMILY_DROPOUT.get(arch.family, 0.0) if hidden_dropout is None else hidden_dropout
    attention_dropout = _FAMILY_DROPOUT.get(arch.family, 0.0) if attention_dropout is None else attention_dropout
    _check_fraction("hidden_dropout", hidden_dropout)
    _check_fraction("attention_dropout", attention_dropout)

    notes: list[str] = []
    act_dtype = compute_dtype if quantized else base_dtype
    e = DTYPE_BYTES[act_dtype]
    full = method == "full"
    if master_weights is None:
        master_weights = full and DTYPE_BYTES[base_dtype] < 4
    if master_weights and not full:
        raise ValueError("master_weights: only full fine-tuning has 16-bit trained weights to shadow; adapters train in adapter_dtype")
    if master_weights and DTYPE_BYTES[base_dtype] == 4:
        raise ValueError("master_weights: the weights are already fp32")

    # Trainable parameters (peft's counts) and their dtype.
    params_method = {"qlora": "lora"}.get(method, method)
    counted = params.count_trainable(arch, params_method, r=r, target_modules=target_modules,
                                     num_virtual_tokens=num_virtual_tokens)
    trainable = counted.trainable
    if full:
        train_dtype = base_dtype
        tensor_sizes = _full_tensor_sizes(arch)
    else:
        train_dtype = adapter_dtype
        tensor_sizes = _adapter_tensor_sizes(counted)
    tb = DTYPE_BYTES[train_dtype]
    state_dtype = "fp32" if master_weights else train_dtype

    base = base_weights(arch, base_dtype, compute_dtype, double_quant)
    adapter_weights = 0 if full else trainable * tb
    gradients = trainable * tb
    master = trainable * 4 if master_weights else 0
    optimizer_states = round(sum(
        count * numel * optimizer_state_bytes_per_param(optimizer, state_dtype, momentum, numel)
        for numel, count in tensor_sizes
    ))
    if optimizer == "adamw" and not fused_optimizer:
        # torch.optim.AdamW(foreach=True) allocates sqrt(v) for all params at once (_multi_tensor_adamw).
        optimizer_temp = trainable * DTYPE_BYTES[state_dtype]
    else:
        optimizer_temp = 0  # fused AdamW and bitsandbytes' kernels update in place; SGD's foreach adds in place
    if optimizer.startswith("paged"):
        notes.append("Paged optimizer: its states live in CUDA unified memory and can be evicted to CPU RAM under "
                     "pressure, so a step that does not quite fit may still run (slower). Counted here on the device.")
    if master_weights:
        notes.append("Mixed precision: fp32 master weights and fp32 Adam states; gradients kept in the 16-bit dtype.")

    # Activations.
    eff_seq = seq_len + (num_virtual_tokens if method == "prompt" else 0)
    adapted = adapted_modules(arch, counted) if method in ADAPTER_METHODS else []
    # peft casts x to the adapter dtype only when they differ; otherwise x is kept as is (e bytes).
    adapter_act_bytes = DTYPE_BYTES[adapter_dtype] if DTYPE_BYTES[adapter_dtype] != e else e
    layer_kwargs = dict(
        arch=arch, batch_size=batch_size, seq_len=eff_seq, act_bytes=e, attn_impl=attn_impl, base_trainable=full,
        adapted=adapted, adapter_bytes=adapter_act_bytes, lora_dropout=lora_dropout, dora=method == "dora",
        hidden_dropout=hidden_dropout, attention_dropout=attention_dropout, quantized=quantized,
    )
    layer = layer_activation_bytes(**layer_kwargs)
    # A frozen embedding's output does not require grad: the first block's first norm keeps nothing.
    first = layer_activation_bytes(**layer_kwargs, input_requires_grad=full) if not full else layer
    if method == "prefix":
        notes.append("Prefix tuning: the virtual key/value tokens are not added to the activation estimate.")
    if method in ("ia3", "bitfit", "prefix", "prompt"):
        notes.append(f"{method}: activations modelled as for a frozen base; method-specific extras are small and not counted.")

    T = batch_size * eff_seq
    h = arch.hidden_size
    L = arch.num_hidden_layers
    rms = arch.family in _RMSNORM_FAMILIES
    final_norm = (4 * T * h + 4 * T if rms else e * T * h + 8 * T) + ((2 if rms else 1) * e * T * h if full else 0)
    encoder = arch.family in _ENCODER_FAMILIES
    embed_mask = T * h if hidden_dropout > 0 else 0
    # input_ids and labels (int64), and RoPE's cos/sin (one (seq, head_dim) pair shared by all blocks).
    inputs = 16 * T + (2 * eff_seq * arch.resolved_head_dim * e if rms else 0)
    head_extra = (final_norm if not encoder else 0) + inputs
    all_layers = first.saved_bytes + (L - 1) * layer.saved_bytes
    if gradient_checkpointing:
        # torch.utils.checkpoint (non-reentrant) keeps each block's input; a block's tensors are
        # recomputed one block at a time during backward (Chen et al. 2016, "Training Deep Nets
        # with Sublinear Memory Cost"; Korthikanti et al. 2022 §4.2 "full recomputation").
        stored = checkpointed_inputs_bytes(arch, batch_size, eff_seq, e) + head_extra + embed_mask
        recomputed = layer.saved_bytes
    else:
        stored = all_layers + head_extra + embed_mask
        recomputed = 0
    logits = 0 if encoder else logits_peak_bytes(batch_size, eff_seq, arch.vocab_size)
    if encoder:
        notes.append("Encoder: a small classification head on top is assumed, so logits are negligible.")

    # Gradients that exist before the blocks' backward: the lm_head (full FT; tied → the embedding's grad).
    head_grads = arch.vocab_size * h * tb if full and not encoder else 0
    grads_during = gradients if gradient_accumulation_steps > 1 else 0
    persistent = dict(weights=base.weights_bytes, quant_constants=base.quant_constants_bytes,
                      adapter_weights=adapter_weights, optimizer_states=optimizer_states, master_weights=master)

    def phase(name: str, grads: int, acts: int, logit: int, temp: int) -> PhaseMemory:
        return PhaseMemory(name, gradients=grads, activations=acts, logits_and_loss=logit, temporary=temp, **persistent)

    phases = [
        phase("loss backward", grads_during, stored, logits, 0),
        phase("backward, last layer", max(grads_during, head_grads), stored + recomputed, 0,
              layer.backward_workspace + 2 * e * T * h),
        phase("backward end", gradients, first.saved_bytes, 0, layer.backward_workspace),  # block 0, kept or recomputed
        phase("optimizer step", gradients, 0, 0, optimizer_temp),
    ]
    if layer.forward_workspace:
        phases.append(phase("forward, last layer", grads_during, stored, 0, layer.forward_workspace))
    peak = max(phases, key=lambda p: p.total_bytes)
    total = peak.total_bytes
    if quantized:
        notes.append("Quantized base: embeddings, norms and lm_head stay in " + compute_dtype + " (bitsandbytes/transformers skip them).")
    notes.append("Excludes allocator fragmentation (reserved − allocated, often 5–15 %) and the CUDA context; "
                 "fit verdicts add the context.")
    return MemoryEstimate(
        model=arch.slug, method=method, base_dtype=base_dtype, optimizer=optimizer, batch_size=batch_size,
        seq_len=seq_len, r=r, gradient_checkpointing=gradient_checkpointing, attn_impl=attn_impl,
        n_params=arch.n_params, trainable_params=trainable,
        weights_bytes=peak.weights, quant_constants_bytes=peak.quant_constants,
        adapter_weights_bytes=peak.adapter_weights, gradients_bytes=peak.gradients,
        optimizer_states_bytes=peak.optimizer_states, master_weights_bytes=peak.master_weights,
        activations_bytes=peak.activations, logits_and_loss_bytes=peak.logits_and_loss, temporary_bytes=peak.temporary,
        total_bytes=total, cuda_context_bytes=cuda_context_bytes, total_with_context_bytes=total + cuda_context_bytes,
        peak_phase=peak.name, saved_activations_bytes=stored + recomputed,
        phases=tuple(phases), verdicts=gpu_verdicts(total + cuda_context_bytes, gpus), notes=tuple(notes),
    )


def _full_tensor_sizes(arch: Architecture) -> list[tuple[int, int]]:
    """(numel, count) of every parameter tensor of the base model (for 8-bit optimizers' size rule)."""
    sizes: list[tuple[int, int]] = []
    for m in arch.linear_modules():
        sizes.append((m.in_features * m.out_features, m.count))
        if m.bias:
            sizes.append((m.out_features, m.count))
    rest = arch.n_params - sum(numel * count for numel, count in sizes)
    embed = arch.vocab_size * arch.hidden_size
    sizes.append((embed, 1))
    rest -= embed
    if arch.num_local_experts > 1:
        experts = arch.n_params_expert_mlp
        sizes.append((experts // arch.num_hidden_layers, arch.num_hidden_layers))
        rest -= experts // arch.num_hidden_layers * arch.num_hidden_layers
    if rest > 0:  # norms, position embeddings: mostly small vectors
        sizes.append((arch.hidden_size, rest // arch.hidden_size))
        if rest % arch.hidden_size:
            sizes.append((rest % arch.hidden_size, 1))
    return sizes


def _adapter_tensor_sizes(counted: params.TrainableParams) -> list[tuple[int, int]]:
    """(numel, count) of every trainable adapter tensor: LoRA's A (r×in) and B (out×r), DoRA's magnitude."""
    if not counted.per_module:
        return [(counted.trainable, 1)] if counted.trainable else []
    sizes: list[tuple[int, int]] = []
    for m in counted.per_module:
        a, b_ = m.r * m.in_features, m.out_features * m.r
        sizes += [(a, m.count), (b_, m.count)]
        extra = m.n_params_each - a - b_
        if extra > 0:
            sizes.append((extra, m.count))
    return sizes


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
        if arch.family in _ENCODER_FAMILIES or arch.n_params in seen:
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
    optimizer: str = "adamw",
    attn_impl: str = "sdpa",
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
                                  attn_impl=attn_impl, gpus=gpus)
            per_method.append(MethodPoint(method, est.total_bytes, est.total_with_context_bytes, est))
        points.append(ModelSizePoint(arch.slug, arch.display_name, arch.n_params, tuple(per_method)))
    points.sort(key=lambda p: p.n_params)
    return ModelSizeCurves(tuple(methods), tuple(points), tuple(gpus))
