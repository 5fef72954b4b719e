"""What can I train on my GPU? The largest micro-batch and sequence length that fit, per method.

For a memory budget (a GPU's usable memory, or any number of bytes) and a model, each
method — full fine-tuning, LoRA and QLoRA, with and without gradient checkpointing — gets
the largest micro-batch that fits at each sequence length, the longest sequence that fits
one at a time, and the estimate behind the answer. `memory.estimate_memory` is the oracle:
a step fits when its peak with the CUDA context is at most the budget, the same rule as its
GPU verdicts.

The search relies on one property only: peak memory never falls when the batch or the
sequence grows (activations, logits and buffers scale with the tokens; eager attention's
scores with the square of the sequence). Peak memory is close to affine in either, so the
first guess comes from two evaluations and a straight line; the search then checks the
guess and its neighbour, and bisects when the guess was off. The answer is exact for any
non-decreasing estimator; the line only saves evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from calculators import memory, params
from calculators.architectures import Architecture, get_architecture
from calculators.gpus import get_gpu

PLAN_METHODS = ("full", "lora", "qlora")
SEQ_LENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MAX_BATCH_SIZE = 4096
MAX_SEQ_LEN = 1_048_576


@dataclass(frozen=True)
class FitPoint:
    """At one sequence length, the largest micro-batch that fits (0: not even one sequence)."""

    seq_len: int
    max_batch_size: int

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch: batch × sequence length."""
        return self.seq_len * self.max_batch_size


@dataclass(frozen=True)
class MethodPlan:
    """One method and checkpointing choice: what fits, and the memory estimate behind it."""

    method: str  # full | lora | qlora
    gradient_checkpointing: bool
    trainable_params: int  # peft's count (full: every parameter)
    trainable_percent: float  # 100 · trainable / total, as peft's print_trainable_parameters
    adapter_bytes: int  # the saved adapter (0 for full fine-tuning, which saves the whole model)
    ladder: tuple[FitPoint, ...]  # the largest batch at each of SEQ_LENS the model accepts
    at_seq: FitPoint  # at the reader's sequence length
    max_seq_len: int  # the longest sequence that fits at batch size 1 (0: none)
    estimate: memory.MemoryEstimate  # at (max(1, at_seq.max_batch_size), seq_len): the breakdown to show

    @property
    def fits(self) -> bool:
        return self.at_seq.max_batch_size > 0

    @property
    def best(self) -> FitPoint | None:
        """The ladder point with the most tokens per micro-batch (ties: the longer sequence)."""
        fitting = [p for p in self.ladder if p.max_batch_size]
        return max(fitting, key=lambda p: (p.tokens, p.seq_len)) if fitting else None


@dataclass(frozen=True)
class TrainingPlan:
    model: str
    display_name: str
    n_params: int
    budget_bytes: int
    seq_len: int
    r: int
    target_modules: str | tuple[str, ...]
    plans: tuple[MethodPlan, ...]

    def plan(self, method: str, gradient_checkpointing: bool) -> MethodPlan:
        for p in self.plans:
            if p.method == method and p.gradient_checkpointing == gradient_checkpointing:
                return p
        raise ValueError(f"method: no plan for {method!r} (gradient_checkpointing={gradient_checkpointing})")


def gpu_budget_bytes(gpu: str) -> int:
    """What the driver can hand out on a listed GPU (nvidia-smi's total), as the GPU verdicts use."""
    return get_gpu(gpu).usable_bytes


