"""How big a LoRA update is: the α/r scaling, rsLoRA's α/√r, and LoRA+'s separate learning rate for B.

Pure stdlib (runs under Pyodide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "LORAPLUS_LR_RATIO",
    "lora_scaling",
    "ScalingSeries",
    "scaling_series",
    "LoRAPlusRates",
    "loraplus_learning_rates",
]

# LoRA+ (Hayou et al. 2024) recommends λ = 2⁴ = 16 as a default ratio for language models. peft's
# create_loraplus_optimizer takes loraplus_lr_ratio as a required argument (no default), so this is the paper's value.
LORAPLUS_LR_RATIO = 16.0


def _check_alpha(lora_alpha: float) -> float:
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or not math.isfinite(lora_alpha) or lora_alpha <= 0:
        raise ValueError(f"lora_alpha: must be a positive number, got {lora_alpha!r}")
    return float(lora_alpha)


def _check_rank(r: int, name: str = "r") -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{name}: must be a positive integer, got {r!r}")
    return r


def lora_scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """The factor s in h = W0·x + s·B·A·x: α/r (Hu et al. 2021, §4.1) or α/√r with rsLoRA (Kalajdzievski 2023, Thm 3.2).

    Same names and values as peft's LoraLayer.scaling.
    """
    alpha = _check_alpha(lora_alpha)
    r = _check_rank(r)
    return alpha / math.sqrt(r) if use_rslora else alpha / r


@dataclass(frozen=True)
class ScalingSeries:
    """Scaling and effective update size against rank, for α/r and α/√r."""

    ranks: list[int]
    lora_scaling: list[float]  # α/r
    rslora_scaling: list[float]  # α/√r
    lora_effective_scale: list[float]  # (α/r)·√r = α/√r: the forward size of a random B·A·x, shrinks with r
    rslora_effective_scale: list[float]  # (α/√r)·√r = α: rank-stable

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def scaling_series(lora_alpha: float = 16.0, ranks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256)) -> ScalingSeries:
    """s and s·√r for each rank: with independent random entries, B·A·x sums r rank-one terms that add
    incoherently, so ‖B·A·x‖ grows like √r (the forward condition of Kalajdzievski 2023, §3); only s = α/√r keeps
    s·‖B·A·x‖ independent of r. Training speed is another matter: under Adam the first step goes with s·r
    (calculators.rank_sweep).
    """
    alpha = _check_alpha(lora_alpha)
    rank_list = [_check_rank(r, "ranks") for r in ranks]
    if not rank_list:
        raise ValueError("ranks: must not be empty")
    lora = [lora_scaling(alpha, r) for r in rank_list]
    rslora = [lora_scaling(alpha, r, use_rslora=True) for r in rank_list]
    return ScalingSeries(
        ranks=rank_list,
        lora_scaling=lora,
        rslora_scaling=rslora,
        lora_effective_scale=[s * math.sqrt(r) for s, r in zip(lora, rank_list)],
        rslora_effective_scale=[s * math.sqrt(r) for s, r in zip(rslora, rank_list)],
    )


@dataclass(frozen=True)
class LoRAPlusRates:
    """Learning rates of LoRA+: lr_B = λ·lr_A."""

    lr_A: float
    lr_B: float
    loraplus_lr_ratio: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def loraplus_learning_rates(lr_A: float, loraplus_lr_ratio: float = LORAPLUS_LR_RATIO) -> LoRAPlusRates:
    """LoRA+ (Hayou et al. 2024): train B with lr_B = λ·lr_A, λ ≫ 1 (16 recommended), for efficient feature learning at large width.

    λ is peft's `loraplus_lr_ratio` (create_loraplus_optimizer); it should be ≥ 1.
    """
    if isinstance(lr_A, bool) or not isinstance(lr_A, (int, float)) or not math.isfinite(lr_A) or lr_A <= 0:
        raise ValueError(f"lr_A: must be a positive number, got {lr_A!r}")
    if (
        isinstance(loraplus_lr_ratio, bool)
        or not isinstance(loraplus_lr_ratio, (int, float))
        or not math.isfinite(loraplus_lr_ratio)
        or loraplus_lr_ratio < 1
    ):
        raise ValueError(f"loraplus_lr_ratio: must be a number ≥ 1, got {loraplus_lr_ratio!r}")
    return LoRAPlusRates(lr_A=float(lr_A), lr_B=float(lr_A) * float(loraplus_lr_ratio), loraplus_lr_ratio=float(loraplus_lr_ratio))
