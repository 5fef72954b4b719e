"""The calculators as JSON: `/api/v1/...`, one thin endpoint per calculator.

Each endpoint validates its query model (app.queries), calls one calculator inside
`calculator_input()` so a calculator's ValueError becomes a 422 naming the field, and returns
a pydantic response model documented in OpenAPI (`/docs`).
"""

# No `from __future__ import annotations`: FastAPI reads the query models from the annotations.
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from app.errors import calculator_input
from app.queries import (
    LowRankQuery,
    MemoryQuery,
    MergeQuery,
    Nf4ErrorQuery,
    Nf4OverheadQuery,
    ParamsQuery,
    ScalingQuery,
)
from calculators import architectures, lowrank, memory, nf4, params, scaling

router = APIRouter(prefix="/api/v1", tags=["calculators"])


# ---------------------------------------------------------------------------- response models
# Where a calculator already returns a frozen dataclass (LinearModule, ModuleCount, GpuVerdict,
# ErrorStats, MergeError), the response uses it as it is: pydantic documents and serializes dataclasses.


class ArchitectureOut(BaseModel):
    slug: str
    display_name: str
    family: str
    hf_repo: str
    n_params: int = Field(description="Total parameters of the transformers class")
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    num_local_experts: int
    mlp_kind: str
    target_presets: dict[str, list[str]] = Field(description="Preset name → peft target module names")
    linear_modules: list[architectures.LinearModule]


class ParamsOut(BaseModel):
    model: str
    method: str
    trainable: int
    total: int = Field(description="Every parameter of the peft-wrapped model, as peft counts it")
    base_total: int
    percent: float = Field(description="100 · trainable / total, as peft's print_trainable_parameters")
    adapter_bytes: int
    dtype: str
    per_module: list[params.ModuleCount]


class PhaseOut(BaseModel):
    name: str
    total_bytes: int
    breakdown: dict[str, int]


class MemoryOut(BaseModel):
    model: str
    method: str
    base_dtype: str
    optimizer: str = Field(description="TrainingArguments.optim name the estimate used")
    prepare_kbit: bool = Field(description="QLoRA went through prepare_model_for_kbit_training")
    autocast: bool
    residual_dtype: str = Field(description="dtype of the hidden states between blocks")
    attention_kernel: str = Field(description="Attention kernel a CUDA device runs: flash, efficient, math or eager")
    trainable_params: int
    total_bytes: int = Field(description="Peak bytes on the device: torch.cuda.max_memory_allocated + paged_optimizer_bytes")
    paged_optimizer_bytes: int = Field(description="Optimizer states in CUDA unified memory (not in max_memory_allocated)")
    cuda_context_bytes: int
    total_with_context_bytes: int
    peak_phase: str
    breakdown: dict[str, int] = Field(description="Component → bytes at the peak; sums to total_bytes")
    saved_activations_bytes: int
    phases: list[PhaseOut]
    verdicts: list[memory.GpuVerdict]
    notes: list[str]


class LevelsOut(BaseModel):
    method: str
    levels: list[float] = Field(description="The 16 code values indexed by 4-bit code, in units of the block absmax")


class Nf4ErrorOut(BaseModel):
    distribution: str
    blocksize: int
    n_values: int
    methods: list[nf4.ErrorStats]


class Nf4OverheadOut(BaseModel):
    model: str
    n_params: int
    blocksize: int
    bits_per_param_single: float = Field(description="Constant bits per parameter, fp32 absmax")
    bits_per_param_double: float = Field(description="Constant bits per parameter, double-quantized absmax")
    bytes_single: int = Field(description="All parameters in NF4 with fp32 absmax")
    bytes_double: int = Field(description="All parameters in NF4 with double quantization")


class LowRankOut(BaseModel):
    d_out: int
    d_in: int
    intrinsic_rank: int
    noise_floor: float = Field(description="‖noise‖ / ‖update‖: no rank-k approximation errs less")
    ranks: list[int]
    relative_errors: list[float]
    singular_values: list[float]


class ScalingOut(BaseModel):
    alpha: float
    ranks: list[int]
    lora_scaling: list[float] = Field(description="α/r")
    rslora_scaling: list[float] = Field(description="α/√r")
    loraplus_lr_ratio: float = Field(description="LoRA+: learning rate of B over that of A")


# ---------------------------------------------------------------------------- endpoints


def _architecture_out(arch: architectures.Architecture) -> ArchitectureOut:
    return ArchitectureOut(
        slug=arch.slug, display_name=arch.display_name, family=arch.family, hf_repo=arch.hf_repo,
        n_params=arch.n_params, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, head_dim=arch.resolved_head_dim, vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings, num_local_experts=arch.num_local_experts, mlp_kind=arch.mlp_kind,
        target_presets={k: list(v) for k, v in architectures.presets(arch).items()},
        linear_modules=list(arch.linear_modules()),
    )


@router.get("/architectures", summary="Every architecture the calculators know")
def list_architectures() -> list[ArchitectureOut]:
    return [_architecture_out(arch) for arch in architectures.ARCHITECTURES.values()]


@router.get("/architectures/{slug}", summary="One architecture's shapes and linear modules")
def get_architecture(slug: str) -> ArchitectureOut:
    arch = architectures.ARCHITECTURES.get(slug.lower())
    if arch is None:
        raise HTTPException(404, f"model: unknown model {slug!r}; see /api/v1/architectures")
    return _architecture_out(arch)


