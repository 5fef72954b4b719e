"""Low-rank structure: truncated SVD, Eckart–Young reconstruction error, and merged vs unmerged LoRA precision.

LoRA (Hu et al. 2021, §4) bets that a fine-tuning update ΔW has low intrinsic rank; the best rank-r
approximation of a matrix is its truncated SVD, with squared Frobenius error the sum of the discarded σ²
(Eckart & Young 1936). Pure numpy + stdlib (runs under Pyodide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

__all__ = [
    "LowRankUpdate",
    "make_low_rank_update",
    "singular_values",
    "SVDErrorCurve",
    "svd_error_curve",
    "truncated_reconstruction",
    "to_bfloat16",
    "MergeError",
    "merge_error",
]


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"matrix: must be a non-empty 2-D array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("matrix: must be finite")
    return m


@dataclass(frozen=True, eq=False)
class LowRankUpdate:
    """A synthetic update ΔW = S + N: S of exact rank `intrinsic_rank` (‖S‖_F = 1) plus i.i.d. Gaussian noise N."""

    matrix: np.ndarray  # (d_out, d_in) float64: signal + noise, what we observe
    signal: np.ndarray  # (d_out, d_in) float64: the exact rank-k part, ‖·‖_F = 1
    intrinsic_rank: int
    noise_std: float
    noise_floor: float  # ‖N‖_F / ‖ΔW‖_F: the rank-k truncation error can be no larger (Eckart–Young)

    def to_dict(self) -> dict:
        return {
            "matrix": self.matrix.tolist(),
            "intrinsic_rank": self.intrinsic_rank,
            "noise_std": self.noise_std,
            "noise_floor": self.noise_floor,
        }


def make_low_rank_update(d_out: int, d_in: int, intrinsic_rank: int, noise_std: float = 0.0, seed: int = 0) -> LowRankUpdate:
    """ΔW = U·diag(1/√k)·Vᵀ + noise_std·N(0, 1): k equal singular values (‖S‖_F = 1), random orthonormal U, V, plus noise.

    Equal σ give a sharp elbow at k; the rank-k truncated SVD is at least as good as S, so its relative error ≤ ‖N‖_F/‖ΔW‖_F.
    """
    d_out = _positive_int(d_out, "d_out")
    d_in = _positive_int(d_in, "d_in")
    k = _positive_int(intrinsic_rank, "intrinsic_rank")
    if k > min(d_out, d_in):
        raise ValueError(f"intrinsic_rank: must be at most min(d_out, d_in) = {min(d_out, d_in)}, got {k}")
    if not (noise_std >= 0 and math.isfinite(noise_std)):
        raise ValueError(f"noise_std: must be finite and non-negative, got {noise_std!r}")
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d_out, k)))  # (d_out, k), orthonormal columns
    v, _ = np.linalg.qr(rng.standard_normal((d_in, k)))  # (d_in, k), orthonormal columns
    signal = (u / math.sqrt(k)) @ v.T  # (d_out, d_in), rank k, ‖·‖_F = 1
    noise = noise_std * rng.standard_normal((d_out, d_in))  # (d_out, d_in)
    matrix = signal + noise
    return LowRankUpdate(
        matrix=matrix,
        signal=signal,
        intrinsic_rank=k,
        noise_std=float(noise_std),
        noise_floor=float(np.linalg.norm(noise) / np.linalg.norm(matrix)),
    )


def noise_std_for_ratio(d_out: int, d_in: int, noise_ratio: float) -> float:
    """Per-entry noise std whose expected Frobenius norm is `noise_ratio` × the unit-norm signal.

    ‖N‖_F ≈ std·√(d_out·d_in), so std = ratio / √(d_out·d_in): the instrument's slider is then a
    size-independent signal-to-noise knob.
    """
    d_out = _positive_int(d_out, "d_out")
    d_in = _positive_int(d_in, "d_in")
    if not (noise_ratio >= 0 and math.isfinite(noise_ratio)):
        raise ValueError(f"noise_ratio: must be finite and non-negative, got {noise_ratio!r}")
    return noise_ratio / math.sqrt(d_out * d_in)


def singular_values(matrix: np.ndarray) -> list[float]:
    """σ₁ ≥ σ₂ ≥ … ≥ 0 of a matrix (the spectrum whose tail decides how low a rank suffices)."""
    return [float(s) for s in np.linalg.svd(_matrix(matrix), compute_uv=False)]


@dataclass(frozen=True)
class SVDErrorCurve:
    """Relative Frobenius error of the best rank-r approximation, for each requested r."""

    ranks: list[int]
    relative_errors: list[float]  # ‖M − M_r‖_F / ‖M‖_F = √(Σ_{i>r} σᵢ²) / √(Σ σᵢ²)
    energy_captured: list[float]  # Σ_{i≤r} σᵢ² / Σ σᵢ² = 1 − error²
    singular_values: list[float]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def svd_error_curve(matrix: np.ndarray, ranks: Sequence[int] | None = None) -> SVDErrorCurve:
    """Eckart–Young: the best rank-r error is √(Σ_{i>r} σᵢ²), read off the spectrum without forming M_r.

    ranks default to 0..min(d_out, d_in). The tail sums are accumulated from the small end, so no cancellation.
    """
    sigma = np.linalg.svd(_matrix(matrix), compute_uv=False)
    n = sigma.size
    if ranks is None:
        ranks = range(n + 1)
    ranks = [int(r) for r in ranks]
    for r in ranks:
        if not 0 <= r <= n:
            raise ValueError(f"ranks: every rank must be in 0..{n}, got {r}")
    squares = sigma**2
    tail = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])  # tail[r] = Σ_{i≥r} σᵢ² (0-based)
    total = tail[0]
    if total == 0:
        errors = [0.0 for _ in ranks]
    else:
        errors = [float(math.sqrt(tail[r] / total)) for r in ranks]
    return SVDErrorCurve(
        ranks=ranks,
        relative_errors=errors,
        energy_captured=[1.0 - e * e for e in errors],
        singular_values=[float(s) for s in sigma],
    )


def truncated_reconstruction(matrix: np.ndarray, r: int) -> np.ndarray:
    """M_r = U_r·diag(σ_r)·V_rᵀ, the best rank-r approximation (Eckart & Young 1936)."""
    m = _matrix(matrix)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r <= min(m.shape):
        raise ValueError(f"r: must be an integer in 0..{min(m.shape)}, got {r!r}")
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r]  # (d_out, d_in)


# ---------------------------------------------------------------------------- merge precision


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (8 significant bits, round to nearest, ties to even), returned as float32."""
    values = np.ascontiguousarray(x, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    bias = ((bits >> 16) & 1) + 0x7FFF  # ties go to the even 16-bit truncation
    rounded = ((bits + bias) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32).reshape(values.shape)
    return np.where(np.isnan(values), values, out)


@dataclass(frozen=True)
class MergeError:
    """How far merged and unmerged LoRA outputs disagree in one precision."""

    dtype: str
    max_abs_diff: float  # max |x·(W0 + s·BA)ᵀ − (x·W0ᵀ + s·(x·Aᵀ)·Bᵀ)|
    max_abs_output: float  # max |output|, to read the difference against
    relative_diff: float  # max_abs_diff / max_abs_output
    unit_roundoff: float  # 2⁻²⁴ (float32) or 2⁻⁸ (bfloat16)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def merge_error(
    d_out: int,
    d_in: int,
    r: int,
    dtype: Literal["float32", "bfloat16"] = "float32",
    seed: int = 0,
    lora_alpha: float = 16.0,
    batch: int = 8,
) -> MergeError:
    """Max |merged − unmerged| output of a LoRA layer computed in float32 or (emulated) bfloat16.

    Merged: y = x·(W0 + s·B·A)ᵀ; unmerged: y = x·W0ᵀ + s·(x·Aᵀ)·Bᵀ (Hu et al. 2021, §4.1), s = lora_alpha/r.
    bfloat16 is emulated like a GPU: inputs stored in bf16, each product accumulated in fp32 then rounded to bf16.
    """
    d_out = _positive_int(d_out, "d_out")
    d_in = _positive_int(d_in, "d_in")
    r = _positive_int(r, "r")
    batch = _positive_int(batch, "batch")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype: must be 'float32' or 'bfloat16', got {dtype!r}")
    if not (math.isfinite(lora_alpha) and lora_alpha > 0):
        raise ValueError(f"lora_alpha: must be positive, got {lora_alpha!r}")
    rnd = to_bfloat16 if dtype == "bfloat16" else (lambda v: np.asarray(v, dtype=np.float32))
    rng = np.random.default_rng(seed)
    scaling = np.float32(lora_alpha / r)
    w0 = rnd(rng.standard_normal((d_out, d_in)) / math.sqrt(d_in))  # (d_out, d_in)
    lora_a = rnd(rng.standard_normal((r, d_in)) / math.sqrt(d_in))  # (r, d_in)
    lora_b = rnd(rng.standard_normal((d_out, r)) * 0.01)  # (d_out, r): a trained, small B
    x = rnd(rng.standard_normal((batch, d_in)))  # (batch, d_in)
    delta_weight = rnd(rnd(lora_b @ lora_a) * scaling)  # (d_out, d_in)
    merged_weight = rnd(w0 + delta_weight)  # (d_out, d_in)
    merged = rnd(x @ merged_weight.T)  # (batch, d_out)
    base = rnd(x @ w0.T)  # (batch, d_out)
    lora = rnd(rnd(rnd(x @ lora_a.T) @ lora_b.T) * scaling)  # (batch, d_out)
    unmerged = rnd(base + lora)  # (batch, d_out)
    diff = float(np.max(np.abs(merged.astype(np.float64) - unmerged.astype(np.float64))))
    scale = float(np.max(np.abs(unmerged)))
    return MergeError(
        dtype=dtype,
        max_abs_diff=diff,
        max_abs_output=scale,
        relative_diff=diff / scale if scale else 0.0,
        unit_roundoff=2.0**-8 if dtype == "bfloat16" else 2.0**-24,
    )