def largest_fitting(total_at: Callable[[int], int], budget_bytes: int, upper: int) -> int:
    """The largest n in [1, upper] with total_at(n) ≤ budget_bytes, or 0 when n = 1 does not fit.

    total_at must never decrease as n grows. Guess from the line through n = 1 and 2, check
    the guess and the value after it, then bisect between what is known to fit and what is not.
    """
    seen: dict[int, int] = {}

    def fits(n: int) -> bool:
        if n not in seen:
            seen[n] = total_at(n)
        return seen[n] <= budget_bytes

    if upper < 1 or not fits(1):
        return 0
    if upper == 1 or not fits(2):
        return 1
    low, high = 2, upper + 1  # fits(low); high is the smallest value known not to fit (upper + 1: none known)
    slope = seen[2] - seen[1]
    guess = upper if slope <= 0 else min(upper, 1 + (budget_bytes - seen[1]) // slope)
    for probe in (guess, guess + 1):
        if low < probe < high:
            if fits(probe):
                low = probe
            else:
                high = probe
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def plan_training(
    model: str | Architecture,
    budget_bytes: int,
    seq_len: int = 2048,
    r: int = 16,
    target_modules: str | Sequence[str] = "all-linear",
    methods: Sequence[str] = PLAN_METHODS,
    seq_lens: Sequence[int] = SEQ_LENS,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> TrainingPlan:
    """Per method and checkpointing choice: the largest micro-batch at each sequence length,
    the longest sequence at batch size 1, trainable parameters and adapter size.

    Every other setting is estimate_memory's default: bf16 base (NF4 for QLoRA), AdamW,
    SDPA attention, fp32 adapters. Sequences longer than the model's max_position_embeddings
    are left out.
    """
    arch = get_architecture(model)
    for name, value, minimum in (("budget_bytes", budget_bytes, 1), ("seq_len", seq_len, 1), ("r", r, 1),
                                 ("max_batch_size", max_batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}: must be an integer ≥ {minimum}, got {value!r}")
    for method in methods:
        if method not in PLAN_METHODS:
            raise ValueError(f"method: must be one of {', '.join(PLAN_METHODS)}, got {method!r}")
    longest = min(arch.max_position_embeddings, MAX_SEQ_LEN)
    if seq_len > longest:
        raise ValueError(f"seq_len: {arch.display_name} accepts at most {longest:,} tokens, got {seq_len:,}")
    ladder_lens = sorted({s for s in seq_lens if s <= longest})

    plans = []
    for method in methods:
        counted = params.count_trainable(arch, "lora" if method == "qlora" else method, r=r,
                                         target_modules=target_modules)
        for checkpointing in (True, False):
            def total(batch_size: int, length: int) -> int:
                return memory.estimate_memory(
                    arch, method=method, r=r, target_modules=target_modules, batch_size=batch_size,
                    seq_len=length, gradient_checkpointing=checkpointing,
                ).total_with_context_bytes

            def batch_at(length: int) -> FitPoint:
                return FitPoint(length, largest_fitting(lambda b: total(b, length), budget_bytes, max_batch_size))

            ladder = []
            for length in ladder_lens:
                point = batch_at(length)
                ladder.append(point)
                if not point.max_batch_size:  # longer sequences need more memory still
                    ladder += [FitPoint(s, 0) for s in ladder_lens if s > length]
                    break
            at_seq = next((p for p in ladder if p.seq_len == seq_len), None) or batch_at(seq_len)
            max_seq = largest_fitting(lambda s: total(1, s), budget_bytes, longest)
            estimate = memory.estimate_memory(
                arch, method=method, r=r, target_modules=target_modules, batch_size=max(1, at_seq.max_batch_size),
                seq_len=seq_len, gradient_checkpointing=checkpointing,
            )
            plans.append(MethodPlan(
                method=method, gradient_checkpointing=checkpointing, trainable_params=counted.trainable,
                trainable_percent=counted.percent,
                adapter_bytes=0 if method == "full" else counted.adapter_bytes, ladder=tuple(ladder),
                at_seq=at_seq, max_seq_len=max_seq, estimate=estimate,
            ))
    targets = target_modules if isinstance(target_modules, str) else tuple(target_modules)
    return TrainingPlan(arch.slug, arch.display_name, arch.n_params, budget_bytes, seq_len, r, targets, tuple(plans))