@router.get("/params", summary="Trainable parameters (peft's count) for a method on a model")
def trainable_params(query: Annotated[ParamsQuery, Query()]) -> ParamsOut:
    with calculator_input():
        counted = params.count_trainable(
            query.model, "lora" if query.method == "qlora" else query.method, r=query.rank, target_modules=query.target_modules,
            num_virtual_tokens=query.num_virtual_tokens, dtype=query.dtype,
        )
    return ParamsOut(
        model=query.model, method=query.method, trainable=counted.trainable, total=counted.total,
        base_total=counted.base_total, percent=counted.percent, adapter_bytes=counted.adapter_bytes, dtype=query.dtype,
        per_module=list(counted.per_module),
    )


@router.get("/memory", summary="Peak training memory: breakdown and a fit verdict per GPU")
def training_memory(query: Annotated[MemoryQuery, Query()]) -> MemoryOut:
    with calculator_input():
        estimate = memory.estimate_memory(
            query.model, method=query.method, r=query.rank, target_modules=query.target_modules,
            base_dtype=query.base_dtype, optimizer=query.optimizer, batch_size=query.batch_size,
            seq_len=query.seq_len, gradient_checkpointing=query.gradient_checkpointing, attn_impl=query.attn_impl,
            double_quant=query.double_quant, adapter_dtype=query.dtype, prepare_kbit=query.prepare_kbit,
            autocast=query.autocast,
        )
    return MemoryOut(
        model=estimate.model, method=estimate.method, base_dtype=estimate.base_dtype, optimizer=estimate.optimizer,
        prepare_kbit=estimate.prepare_kbit, autocast=estimate.autocast, residual_dtype=estimate.residual_dtype,
        attention_kernel=estimate.attention_kernel, trainable_params=estimate.trainable_params,
        total_bytes=estimate.total_bytes, paged_optimizer_bytes=estimate.paged_optimizer_bytes,
        cuda_context_bytes=estimate.cuda_context_bytes, total_with_context_bytes=estimate.total_with_context_bytes,
        peak_phase=estimate.peak_phase, breakdown=estimate.breakdown(),
        saved_activations_bytes=estimate.saved_activations_bytes,
        phases=[PhaseOut(name=p.name, total_bytes=p.total_bytes,
                         breakdown={c: getattr(p, c) for c in memory.COMPONENTS}) for p in estimate.phases],
        verdicts=list(estimate.verdicts), notes=list(estimate.notes),
    )


@router.get("/nf4/levels", summary="The 16 levels of a 4-bit code book (NF4 by default)")
def code_levels(method: Annotated[Literal["nf4", "fp4", "int4"], Query(description="Code book")] = "nf4") -> LevelsOut:
    return LevelsOut(method=method, levels=list(nf4.codebook(method)))


@router.get("/nf4/error", summary="Quantization error of NF4, INT4 and FP4 on one sample of weights")
def quantization_error(query: Annotated[Nf4ErrorQuery, Query()]) -> Nf4ErrorOut:
    with calculator_input():
        sample = nf4.sample_weights(query.distribution, n=query.n_values, seed=query.seed)
        stats = [nf4.quantization_error(sample, method, query.blocksize) for method in ("nf4", "int4", "fp4")]
    return Nf4ErrorOut(distribution=query.distribution, blocksize=query.blocksize, n_values=query.n_values,
                       methods=stats)


@router.get("/nf4/overhead", summary="Quantization-constant overhead of NF4, single and double quantized")
def quantization_overhead(query: Annotated[Nf4OverheadQuery, Query()]) -> Nf4OverheadOut:
    with calculator_input():
        arch = architectures.get_architecture(query.model)
        single = nf4.nf4_model_bytes(arch.n_params, query.blocksize, double_quant=False)
        double = nf4.nf4_model_bytes(arch.n_params, query.blocksize, double_quant=True)
    return Nf4OverheadOut(
        model=arch.slug, n_params=arch.n_params, blocksize=query.blocksize,
        bits_per_param_single=nf4.bits_per_param(query.blocksize, False),
        bits_per_param_double=nf4.bits_per_param(query.blocksize, True),
        bytes_single=single.n_bytes, bytes_double=double.n_bytes,
    )


@router.get("/lowrank", summary="Truncated-SVD error against rank for a low-rank update plus noise")
def low_rank(query: Annotated[LowRankQuery, Query()]) -> LowRankOut:
    with calculator_input({"noise_ratio": "noise"}):
        noise_std = lowrank.noise_std_for_ratio(query.d_out, query.d_in, query.noise)
        update = lowrank.make_low_rank_update(query.d_out, query.d_in, query.intrinsic_rank, noise_std, query.seed)
        curve = lowrank.svd_error_curve(update.matrix)
    return LowRankOut(d_out=query.d_out, d_in=query.d_in, intrinsic_rank=query.intrinsic_rank,
                      noise_floor=update.noise_floor, ranks=curve.ranks, relative_errors=curve.relative_errors,
                      singular_values=curve.singular_values)


@router.get("/lowrank/merge", summary="Merged vs unmerged LoRA output difference in float32 and bfloat16")
def merge_equivalence(query: Annotated[MergeQuery, Query()]) -> list[lowrank.MergeError]:
    with calculator_input():
        return [lowrank.merge_error(query.d_out, query.d_in, query.rank, dtype, query.seed, query.alpha)
                for dtype in ("float32", "bfloat16")]


@router.get("/scaling", summary="α/r and rsLoRA's α/√r across ranks, and LoRA+'s learning-rate ratio")
def scaling_rules(query: Annotated[ScalingQuery, Query()]) -> ScalingOut:
    ranks = [2**k for k in range(query.max_rank.bit_length()) if 2**k <= query.max_rank]
    with calculator_input():
        series = scaling.scaling_series(query.alpha, ranks)
    return ScalingOut(alpha=query.alpha, ranks=list(series.ranks), lora_scaling=list(series.lora_scaling),
                      rslora_scaling=list(series.rslora_scaling), loraplus_lr_ratio=scaling.LORAPLUS_LR_RATIO)
